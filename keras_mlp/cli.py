"""The command line: absl flags derived from `RunConfig`, and one wrapper that
turns every tool's exceptions into the exit codes the README promises.

absl stops here: the library never reads flags. Each tool's `main(argv=None)`
parses into its own `FlagValues` and returns its exit status, so tests can call
it in-process.
"""

import contextlib
import dataclasses
import importlib
import os
import re
import sys
import tempfile
import warnings

from absl import flags, logging

from keras_mlp.config import RunConfig
from keras_mlp.errors import OutputError, TrainingDiverged, TrainingInterrupted, UserError

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 1
EXIT_OUTPUT = 3


def define_run_flags(flag_values):
    """One flag per `RunConfig` field, with its default and help text."""
    for field in dataclasses.fields(RunConfig):
        name, default, meta = field.name, field.default, field.metadata
        kwargs = {"flag_values": flag_values}
        if meta["choices"]:
            flags.DEFINE_enum(name, default, meta["choices"], meta["help"], **kwargs)
        elif isinstance(default, tuple):
            flags.DEFINE_list(name, [str(v) for v in default], meta["help"], **kwargs)
        elif isinstance(default, bool):
            flags.DEFINE_boolean(name, default, meta["help"], **kwargs)
        elif isinstance(default, float):
            flags.DEFINE_float(name, default, meta["help"], **kwargs)
        elif isinstance(default, int) or meta["type"] is int:
            flags.DEFINE_integer(name, default, meta["help"], **kwargs)
        else:
            flags.DEFINE_string(name, default, meta["help"], **kwargs)


def int_list(name, values):
    """Comma-separated integers from a list flag, or a one-line error."""
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise UserError(f"{name}={','.join(values)!r} must be comma-separated integers") from None


def positive_int_list(name, values):
    """Comma-separated positive integers (at least one) from a list flag, or a one-line error."""
    numbers = int_list(name, values)
    if not numbers or min(numbers) < 1:
        raise UserError(f"{name}={','.join(values)!r} must be comma-separated positive integers")
    return numbers


def float_list(name, values):
    """Comma-separated numbers from a list flag, or a one-line error."""
    try:
        return tuple(float(v) for v in values)
    except ValueError:
        raise UserError(f"{name}={','.join(values)!r} must be comma-separated numbers") from None


def config_from_flags(flag_values, **overrides):
    """The `RunConfig` that parsed flags describe (each field has a flag of its name)."""
    values = {}
    for field in dataclasses.fields(RunConfig):
        value = flag_values[field.name].value
        if isinstance(field.default, tuple):
            parse = {int: int_list, float: float_list}.get(field.metadata["type"])
            value = parse(field.name, value) if parse else tuple(value)
        values[field.name] = value
    return RunConfig(**{**values, **overrides})


def as_flags(message, tool_flags=()):
    """Library messages name arguments (`batch_size=33`); users typed flags (`--batch_size=33`):
    `RunConfig`'s and a tool's own (`tool_flags`; launch's `workers=0` is `--workers=0`).
    A name inside a path or a value (`runs/seed=1`, `model_dir=seed=1`) is left as it is."""
    names = [*(field.name for field in dataclasses.fields(RunConfig)), *tool_flags]
    pattern = "|".join(map(re.escape, names))
    return re.sub(rf"(?<![\w\-/=.])({pattern})(?==)", r"--\1", message)


def _error(message, status, tool_flags=()):
    print(f"error: {as_flags(message, tool_flags)}", file=sys.stderr, flush=True)
    return status


def _flagfile_names(args):
    """The files that `--flagfile=FILE` (or `--flagfile FILE`) in `args` name, before `--`."""
    args = list(args)
    for i, arg in enumerate(args):
        if arg == "--":
            return
        if arg.startswith(("--flagfile=", "-flagfile=")):
            yield arg.split("=", 1)[1].strip()  # absl strips the name too
        elif arg in ("--flagfile", "-flagfile") and i + 1 < len(args):
            yield args[i + 1]


