"""Speed benchmarks: `python scripts/benchmark.py train|scaling|matmul` (see keras_mlp.benchmark)."""

import sys

from keras_mlp.cli import benchmark_main

sys.exit(benchmark_main())
