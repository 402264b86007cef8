"""Running the tools as a user would: in-process through their `main(argv)` (fast),
or as a real process where the process boundary is the point (signals, exit
codes of the interpreter, clusters)."""

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"


class Result(NamedTuple):
    returncode: int
    stdout: str
    stderr: str


def run_main(main, *args):
    """Calls a tool's `main(argv)` in this process; returns its exit status and output."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return Result(code, out.getvalue(), err.getvalue())


def tool_env(env=None):
    """This process's environment plus `env` (a value of None removes the variable)."""
    merged = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return {key: value for key, value in merged.items() if value is not None}


def run_tool(tool, *args, cwd=None, timeout=300, env=None):
    """Runs `python -m keras_mlp.<tool> args` as a process; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, "-m", f"keras_mlp.{tool}", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd or REPO,
        env=tool_env(env),
    )


def start_tool(tool, *args, env=None):
    """Starts `python -m keras_mlp.<tool> args`; returns the Popen (stdout, stderr piped)."""
    return subprocess.Popen(
        [sys.executable, "-m", f"keras_mlp.{tool}", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env=tool_env(env),
    )


def error_lines(result):
    """The lines our command line printed as errors (TensorFlow's own log noise aside)."""
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]
