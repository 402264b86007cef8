"""Speed benchmarks. Every figure is printed as a table and saved as JSON and PNG.

python scripts/benchmark.py train --data_dir=../shared/data/fashion-mnist
python scripts/benchmark.py scaling      # exercise 6: scratch vs concise by width and depth
python scripts/benchmark.py matmul       # exercise 7: n x n matmuls around 1024, memory bandwidth
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from keras_mlp import benchmark  # noqa: E402
from keras_mlp.flags import parse_flags  # noqa: E402

COMMANDS = ("train", "scaling", "matmul", "measure")

flags.DEFINE_string("output_dir", "benchmark_results", "Where the JSON and PNG files go.")
flags.DEFINE_enum("dataset", "fashion_mnist", ["fashion_mnist", "synthetic"], "train: the data.")
flags.DEFINE_string(
    "data_dir", None, "train: the Fashion-MNIST IDX files (see train.py --data_dir)."
)
flags.DEFINE_integer("epochs", 5, "train: measured epochs, after one warm-up epoch.")
flags.DEFINE_boolean("end_to_end", True, "train: also time the 10-epoch concise run end to end.")
flags.DEFINE_list("models", ["concise", "scratch"], "train: the models to measure.")
flags.DEFINE_list(
    "widths", ["64", "128", "256", "512", "1024", "2048", "4096"], "scaling: hidden widths."
)
flags.DEFINE_list("depths", ["1", "2", "3", "4"], "scaling: numbers of hidden layers (width 256).")
flags.DEFINE_integer("steps", 40, "scaling: training steps per timed epoch.")
flags.DEFINE_list(
    "sizes", ["1024", "1025", "1026", "1028", "1032"], "matmul: the n of n x n matmuls."
)
flags.DEFINE_integer("bandwidth_mb", 256, "matmul: MiB copied to measure memory bandwidth.")
flags.DEFINE_enum(
    "implementation", "ours", ["ours", "keras_fit"], "measure (internal): what to time."
)
flags.DEFINE_string("model", "concise", "measure (internal): the model.")
FLAGS = flags.FLAGS


def _ints(name, values):
    try:
        numbers = [int(v) for v in values]
    except ValueError:
        numbers = []
    if not numbers or min(numbers) < 1:
        raise ValueError(
            f"--{name} expects comma-separated positive integers. Received: {','.join(values)!r}"
        )
    return numbers


def main(argv):
    if len(argv) != 2 or argv[1] not in COMMANDS:
        print(
            f"error: give one command: {', '.join(COMMANDS[:3])}. Received: {argv[1:]}",
            file=sys.stderr,
        )
        return 2
    command = argv[1]
    benchmark.tf.get_logger().setLevel("ERROR")  # each timed fit traces anew: expected, not news
    try:
        if command == "measure":
            print(
                json.dumps(
                    benchmark.measure(
                        FLAGS.implementation,
                        FLAGS.model,
                        FLAGS.data_dir,
                        FLAGS.dataset,
                        FLAGS.epochs,
                    )
                )
            )
            return 0
        os.makedirs(FLAGS.output_dir, exist_ok=True)
        if command == "train":
            benchmark.run_train_benchmark(
                FLAGS.output_dir,
                FLAGS.data_dir,
                FLAGS.dataset,
                FLAGS.epochs,
                FLAGS.end_to_end,
                tuple(FLAGS.models),
            )
        elif command == "scaling":
            benchmark.run_scaling_benchmark(
                FLAGS.output_dir,
                _ints("widths", FLAGS.widths),
                _ints("depths", FLAGS.depths),
                FLAGS.steps,
            )
        else:
            benchmark.run_matmul_benchmark(
                FLAGS.output_dir, _ints("sizes", FLAGS.sizes), FLAGS.bandwidth_mb
            )
    except (ValueError, RuntimeError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"\nresults in {FLAGS.output_dir}/{command}.json and {command}.png")
    return 0


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
