"""Where the named datasets come from, and how they are checked: what
`keras_mlp.data.load_dataset` searches when no `data_dir` is given.

A named set is searched for in this order, and the first place that has it wins:

1. `data_dir`, when given: four IDX files, any image set, used as they are
   (`keras_mlp.data` reads it with `keras_mlp.idx`; this module is not asked).
2. The keras cache (`$KERAS_HOME/datasets`, default `~/.keras/datasets`), in the
   layout `keras.datasets` writes (fashion_mnist, mnist, cifar10).
3. A tensorflow-datasets copy already prepared in `$TFDS_DATA_DIR` (default
   `~/tensorflow_datasets`).
4. A download: fashion_mnist, mnist and cifar10 from the files `keras.datasets`
   downloads, into the keras cache; kmnist and emnist/letters through
   tensorflow-datasets, only with `download=True`.

Files from the keras cache or a download are checked against the published ones
(size, SHA-256, and the IDX magic number) before use. Network waits are bounded
(seconds), a failed download leaves nothing behind, and when every place fails
the error is one line naming each place and why.
"""

import contextlib
import dataclasses
import hashlib
import io
import os
import pickle
import posixpath
import shutil
import socket
import struct
import tarfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_mlp.errors import UserError
from keras_mlp.idx import IDX_FILES, parse_idx, read_bytes

FASHION_MNIST_LABELS = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGITS = tuple("0123456789")
CIFAR10_LABELS = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
# EMNIST Letters: 26 classes, each a letter in upper and lower case.
LETTERS = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")


# --- Published files and their checks ------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Published:
    """A file as its publisher distributes it, and where the keras cache keeps it.

    Attributes:
        name: Its name in the keras cache folder.
        url: Where `keras.datasets` downloads it from.
        size: Its size in bytes; of the decompressed content when `gzipped`.
        sha256: Its SHA-256; of the decompressed content when `gzipped`. (Mirrors
            re-compress .gz files, so the content is what stays the same.)
        gzipped: Whether the file is gzip-compressed IDX data.
        magic: The IDX magic number its content starts with (2051 images, 2049 labels).
        aliases: Other names older keras versions gave it in the cache.
    """

    name: str
    url: str
    size: int
    sha256: str
    gzipped: bool = False
    magic: int | None = None
    aliases: tuple = ()


def verify(path, published):
    """The bytes of `path` (its content, when gzipped), checked against `published`:
    size, IDX magic number, SHA-256.

    Raises:
        UserError: naming the file and the first check it fails.
    """
    raw = read_bytes(path, published.size + 1, gzipped=published.gzipped)
    content = " decompressed" if published.gzipped else ""
    if len(raw) != published.size:
        shown = f"{len(raw):,}" if len(raw) <= published.size else f"more than {published.size:,}"
        raise UserError(
            f"{path}: {shown} bytes{content}, the published file has {published.size:,}"
        )
    if published.magic is not None and raw[:4] != struct.pack(">I", published.magic):
        raise UserError(
            f"{path}: IDX magic number {int.from_bytes(raw[:4], 'big')}, the published "
            f"file's is {published.magic}"
        )
    digest = hashlib.sha256(raw).hexdigest()
    if digest != published.sha256:
        raise UserError(
            f"{path}: SHA-256{content} {digest[:16]}... is not the published "
            f"{published.sha256[:16]}..."
        )
    return raw


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists and NumPy arrays (the CIFAR-10 batches) and refuses any
    other class: a pickle can run code."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "_reconstruct"),  # NumPy 1's name (the published pickles')
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a dataset file")
        if module == "numpy.core.multiarray" and hasattr(np, "_core"):
            module = "numpy._core.multiarray"  # without NumPy 2's deprecation warning
        return super().find_class(module, name)


def _read_fashion_mnist_cache(contents):
    arrays = tuple(parse_idx(contents[name], name) for name in IDX_FILES.values())
    return arrays, FASHION_MNIST_LABELS


def _read_mnist_npz(contents):
    (raw,) = contents.values()
    with np.load(io.BytesIO(raw), allow_pickle=False) as f:
        arrays = tuple(f[key] for key in ("x_train", "y_train", "x_test", "y_test"))
    return arrays, DIGITS


