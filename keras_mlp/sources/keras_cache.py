"""The keras cache (`$KERAS_HOME/datasets`, default `~/.keras/datasets`) as a place of
the dataset search: a set's files in the layout `keras.datasets` writes, verified
against the published ones before use."""

import os
import pickle
import tarfile
from pathlib import Path

from keras_mlp.errors import UserError
from keras_mlp.sources.place import NotHere, first_line
from keras_mlp.sources.published import verify


def keras_cache_dir():
    """`$KERAS_HOME/datasets` (default `~/.keras/datasets`): where `keras.datasets`
    keeps its files."""
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return Path(keras_home) / "datasets"


def _cached_file(folder, published):
    for name in (published.name, *published.aliases):
        if (folder / name).is_file():
            return folder / name
    return None


def from_keras_cache(keras_files):
    """The set from the keras cache, verified: `(arrays, label_names, source)`."""
    folder = keras_cache_dir() / keras_files.folder
    paths = {f.name: _cached_file(folder, f) for f in keras_files.files}
    first = keras_files.files[0].name
    where = folder if keras_files.folder else paths[first] or folder / first
    missing = [name for name, path in paths.items() if path is None]
    if len(missing) == len(paths):
        raise NotHere(f"keras cache {where} (not found)")
    if missing:
        raise NotHere(f"keras cache {folder} (lacks {', '.join(missing)})")
    try:
        contents = {f.name: verify(paths[f.name], f) for f in keras_files.files}
    except UserError as e:
        raise NotHere(f"keras cache ({e})") from None
    return *read_set(keras_files, contents, f"keras cache {where}"), str(where)


def read_set(keras_files, contents, where):
    """`keras_files.read(contents)`; a file that passed the checks yet cannot be read
    (only a changed table of published files allows it) is reported, not raised."""
    try:
        return keras_files.read(contents)
    except (pickle.UnpicklingError, tarfile.TarError, KeyError, ValueError, EOFError) as e:
        raise NotHere(f"{where} (cannot be read: {first_line(e)})") from None
