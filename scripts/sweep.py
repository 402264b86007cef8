"""Grid sweeps: `python scripts/sweep.py --flagfile=configs/sweeps/width.flags -- --data_dir=DIR`."""

import sys

from keras_mlp.sweep import main

sys.exit(main())
