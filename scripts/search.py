"""The joint search: `python scripts/search.py --flagfile=configs/search.flags --data_dir=DIR`."""

import sys

from keras_mlp.cli import search_main

sys.exit(search_main())
