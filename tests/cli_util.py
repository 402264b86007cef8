"""Running `scripts/train.py` in a subprocess, as a user would."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TRAIN = REPO / "scripts" / "train.py"


def run_train(*args, cwd=None, timeout=300):
    """Runs train.py with `args`; returns the CompletedProcess (text output)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, str(TRAIN), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO,
        env=env,
    )


def error_lines(result):
    """The lines our command line printed as errors (TensorFlow's own log noise aside)."""
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]
