"""Datasets: IDX files (Fashion-MNIST and any set in its layout), a synthetic set,
and the tf.data pipelines that feed every distribution strategy the same batches.

Images stay in memory as uint8 (N, H, W); pipelines gather batches by index and
scale them to float32 in [0, 1].
"""

import dataclasses
import gzip
import hashlib
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf

from keras_mlp.config import check_fraction
from keras_mlp.errors import UserError
from keras_mlp.names import DATASETS

# The standard file names; Fashion-MNIST, MNIST and the keras cache all use them.
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

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
        train_images, train_labels: uint8 `(N, H, W)` images and int32 `(N,)` labels.
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


def read_idx(path):
    """Reads one IDX file (gzip-compressed when its name ends in .gz) into an array.

    Raises:
        UserError: naming the file and what is wrong with it.
    """
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise UserError(f"{path}: truncated or corrupt gzip data ({e})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror or e})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise UserError(f"{path}: not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise UserError(
            f"{path}: IDX element type 0x{raw[2]:02x} is not supported (only uint8, 0x08)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise UserError(f"{path}: IDX header is truncated or has no dimensions")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise UserError(
            f"{path}: IDX data is {len(raw)} bytes but its header {shape} needs {expected}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def write_idx(path, array):
    """Writes a uint8 array as an IDX file (gzip-compressed when `path` ends in .gz).

    The inverse of `read_idx`: a way to bring any image set into the layout that
    `load_dataset` reads.
    """
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise UserError(f"{path}: IDX files here hold uint8 data. Received dtype {array.dtype}")
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def _find_idx_file(directory, name):
    """The path of `name` in `directory`, accepting an uncompressed copy too."""
    for candidate in (directory / name, directory / name.removesuffix(".gz")):
        if candidate.exists():
            return candidate
    return None


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
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        image_path, label_path = paths[f"{split}_images"], paths[f"{split}_labels"]
        if images.ndim != 3:
            raise UserError(
                f"{image_path}: expected 3 dimensions (N, H, W), found shape {images.shape}"
            )
        if labels.ndim != 1:
            raise UserError(f"{label_path}: expected 1 dimension (N,), found shape {labels.shape}")
        if len(images) != len(labels):
            raise UserError(
                f"{image_path} holds {len(images)} images but {label_path} holds {len(labels)} labels"
            )
        if len(images) == 0:
            raise UserError(f"{image_path}: holds no images")
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


def keras_cache_dir():
    """Where `keras.datasets.fashion_mnist` keeps its files."""
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    return Path(keras_home) / "datasets" / "fashion-mnist"


def _load_with_tfds(download):
    """Fashion-MNIST through tensorflow-datasets, or a reason why not."""
    tfds_dir = Path(os.environ.get("TFDS_DATA_DIR", Path.home() / "tensorflow_datasets"))
    if not download and not (tfds_dir / "fashion_mnist").is_dir():
        return (
            None,
            f"tensorflow-datasets ({tfds_dir}/fashion_mnist not prepared; download=True lets it download)",
        )
    print(
        "Loading Fashion-MNIST with tensorflow-datasets; a download can take minutes.", flush=True
    )
    try:
        import tensorflow_datasets as tfds

        splits = tfds.as_numpy(
            tfds.load(
                "fashion_mnist",
                split=["train", "test"],
                batch_size=-1,
                as_supervised=True,
                data_dir=str(tfds_dir),
                download=download,
            )
        )
    except Exception as e:  # tfds raises many types (import, network, missing data)
        return (
            None,
            f"tensorflow-datasets ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
        )
    (train_x, train_y), (test_x, test_y) = splits
    return (train_x[..., 0], train_y, test_x[..., 0], test_y), None


def _load_fashion_mnist(data_dir, download):
    """Finds Fashion-MNIST: `data_dir`, then the keras cache, then tensorflow-datasets."""
    if data_dir:
        return read_idx_dir(data_dir), str(data_dir)
    tried = ["data_dir (not given)"]
    cache = keras_cache_dir()
    if cache.is_dir():
        return read_idx_dir(cache), str(cache)
    tried.append(f"keras cache ({cache} not found)")
    arrays, reason = _load_with_tfds(download)
    if arrays is not None:
        return arrays, "tensorflow-datasets"
    tried.append(reason)
    raise UserError(
        "no Fashion-MNIST data found; tried "
        + "; ".join(tried)
        + ". Put the four IDX .gz files in a directory and pass data_dir=DIR."
    )


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


def _is_fashion_mnist(data_dir, train_labels):
    """Whether data loaded as `fashion_mnist` really is Fashion-MNIST: found without a
    `data_dir` (the keras cache's fashion-mnist folder or tensorflow-datasets), or a
    `data_dir` whose training labels are Fashion-MNIST's, label for label. Another
    10-class set in a data_dir (MNIST has the very same sizes) is not."""
    if data_dir is None:
        return True
    labels = np.asarray(train_labels)
    return (
        labels.shape == (60000,)
        and hashlib.sha256(labels.astype(np.uint8).tobytes()).hexdigest()
        == FASHION_MNIST_TRAIN_LABELS_SHA256
    )


def _label_names(name, data_dir, train_labels):
    """Names from `labels.txt` beside the data, else Fashion-MNIST's (for Fashion-MNIST
    itself only), else the class index."""
    num_classes = int(train_labels.max()) + 1
    labels_file = Path(data_dir) / "labels.txt" if data_dir else None
    if labels_file and labels_file.exists():
        try:
            text = labels_file.read_text(encoding="utf-8")
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
    if (
        name == "fashion_mnist"
        and num_classes == len(FASHION_MNIST_LABELS)
        and _is_fashion_mnist(data_dir, train_labels)
    ):
        return FASHION_MNIST_LABELS
    return tuple(str(i) for i in range(num_classes))


def load_dataset(
    name="fashion_mnist", *, data_dir=None, validation_split=0.0, seed=0, download=False
):
    """Loads a dataset and chooses its validation split.

    Args:
        name: One of `DATASETS`. With `data_dir`, `"fashion_mnist"` reads any
            image-classification set stored as the four standard IDX files.
        data_dir: Directory holding the IDX files. Defaults to `None` (search
            the keras cache, then tensorflow-datasets).
        validation_split: Fraction of the training set held out for validation,
            chosen with `seed`. Defaults to `0.0`: validate on the test split.
        seed: Seed of the hold-out choice. Defaults to `0`.
        download: Let tensorflow-datasets download when nothing local is found.
            Defaults to `False`.

    Returns:
        A `Dataset`.
    """
    if name == "synthetic":
        arrays, source = synthetic_arrays(), "synthetic"
    elif name == "fashion_mnist":
        arrays, source = _load_fashion_mnist(data_dir, download)
    else:
        raise UserError(f"dataset={name!r} is not known; accepted: {', '.join(DATASETS)}")
    train_x, train_y, test_x, test_y = arrays
    label_names = _label_names(name, data_dir, train_y)
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


def _pipeline_batches(index_matrix, input_context):
    """Per-replica index batches for this input pipeline.

    `index_matrix` is `(steps, global_batch)`: row s holds the examples of global
    step s. Each pipeline (worker) takes its own contiguous columns and cuts them
    into one batch per local replica, so every topology sees the same global
    batches, and each example once per epoch across the cluster.
    """
    steps, global_batch = index_matrix.shape
    per_pipeline = global_batch // input_context.num_input_pipelines
    per_replica = input_context.get_per_replica_batch_size(global_batch)
    start = input_context.input_pipeline_id * per_pipeline
    mine = index_matrix[:, start : start + per_pipeline]
    return tf.reshape(mine, (-1, per_replica))  # (steps * local_replicas, per_replica)


def scale(images):
    """uint8 images as float32 in [0, 1]: what every model here takes."""
    return tf.cast(images, tf.float32) / 255.0


def train_dataset_fn(
    images, labels, global_batch_size, seed, start_epoch, num_epochs, skip_steps=0
):
    """A `dataset_fn` for `strategy.distribute_datasets_from_function`: training batches.

    Every epoch reshuffles the examples (not the batches) with a permutation
    derived from `(seed, epoch)`, so any epoch's order can be reproduced (for a
    resumed run) without replaying earlier ones. The last partial batch of an
    epoch is dropped so that every step has the same shape on every replica;
    the reshuffle makes each epoch drop different examples. `skip_steps` skips
    the first steps of `start_epoch`, to resume mid-epoch.

    Yields `(images float32 (b, H, W), labels int32 (b,))` per replica, epochs back to back.
    """
    steps = len(images) // global_batch_size

    def dataset_fn(input_context):
        images_t, labels_t = tf.constant(images), tf.constant(labels)

        def epoch_batches(epoch):
            order = tf.random.experimental.stateless_shuffle(
                tf.range(len(images)), seed=tf.stack([tf.cast(seed, tf.int64), epoch])
            )
            order = tf.reshape(order[: steps * global_batch_size], (steps, global_batch_size))
            return tf.data.Dataset.from_tensor_slices(_pipeline_batches(order, input_context))

        local_replicas = input_context.num_replicas_in_sync // input_context.num_input_pipelines
        return (
            tf.data.Dataset.range(start_epoch, start_epoch + num_epochs)
            .flat_map(epoch_batches)
            .skip(skip_steps * local_replicas)
            .map(
                lambda idx: (scale(tf.gather(images_t, idx)), tf.gather(labels_t, idx)),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )
            .prefetch(tf.data.AUTOTUNE)
        )

    return dataset_fn


def eval_dataset_fn(images, labels, global_batch_size):
    """A `dataset_fn` for evaluation: every example exactly once, in order.

    The split is padded to whole global batches with examples of weight 0, so
    all replicas run full batches and sums over weights give exact totals.

    Yields `(images, labels, weights float32 (b,))` per replica.
    """
    steps = -(-len(images) // global_batch_size)
    padding = steps * global_batch_size - len(images)
    images = np.concatenate([images, np.zeros((padding, *images.shape[1:]), images.dtype)])
    labels = np.concatenate([labels, np.zeros(padding, labels.dtype)])
    weights = np.concatenate(
        [np.ones(len(images) - padding, np.float32), np.zeros(padding, np.float32)]
    )

    def dataset_fn(input_context):
        images_t, labels_t, weights_t = (
            tf.constant(images),
            tf.constant(labels),
            tf.constant(weights),
        )
        order = tf.reshape(tf.range(len(images)), (steps, global_batch_size))
        return (
            tf.data.Dataset.from_tensor_slices(_pipeline_batches(order, input_context))
            .map(
                lambda idx: (
                    scale(tf.gather(images_t, idx)),
                    tf.gather(labels_t, idx),
                    tf.gather(weights_t, idx),
                )
            )
            .prefetch(tf.data.AUTOTUNE)
        )

    return dataset_fn
