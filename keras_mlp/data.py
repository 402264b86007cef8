"""Datasets in memory, and the host copies that the feeds (`keras_mlp.feeds`) gather
every replica's batches from.

A named set comes from `data_dir` when given (four IDX files, any image set, read
with `keras_mlp.idx`), else from the search in `keras_mlp.sources`: the keras cache,
then a prepared tensorflow-datasets copy, then a download. "synthetic" is generated
here.

Images stay in memory as uint8 `(N, H, W)` (grayscale) or `(N, H, W, C)` (colour);
the feeds gather batches by index and scale them to float32 in [0, 1].
"""

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_mlp.checks import check_accepted, check_fraction
from keras_mlp.errors import UserError
from keras_mlp.idx import read_idx_dir
from keras_mlp.names import DATASETS
from keras_mlp.sources.find import FASHION_MNIST_LABELS, find_dataset

# sha256 of Fashion-MNIST's 60000 training labels (uint8, in file order): how a
# data_dir is recognised as Fashion-MNIST, whose class names then apply.
FASHION_MNIST_TRAIN_LABELS_SHA256 = (
    "657fbd221bfc9f4198cc14b5619cc33ec57c58dd0e47af4d99d6650759e869a7"
)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """An image-classification set held in memory.

    Attributes:
        name: The dataset's name, e.g. `"fashion_mnist"`.
        train_images, train_labels: uint8 `(N, H, W)` (grayscale) or `(N, H, W, C)`
            (colour) images and int32 `(N,)` labels in `0..num_classes-1`.
        val_images, val_labels: The split used for validation.
        validation: `"test"` (the test split, as in the chapter) or `"holdout"`
            (a fraction of the training set held out, so that model selection
            never sees the test split).
        label_names: One name per class.
        source: Where the data came from, for logs and metrics.json.
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    validation: str
    label_names: tuple
    source: str

    @property
    def input_shape(self):
        return self.train_images.shape[1:]

    @property
    def num_classes(self):
        return len(self.label_names)

    def identity(self):
        """What makes these the same data for a resumed run: the name, the shapes and split
        sizes, and a SHA-256 of every array (about 0.1 s for Fashion-MNIST). A resume on
        other data would continue a data order and a step count that no longer fit."""
        digest = hashlib.sha256()
        for array in (self.train_images, self.train_labels, self.val_images, self.val_labels):
            digest.update(str(array.shape).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "train_examples": len(self.train_images),
            "validation_examples": len(self.val_images),
            "validation": self.validation,
            "sha256": digest.hexdigest(),
        }


def synthetic_arrays(num_train=2000, num_test=500, image_shape=(12, 12), num_classes=5, seed=1234):
    """A small, deterministic, learnable image set: noisy copies of one prototype per class."""
    rng = np.random.default_rng(seed)
    prototypes = rng.uniform(0.0, 1.0, size=(num_classes, *image_shape))

    def sample(n):
        labels = rng.integers(0, num_classes, size=n)
        noise = rng.uniform(0.0, 1.0, size=(n, *image_shape))
        images = 0.5 * prototypes[labels] + 0.5 * noise
        return np.round(255 * images).astype(np.uint8), labels.astype(np.uint8)

    return (*sample(num_train), *sample(num_test))


def _is_fashion_mnist(train_labels):
    """Whether a data_dir's training labels are Fashion-MNIST's, label for label
    (another 10-class set, such as MNIST with the very same sizes, is not)."""
    labels = np.asarray(train_labels)
    return (
        labels.shape == (60000,)
        and hashlib.sha256(labels.astype(np.uint8).tobytes()).hexdigest()
        == FASHION_MNIST_TRAIN_LABELS_SHA256
    )


def _data_dir_label_names(name, data_dir, train_labels):
    """A data_dir's class names: from `labels.txt` beside the data, else Fashion-MNIST's
    (for Fashion-MNIST itself only), else the class index."""
    num_classes = int(train_labels.max()) + 1
    labels_file = Path(data_dir) / "labels.txt"
    if labels_file.exists():
        try:
            # utf-8-sig: a byte-order mark (Windows editors write one) is not part of a name.
            text = labels_file.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise UserError(
                f"{labels_file}: cannot be read as UTF-8 text, one class name per line ({reason})"
            ) from None
        names = tuple(line.strip() for line in text.splitlines() if line.strip())
        if len(names) != num_classes:
            raise UserError(
                f"{labels_file}: has {len(names)} names but the data has {num_classes} classes"
            )
        return names
    if name == "fashion_mnist" and _is_fashion_mnist(train_labels):
        return FASHION_MNIST_LABELS
    return tuple(str(i) for i in range(num_classes))


def _arrays(name, data_dir, download):
    """`((train_x, train_y, test_x, test_y), label_names, source)` of a named set."""
    check_accepted("dataset", name, DATASETS)
    if name == "synthetic":
        arrays = synthetic_arrays()
        return arrays, tuple(str(i) for i in range(int(arrays[1].max()) + 1)), "synthetic"
    if data_dir:
        arrays = read_idx_dir(data_dir)
        return arrays, _data_dir_label_names(name, data_dir, arrays[1]), str(data_dir)
    return find_dataset(name, download)


def load_dataset(
    name="fashion_mnist", *, data_dir=None, validation_split=0.0, seed=0, download=False
):
    """Loads a dataset and chooses its validation split.

    Args:
        name: One of `DATASETS`. With `data_dir`, any name reads the image set
            stored there as the four standard IDX files.
        data_dir: Directory holding the IDX files. Defaults to `None`: search the
            keras cache, then tensorflow-datasets, then download (module docstring).
        validation_split: Fraction of the training set held out for validation,
            chosen with `seed`. Defaults to `0.0`: validate on the test split.
        seed: Seed of the hold-out choice. Defaults to `0`.
        download: Let tensorflow-datasets download and prepare kmnist or
            emnist/letters when no prepared copy is found. Defaults to `False`.
            (fashion_mnist, mnist and cifar10 download through keras.datasets
            without it.)

    Returns:
        A `Dataset`.
    """
    (train_x, train_y, test_x, test_y), label_names, source = _arrays(name, data_dir, download)
    train_y, test_y = train_y.astype(np.int32), test_y.astype(np.int32)
    check_fraction("validation_split", validation_split)
    if validation_split == 0.0:
        return Dataset(name, train_x, train_y, test_x, test_y, "test", label_names, source)
    num_val = round(len(train_x) * validation_split)
    if not 0 < num_val < len(train_x):
        raise UserError(
            f"validation_split={validation_split} holds out {num_val} of {len(train_x)} examples; "
            "both parts must be non-empty"
        )
    order = np.random.default_rng(seed).permutation(len(train_x))
    val, train = order[:num_val], order[num_val:]
    return Dataset(
        name,
        train_x[train],
        train_y[train],
        train_x[val],
        train_y[val],
        "holdout",
        label_names,
        source,
    )


def local_replicas(input_context):
    """The replicas a `tf.data` input pipeline feeds: each step takes one batch per
    replica from it."""
    return input_context.num_replicas_in_sync // input_context.num_input_pipelines


def scale(images):
    """uint8 images as float32 in [0, 1]: what every model here takes."""
    return tf.cast(images, tf.float32) / 255.0


def host_variables(*arrays):
    """Each array as a non-trainable `tf.Variable` in this process's host memory, for
    the compiled steps to gather batches from (`feeds`).

    A variable is captured by reference: the compiled functions hold its handle, not its
    contents, so the set is copied once per `fit` and may exceed the 2 GB limit of a
    graph constant (docs/design.md, "Input pipelines"). Gathering in the graph keeps
    Python out of the input path (a `tf.numpy_function` would take the interpreter lock
    for each batch).
    """
    with tf.device("/cpu:0"):
        return [tf.Variable(array, trainable=False) for array in arrays]
