"""`Trainer`: the one training loop, for every distribution strategy.

Keras 3 `model.fit` cannot run real multi-worker training (keras-team/keras#20585),
so the trainer owns its loop: a `tf.function` that runs several steps through
`strategy.run`. The same code serves the default, one-device and mirrored
strategies, and a multi-worker cluster.
"""

import contextlib
import hashlib
import shutil
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from keras_mlp import data as data_lib
from keras_mlp import reporting
from keras_mlp.distribute import is_chief
from keras_mlp.errors import UserError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "adamax", "nadam", "lion")

HISTORY_KEYS = (
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "epoch_seconds",
    "examples_per_second",
)


class _Totals:
    """Sums of loss, correct predictions and examples, kept on the devices.

    Sync-on-read variables: each replica adds to its own copy inside the step,
    and reading them outside sums over replicas (and workers). They are read
    only when a progress update or an epoch end needs them.
    """

    def __init__(self):
        def zero():
            return tf.Variable(
                0.0,
                trainable=False,
                synchronization=tf.VariableSynchronization.ON_READ,
                aggregation=tf.VariableAggregation.SUM,
            )

        self.loss, self.correct, self.count = zero(), zero(), zero()

    def add(self, per_example_loss, logits, labels, weights):
        predicted = tf.argmax(logits, axis=-1, output_type=labels.dtype)
        self.loss.assign_add(tf.reduce_sum(per_example_loss * weights))
        self.correct.assign_add(tf.reduce_sum(tf.cast(predicted == labels, tf.float32) * weights))
        self.count.assign_add(tf.reduce_sum(weights))

    def reset(self):
        for variable in (self.loss, self.correct, self.count):
            variable.assign(0.0)

    def result(self):
        """`(mean loss, accuracy)` over everything added since the last reset."""
        count = max(float(self.count.read_value()), 1.0)
        return float(self.loss.read_value()) / count, float(self.correct.read_value()) / count


