"""Running `scripts/train.py` in a subprocess, as a user would."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "scripts" / "train.py"
LAUNCH = REPO / "scripts" / "launch_local.py"


def run_train(*args, cwd=None, timeout=300, env=None, script=TRAIN):
    """Runs train.py (or another `script`) with `args`; returns the CompletedProcess.

    `env` adds to (or, with a value of None, removes from) this process's environment.
    """
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    env = {key: value for key, value in env.items() if value is not None}
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO,
        env=env,
    )


def error_lines(result):
    """The lines our command line printed as errors (TensorFlow's own log noise aside)."""
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]
