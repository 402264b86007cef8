"""The IDX file format: reading (gzip-compressed or not), parsing, writing, and the
four-file folder layout that a `data_dir` holds (`IDX_FILES`), with its checks.

Files are uint8 only: grayscale images `(N, H, W)`, colour images `(N, H, W, C)`,
labels `(N,)`. Every problem is a `UserError` naming the file and what is wrong.
"""

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from keras_mlp.errors import UserError

# The standard file names; Fashion-MNIST, MNIST and the keras cache all use them.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
# The most dimensions a file here has: colour images (N, H, W, C).
MAX_DIMENSIONS = 4


def read_bytes(path, limit=-1, gzipped=None):
    """The bytes of `path` (decompressed when gzipped: by default, when its name ends
    in .gz), at most `limit` of them."""
    path = Path(path)
    if gzipped is None:
        gzipped = path.suffix == ".gz"
    try:
        with (gzip.open if gzipped else open)(path, "rb") as f:
            return f.read(limit)
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise UserError(f"{path}: truncated or corrupt gzip data ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None


def parse_idx(raw, path):
    """The array an IDX file's bytes hold; `path` names it in errors."""
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UserError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise UserError(
            f"{path}: IDX element type 0x{raw[2]:02x} is not supported (only uint8, 0x08)"
        )
    ndim = raw[3]
    if ndim > MAX_DIMENSIONS:  # (numpy itself stops at 64)
        raise UserError(
            f"{path}: IDX header has {ndim} dimensions; these files have 1 (labels (N,)) "
            f"to {MAX_DIMENSIONS} (colour images (N, H, W, C))"
        )
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise UserError(f"{path}: IDX header is truncated or has no dimensions")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    # Python ints: a product of four 32-bit sizes overflows numpy's int64 (and wraps).
    expected = header + math.prod(shape)
    if len(raw) != expected:
        raise UserError(
            f"{path}: IDX data is {len(raw)} bytes but its header {shape} needs {expected}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def read_idx(path):
    """Reads one IDX file (gzip-compressed when its name ends in .gz) into an array.

    Raises:
        UserError: naming the file and what is wrong with it.
    """
    return parse_idx(read_bytes(path), Path(path))


def write_idx(path, array):
    """Writes a uint8 array as an IDX file (gzip-compressed when `path` ends in .gz).

    The inverse of `read_idx`: a way to bring any image set, grayscale `(N, H, W)` or
    colour `(N, H, W, 3)`, into the layout that `load_dataset(data_dir=...)` reads.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise UserError(f"{path}: IDX files here hold uint8 data. Received dtype {array.dtype}")
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def _find_idx_file(directory, name):
    """The path of `name` in `directory`, accepting an uncompressed copy too; both
    present is refused (they may differ, and neither is clearly the one meant)."""
    found = [p for p in (directory / name, directory / name.removesuffix(".gz")) if p.exists()]
    if len(found) == 2:
        raise UserError(
            f"data directory {directory} holds both {found[0].name} and {found[1].name}; "
            "keep one of them"
        )
    return found[0] if found else None


def _check_split(images, labels, image_path, label_path):
    """One split's images `(N, H, W)` or `(N, H, W, 1 or 3)` and labels `(N,)`, checked;
    single-channel images as `(N, H, W)`."""
    if images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[-1] not in (1, 3)):
        raise UserError(
            f"{image_path}: expected 3 dimensions (N, H, W) or 4 (N, H, W, 1 or 3), "
            f"found shape {images.shape}"
        )
    if labels.ndim != 1:
        raise UserError(f"{label_path}: expected 1 dimension (N,), found shape {labels.shape}")
    if len(images) != len(labels):
        raise UserError(
            f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels"
        )
    if len(images) == 0:
        raise UserError(f"{image_path}: holds no images")
    return images[..., 0] if images.ndim == 4 and images.shape[-1] == 1 else images


def read_idx_dir(directory):
    """Reads and validates the four standard IDX files in `directory`.

    Returns:
        `(train_images, train_labels, test_images, test_labels)`.

    Raises:
        UserError: when a file is missing, corrupt, or inconsistent with the others.
    """
    directory = Path(directory)
    try:
        if not directory.is_dir():
            raise UserError(f"data directory {directory} does not exist or is not a directory")
        paths = {key: _find_idx_file(directory, name) for key, name in IDX_FILES.items()}
    except PermissionError as e:  # stat() of a path this user may not look into
        raise UserError(f"data directory {directory} cannot be read ({e.strerror})") from None
    missing = [IDX_FILES[key] for key, path in paths.items() if path is None]
    if missing:
        raise UserError(f"data directory {directory} lacks {', '.join(missing)}")
    arrays = {key: read_idx(path) for key, path in paths.items()}
    for split in ("train", "test"):
        arrays[f"{split}_images"] = _check_split(
            arrays[f"{split}_images"],
            arrays[f"{split}_labels"],
            paths[f"{split}_images"],
            paths[f"{split}_labels"],
        )
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise UserError(
            f"train images are {arrays['train_images'].shape[1:]} but test images are "
            f"{arrays['test_images'].shape[1:]} in {directory}"
        )
    num_classes = int(arrays["train_labels"].max()) + 1
    if arrays["test_labels"].max() >= num_classes:
        raise UserError(
            f"{paths['test_labels']}: label {arrays['test_labels'].max()} is outside the "
            f"training labels' range 0..{num_classes - 1}"
        )
    return tuple(arrays[key] for key in IDX_FILES)
