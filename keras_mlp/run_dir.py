"""The rules of a model_dir: one run per directory, owned by one process at a time,
resumed or reported, never silently replaced.

A run writes `run_config.json` when it starts and `metrics.json` when it ends.
Rerunning the same command on its model_dir resumes an unfinished run and
reports a finished one (a damaged metrics.json makes a run unfinished: the
resume writes its outputs again); another config there is refused; `overwrite` is the
only way to replace a run's outputs. An attempt that stopped before its first
checkpoint left nothing worth keeping: the next run (with any settings) starts
over in its place.

While a run writes, it holds an OS file lock on `<model_dir>/.lock` (in a
cluster, the chief does): a second run on the same folder is refused, naming
the holder. The lock dies with its process, so a killed run leaves none behind.
"""

import contextlib
import fcntl
import json
import os
import shutil
import socket
from pathlib import Path

from keras_mlp.errors import OutputError, UserError
from keras_mlp.reporting import WRITE_ERRORS, write_json

RUN_CONFIG = "run_config.json"
DATA_KEY = "data"  # run_config.json's record of the data a run trains on (Dataset.identity)
METRICS = "metrics.json"
# What a finished run's metrics.json must hold (run.train reports a complete run from them).
RECORD = ("history", "final")
LOCK = ".lock"
# Everything a run may leave behind, removed by overwrite (or a restart).
RUN_OUTPUTS = (
    RUN_CONFIG,
    METRICS,
    "model.keras",
    "progress.png",
    "logs",
    "checkpoints",
    "export",
)
# NEW: nothing there yet. RESTART: an attempt that saved no checkpoint; replace it.
NEW, RESTART, RESUME, COMPLETE = "new", "restart", "resume", "complete"


def _saved_any_checkpoint(model_dir):
    """Whether a run got as far as its first checkpoint (even one since damaged or deleted:
    that is an error to report, not a reason to start over)."""
    folder = model_dir / "checkpoints"
    return folder.is_dir() and any(folder.iterdir())


def finished_record(model_dir):
    """`(metrics, None)`: the `metrics.json` of a finished run, read; or `(None, problem)`
    when there is none or it is damaged (cut short by a full disk, emptied, edited)."""
    path = Path(model_dir) / METRICS
    try:
        metrics = json.loads(path.read_text())
    except FileNotFoundError:
        return None, "missing"
    except (OSError, ValueError) as e:  # ValueError: JSON and UTF-8 decoding errors
        return None, str(e)
    if not (isinstance(metrics, dict) and all(isinstance(metrics.get(k), dict) for k in RECORD)):
        return None, f"it lacks {' or '.join(RECORD)}"
    return metrics, None


def _finished_or_resumable(model_dir):
    """`COMPLETE` when metrics.json records the finished run; `RESUME` when it is damaged
    but checkpoints remain: the resume finds every epoch done and writes the outputs
    again, metrics.json last."""
    metrics, problem = finished_record(model_dir)
    if metrics is not None:
        return COMPLETE
    if _saved_any_checkpoint(model_dir):
        return RESUME
    raise UserError(
        f"{model_dir / METRICS} is damaged ({problem}) and the run has no checkpoint to "
        "write it again from; set overwrite=True to start over"
    )


