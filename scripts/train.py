"""Train an MLP: `python scripts/train.py --flagfile=configs/scratch.flags` (see keras_mlp.train)."""

import sys

from keras_mlp.train import main

sys.exit(main())
