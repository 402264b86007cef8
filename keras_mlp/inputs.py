"""What `Trainer.fit` trains and validates on, each kind behind one small adapter.

The contract is sparse-label classification: examples are `(x, y)` with `x` what the
model takes and `y` an integer class index (the model outputs logits). Accepted:

- this package's `data.Dataset` (its uint8 images scaled to [0, 1]), or NumPy arrays
  `(x, y)` (given to the model as they are): gathered by the compiled steps themselves
  (`feeds`), a fresh shuffle each epoch derived from the seed and the epoch, so a resume
  is exact mid-epoch;
- a `tf.data.Dataset` of single `(x, y)` examples, finite and of known cardinality (a
  `tensorflow_datasets` split is): the trainer batches it (global batches of
  `batch_size`, the last partial one dropped in training) and splits each batch over
  the replicas; one pass is one epoch. Shuffle it yourself (`shuffle(n, seed=...)`; in a
  cluster every worker must produce the same order, so give the seed);
- a `dataset_fn(input_context)` as `strategy.distribute_datasets_from_function` takes:
  this input pipeline's per-replica batches, `input_context.get_per_replica_batch_size
  (batch_size)` examples each (full batches: `drop_remainder=True` for training), one
  pass per epoch, of known cardinality.

For a `tf.data.Dataset` or a `dataset_fn` the trainer cannot rebuild the position inside
an epoch, so those resume at epoch boundaries (`exact_resume` is False): checkpoints are
written at epoch ends only, and a resumed run starts the next epoch with a fresh pass.
"""

import numpy as np
import tensorflow as tf

from keras_mlp import data as data_lib
from keras_mlp import feeds
from keras_mlp.errors import UserError


class ArrayInput:
    """Examples held in memory: `x` `(N, ...)` and integer labels `y` `(N,)`."""

    exact_resume = True

    def __init__(self, x, y, preprocess=None, augment=None):
        self.x, self.y = np.asarray(x), np.asarray(y)
        if len(self.x) != len(self.y) or self.y.ndim != 1:
            raise UserError(
                f"arrays (x, y) must hold one integer label per example: x has shape "
                f"{self.x.shape}, y {self.y.shape}"
            )
        if not np.issubdtype(self.y.dtype, np.integer):
            raise UserError(f"labels must be integer class indices; y has dtype {self.y.dtype}")
        self.preprocess, self.augment = preprocess, augment
        self.count = len(self.x)

    def steps_per_epoch(self, batch_size):
        return self.count // batch_size

    def train_feed(self, strategy, batch_size, seed, first_epoch, num_epochs, skip_steps):
        """The training batches: each chunk says where it starts (an exact resume)."""
        return feeds.ShuffledArrays(self.x, self.y, batch_size, seed, self.preprocess, self.augment)

    def eval_feed(self, strategy, batch_size):
        return feeds.OrderedArrays(self.x, self.y, batch_size, self.preprocess)


def _replica_batches(input_context, global_batch):
    """A function from one global batch to this pipeline's per-replica batches (its
    contiguous part, cut in one batch per local replica), as `feeds.replica_part` splits
    arrays' batches: every topology trains on the same global batches."""
    per_pipeline = global_batch // input_context.num_input_pipelines
    per_replica = input_context.get_per_replica_batch_size(global_batch)
    start = input_context.input_pipeline_id * per_pipeline

    def part(tensor):
        mine = tensor[start : start + per_pipeline]
        inner = tensor.shape[1:]
        shape = (
            [-1, per_replica, *inner]
            if inner.is_fully_defined()
            else tf.concat([[-1, per_replica], tf.shape(tensor)[1:]], 0)
        )
        return tf.reshape(mine, shape)

    return lambda *batch: tf.data.Dataset.from_tensor_slices(tuple(part(t) for t in batch))


def _check_labels(spec, what, rank):
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise UserError(f"{what} must yield (x, y) pairs; it yields {spec}")
    label = spec[1]
    if not label.dtype.is_integer or label.shape.rank not in (rank, None):
        raise UserError(
            f"{what} must yield integer class indices as labels (sparse labels); its labels "
            f"are {label}"
        )