def _flagfile_lines(name, path):
    """The lines of flagfile `path`, or `None` when it cannot be opened (absl reports
    that itself). absl would raise a bare UnicodeDecodeError on a file that is not
    text: refused here with its name."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return None
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(
            f"--flagfile={name} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset "
            f"{e.start}); a flagfile holds one --flag=value per line"
        ) from None


def check_flagfiles(args, flag_values, seen=()):
    """Refuses what absl would misread in flagfiles: an empty `--flagfile=` (absl
    ignores it silently), a file that is not UTF-8 text, and a line that names a
    non-boolean flag without `=value` (absl would take the next argument, a flag on
    the command line or the file's next line, as its value). Files that cannot be
    opened are left to absl to report."""
    for name in _flagfile_names(args):
        if not name:
            raise UserError("--flagfile= names no file; write --flagfile=PATH")
        path = os.path.expanduser(name)
        if path in seen:
            continue
        lines = _flagfile_lines(name, path)
        if lines is None:
            continue
        for number, line in enumerate(lines, 1):
            line = line.strip()
            if line.startswith(("--flagfile", "-flagfile")):
                check_flagfiles([line], flag_values, (*seen, path))
            elif line.startswith("-") and "=" not in line:
                flag = line.lstrip("-")
                if flag in flag_values and not flag_values[flag].boolean:
                    raise UserError(
                        f"{name}, line {number}: --{flag} has no value; write --{flag}=VALUE"
                    )


def run_tool(body, define_flags, doc, argv=None):
    """Parses `argv` with the flags `define_flags(flag_values)` declares, runs
    `body(flag_values, positional_args)` and returns the exit status.

    Exit statuses: 0 done, 1 diverged (or the body's own 1), 2 bad input
    (flags, files, settings), 3 outputs could not be written (disk full), 128 + N
    stopped by signal N (130 Ctrl-C, 143 SIGTERM).
    """
    argv = list(sys.argv if argv is None else [sys.argv[0], *argv])
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flags.DEFINE_boolean("help", False, "Show this help and exit.", flag_values=flag_values)
    try:
        check_flagfiles(argv[1:], flag_values)
        rest = flag_values(argv)
    except (flags.Error, UserError) as e:  # absl prefixes some messages with "ERROR::"
        return _error(str(e).removeprefix("ERROR:: "), EXIT_BAD_INPUT)
    if flag_values.help:
        print(f"{doc.strip()}\n\nflags:\n{flag_values.get_help()}")
        return 0
    try:
        return body(flag_values, rest[1:]) or 0
    except UserError as e:
        return _error(str(e), EXIT_BAD_INPUT, list(flag_values))
    except TrainingDiverged as e:
        return _error(str(e), EXIT_DIVERGED)
    except OutputError as e:
        return _error(str(e), EXIT_OUTPUT)
    except TrainingInterrupted as e:
        return _error(str(e), 128 + e.signal_number)
    except KeyboardInterrupt:  # outside the training loop, which stops cleanly by itself
        return _error("interrupted; every file written is complete; rerun to continue", 130)


@contextlib.contextmanager
def quiet_start():
    """Imports inside the block, and TensorFlow's device probe if they loaded it, print
    nothing on stderr.

    TensorFlow's C++ start-up lines ("Could not find cuda drivers", "failed call to
    cuInit", oneDNN notes) are written to file descriptor 2 before Python logging
    exists, whatever TF_CPP_MIN_LOG_LEVEL says (tensorflow/tensorflow#100442): the
    block's fd 2 goes to a temporary file, and is shown if the block fails. Nothing
    is hidden when TensorFlow is already loaded, or when TF_CPP_MIN_LOG_LEVEL=0 or 1
    asks for more.
    """
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") in ("0", "1"):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as hidden:
        os.dup2(hidden.fileno(), 2)
        try:
            yield
            if "tensorflow" in sys.modules:  # the block loaded it: probe the devices here too
                sys.modules["tensorflow"].config.list_physical_devices()  # (CUDA lines)
        except BaseException:
            os.dup2(saved, 2)
            hidden.seek(0)
            sys.stderr.write(hidden.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def quiet_tensorflow():
    """Keeps a tool's output to its own lines: TensorFlow starts quietly (`quiet_start`),
    its Python-side INFO chatter (per-step tf.distribute notes, every checkpoint write)
    and a tf.data warning about TensorFlow's internals are hidden. Called by the tools
    before they work, never on import."""
    with quiet_start():
        import tensorflow as tf
    logging.set_verbosity(logging.WARNING)
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    tf.get_logger().setLevel("WARNING")


def _quietly(tool):
    """Runs `keras_mlp.<tool>.main()`, its imports (TensorFlow's start-up) made quietly."""
    with quiet_start():
        module = importlib.import_module(f"keras_mlp.{tool}")
    return module.main()


# The console scripts (and scripts/*.py): each tool started quietly.
def train_main():
    return _quietly("train")


def launch_main():
    return _quietly("launch")


def predict_main():
    return _quietly("predict")


def sweep_main():
    return _quietly("sweep")


def search_main():
    return _quietly("search")


def benchmark_main():
    return _quietly("benchmark")


def no_positional(args):
    if args:
        raise UserError(f"unexpected arguments {' '.join(args)!r}; all settings are --flags")
