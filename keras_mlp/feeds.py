"""How a compiled chunk of steps gets its batches: the two kinds of feed.

- `ShuffledArrays` and `OrderedArrays` (arrays in memory, training and evaluation): the
  chunk itself computes the epoch's order and every replica gathers its part of each
  global batch from the arrays, held in host variables. No `tf.data` iterator sits
  between the steps: on the chapter's epoch on 2 CPU cores, a per-step iterator cost
  more than the Keras step itself adds to a bare TensorFlow loop (docs/design.md,
  "Input pipelines").
- `IteratorFeed` (a `tf.data.Dataset` or a user's `dataset_fn`): per-replica batches
  from a distributed iterator, `next()` once per step.

A feed answers three questions. `chunk_args(epoch, step)`: the compiled chunk's first
argument, for a chunk that starts at step `step` of epoch `epoch` (from 0; made outside
the chunk, so that what serves a whole epoch is made once). `start(args)`, inside the
chunk: a function of the chunk's step index `i` giving `strategy.run`'s arguments for
that step. `replica_batch(*those)`, inside each replica: its `(images, labels)` for
training, `(images, labels, weights)` for evaluation. And `close()` lets go of its data
or iterator: `fit` calls it on every exit, so that a 2 GB set or a cluster's iterator is
released when `fit` returns, not whenever the garbage collector reaches the compiled
functions.

Every topology trains on the same global batches: replica r of R (in a cluster, each
worker's replicas after those of the workers before it) takes the r-th contiguous
R-th of each global batch, as `inputs` cuts `tf.data` batches.
"""

import numpy as np
import tensorflow as tf

from keras_mlp import data as data_lib


def replica_part(batch, context=None):
    """This replica's contiguous part of `batch`, a global batch (static shapes kept)."""
    context = context or tf.distribute.get_replica_context()
    replicas = context.num_replicas_in_sync
    if replicas == 1:
        return batch
    parts = tf.reshape(batch, [replicas, -1, *batch.shape[1:]])
    return parts[context.replica_id_in_sync_group]


def epoch_order(seed, epoch, count, steps, global_batch):
    """`(steps, global_batch)` example indices: row s holds global step s of epoch `epoch`.

    A fresh shuffle of the examples (not of batches) derived from `(seed, epoch)` alone,
    so any epoch's order is reproduced without replaying earlier ones (an exact resume);
    the last partial batch is dropped, a different part each epoch."""
    order = tf.random.experimental.stateless_shuffle(
        tf.range(count), seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)])
    )
    return tf.reshape(order[: steps * global_batch], (steps, global_batch))


class ShuffledArrays:
    """Training batches of arrays: every epoch reshuffled (`epoch_order`), images
    augmented by their examples' draws of the epoch (`augment`, an
    `augment.Augmentation`, or `None`), then `preprocess`ed (`data.scale`; `None`: as
    they are)."""

    def __init__(self, images, labels, global_batch, seed, preprocess=None, augment=None):
        self.count, self.global_batch, self.seed = len(images), global_batch, seed
        self.steps = self.count // global_batch
        self.images, self.labels = data_lib.host_variables(np.asarray(images), np.asarray(labels))
        self.preprocess = preprocess or (lambda x: x)
        self.augment = augment or None
        self._epoch, self._order, self._draws = None, None, None

    def chunk_args(self, epoch=0, step=0):
        """`(order, step, draws)`: the epoch's order (`epoch_order`, made once per epoch,
        not in every chunk) and its augmentation draws (`None` without)."""
        if self._epoch != epoch:
            self._epoch = epoch
            with tf.device("/cpu:0"):  # beside the data (`host_variables`)
                self._order = epoch_order(
                    self.seed, epoch, self.count, self.steps, self.global_batch
                )
                if self.augment:
                    self._draws = self.augment.epoch_draws(self.seed, epoch, self.count)
        return self._order, tf.constant(step, tf.int64), self._draws

    def start(self, args):
        order, first, draws = args

        def step_args(i):
            rows = order[first + tf.cast(i, tf.int64)]
            return (rows,) if draws is None else (rows, tf.gather(draws, rows))

        return step_args

    def close(self):
        self.images = self.labels = self._epoch = self._order = self._draws = None

    def replica_batch(self, rows, draws=None):
        rows = replica_part(rows)
        images = tf.gather(self.images, rows)
        if self.augment:
            images = self.augment(images, replica_part(draws))
        return self.preprocess(images), tf.gather(self.labels, rows)


class OrderedArrays:
    """Evaluation batches of arrays: every example once, in order. The split is padded
    to whole global batches with copies of its last example weighted 0 (indices only),
    so every replica runs full batches and sums over the weights are exact."""

    def __init__(self, images, labels, global_batch, preprocess=None):
        self.count, self.global_batch = len(images), global_batch
        self.steps = -(-self.count // global_batch)
        self.images, self.labels = data_lib.host_variables(np.asarray(images), np.asarray(labels))
        self.preprocess = preprocess or (lambda x: x)

    def chunk_args(self, epoch=0, step=0):
        return tf.constant(step, tf.int64)  # a pass starts where it is asked to

    def start(self, first):
        batch = tf.range(self.global_batch, dtype=tf.int64)
        return lambda i: (batch + (first + tf.cast(i, tf.int64)) * self.global_batch,)

    def close(self):
        self.images = self.labels = None

    def replica_batch(self, rows):
        rows = replica_part(rows)
        kept = tf.minimum(rows, self.count - 1)
        images, labels = tf.gather(self.images, kept), tf.gather(self.labels, kept)
        return self.preprocess(images), labels, tf.cast(rows < self.count, tf.float32)


class IteratorFeed:
    """Per-replica batches from `strategy.distribute_datasets_from_function(dataset_fn)`,
    one `next()` per step; the iterator holds the position. `steps`: the steps of one
    epoch or pass, when known."""

    def __init__(self, strategy, dataset_fn, steps=None):
        self.iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
        self.steps = steps

    def chunk_args(self, epoch=0, step=0):
        return self.iterator

    def start(self, iterator):
        return lambda i: next(iterator)

    def close(self):
        self.iterator = None

    def replica_batch(self, *batch):
        return batch
