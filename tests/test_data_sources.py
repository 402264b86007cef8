"""Where the named datasets come from: the keras cache, the checks against the
published files, downloads, tensorflow-datasets (through its own `mock_data`), the
offline failure and its time bound, and a colour set through training, export and
predict.

Nothing here sends traffic off this machine: every download URL (keras' and the
tensorflow-datasets builders') points at 127.0.0.1, proxy variables are cleared,
and the one test that keeps the real URL runs in a network namespace that has no
network at all (`unshare -rn`).
"""

import dataclasses
import functools
import gzip
import hashlib
import http.server
import inspect
import io
import json
import os
import pickle
import re
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from cli_util import REPO, error_lines, run_main, tool_env
from PIL import Image
from tensorflow_datasets.image_classification import mnist as tfds_mnist

from keras_mlp import cli, predict, train
from keras_mlp import data as data_lib
from keras_mlp import idx as idx_lib
from keras_mlp.errors import UserError
from keras_mlp.names import DATASETS
from keras_mlp.sources import network
from keras_mlp.sources.find import CIFAR10_LABELS, FASHION_MNIST_LABELS
from keras_mlp.sources.published import KERAS_SETS

REAL_DATA_DIR = os.environ.get("KERAS_MLP_FASHION_MNIST_DIR")
PROXIES = ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy")


def closed_port():
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def hermetic(monkeypatch, tmp_path):
    """An empty keras cache and tfds folder; every download URL at a closed local port."""
    for name in PROXIES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    nowhere = f"http://127.0.0.1:{closed_port()}/"
    set_origin(monkeypatch, nowhere)
    for builder in (tfds_mnist.KMNIST, tfds_mnist.EMNIST):
        monkeypatch.setattr(builder, "URL", f"{nowhere}{builder.__name__.lower()}/")
    return nowhere


def set_origin(monkeypatch, origin):
    """Every keras set's files downloaded from `origin` (a URL ending in /)."""
    for name, keras_files in list(KERAS_SETS.items()):
        files = tuple(dataclasses.replace(f, url=origin + f.name) for f in keras_files.files)
        monkeypatch.setitem(KERAS_SETS, name, dataclasses.replace(keras_files, files=files))


def publish(monkeypatch, name, contents):
    """Makes `contents` (file name -> bytes, decompressed for .gz files) the published
    files of keras set `name`: their sizes and SHA-256, computed here."""
    keras_files = KERAS_SETS[name]
    files = tuple(
        dataclasses.replace(
            f, size=len(contents[f.name]), sha256=hashlib.sha256(contents[f.name]).hexdigest()
        )
        for f in keras_files.files
    )
    monkeypatch.setitem(KERAS_SETS, name, dataclasses.replace(keras_files, files=files))


def idx_bytes(array):
    """An IDX file's bytes, written here from the format (not with keras_mlp.idx)."""
    array = np.asarray(array, np.uint8)
    return (
        bytes([0, 0, 8, array.ndim])
        + struct.pack(f">{array.ndim}I", *array.shape)
        + array.tobytes()
    )


def small_fashion_mnist(seed=0):
    """A small set in Fashion-MNIST's files: `(arrays, {file name: IDX content})`."""
    rng = np.random.default_rng(seed)
    arrays = (
        rng.integers(0, 256, (40, 6, 5), dtype=np.uint8),
        (np.arange(40) % 10).astype(np.uint8),
        rng.integers(0, 256, (20, 6, 5), dtype=np.uint8),
        (np.arange(20) % 10).astype(np.uint8),
    )
    names = list(idx_lib.IDX_FILES.values())
    return arrays, {name: idx_bytes(a) for name, a in zip(names, arrays, strict=True)}


def write_files(folder, contents, gzipped=True):
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in contents.items():
        if gzipped and name.endswith(".gz"):
            with gzip.open(folder / name, "wb") as f:
                f.write(content)
        else:
            (folder / name).write_bytes(content)
    return folder


def keras_datasets():
    return Path(os.environ["KERAS_HOME"]) / "datasets"


