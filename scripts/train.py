"""Train an MLP: `python scripts/train.py --flagfile=configs/scratch.flags`.

Flags after --flagfile override it; `--help` lists them all.
"""

from keras_mlp.main import main

if __name__ == "__main__":
    main()
