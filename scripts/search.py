"""Exercise 5: joint search over learning rate, epochs, depth and width (Optuna,
TPE sampling with Hyperband pruning), then one test-set measurement of the best.

    python scripts/search.py --flagfile=configs/search.flags --data_dir=../shared/data/fashion-mnist

Every train.py flag sets the base configuration; the search flags are below.
Rerunning with the same --search_dir continues the stored study.
"""

import sys

from absl import app, flags, logging

from keras_mlp import flags as train_flags
from keras_mlp.errors import UserError
from keras_mlp.search import run_search

flags.DEFINE_string(
    "search_dir", None, "Folder of the search: trial-NNN/ runs, study.db, best.json, plots."
)
flags.DEFINE_integer("trials", 20, "Trials in the study (finished ones count when continuing).")
flags.DEFINE_integer(
    "max_epochs", 30, "Most epochs a trial may get (Hyperband's maximum resource)."
)
flags.DEFINE_list("widths", ["128", "256", "512", "1024"], "Hidden widths to choose from.")
flags.DEFINE_list("optimizers", ["sgd", "adam"], "Optimizers to choose from (sgd, adam).")
FLAGS = flags.FLAGS


def main(argv):
    # TensorFlow logs every checkpoint write, and each trial's new functions, as news.
    logging.set_verbosity(logging.ERROR)
    try:
        if len(argv) > 1:
            raise UserError(f"unexpected arguments {' '.join(argv[1:])!r}")
        if not FLAGS.search_dir:
            raise UserError("--search_dir is required")
        if FLAGS.trials < 1 or FLAGS.max_epochs < 1:
            raise UserError("--trials and --max_epochs must be positive integers")
        if not set(FLAGS.optimizers) <= {"sgd", "adam"} or not FLAGS.optimizers:
            raise UserError(
                f"--optimizers takes sgd and/or adam. Received: {','.join(FLAGS.optimizers)}"
            )
        widths = train_flags.int_list("widths", FLAGS.widths)
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")  # each trial traces its own functions: expected
        run_search(
            FLAGS.search_dir,
            train_flags.config_from_flags(),
            FLAGS.trials,
            FLAGS.max_epochs,
            widths,
            tuple(FLAGS.optimizers),
            FLAGS.seed,
        )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    train_flags.define_flags()
    app.run(main, flags_parser=train_flags.parse_flags)