def _read_cifar10_archive(contents):
    """CIFAR-10's python batches from its archive: uint8 (N, 32, 32, 3) images, and the
    label names from its `batches.meta`."""
    (raw,) = contents.values()
    members = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as archive:
        for member in archive:
            name = posixpath.basename(member.name)
            if member.isfile() and (name.startswith("data_batch_") or name in _CIFAR_OTHERS):
                data = archive.extractfile(member).read()
                members[name] = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()

    def split(names):
        images = np.concatenate([np.asarray(members[n][b"data"], np.uint8) for n in names])
        labels = np.concatenate([np.asarray(members[n][b"labels"], np.uint8) for n in names])
        return images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels

    train_x, train_y = split([f"data_batch_{i}" for i in range(1, 6)])
    test_x, test_y = split(["test_batch"])
    names = tuple(n.decode() for n in members["batches.meta"][b"label_names"])
    return (train_x, train_y, test_x, test_y), names


_CIFAR_OTHERS = ("test_batch", "batches.meta")


@dataclasses.dataclass(frozen=True)
class KerasFiles:
    """How `keras.datasets` keeps a set: `files` in `$KERAS_HOME/datasets/<folder>`,
    and `read`, which turns their verified contents (name -> bytes) into
    `((train_x, train_y, test_x, test_y), label_names)`."""

    folder: str
    files: tuple
    read: Callable


_KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"

# The files keras.datasets downloads, with the published sizes and SHA-256: Fashion-MNIST's
# of the IDX content (the same in the published .gz files and in ../shared/data); MNIST's
# and CIFAR-10's as keras' own loaders check them (keras/src/datasets/mnist.py, cifar10.py).
KERAS_SETS = {
    "fashion_mnist": KerasFiles(
        "fashion-mnist",
        (
            Published(
                IDX_FILES["train_images"],
                _KERAS_ORIGIN + IDX_FILES["train_images"],
                47040016,
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                gzipped=True,
                magic=2051,
            ),
            Published(
                IDX_FILES["train_labels"],
                _KERAS_ORIGIN + IDX_FILES["train_labels"],
                60008,
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                gzipped=True,
                magic=2049,
            ),
            Published(
                IDX_FILES["test_images"],
                _KERAS_ORIGIN + IDX_FILES["test_images"],
                7840016,
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                gzipped=True,
                magic=2051,
            ),
            Published(
                IDX_FILES["test_labels"],
                _KERAS_ORIGIN + IDX_FILES["test_labels"],
                10008,
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                gzipped=True,
                magic=2049,
            ),
        ),
        _read_fashion_mnist_cache,
    ),
    "mnist": KerasFiles(
        "",
        (
            Published(
                "mnist.npz",
                _KERAS_ORIGIN + "mnist.npz",
                11490434,
                "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1",
            ),
        ),
        _read_mnist_npz,
    ),
    "cifar10": KerasFiles(
        "",
        (
            Published(
                "cifar-10-batches-py-target_archive",  # keras 3's name for the .tar.gz
                "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                170498071,
                "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce",
                aliases=("cifar-10-batches-py.tar.gz",),  # keras 2's
            ),
        ),
        _read_cifar10_archive,
    ),
}


class _NotHere(Exception):
    """One place of the search did not have the data; the message says which and why."""


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


def _from_keras_cache(keras_files):
    """The set from the keras cache, verified."""
    folder = keras_cache_dir() / keras_files.folder
    paths = {f.name: _cached_file(folder, f) for f in keras_files.files}
    first = keras_files.files[0].name
    where = folder if keras_files.folder else paths[first] or folder / first
    missing = [name for name, path in paths.items() if path is None]
    if len(missing) == len(paths):
        raise _NotHere(f"keras cache {where} (not found)")
    if missing:
        raise _NotHere(f"keras cache {folder} (lacks {', '.join(missing)})")
    try:
        contents = {f.name: verify(paths[f.name], f) for f in keras_files.files}
    except UserError as e:
        raise _NotHere(f"keras cache ({e})") from None
    return *_read_set(keras_files, contents, f"keras cache {where}"), str(where)


def _read_set(keras_files, contents, where):
    """`keras_files.read(contents)`; a file that passed the checks yet cannot be read
    (only a changed table of published files allows it) is reported, not raised."""
    try:
        return keras_files.read(contents)
    except (pickle.UnpicklingError, tarfile.TarError, KeyError, ValueError, EOFError) as e:
        raise _NotHere(f"{where} (cannot be read: {_first_line(e)})") from None


# --- Downloads -------------------------------------------------------------------------

# Seconds to resolve a host and connect to it, and to wait for data once connected: an
# offline machine fails within the first, a stalled server within the second.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 30.0
# How often tensorflow-datasets tries each URL (its default, 10 with back-off, makes an
# offline machine wait about 3.5 minutes; docs/design.md, "tensorflow-datasets offline").
TFDS_MAX_RETRIES = 2
_STAGING = ".keras_mlp-download-"


class _Unreachable(Exception):
    """The network path to a download's host fails; the message says how."""