class Trainer:
    """Trains a classifier with sparse softmax cross-entropy on logits.

    Args:
        max_epochs: Epochs to train. Defaults to `10`.
        batch_size: Global batch size, split across all replicas. Defaults to `256`.
        learning_rate: Optimizer learning rate. Defaults to `0.1`.
        optimizer: A name from `OPTIMIZERS`. Defaults to `"sgd"`.
        strategy: The `tf.distribute.Strategy`; create the model inside its
            `scope()`. Defaults to `None` (the default strategy).
        model_dir: Where TensorBoard logs, `metrics.json`, `progress.png` and
            `model.keras` go; `None` writes nothing. Defaults to `None`.
        seed: Seed of the data order. Defaults to `0`.
        steps_per_execution: Training steps per `tf.function` call; more means
            less Python overhead, fewer progress updates. Defaults to `50`.
        run_config: A dict recorded in `metrics.json` as the run's config.
        verbose: Print a progress bar and one line per epoch. Defaults to `True`.

    Example:
        >>> trainer = Trainer(max_epochs=10)
        >>> with trainer.strategy.scope():
        ...     model = build_model("scratch", data.input_shape, data.num_classes)
        >>> history = trainer.fit(model, data)
    """

    def __init__(
        self,
        max_epochs=10,
        batch_size=256,
        learning_rate=0.1,
        optimizer="sgd",
        strategy=None,
        model_dir=None,
        seed=0,
        steps_per_execution=50,
        run_config=None,
        verbose=True,
    ):
        if optimizer not in OPTIMIZERS:
            raise UserError(f"unknown optimizer {optimizer!r}; accepted: {', '.join(OPTIMIZERS)}")
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.optimizer_name = optimizer
        self.strategy = strategy or tf.distribute.get_strategy()
        self.model_dir = model_dir
        self.seed = seed
        self.steps_per_execution = steps_per_execution
        self.run_config = run_config or {}
        self.verbose = verbose

    def check(self, model, data):
        """Raises if `fit(model, data)` cannot run: call it before creating outputs."""
        replicas = self.strategy.num_replicas_in_sync
        if self.batch_size % replicas:
            raise UserError(
                f"--batch_size={self.batch_size} must be divisible by the number of replicas ({replicas})"
            )
        if len(data.train_images) < self.batch_size:
            raise UserError(
                f"--batch_size={self.batch_size} is larger than the training set ({len(data.train_images)} examples)"
            )
        if not all(
            self.strategy.extended.variable_created_in_scope(v.value) for v in model.weights
        ):
            raise ValueError(
                "create the model inside `trainer.strategy.scope()` before calling fit"
            )

    def fit(self, model, data):
        """Trains `model` on `data` for `max_epochs` epochs.

        Returns:
            The history: a dict of per-epoch lists keyed by `HISTORY_KEYS`.
        """
        self.check(model, data)
        strategy, global_batch = self.strategy, self.batch_size
        with strategy.scope():
            optimizer = keras.optimizers.get(
                {"class_name": self.optimizer_name, "config": {"learning_rate": self.learning_rate}}
            )
            if model.dtype_policy.name == "mixed_float16":
                # float16 gradients underflow without loss scaling; bfloat16 needs none.
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            # Without this, the first apply under a strategy fails (keras-team/keras#19246).
            optimizer.build(model.trainable_variables)
            train_totals, val_totals = _Totals(), _Totals()
            epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epochs_done)

        train_fn, steps_per_epoch = data_lib.train_dataset_fn(
            data.train_images, data.train_labels, global_batch, self.seed, 0, self.max_epochs
        )
        val_fn = data_lib.eval_dataset_fn(data.val_images, data.val_labels, global_batch)
        train_iterator = iter(strategy.distribute_datasets_from_function(train_fn))
        val_dataset = strategy.distribute_datasets_from_function(val_fn)

        def train_step(images, labels):
            with tf.GradientTape() as tape:
                logits = tf.cast(model(images, training=True), tf.float32)  # mixed precision
                per_example = keras.losses.sparse_categorical_crossentropy(
                    labels, logits, from_logits=True
                )
                # Each replica's share of the global-batch mean; the optimizer sums the
                # replicas' gradients, so the loss is scaled exactly once.
                loss = tf.reduce_sum(per_example) / global_batch
                scaled_loss = optimizer.scale_loss(loss)  # the loss itself unless loss scaling
            grads = tape.gradient(scaled_loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            train_totals.add(per_example, logits, labels, tf.ones_like(per_example))

        def eval_step(images, labels, weights):
            logits = tf.cast(model(images, training=False), tf.float32)
            per_example = keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True
            )
            val_totals.add(per_example, logits, labels, weights)

        @tf.function
        def train_steps(iterator, num_steps):
            for _ in tf.range(num_steps):
                strategy.run(train_step, args=next(iterator))

        @tf.function
        def evaluate(dataset):
            for batch in dataset:
                strategy.run(eval_step, args=batch)

        def run_epoch(epoch):
            """Trains one epoch and validates; returns the epoch's `HISTORY_KEYS` values."""
            start = time.perf_counter()
            train_totals.reset()
            with tqdm(
                total=steps_per_epoch,
                desc=f"epoch {epoch}/{self.max_epochs}",
                unit="step",
                disable=None if self.verbose else True,
                leave=False,
            ) as bar:
                for done in range(0, steps_per_epoch, self.steps_per_execution):
                    chunk = min(self.steps_per_execution, steps_per_epoch - done)
                    train_steps(train_iterator, tf.constant(chunk))
                    # Reading the totals is a collective in a cluster: every worker
                    # must do it equally often, whether or not it shows a bar.
                    if self.verbose:
                        bar.set_postfix(loss=f"{train_totals.result()[0]:.4f}", refresh=False)
                        bar.update(chunk)
            val_totals.reset()
            evaluate(val_dataset)
            seconds = time.perf_counter() - start
            loss, accuracy = train_totals.result()
            if not np.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss} in epoch {epoch}; try a lower --learning_rate"
                )
            examples_per_second = steps_per_epoch * global_batch / seconds
            return (loss, accuracy, *val_totals.result(), seconds, examples_per_second)

        writers = reporting.SummaryWriters(self.model_dir if is_chief(strategy) else None)
        history = {key: [] for key in HISTORY_KEYS}
        with _checkpoint_manager(checkpoint, strategy, self.model_dir) as checkpoints:
            for epoch in range(1, self.max_epochs + 1):
                values = run_epoch(epoch)
                for key, value in zip(HISTORY_KEYS, values, strict=True):
                    history[key].append(value)
                writers.write_epoch(epoch, history)
                epochs_done.assign(epoch)
                if checkpoints:
                    checkpoints.save(checkpoint_number=epoch)
                if self.verbose:
                    loss, accuracy, val_loss, val_accuracy, seconds, speed = values
                    print(
                        f"epoch {epoch}/{self.max_epochs}: loss {loss:.4f} accuracy {accuracy:.4f} "
                        f"val_loss {val_loss:.4f} val_accuracy {val_accuracy:.4f} "
                        f"({seconds:.2f}s, {speed:,.0f} examples/s)",
                        flush=True,
                    )
        writers.close()
        # How often each tf.function was traced: 1 each, or something retraces per call.
        self.tracing_counts = {
            "train_steps": train_steps.experimental_get_tracing_count(),
            "evaluate": evaluate.experimental_get_tracing_count(),
        }
        if self.model_dir and is_chief(strategy):
            reporting.save_run(self.model_dir, model, history, data, self.run_config)
        if self.verbose:
            # Equal on every worker of a cluster: a quick check that they agree.
            print(f"weights fingerprint {weights_fingerprint(model)}", flush=True)
        return history


def weights_fingerprint(model):
    """A short hash of the model's weights, to compare replicas or runs at a glance."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _checkpoint_manager(checkpoint, strategy, model_dir):
    """Epoch checkpoints in `<model_dir>/checkpoints` (the last 3 kept), or `None`.

    In a cluster every worker must save (TensorFlow's documented pattern); only
    the chief's copy is kept, the others go to a temporary folder removed at the end.
    """
    if not model_dir:
        yield None
        return
    if is_chief(strategy):
        yield tf.train.CheckpointManager(checkpoint, Path(model_dir) / "checkpoints", max_to_keep=3)
        return
    scratch = tempfile.mkdtemp(prefix="keras_mlp_worker_checkpoints_")
    try:
        yield tf.train.CheckpointManager(checkpoint, scratch, max_to_keep=1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
