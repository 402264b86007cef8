"""Grid sweeps: every combination of the --grid values, one train.py run each.

    python scripts/sweep.py --sweep_dir=runs/width --grid=hidden_units=32,64,128 \
        -- --flagfile=configs/scratch.flags --data_dir=../shared/data/fashion-mnist
    python scripts/sweep.py --flagfile=configs/sweeps/width.flags -- --data_dir=...

Flags after `--` go to every trial. Rerunning skips finished trials.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from keras_mlp.errors import UserError  # noqa: E402
from keras_mlp.flags import parse_flags  # noqa: E402
from keras_mlp.sweep import parse_grid, run_sweep  # noqa: E402

flags.DEFINE_string(
    "sweep_dir", None, "Folder of the sweep: one sub-folder per trial, results.csv, plots."
)
flags.DEFINE_multi_string(
    "grid",
    [],
    "name=v1,v2,...: a train.py flag and its values (';' separates values holding commas).",
)
flags.DEFINE_string("base_flagfile", None, "A train.py flagfile every trial starts from.")
flags.DEFINE_integer("parallel", 1, "Trials run at once (each its own process).")
flags.DEFINE_float(
    "trial_timeout", 3600, "Seconds a trial may run before it is recorded as failed."
)
FLAGS = flags.FLAGS


def main(argv):
    try:
        if not FLAGS.sweep_dir:
            raise UserError("--sweep_dir is required")
        if FLAGS.parallel < 1:
            raise UserError(f"--parallel must be a positive integer. Received: {FLAGS.parallel}")
        grid = parse_grid(FLAGS.grid)
        base = [f"--flagfile={FLAGS.base_flagfile}"] if FLAGS.base_flagfile else []
        rows = run_sweep(
            FLAGS.sweep_dir, grid, [*base, *argv[1:]], FLAGS.parallel, FLAGS.trial_timeout
        )
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        f"\nresults in {FLAGS.sweep_dir}/results.csv and results.png; "
        f"tensorboard --logdir {FLAGS.sweep_dir} --host 127.0.0.1"
    )
    return 0 if any(r["status"] == "done" for r in rows) else 1


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
