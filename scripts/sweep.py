"""Grid sweeps: `python scripts/sweep.py --flagfile=configs/sweeps/width.flags -- --data_dir=DIR`."""

import sys

from keras_mlp.cli import sweep_main

sys.exit(sweep_main())
