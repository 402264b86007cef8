"""The compiled steps: the package's one loss, the training chunk and the exact
evaluation pass, each run through `strategy.run` so that the same code serves every
distribution strategy. `training.Trainer` drives them.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_mlp.distribute import summed_on_read


def compute_loss(model, images, labels, training):
    """Per-example sparse softmax cross-entropy and the logits: the package's one loss,
    used by training, evaluation and the gradient histograms alike."""
    logits = tf.cast(model(images, training=training), tf.float32)  # mixed precision: 16-bit
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True), logits


def replica_penalty(model):
    """This replica's share of the model's penalties (`model.losses`: the scratch
    model's L2 weight decay, any Keras regularizer), or `None` when it has none.

    Each replica adds its share to its part of the loss and the optimizer sums the
    replicas' gradients, so the penalty is divided by the replicas in sync to count
    once (as `fit` does). Read it after calling the model: `add_loss` terms come from
    the latest call. It enters the gradient only: the reported loss is the
    cross-entropy alone, comparable across penalties and with the validation loss.
    """
    if not model.losses:
        return None
    with tf.name_scope("penalty"):
        penalties = [tf.cast(x, tf.float32) for x in model.losses]
        return tf.nn.scale_regularization_loss(tf.add_n(penalties))


class _Totals:
    """Sums of loss, correct predictions and examples, kept on the devices."""

    def __init__(self):
        self.variables = [summed_on_read() for _ in range(3)]

    def add(self, per_example_loss, logits, labels, weights):
        loss, correct, count = self.variables
        predicted = tf.argmax(logits, axis=-1, output_type=labels.dtype)
        loss.assign_add(tf.reduce_sum(per_example_loss * weights))
        correct.assign_add(tf.reduce_sum(tf.cast(predicted == labels, tf.float32) * weights))
        count.assign_add(tf.reduce_sum(weights))

    def reset(self):
        for variable in self.variables:
            variable.assign(tf.zeros_like(variable))

    def sums(self):
        """`[loss sum, correct, count]` over everything added since the last reset."""
        return np.array([float(v.read_value()) for v in self.variables])


def means(sums):
    """`{"loss": mean loss, "accuracy": ...}` from `[loss sum, correct, count]`."""
    count = max(sums[2], 1.0)
    return {"loss": sums[0] / count, "accuracy": sums[1] / count}


class CompiledSteps:
    """The compiled training chunk and evaluation pass, built in one place.

    `train_steps(chunk_args, num_steps)` is the compiled chunk: `num_steps` times
    `strategy.run(train_step, ...)` on the batches of `train_feed` (a `feeds` feed;
    `chunk_args` is its `chunk_args(epoch, step)`). `train_step(images, labels)` is one
    replica's training step (loss, penalty and loss scaling, gradients, update, running
    totals), as a Python function: what TensorBoard's Graphs tab traces (`step_graph`).
    `evaluate()` runs one pass of `validation_feed` (or none).
    """

    def __init__(self, model, strategy, global_batch, train_feed, validation_feed=None):
        with strategy.scope():
            self.train_totals, self.val_totals = _Totals(), _Totals()
        optimizer = model.optimizer
        loss_scaling = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
        agree_on_skips = loss_scaling and strategy.num_replicas_in_sync > 1

        def train_step(images, labels):
            # The name scopes are for TensorBoard's Graphs tab (step_graph.py traces this step).
            with tf.GradientTape() as tape:
                per_example, logits = compute_loss(model, images, labels, training=True)
                with tf.name_scope("loss"):
                    # Each replica's share of the global-batch mean; the optimizer sums the
                    # replicas' gradients, so the loss is scaled exactly once.
                    loss = tf.reduce_sum(per_example) / global_batch
                    penalty = replica_penalty(model)  # weight decay in the loss (scratch model)
                    if penalty is not None:
                        loss += penalty
                    with tf.name_scope("scale"):  # the loss itself unless loss scaling
                        scaled_loss = optimizer.scale_loss(loss)
            with tf.name_scope("gradients"):
                grads = tape.gradient(scaled_loss, model.trainable_variables)
                if agree_on_skips:
                    grads = _skip_together(optimizer, grads)
            with tf.name_scope("update"):
                optimizer.apply(grads, model.trainable_variables)
            with tf.name_scope("totals"):
                self.train_totals.add(per_example, logits, labels, tf.ones_like(per_example))

        def eval_step(images, labels, weights):
            per_example, logits = compute_loss(model, images, labels, training=False)
            self.val_totals.add(per_example, logits, labels, weights)

        self.train_step = train_step
        self.train_feed, self.validation_feed = train_feed, validation_feed
        self.train_steps = _compiled_chunk(strategy, train_feed, train_step)
        if validation_feed is not None:
            self._evaluate = _compiled_chunk(strategy, validation_feed, eval_step)

    def evaluate(self):
        """`{"val_loss", "val_accuracy"}`, exact over the whole split (NaN without one)."""
        if self.validation_feed is None:
            return {"val_loss": float("nan"), "val_accuracy": float("nan")}
        self.val_totals.reset()
        feed = self.validation_feed
        self._evaluate(feed.chunk_args(), tf.constant(feed.steps))
        return {f"val_{key}": value for key, value in means(self.val_totals.sums()).items()}

    def close(self):
        """Lets go of the feeds' data and iterators (`feeds`)."""
        for feed in (self.train_feed, self.validation_feed):
            if feed is not None:
                feed.close()

    def tracing_counts(self):
        """How often each tf.function was traced: 1 each, or something retraces per call."""
        return {
            "train_steps": self.train_steps.experimental_get_tracing_count(),
            "evaluate": self._evaluate.experimental_get_tracing_count()
            if self.validation_feed is not None
            else 0,
        }


def _compiled_chunk(strategy, feed, replica_step):
    """`chunk(chunk_args, num_steps)`, compiled: `num_steps` steps of `replica_step` on
    every replica, each on its part of the next batch of `feed`."""

    def on_replica(*args):
        replica_step(*feed.replica_batch(*args))

    @tf.function
    def chunk(chunk_args, num_steps):
        step_args = feed.start(chunk_args)
        for i in tf.range(num_steps):
            strategy.run(on_replica, args=step_args(i))

    return chunk


def _skip_together(optimizer, grads):
    """This replica's gradients, made non-finite when any replica's are.

    Keras' `LossScaleOptimizer` skips a step (and halves its loss scale) when the
    gradients it is handed are not finite, assuming they are already summed over the
    replicas; here each replica hands over its own. Under MirroredStrategy it then
    follows replica 0 alone (applying another replica's inf), and across workers each
    would decide for itself. One all-reduced flag makes every replica decide alike;
    finite gradients pass unchanged (multiplied by exactly 1).
    """
    context = tf.distribute.get_replica_context()
    bad = tf.cast(tf.logical_not(optimizer.check_finite(grads)), tf.float32)
    any_bad = context.all_reduce(tf.distribute.ReduceOp.SUM, bad) > 0
    return [
        None
        if g is None
        else g * tf.where(any_bad, tf.constant(np.nan, g.dtype), tf.ones((), g.dtype))
        for g in grads
    ]
