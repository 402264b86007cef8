"""Speed benchmarks: `python scripts/benchmark.py train|scaling|matmul` (see keras_mlp.benchmark)."""

import sys

from keras_mlp.benchmark import main

sys.exit(main())