def _endpoint(url):
    """`(host, port, how)` a request for `url` first connects to: the proxy that
    urllib would use for it, or the URL's own host."""
    parts = urllib.parse.urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme, 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return proxy_parts.hostname, proxy_parts.port or 80, " (the proxy)"
    return parts.hostname, parts.port or default_port, ""


def _resolve(host, port, timeout):
    """`socket.getaddrinfo` with a deadline (a resolver that never answers would
    otherwise take several times its own timeout)."""
    result = {}

    def lookup():
        try:
            result["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            result["error"] = e

    thread = threading.Thread(target=lookup, daemon=True, name="keras_mlp-resolve")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise _Unreachable(f"cannot resolve {host} within {timeout:g} s")
    if "error" in result:
        raise _Unreachable(f"cannot resolve {host} ({result['error']})")
    return result["addresses"]


def check_reachable(url, timeout=None):
    """Resolves and connects to the host (or proxy) of `url` within `timeout` seconds
    (default `CONNECT_TIMEOUT`); raises `_Unreachable` saying what failed."""
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    deadline = time.monotonic() + timeout
    host, port, how = _endpoint(url)
    error = None
    for family, kind, proto, _, address in _resolve(host, port, timeout):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            with socket.socket(family, kind, proto) as connection:
                connection.settimeout(left)
                connection.connect(address)
                return
        except OSError as e:
            error = e
    reason = (error.strerror or str(error)) if error else f"timed out after {timeout:g} s"
    raise _Unreachable(f"cannot connect to {host}:{port}{how} ({reason})")


@contextlib.contextmanager
def _socket_timeout(seconds):
    """Sockets opened meanwhile give up after `seconds` without progress."""
    saved = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(saved)


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

    with _socket_timeout(READ_TIMEOUT):
        try:
            path = keras.utils.get_file(
                fname=published.name, origin=published.url, cache_dir=str(staging), cache_subdir=""
            )
        except Exception as e:  # keras wraps URL errors in a plain Exception
            raise _NotHere(f"download of {published.url} ({_first_line(e)})") from None
    try:
        return verify(path, published)
    except UserError as e:
        raise _NotHere(f"download of {published.url} ({e})") from None


def _first_line(error):
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def _download_keras_set(keras_files):
    """Downloads a set's files into the keras cache: first into a staging folder beside
    it, verified there, then moved in; on any failure nothing is left behind (no partial
    file, no staging folder, no empty folder this created)."""
    datasets = keras_cache_dir()
    folder = datasets / keras_files.folder
    _remove_dead_downloads(datasets)
    try:
        check_reachable(keras_files.files[0].url)
    except _Unreachable as e:
        raise _NotHere(f"download from {keras_files.files[0].url} ({e})") from None
    try:
        created = _make_dirs(folder)
    except OSError as e:
        raise _NotHere(f"download (cannot create {folder}: {e.strerror or e})") from None
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
        raise _NotHere(f"download into {folder} ({e.strerror or e})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:
            _remove_empty(created)
    where = folder if keras_files.folder else folder / keras_files.files[0].name
    return *_read_set(keras_files, contents, f"download into {where}"), str(where)


# --- tensorflow-datasets ---------------------------------------------------------------


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
        except _Unreachable as e:
            raise _NotHere(f"{where} (not prepared; download: {e})") from None
    print(f"Downloading {builder.name} with tensorflow-datasets into {tfds_dir}", flush=True)
    before = _snapshot(tfds_dir)
    done = False
    try:
        with _socket_timeout(READ_TIMEOUT), _few_tfds_retries():
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False)
            )
        done = True
    except Exception as e:  # tfds raises many types (network, checksums, disk)
        raise _NotHere(f"{where} (download failed: {_first_line(e)})") from None
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


def _from_tfds(spec, download):
    """The set from a prepared tensorflow-datasets copy; with `download`, tfds may
    download and prepare it first."""
    tfds_dir = tfds_data_dir()
    where = f"tensorflow-datasets {tfds_dir / spec.tfds_name}"
    try:
        import tensorflow_datasets as tfds

        builder = tfds.builder(spec.tfds_name, data_dir=str(tfds_dir))
        with _absl_quiet():  # "Variant folder ... has no dataset_info.json": said below
            prepared = builder.is_prepared()
    except Exception as e:  # an import or metadata problem: this place cannot help
        raise _NotHere(f"{where} ({_first_line(e)})") from None
    if not prepared:
        if not download:
            raise _NotHere(f"{where} (not prepared)")
        _tfds_download(tfds, builder, tfds_dir, where)
    try:
        train_x, train_y = _tfds_split(tfds, builder, "train")
        test_x, test_y = _tfds_split(tfds, builder, "test")
        names = tuple(builder.info.features["label"].names)
    except (tf.errors.OpError, ValueError, KeyError) as e:  # a damaged or partial copy
        raise _NotHere(f"{where} (cannot be read: {_first_line(e)})") from None
    return (train_x, train_y, test_x, test_y), names, where


