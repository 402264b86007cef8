"""The named sets and the search for them (the order is in `keras_mlp.sources`):
each set's class names and how its source's labels and images map to ours, and
`find_dataset`, which asks each place in turn and conforms what the first one has."""

import dataclasses

import numpy as np

from keras_mlp.errors import UserError
from keras_mlp.idx import IDX_FILES
from keras_mlp.sources.download import download_keras_set
from keras_mlp.sources.keras_cache import from_keras_cache, keras_cache_dir
from keras_mlp.sources.place import NotHere
from keras_mlp.sources.published import KERAS_SETS
from keras_mlp.sources.tfds_copy import from_tfds

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


@dataclasses.dataclass(frozen=True)
class _Spec:
    """A named set: its tensorflow-datasets name, its keras.datasets files (if any), and
    how its source's labels and images map to ours.

    Attributes:
        tfds_name: The name tensorflow-datasets knows it by.
        keras: Whether keras.datasets has it (its files: `KERAS_SETS[name]`).
        label_names: The class names when the source has none of its own (the
            keras files of fashion_mnist and mnist, tfds metadata that only numbers
            the classes).
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
    or raising `NotHere`."""
    if spec.keras:
        return [
            lambda: from_keras_cache(KERAS_SETS[name]),
            lambda: from_tfds(spec.tfds_name, download=False),
            lambda: download_keras_set(KERAS_SETS[name]),
        ]
    return [lambda: from_tfds(spec.tfds_name, download=download)]


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
    """A named set from the first place that has it (the order in `keras_mlp.sources`),
    or a `UserError` naming every place tried and why, and how to provide the files."""
    spec = _SPECS[name]
    tried = ["data_dir (not given)"]
    for place in _places(name, spec, download):
        try:
            arrays, names, source = place()
        except NotHere as e:
            tried.append(str(e))
            continue
        return *_conform(name, spec, arrays, names), source
    raise UserError(
        f"no {name} data found; tried "
        + "; ".join(tried)
        + ". "
        + spec.offline.format(cache=keras_cache_dir())
    )
