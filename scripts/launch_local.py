"""A local multi-worker cluster: `python scripts/launch_local.py --workers=2 -- <train flags>`."""

import sys

from keras_mlp.launch import main

sys.exit(main())
