"""Downloads of a set's published files into the keras cache, as `keras.datasets`
makes them (`keras.utils.get_file`), staged: into a folder beside the cache named by
host and process id, verified there, then moved in. A failure leaves nothing behind,
and a staging folder whose process died (killed mid-download) is removed by the next
download on the same host."""

import contextlib
import os
import shutil
import socket
from pathlib import Path

from keras_mlp.errors import UserError
from keras_mlp.sources.keras_cache import keras_cache_dir, read_set
from keras_mlp.sources.network import Unreachable, bounded_reads, check_reachable
from keras_mlp.sources.place import NotHere, first_line
from keras_mlp.sources.published import verify

_STAGING = ".keras_mlp-download-"


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_dead_downloads(datasets):
    """Staging folders of downloads on this host whose process has died (killed
    mid-download): nobody finishes them."""
    prefix = f"{_STAGING}{socket.gethostname()}-"
    with contextlib.suppress(OSError):
        for entry in datasets.iterdir():
            pid = entry.name.removeprefix(prefix).removesuffix(".tmp")
            if entry.name.startswith(prefix) and pid.isdigit() and not _pid_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)


def _make_dirs(folder):
    """Creates `folder` and its missing parents; returns those it created, outermost first."""
    missing = []
    path = Path(folder)
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    for path in reversed(missing):
        path.mkdir()
    return list(reversed(missing))


def _remove_empty(folders):
    for folder in reversed(folders):  # innermost first
        with contextlib.suppress(OSError):
            folder.rmdir()


def _fetch(published, staging):
    """Downloads `published` into `staging` with `keras.utils.get_file` (what
    `keras.datasets` uses) and verifies it; returns its content."""
    import keras

    with bounded_reads():
        try:
            path = keras.utils.get_file(
                fname=published.name, origin=published.url, cache_dir=str(staging), cache_subdir=""
            )
        except Exception as e:  # keras wraps URL errors in a plain Exception
            raise NotHere(f"download of {published.url} ({first_line(e)})") from None
    try:
        return verify(path, published)
    except UserError as e:
        raise NotHere(f"download of {published.url} ({e})") from None


def download_keras_set(keras_files):
    """Downloads a set's files into the keras cache: first into a staging folder beside
    it, verified there, then moved in; on any failure nothing is left behind (no partial
    file, no staging folder, no empty folder this created). Returns `(arrays,
    label_names, source)`."""
    datasets = keras_cache_dir()
    folder = datasets / keras_files.folder
    _remove_dead_downloads(datasets)
    try:
        check_reachable(keras_files.files[0].url)
    except Unreachable as e:
        raise NotHere(f"download from {keras_files.files[0].url} ({e})") from None
    try:
        created = _make_dirs(folder)
    except OSError as e:
        raise NotHere(f"download (cannot create {folder}: {e.strerror or e})") from None
    staging = datasets / f"{_STAGING}{socket.gethostname()}-{os.getpid()}.tmp"
    done = False
    try:
        shutil.rmtree(staging, ignore_errors=True)  # a dead process's, under this pid
        staging.mkdir()
        contents = {f.name: _fetch(f, staging) for f in keras_files.files}
        for f in keras_files.files:
            os.replace(staging / f.name, folder / f.name)
        done = True
    except OSError as e:
        raise NotHere(f"download into {folder} ({e.strerror or e})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:
            _remove_empty(created)
    where = folder if keras_files.folder else folder / keras_files.files[0].name
    return *read_set(keras_files, contents, f"download into {where}"), str(where)