class ExampleInput:
    """A `tf.data.Dataset` of `(x, y)` examples; the trainer batches it."""

    exact_resume = False

    def __init__(self, dataset):
        _check_labels(dataset.element_spec, "a tf.data.Dataset", 0)
        self.count = int(dataset.cardinality())
        if self.count < 0:
            raise UserError(
                "a tf.data.Dataset to fit on must be finite and of known length (one pass is "
                "one epoch); give it one: dataset.apply(tf.data.experimental.assert_cardinality(n))"
            )
        self.dataset = dataset

    def steps_per_epoch(self, batch_size):
        return self.count // batch_size

    def train_feed(self, strategy, batch_size, seed, first_epoch, num_epochs, skip_steps):
        _check_epoch_start(skip_steps)

        def dataset_fn(input_context):
            return (
                self.dataset.batch(batch_size, drop_remainder=True)
                .repeat(num_epochs)
                .flat_map(_replica_batches(input_context, batch_size))
                .prefetch(tf.data.AUTOTUNE)
            )

        return feeds.IteratorFeed(strategy, dataset_fn)

    def eval_feed(self, strategy, batch_size):
        """Every example once: padded to whole global batches with zeros weighted 0."""
        padding = -self.count % batch_size
        x_spec, y_spec = self.dataset.element_spec
        if padding and not x_spec.shape.is_fully_defined():
            raise UserError(
                f"validation examples of unknown shape ({x_spec.shape}) cannot be padded to "
                f"whole batches; give {batch_size - padding} fewer or {padding} more, or a "
                "dataset of one shape"
            )
        steps = (self.count + padding) // batch_size
        weighted = self.dataset.map(lambda x, y: (x, y, tf.ones((), tf.float32)))
        blank = (tf.zeros(x_spec.shape, x_spec.dtype), tf.zeros((), y_spec.dtype), 0.0)
        padded = weighted.concatenate(tf.data.Dataset.from_tensors(blank).repeat(padding))

        def dataset_fn(input_context):
            return (
                padded.batch(batch_size, drop_remainder=True)
                .flat_map(_replica_batches(input_context, batch_size))
                .prefetch(tf.data.AUTOTUNE)
                .repeat()  # passes back to back; see `FunctionInput.eval_feed`
            )

        return feeds.IteratorFeed(strategy, dataset_fn, steps)


class FunctionInput:
    """A user's `dataset_fn(input_context)` yielding per-replica `(x, y)` batches."""

    exact_resume = False

    def __init__(self, dataset_fn):
        self.dataset_fn = dataset_fn
        self.count = None  # examples per epoch: not known to the trainer
        self.steps = None  # known once the trainer built the pipelines (train_feed)

    def steps_per_epoch(self, batch_size):
        return self.steps

    def train_feed(self, strategy, batch_size, seed, first_epoch, num_epochs, skip_steps):
        _check_epoch_start(skip_steps)

        def dataset_fn(input_context):
            dataset = self.dataset_fn(input_context)
            what = "the training dataset_fn"
            _check_labels(dataset.element_spec, what, 1)
            per_replica = input_context.get_per_replica_batch_size(batch_size)
            if dataset.element_spec[1].shape[0] != per_replica:
                raise UserError(
                    f"{what} must yield full per-replica batches of {per_replica} examples "
                    f"(input_context.get_per_replica_batch_size(batch_size), "
                    f"drop_remainder=True); its labels are {dataset.element_spec[1]}"
                )
            count = int(dataset.cardinality())
            if count < 0:
                raise UserError(f"{what} must return a finite dataset of known length")
            self.steps = count // data_lib.local_replicas(input_context)
            return dataset.repeat(num_epochs)

        return feeds.IteratorFeed(strategy, dataset_fn)

    def eval_feed(self, strategy, batch_size):
        """Passes back to back from one iterator: starting a new iterator every epoch
        costs more than the chapter's whole pass over the 10,000 test images (about 25
        ms against 4 on the development machine)."""
        steps = []

        def dataset_fn(input_context):
            dataset = self.dataset_fn(input_context)
            _check_labels(dataset.element_spec, "the validation dataset_fn", 1)
            batches = int(dataset.cardinality())
            if batches < 0:
                raise UserError(
                    "the validation dataset_fn must return a finite dataset of known length"
                )
            steps.append(batches // data_lib.local_replicas(input_context))
            weighted = dataset.map(lambda x, y: (x, y, tf.ones(tf.shape(y)[:1], tf.float32)))
            return weighted.repeat()

        feed = feeds.IteratorFeed(strategy, dataset_fn)
        feed.steps = steps[0]  # known once the iterator built this worker's pipeline
        return feed


def _check_epoch_start(skip_steps):
    if skip_steps:
        raise UserError(
            f"the checkpoint is {skip_steps} steps into an epoch, and this data (a tf.data "
            "Dataset or dataset_fn) resumes only at epoch boundaries; start over "
            "(overwrite) or train on the data it was saved with"
        )


def _one(data, what):
    if isinstance(data, (ArrayInput, ExampleInput, FunctionInput)):
        return data
    if isinstance(data, tf.data.Dataset):
        return ExampleInput(data)
    if callable(data):
        return FunctionInput(data)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return ArrayInput(*data)
    raise UserError(
        f"{what} must be a keras_mlp Dataset, arrays (x, y), a tf.data.Dataset of (x, y) "
        f"examples or a dataset_fn(input_context); got {type(data).__name__}"
    )


def dataset_inputs(data, augment=None):
    """The inputs of a package `Dataset`: its training split (augmented by `augment`, an
    `augment.Augmentation`, if given) and its validation split, uint8 scaled to [0, 1]."""
    train = ArrayInput(data.train_images, data.train_labels, data_lib.scale, augment)
    return train, ArrayInput(data.val_images, data.val_labels, data_lib.scale)


def adapt(data, validation_data=None):
    """`(training input, validation input or None)` for what `Trainer.fit` was given."""
    if isinstance(data, data_lib.Dataset):
        train, validation = dataset_inputs(data)
        if validation_data is None:
            return train, validation
        return train, _one(validation_data, "validation_data")
    validation = None if validation_data is None else _one(validation_data, "validation_data")
    return _one(data, "data"), validation
