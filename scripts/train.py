"""Train an MLP: `python scripts/train.py --flagfile=configs/scratch.flags` (see keras_mlp.train)."""

import sys

from keras_mlp.cli import train_main

sys.exit(train_main())
