"""tensorflow-datasets as a place of the dataset search: a copy already prepared in
`$TFDS_DATA_DIR` (default `~/tensorflow_datasets`), or, when allowed, its own download
and preparation with bounded waits (its retries and the sockets' read timeout), which
removes what it left behind when it fails."""

import contextlib
import os
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_mlp.sources.network import Unreachable, bounded_reads, check_reachable
from keras_mlp.sources.place import NotHere, first_line

# How often tensorflow-datasets tries each URL (its default, 10 with back-off, makes an
# offline machine wait about 3.5 minutes; docs/design.md, "tensorflow-datasets offline").
TFDS_MAX_RETRIES = 2


def tfds_data_dir():
    """`$TFDS_DATA_DIR` (default `~/tensorflow_datasets`): tensorflow-datasets' folder."""
    return Path(os.environ.get("TFDS_DATA_DIR", Path.home() / "tensorflow_datasets"))


def _snapshot(root, depth=3):
    """The paths under `root`, `depth` levels deep (None when `root` does not exist)."""
    if not root.exists():
        return None
    paths = set()
    level = [root]
    for _ in range(depth):
        level = [child for path in level if path.is_dir() for child in path.iterdir()]
        paths.update(level)
    return paths


def _remove_new(root, before, depth=3):
    """Removes what appeared under `root` since `_snapshot(root)` gave `before`."""
    if before is None:
        shutil.rmtree(root, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        for path in sorted(_snapshot(root, depth) - before, key=lambda p: len(p.parts)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists() or path.is_symlink():
                path.unlink()


@contextlib.contextmanager
def _few_tfds_retries():
    """tensorflow-datasets' retries per URL bounded meanwhile. It has no setting for
    them: this sets its module's private `MAX_RETRIES` and restores it on exit."""
    from tensorflow_datasets.core.download import downloader

    saved = getattr(downloader, "MAX_RETRIES", None)
    downloader.MAX_RETRIES = TFDS_MAX_RETRIES
    try:
        yield
    finally:
        if saved is None:
            del downloader.MAX_RETRIES
        else:
            downloader.MAX_RETRIES = saved


def _tfds_download(tfds, builder, tfds_dir, where):
    """`builder.download_and_prepare()` with bounded waits; on failure, removes what it
    left in `tfds_dir` (partial downloads, empty dataset folders)."""
    url = getattr(builder, "URL", None)  # the MNIST family's builders name their source
    if url:
        try:
            check_reachable(url)
        except Unreachable as e:
            raise NotHere(f"{where} (not prepared; download: {e})") from None
    print(f"Downloading {builder.name} with tensorflow-datasets into {tfds_dir}", flush=True)
    before = _snapshot(tfds_dir)
    done = False
    try:
        with bounded_reads(), _few_tfds_retries():
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False)
            )
        done = True
    except Exception as e:  # tfds raises many types (network, checksums, disk)
        raise NotHere(f"{where} (download failed: {first_line(e)})") from None
    finally:
        if not done:
            _remove_new(tfds_dir, before)


@contextlib.contextmanager
def _absl_quiet():
    """absl's warnings (tensorflow-datasets logs through it) held back meanwhile."""
    from absl import logging as absl_logging

    saved = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(saved)


def _tfds_split(tfds, builder, split):
    batches = tfds.as_numpy(builder.as_dataset(split=split, as_supervised=True).batch(8192))
    images, labels = zip(*batches, strict=True)
    return np.concatenate(images), np.concatenate(labels)


def from_tfds(tfds_name, download):
    """The set `tfds_name` from a prepared tensorflow-datasets copy; with `download`,
    tfds may download and prepare it first. Returns `(arrays, label_names, source)`."""
    tfds_dir = tfds_data_dir()
    where = f"tensorflow-datasets {tfds_dir / tfds_name}"
    try:
        import tensorflow_datasets as tfds

        builder = tfds.builder(tfds_name, data_dir=str(tfds_dir))
        with _absl_quiet():  # "Variant folder ... has no dataset_info.json": said below
            prepared = builder.is_prepared()
    except Exception as e:  # an import or metadata problem: this place cannot help
        raise NotHere(f"{where} ({first_line(e)})") from None
    if not prepared:
        if not download:
            raise NotHere(f"{where} (not prepared)")
        _tfds_download(tfds, builder, tfds_dir, where)
    try:
        train_x, train_y = _tfds_split(tfds, builder, "train")
        test_x, test_y = _tfds_split(tfds, builder, "test")
        names = tuple(builder.info.features["label"].names)
    except (tf.errors.OpError, ValueError, KeyError) as e:  # a damaged or partial copy
        raise NotHere(f"{where} (cannot be read: {first_line(e)})") from None
    return (train_x, train_y, test_x, test_y), names, where