def tree(root):
    """Every path under `root`, relative (None when it does not exist)."""
    root = Path(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else None


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve(monkeypatch):
    """`serve(folder)`: an HTTP server on 127.0.0.1 for `folder`, made every keras set's
    origin; returns its base URL. Stopped after the test."""
    servers = []

    def start(folder):
        handler = functools.partial(_Quiet, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        origin = f"http://127.0.0.1:{server.server_port}/"
        set_origin(monkeypatch, origin)
        return origin

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def load_offline_error(name="fashion_mnist", **kwargs):
    """`(message, seconds)` of a load that must fail."""
    start = time.monotonic()
    with pytest.raises(UserError) as raised:
        data_lib.load_dataset(name, **kwargs)
    return str(raised.value), time.monotonic() - start


# --- The keras cache -----------------------------------------------------------------


def test_fashion_mnist_from_the_keras_cache_layout(monkeypatch):
    arrays, contents = small_fashion_mnist()
    publish(monkeypatch, "fashion_mnist", contents)
    folder = write_files(keras_datasets() / "fashion-mnist", contents)
    data = data_lib.load_dataset("fashion_mnist")
    for got, want in zip(
        (data.train_images, data.train_labels, data.val_images, data.val_labels),
        arrays,
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)
    assert data.label_names == FASHION_MNIST_LABELS
    assert data.source == str(folder)
    assert not Path(os.environ["TFDS_DATA_DIR"]).exists()  # found before tfds was asked


def test_mnist_from_the_keras_npz(monkeypatch):
    rng = np.random.default_rng(1)
    x_train, x_test = (rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for n in (30, 10))
    y_train, y_test = (np.arange(n, dtype=np.uint8) % 10 for n in (30, 10))
    buffer = io.BytesIO()
    np.savez(buffer, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    publish(monkeypatch, "mnist", {"mnist.npz": buffer.getvalue()})
    write_files(keras_datasets(), {"mnist.npz": buffer.getvalue()})
    data = data_lib.load_dataset("mnist")
    np.testing.assert_array_equal(data.train_images, x_train)
    np.testing.assert_array_equal(data.val_labels, y_test)
    assert data.label_names == tuple("0123456789")
    assert data.source == str(keras_datasets() / "mnist.npz")


def cifar_archive(meta_names, train_per_batch=4, test=6, seed=2, extra=None):
    """A CIFAR-10 python archive in the published layout (pickled batches), small."""
    rng = np.random.default_rng(seed)
    members = {}
    for i in range(1, 6):
        members[f"data_batch_{i}"] = {
            b"data": rng.integers(0, 256, (train_per_batch, 3072), dtype=np.uint8),
            b"labels": [int(v) for v in rng.integers(0, 10, train_per_batch)],
        }
    members["test_batch"] = {
        b"data": rng.integers(0, 256, (test, 3072), dtype=np.uint8),
        b"labels": list(range(test)),
    }
    members["batches.meta"] = {b"label_names": [n.encode() for n in meta_names]}
    members.update(extra or {})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, value in members.items():
            payload = value if isinstance(value, bytes) else pickle.dumps(value, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return members, buffer.getvalue()


def test_cifar10_from_the_keras_archive_keeps_the_channel_axis(monkeypatch):
    meta_names = [f"class{i}" for i in range(10)]  # the names come from batches.meta
    members, archive = cifar_archive(meta_names)
    name = KERAS_SETS["cifar10"].files[0].name
    publish(monkeypatch, "cifar10", {name: archive})
    write_files(keras_datasets(), {name: archive})
    data = data_lib.load_dataset("cifar10")
    assert data.train_images.shape == (20, 32, 32, 3) and data.train_images.dtype == np.uint8
    assert data.input_shape == (32, 32, 3)
    # CIFAR rows are the red plane, then green, then blue, each row-major.
    row = members["data_batch_2"][b"data"][1]
    image = data.train_images[4 + 1]
    for y, x, c in ((0, 0, 0), (3, 7, 1), (31, 30, 2)):
        assert image[y, x, c] == row[c * 1024 + y * 32 + x]
    np.testing.assert_array_equal(data.val_labels, np.arange(6))
    assert data.label_names == tuple(meta_names)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("true",))


def test_cifar10_archive_may_hold_arrays_only_never_code(monkeypatch):
    _, archive = cifar_archive(
        CIFAR10_LABELS, extra={"test_batch": pickle.dumps(_RunsCode(), protocol=2)}
    )
    name = KERAS_SETS["cifar10"].files[0].name
    publish(monkeypatch, "cifar10", {name: archive})
    write_files(keras_datasets(), {name: archive})
    message, _ = load_offline_error("cifar10")
    assert "system is not allowed in a dataset file" in message


@pytest.mark.parametrize(
    "damage, reason",
    [
        ("flip_a_byte", r"SHA-256 decompressed [0-9a-f]{16}\.\.\. is not the published"),
        ("truncate", r"20 bytes decompressed, the published file has 28"),
        ("magic", r"IDX magic number 2049, the published file's is 2051"),
        ("not_gzip", r"truncated or corrupt gzip data"),
    ],
)
def test_a_damaged_cached_file_is_not_used(monkeypatch, damage, reason):
    _, contents = small_fashion_mnist()
    publish(monkeypatch, "fashion_mnist", contents)
    target = idx_lib.IDX_FILES["test_labels" if damage == "truncate" else "train_images"]
    good = contents[target]
    bad = {
        "flip_a_byte": lambda: good[:20] + bytes([good[20] ^ 1]) + good[21:],
        "truncate": lambda: good[:20],
        "magic": lambda: good[:3] + b"\x01" + good[4:],
        "not_gzip": lambda: good,
    }[damage]()
    folder = write_files(keras_datasets() / "fashion-mnist", {**contents, target: bad})
    if damage == "not_gzip":
        (folder / target).write_bytes(good)  # raw IDX bytes under a .gz name
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    message, _ = load_offline_error()
    assert f"keras cache ({folder / target}: " in message
    assert re.search(reason, message), message
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # left for the user


def test_published_hashes_are_keras_own(monkeypatch):
    """MNIST's and CIFAR-10's sizes and hashes are the ones keras' own loaders check."""
    from keras.src.datasets import cifar10, mnist

    monkeypatch.undo()  # the real table, URLs included
    for name, module in (("mnist", mnist), ("cifar10", cifar10)):
        (published,) = KERAS_SETS[name].files
        source = inspect.getsource(module)
        assert published.sha256 in source
        assert published.url.rsplit("/", 1)[1] in source


@pytest.mark.skipif(not REAL_DATA_DIR, reason="set KERAS_MLP_FASHION_MNIST_DIR")
def test_real_fashion_mnist_passes_the_published_checks():
    folder = keras_datasets() / "fashion-mnist"
    folder.mkdir(parents=True)
    for name in idx_lib.IDX_FILES.values():
        (folder / name).symlink_to(Path(REAL_DATA_DIR) / name)
    data = data_lib.load_dataset("fashion_mnist")
    assert data.source == str(folder)
    assert data.train_images.shape == (60000, 28, 28)
    assert abs(float(data.train_images.mean() / 255) - 0.2860) < 1e-4


# --- Downloads into the keras cache (from a server on 127.0.0.1) ---------------------


def test_a_download_fills_the_keras_cache_once(monkeypatch, tmp_path, serve):
    arrays, contents = small_fashion_mnist()
    publish(monkeypatch, "fashion_mnist", contents)
    serve(write_files(tmp_path / "published", contents))
    data = data_lib.load_dataset("fashion_mnist")
    np.testing.assert_array_equal(data.train_images, arrays[0])
    folder = keras_datasets() / "fashion-mnist"
    assert tree(keras_datasets()) == ["fashion-mnist"] + [
        f"fashion-mnist/{n}" for n in sorted(contents)
    ]
    for name, content in contents.items():
        assert gzip.decompress((folder / name).read_bytes()) == content
    set_origin(monkeypatch, f"http://127.0.0.1:{closed_port()}/")  # now offline: the cache
    assert data_lib.load_dataset("fashion_mnist").source == str(folder)


def test_a_damaged_cached_file_is_replaced_by_a_verified_download(monkeypatch, tmp_path, serve):
    _, contents = small_fashion_mnist()
    publish(monkeypatch, "fashion_mnist", contents)
    target = idx_lib.IDX_FILES["train_labels"]
    folder = write_files(keras_datasets() / "fashion-mnist", {**contents, target: b"\0\0\x08\x01"})
    serve(write_files(tmp_path / "published", contents))
    data = data_lib.load_dataset("fashion_mnist")
    assert data.source == str(folder)
    assert gzip.decompress((folder / target).read_bytes()) == contents[target]


def test_a_download_that_differs_from_the_published_file_leaves_nothing(
    monkeypatch, tmp_path, serve
):
    _, contents = small_fashion_mnist()
    publish(monkeypatch, "fashion_mnist", contents)
    damaged = dict(contents)
    damaged[idx_lib.IDX_FILES["test_images"]] = contents[idx_lib.IDX_FILES["test_images"]][:-1]
    origin = serve(write_files(tmp_path / "published", damaged))
    message, _ = load_offline_error()
    assert f"download of {origin}t10k-images-idx3-ubyte.gz (" in message
    assert "the published file has" in message
    assert not keras_datasets().exists()  # no partial file, staging folder or empty folder


def test_offline_fails_fast_naming_every_place_and_leaves_nothing(hermetic):
    for name, cache in (
        ("fashion_mnist", "fashion-mnist"),
        ("mnist", "mnist.npz"),
        ("cifar10", "cifar-10-batches-py-target_archive"),
    ):
        message, seconds = load_offline_error(name)
        assert seconds < 3, seconds
        assert "\n" not in message
        tfds_dir = Path(os.environ["TFDS_DATA_DIR"])
        assert message.startswith(
            f"no {name} data found; tried data_dir (not given); "
            f"keras cache {keras_datasets() / cache} (not found); "
            f"tensorflow-datasets {tfds_dir / name} (not prepared); download from {hermetic}"
        ), message
        assert "Connection refused" in message
        assert "data_dir=DIR" in message
        assert not keras_datasets().exists() and not tfds_dir.exists()


def test_an_unanswered_name_lookup_is_bounded(monkeypatch):
    """A resolver that never answers (the machine's DNS is unreachable): the download
    gives up after CONNECT_TIMEOUT, not the resolver's own minutes."""
    released = threading.Event()
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if host == "datasets.invalid":  # never sent anywhere: this waits, then fails
            released.wait(60)
            raise socket.gaierror(-3, "Temporary failure in name resolution")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(network, "CONNECT_TIMEOUT", 0.3)
    set_origin(monkeypatch, "http://datasets.invalid/")
    try:
        message, seconds = load_offline_error()
    finally:
        released.set()
    assert seconds < 2, seconds
    assert "(cannot resolve datasets.invalid within 0.3 s)" in message


def test_a_server_that_never_answers_is_bounded(monkeypatch):
    """Connected, then nothing: the download gives up after READ_TIMEOUT and leaves nothing."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # the kernel accepts connections; nobody ever answers them
    monkeypatch.setattr(network, "READ_TIMEOUT", 0.5)
    set_origin(monkeypatch, f"http://127.0.0.1:{listener.getsockname()[1]}/")
    try:
        message, seconds = load_offline_error()
    finally:
        listener.close()
    assert seconds < 3, seconds
    assert "timed out" in message
    assert not keras_datasets().exists()


def test_a_killed_download_staging_folder_is_removed():
    finished = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead = int(finished.stdout)
    host = socket.gethostname()
    datasets = keras_datasets()
    killed = datasets / f".keras_mlp-download-{host}-{dead}.tmp"
    elsewhere = datasets / f".keras_mlp-download-otherhost-{dead}.tmp"
    for folder in (killed, elsewhere):
        folder.mkdir(parents=True)
        (folder / "train-images-idx3-ubyte.gz").write_bytes(b"partial")
    load_offline_error()
    assert not killed.exists()
    assert elsewhere.exists()  # another machine's download: not ours to judge


# --- tensorflow-datasets -----------------------------------------------------------------


@pytest.fixture
def prepared(monkeypatch):
    """tensorflow-datasets' own mock_data (the real loading code, fake records) for a
    copy that counts as prepared."""
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    with tfds.testing.mock_data(num_examples=24):
        yield


def test_kmnist_through_tensorflow_datasets(prepared):
    data = data_lib.load_dataset("kmnist")
    assert data.train_images.shape == (24, 28, 28) and data.train_images.dtype == np.uint8
    names = tfds.builder("kmnist").info.features["label"].names  # the dataset's metadata
    assert (
        data.label_names
        == tuple(names)
        == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    )
    assert data.source == f"tensorflow-datasets {Path(os.environ['TFDS_DATA_DIR']) / 'kmnist'}"
    assert set(np.unique(data.train_labels)) <= set(range(10))


def test_cifar10_from_a_prepared_tensorflow_datasets_copy(prepared):
    data = data_lib.load_dataset("cifar10")  # the keras cache is empty: tfds is next
    assert data.train_images.shape == (24, 32, 32, 3)
    assert data.label_names == CIFAR10_LABELS
    assert data.source.startswith("tensorflow-datasets ")
    assert not keras_datasets().exists()  # found before any download


def emnist_letters_records(labels):
    """`as_dataset_fn` for mock_data: EMNIST-style records, one white pixel at row 0,
    column 5 (EMNIST stores images transposed), with the given source labels."""

    def as_dataset(self, split, decoders=None, read_config=None, shuffle_files=False):
        images = np.zeros((len(labels), 28, 28, 1), np.uint8)
        images[:, 0, 5, 0] = 255
        return tf.data.Dataset.from_tensor_slices(
            {"image": images, "label": np.asarray(labels, np.int64)}
        )

    return as_dataset


def test_emnist_letters_labels_from_0_named_by_letter_and_upright(monkeypatch):
    monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
    with tfds.testing.mock_data(as_dataset_fn=emnist_letters_records(range(1, 27))):
        data = data_lib.load_dataset("emnist/letters")
    np.testing.assert_array_equal(data.train_labels, np.arange(26))  # tfds has 1..26
    assert data.label_names == tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    assert np.argwhere(data.train_images[0]).tolist() == [[5, 0]]  # transposed back
    with tfds.testing.mock_data(as_dataset_fn=emnist_letters_records([1, 27])):
        with pytest.raises(UserError, match=r"label 27 is outside its classes 1\.\.26"):
            data_lib.load_dataset("emnist/letters")


def test_tfds_set_without_download_fails_fast_naming_the_flag():
    message, seconds = load_offline_error("kmnist")
    tfds_dir = Path(os.environ["TFDS_DATA_DIR"])
    assert seconds < 3, seconds
    assert message.startswith(
        f"no kmnist data found; tried data_dir (not given); tensorflow-datasets "
        f"{tfds_dir / 'kmnist'} (not prepared). Pass download=True"
    ), message
    assert not tfds_dir.exists()


def test_tfds_download_offline_is_bounded_and_leaves_nothing(hermetic):
    message, seconds = load_offline_error("emnist/letters", download=True)
    assert seconds < 3, seconds
    assert (
        f"(not prepared; download: cannot connect to 127.0.0.1:{hermetic.split(':')[2][:-1]}"
        in message
    )
    assert not Path(os.environ["TFDS_DATA_DIR"]).exists()


def test_a_failed_tfds_download_removes_its_partial_files(monkeypatch, tmp_path, serve):
    """The real tensorflow-datasets download of kmnist from a server that has nothing:
    it fails at once, and what it left in TFDS_DATA_DIR (downloads/*.tmp.*, an empty
    kmnist folder) is removed; what was there before stays."""
    (tmp_path / "empty").mkdir()
    origin = serve(tmp_path / "empty")
    monkeypatch.setattr(tfds_mnist.KMNIST, "URL", f"{origin}kmnist/")
    tfds_dir = Path(os.environ["TFDS_DATA_DIR"])
    (tfds_dir / "other").mkdir(parents=True)
    (tfds_dir / "other" / "keep.txt").write_text("a prepared set of the user's")
    message, seconds = load_offline_error("kmnist", download=True)
    assert seconds < 10, seconds
    assert "(download failed: DownloadError: Failed to get url" in message
    assert "HTTP code: 404" in message
    assert tree(tfds_dir) == ["other", "other/keep.txt"]


class _Unavailable(_Quiet):
    def do_GET(self):
        self.send_error(503)


def test_tfds_download_retries_are_few(monkeypatch, tmp_path):
    """A source answering 503 Service Unavailable: tensorflow-datasets' own 10 retries
    with back-off would take minutes; the download gives up within seconds."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    monkeypatch.setattr(tfds_mnist.KMNIST, "URL", f"http://127.0.0.1:{server.server_port}/kmnist/")
    try:
        message, seconds = load_offline_error("kmnist", download=True)
    finally:
        server.shutdown()
        server.server_close()
    assert seconds < 10, seconds
    assert "(download failed: " in message
    assert not Path(os.environ["TFDS_DATA_DIR"]).exists()


def test_tfds_download_allowed_prepares_then_loads(monkeypatch, capsys):
    listener = socket.socket()  # the source's host answers (the download itself is mocked)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    monkeypatch.setattr(
        tfds_mnist.KMNIST, "URL", f"http://127.0.0.1:{listener.getsockname()[1]}/kmnist/"
    )
    try:
        with tfds.testing.mock_data(num_examples=8):
            data = data_lib.load_dataset("kmnist", download=True)
    finally:
        listener.close()
    assert data.train_images.shape == (8, 28, 28)
    assert "Downloading kmnist with tensorflow-datasets" in capsys.readouterr().out


# --- Names, flags, and a colour set end to end -----------------------------------------------


def test_dataset_flag_takes_every_name_including_the_slash():
    assert DATASETS == (
        "fashion_mnist",
        "mnist",
        "kmnist",
        "emnist/letters",
        "cifar10",
        "synthetic",
    )
    for name in DATASETS:
        flag_values = cli.flags.FlagValues()
        cli.define_run_flags(flag_values)
        flag_values(["prog", f"--dataset={name}"])
        assert cli.config_from_flags(flag_values).dataset == name
    assert "emnist/letters" in flag_values["dataset"].help


def test_colour_set_trains_exports_and_predicts(prepared, tmp_path):
    """A mocked cifar10: (32, 32, 3) through the model, the export's uint8 [N, 32, 32, 3]
    signature, and predict with RGB images, a colour IDX file, and refusals."""
    model_dir = tmp_path / "run"
    result = run_main(
        train.main,
        "--dataset=cifar10",
        "--epochs=1",
        "--batch_size=8",
        "--hidden_units=16",
        "--image_summaries",
        f"--model_dir={model_dir}",
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["data"]["input_shape"] == [32, 32, 3]
    assert metrics["data"]["label_names"] == list(CIFAR10_LABELS)
    serve_fn = tf.saved_model.load(str(model_dir / "export")).signatures["serving_default"]
    spec = serve_fn.structured_input_signature[1]["images"]
    assert spec.shape.as_list() == [None, 32, 32, 3] and spec.dtype == tf.uint8

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(tmp_path / "gray.png")
    idx_lib.write_idx(
        tmp_path / "colour-images-idx3-ubyte.gz",
        rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8),
    )
    result = run_main(
        predict.main,
        f"--model_dir={model_dir}",
        "--top_k=1",
        tmp_path / "rgb.png",
        tmp_path / "colour-images-idx3-ubyte.gz",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "rgb.png",
        "colour-images-idx3-ubyte.gz[0]",
        "colour-images-idx3-ubyte.gz[1]",
    ]
    assert all(line.split(": ")[1].rsplit(" ", 1)[0] in CIFAR10_LABELS for line in lines)
    refused = run_main(predict.main, f"--model_dir={model_dir}", tmp_path / "gray.png")
    assert refused.returncode == 2
    assert error_lines(refused) == [
        f"error: {tmp_path / 'gray.png'}: image mode L is grayscale, the model takes colour "
        "(RGB); pass --resize to convert"
    ]
    resized = run_main(
        predict.main,
        f"--model_dir={model_dir}",
        "--resize",
        tmp_path / "gray.png",
        tmp_path / "big.png",
    )
    assert resized.returncode == 0, resized.stderr
    assert len(resized.stdout.strip().splitlines()) == 2


@pytest.mark.parametrize("model", ["scratch", "concise"])
def test_models_flatten_colour_images(model):
    from keras_mlp.models import build_model

    net = build_model(model, (32, 32, 3), 10, hidden_units=(8,))
    assert net(np.zeros((2, 32, 32, 3), np.float32)).shape == (2, 10)
    assert net.count_params() == 32 * 32 * 3 * 8 + 8 + 8 * 10 + 10


# --- The newcomer's command with no network at all ---------------------------------------------


def _has_unshare():
    try:
        return (
            subprocess.run(["unshare", "-rn", "true"], capture_output=True, timeout=10).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _has_unshare(), reason="needs unshare -rn (a network namespace)")
def test_train_without_data_and_without_a_network_fails_in_seconds(tmp_path):
    """`python -m keras_mlp.train` with the real download URL, in a network namespace
    with no network (nothing can leave it): exit 2, one line, within seconds."""
    env = tool_env({"KERAS_HOME": str(tmp_path / "keras"), "TFDS_DATA_DIR": str(tmp_path / "tfds")})
    for name in PROXIES:
        env.pop(name, None)
        env.pop(name.upper(), None)
    start = time.monotonic()
    result = subprocess.run(
        [
            "unshare",
            "-rn",
            sys.executable,
            "-m",
            "keras_mlp.train",
            f"--model_dir={tmp_path / 'run'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env,
    )
    seconds = time.monotonic() - start
    assert result.returncode == 2, result.stderr
    assert seconds < 30, seconds  # TensorFlow's start included
    assert result.stderr.strip().splitlines() == error_lines(result), result.stderr
    (line,) = error_lines(result)
    assert line.startswith(
        "error: no fashion_mnist data found; tried data_dir (not given); keras cache"
    )
    assert "download from https://storage.googleapis.com/tensorflow/tf-keras-datasets/" in line
    assert "--data_dir=DIR" in line
    assert not (tmp_path / "keras" / "datasets").exists() and not (tmp_path / "tfds").exists()
    assert not (tmp_path / "run").exists()