# --- Named sets --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Spec:
    """A named set: its tensorflow-datasets name, its keras.datasets files (if any), and
    how its source's labels and images map to ours.

    Attributes:
        tfds_name: The name tensorflow-datasets knows it by.
        keras: Whether keras.datasets has it (its files: `KERAS_SETS[name]`).
        label_names: The class names when the source has none of its own (tfds
            metadata that only numbers the classes).
        first_label: The source's first label value (EMNIST Letters counts from 1).
        transposed: Images stored transposed (EMNIST): turned upright here.
        offline: How to provide the files without a network.
    """

    tfds_name: str
    keras: bool
    label_names: tuple
    offline: str
    first_label: int = 0
    transposed: bool = False


_IDX_HINT = (
    "pass data_dir=DIR, a directory holding the four IDX files ("
    + ", ".join(IDX_FILES.values())
    + ")"
)
_SPECS = {
    "fashion_mnist": _Spec(
        "fashion_mnist",
        True,
        FASHION_MNIST_LABELS,
        f"Offline, copy its four IDX .gz files into {{cache}}/fashion-mnist, or {_IDX_HINT}",
    ),
    "mnist": _Spec(
        "mnist",
        True,
        DIGITS,
        f"Offline, copy mnist.npz into {{cache}}, or {_IDX_HINT}",
    ),
    "cifar10": _Spec(
        "cifar10",
        True,
        CIFAR10_LABELS,
        "Offline, copy cifar-10-python.tar.gz to {cache}/cifar-10-batches-py-target_archive, "
        "or pass data_dir=DIR, a directory holding it as four IDX files (keras_mlp.idx.write_idx)",
    ),
    "kmnist": _Spec(
        "kmnist",
        False,
        ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        f"Pass download=True to let tensorflow-datasets download it, or {_IDX_HINT}",
    ),
    "emnist/letters": _Spec(
        "emnist/letters",
        False,
        LETTERS,
        f"Pass download=True to let tensorflow-datasets download it, or {_IDX_HINT}",
        first_label=1,
        transposed=True,
    ),
}


def _places(name, spec, download):
    """The search after data_dir, in order: callables giving `(arrays, names, source)`
    or raising `_NotHere`."""
    if spec.keras:
        return [
            lambda: _from_keras_cache(KERAS_SETS[name]),
            lambda: _from_tfds(spec, download=False),
            lambda: _download_keras_set(KERAS_SETS[name]),
        ]
    return [lambda: _from_tfds(spec, download=download)]


def _conform(name, spec, arrays, names):
    """A found set in our form: uint8 (N, H, W) or (N, H, W, C) images, upright;
    int labels counted from 0 within the class names; the names."""
    train_x, train_y, test_x, test_y = arrays
    index_names = tuple(str(i) for i in range(len(names)))
    if not names or tuple(names) == index_names:  # the source only numbers its classes
        names = spec.label_names
    images = []
    for x in (train_x, test_x):
        x = np.asarray(x, np.uint8)
        x = x[..., 0] if x.ndim == 4 and x.shape[-1] == 1 else x
        images.append(np.swapaxes(x, 1, 2) if spec.transposed else x)
    labels = [
        np.asarray(y).reshape(-1).astype(np.int64) - spec.first_label for y in (train_y, test_y)
    ]
    for y in labels:
        if len(y) and (y.min() < 0 or y.max() >= len(names)):
            bad = y.min() if y.min() < 0 else y.max()
            raise UserError(
                f"dataset={name!r}: label {bad + spec.first_label} is outside its classes "
                f"{spec.first_label}..{len(names) - 1 + spec.first_label}"
            )
    return (images[0], labels[0], images[1], labels[1]), tuple(names)


def find_dataset(name, download):
    """A named set from the first place that has it (module docstring), or a
    `UserError` naming every place tried and why, and how to provide the files."""
    spec = _SPECS[name]
    tried = ["data_dir (not given)"]
    for place in _places(name, spec, download):
        try:
            arrays, names, source = place()
        except _NotHere as e:
            tried.append(str(e))
            continue
        return *_conform(name, spec, arrays, names), source
    raise UserError(
        f"no {name} data found; tried "
        + "; ".join(tried)
        + ". "
        + spec.offline.format(cache=keras_cache_dir())
    )
