"""Top labels of images from a trained run: `python scripts/predict.py --model_dir=DIR IMAGE...`."""

import sys

from keras_mlp.cli import predict_main

sys.exit(predict_main())
