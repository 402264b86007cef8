"""The files `keras.datasets` downloads for the named sets, as their publishers
distribute them (URL, size, SHA-256, IDX magic number), where the keras cache keeps
them, and `verify`, the check every cached or downloaded file passes before use."""

import dataclasses
import hashlib
import struct
from collections.abc import Callable

from keras_mlp.errors import UserError
from keras_mlp.idx import IDX_FILES, read_bytes
from keras_mlp.sources.readers import read_cifar10_archive, read_idx_set, read_mnist_npz


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


@dataclasses.dataclass(frozen=True)
class KerasFiles:
    """How `keras.datasets` keeps a set: `files` in `$KERAS_HOME/datasets/<folder>`,
    and `read`, which turns their verified contents (name -> bytes) into
    `((train_x, train_y, test_x, test_y), label_names)` (`keras_mlp.sources.readers`)."""

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
        read_idx_set,
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
        read_mnist_npz,
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
        read_cifar10_archive,
    ),
}
