"""A local multi-worker cluster: `python scripts/launch_local.py --workers=2 -- <train flags>`."""

import sys

from keras_mlp.cli import launch_main

sys.exit(launch_main())