def inspect(model_dir, config):
    """What `config` means for `model_dir`: `NEW`, `RESTART`, `RESUME` or `COMPLETE`.
    Reads only.

    Raises:
        UserError: when the directory holds a run with other settings, or
            outputs that no run_config.json explains.
    """
    model_dir = Path(model_dir)
    saved = model_dir / RUN_CONFIG
    if not saved.exists():
        leftovers = [name for name in RUN_OUTPUTS if (model_dir / name).exists()]
        if leftovers:
            raise UserError(
                f"model_dir={model_dir} holds {', '.join(leftovers)} but no {RUN_CONFIG}; "
                "choose another model_dir or set overwrite=True"
            )
        return NEW
    if not (model_dir / METRICS).exists() and not _saved_any_checkpoint(model_dir):
        return RESTART
    try:
        old = json.loads(saved.read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{saved} is unreadable ({e}); set overwrite=True to start over") from None
    differences = config.differences(old)
    if differences:
        raise UserError(
            f"model_dir={model_dir} holds a run with other settings ({'; '.join(differences)}); "
            "choose another model_dir or set overwrite=True"
        )
    return _finished_or_resumable(model_dir) if (model_dir / METRICS).exists() else RESUME


class RunLock:
    """An exclusive `flock` on `<model_dir>/.lock`, holding `pid host` for others to read."""

    def __init__(self, model_dir):
        self.path = Path(model_dir) / LOCK
        self._file = None

    def acquire(self):
        while True:
            handle = open(self.path, "a+")  # never truncates another holder's line
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._refuse(handle)
            # A holder removes the file before it unlocks: a lock on a file no longer at
            # `path` belongs to nobody else's view of the folder, so take the new one.
            try:
                if os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino:
                    break
            except FileNotFoundError:
                pass
            handle.close()
        handle.truncate(0)
        handle.write(f"{os.getpid()} {socket.gethostname()}\n")
        handle.flush()
        self._file = handle
        return self

    def _refuse(self, handle):
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        pid, _, host = holder.partition(" ")
        raise UserError(
            f"model_dir={self.path.parent} is in use by another run (pid {pid} on "
            f"{host or 'unknown host'}); wait for it to end or choose another model_dir"
        ) from None

    def release(self):
        """Removes the file, then unlocks: a run that opened the old file and locks it
        afterwards sees it is gone (acquire checks) and locks the new one instead."""
        if self._file is not None:
            self.path.unlink(missing_ok=True)
            self._file.close()  # closing releases the flock
            self._file = None


def _remove_outputs(model_dir):
    for name in RUN_OUTPUTS:
        path = model_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _remove_dead_writers_files(model_dir):
    """Temporary files of writers that died mid-write (`.model.<pid>.tmp.keras`,
    `.export.<pid>.tmp`, ...): with the lock held, no writer of this folder is alive."""
    for path in model_dir.glob(".*.*.tmp*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in model_dir.glob(".export.*.old"):
        shutil.rmtree(path, ignore_errors=True)


def check_same_data(model_dir, data_identity):
    """Refuses to resume the run in `model_dir` on data other than its own (a
    `Dataset.identity()`), naming what differs. A run recorded before data identities
    were kept is not checked."""
    saved = json.loads((Path(model_dir) / RUN_CONFIG).read_text()).get(DATA_KEY)
    if saved is None or saved == data_identity:
        return
    differences = [
        f"{key} {saved.get(key)!r} there, {value!r} now"
        for key, value in data_identity.items()
        if saved.get(key) != value
    ]
    raise UserError(
        f"model_dir={model_dir} holds a run on other data ({'; '.join(differences)}); "
        "resume it with the data it started on, or choose another model_dir or set "
        "overwrite=True"
    )


@contextlib.contextmanager
def claim(model_dir, config, data_identity=None):
    """Owns `model_dir` for one run: locks it, decides again under the lock (another run
    may have finished or started meanwhile), checks that a run to resume continues on
    its own data (`data_identity`, a `Dataset.identity()`), clears what must go and
    records the run's config and data. Yields the status (`NEW`, `RESTART`, `RESUME` or
    `COMPLETE`); the lock is held until the block ends.
    """
    model_dir = Path(model_dir)
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(model_dir).acquire()
    except OSError as e:
        raise UserError(f"model_dir={model_dir} is not writable ({e.strerror or e})") from None
    try:
        status = NEW if config.overwrite else inspect(model_dir, config)
        if status == RESUME and data_identity is not None:
            check_same_data(model_dir, data_identity)
        _remove_dead_writers_files(model_dir)
        if config.overwrite or status == RESTART:
            _remove_outputs(model_dir)
        if not (model_dir / RUN_CONFIG).exists():
            data = {DATA_KEY: data_identity} if data_identity else {}
            try:
                write_json(model_dir / RUN_CONFIG, {**config.to_dict(), **data})
            except WRITE_ERRORS as e:  # a full disk before anything else was written
                raise OutputError.from_error(model_dir / RUN_CONFIG, e) from None
        yield status
    finally:
        lock.release()
