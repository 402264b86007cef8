"""Print the top labels of images with a trained run's exported model:

python scripts/predict.py --model_dir=runs/concise IMAGE.png [t10k-images-idx3-ubyte.gz ...]
"""

from keras_mlp.predict import main

if __name__ == "__main__":
    main()
