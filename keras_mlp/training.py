"""`Trainer`: the one training loop, for every distribution strategy.

Keras 3 `model.fit` cannot run real multi-worker training (keras-team/keras#20585),
so the trainer owns its loop: a `tf.function` that runs several steps through
`strategy.run`. The same code serves the default, one-device and mirrored
strategies, and a multi-worker cluster.
"""

import contextlib
import hashlib
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from keras_mlp import data as data_lib
from keras_mlp import reporting, summaries
from keras_mlp.distribute import is_chief
from keras_mlp.errors import UserError

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "adamax", "nadam", "lion")

HISTORY_KEYS = (
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "epoch_seconds",
    "examples_per_second",
)


class TrainingInterrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after saving a checkpoint."""

    def __init__(self, signal_number, step, checkpoint):
        self.signal_number, self.step, self.checkpoint = signal_number, step, checkpoint
        saved = (
            f"checkpoint saved as {checkpoint}; rerun the same command to resume"
            if checkpoint
            else "nothing saved (no model_dir)"
        )
        super().__init__(f"stopped by {signal.Signals(signal_number).name} at step {step}; {saved}")


def _summed_on_read(shape=()):
    """Floats each replica updates locally; reading them sums over replicas and workers."""
    return tf.Variable(
        tf.zeros(shape),
        trainable=False,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.SUM,
    )


class _Totals:
    """Sums of loss, correct predictions and examples, kept on the devices.

    Sync-on-read variables: each replica adds to its own copy inside the step,
    and reading them outside sums over replicas (and workers: a collective, so
    every worker reads them at the same points).
    """

    def __init__(self, num_classes=None):
        self.variables = [_summed_on_read() for _ in range(3)]
        # Rows: true label, columns: predicted; only where image summaries want it.
        self.confusion = _summed_on_read((num_classes, num_classes)) if num_classes else None

    def add(self, per_example_loss, logits, labels, weights):
        loss, correct, count = self.variables
        predicted = tf.argmax(logits, axis=-1, output_type=labels.dtype)
        loss.assign_add(tf.reduce_sum(per_example_loss * weights))
        correct.assign_add(tf.reduce_sum(tf.cast(predicted == labels, tf.float32) * weights))
        count.assign_add(tf.reduce_sum(weights))
        if self.confusion is not None:
            self.confusion.assign_add(
                tf.math.confusion_matrix(
                    labels,
                    predicted,
                    num_classes=self.confusion.shape[0],
                    weights=weights,
                    dtype=tf.float32,
                )
            )

    def reset(self):
        for variable in self.variables + ([self.confusion] if self.confusion is not None else []):
            variable.assign(tf.zeros_like(variable))

    def sums(self):
        """`[loss sum, correct, count]` over everything added since the last reset."""
        return np.array([float(v.read_value()) for v in self.variables])


def _mean_and_accuracy(sums):
    count = max(sums[2], 1.0)
    return sums[0] / count, sums[1] / count


class Trainer:
    """Trains a classifier with sparse softmax cross-entropy on logits.

    With a `model_dir`, the run is checkpointed (model, optimizer, step, history)
    after every epoch and every `checkpoint_every_steps` steps, and `fit` resumes
    from the latest checkpoint found there. SIGINT/SIGTERM save a checkpoint at
    the next step boundary and raise `TrainingInterrupted`; a non-finite loss or
    weight raises `FloatingPointError` before anything bad is saved.

    Args:
        max_epochs: Epochs to train. Defaults to `10`.
        batch_size: Global batch size, split across all replicas. Defaults to `256`.
        learning_rate: Optimizer learning rate. Defaults to `0.1`.
        optimizer: A name from `OPTIMIZERS`. Defaults to `"sgd"`.
        strategy: The `tf.distribute.Strategy`; create the model inside its
            `scope()`. Defaults to `None` (the default strategy).
        model_dir: Where checkpoints, TensorBoard logs, `metrics.json`,
            `progress.png`, `model.keras` and `export/` go; `None` writes nothing.
            Defaults to `None`.
        seed: Seed of the data order. Defaults to `0`.
        steps_per_execution: Training steps per `tf.function` call; more means
            less Python overhead, fewer progress updates. Defaults to `50`.
        checkpoint_every_steps: Also checkpoint every this many steps; `0` means
            at epoch ends only. Defaults to `0`.
        keep_checkpoints: How many checkpoints to keep. Defaults to `3`.
        log_every_steps: Log the training loss, averaged over the last this many
            steps, to TensorBoard; `0` means never. Defaults to `0`.
        histogram_freq: Every this many epochs, log histograms of every weight and
            of its gradient (on a fixed training batch); `0` means never. Defaults to `0`.
        profile_steps: `(first, last)` training steps to trace with the TensorFlow
            profiler (the Profile tab), or `None`. Defaults to `None`.
        image_summaries: Log a grid of validation predictions and the confusion
            matrix every epoch. Defaults to `False`.
        on_epoch_end: Called as `on_epoch_end(epoch, history)` after each epoch is
            checkpointed and logged (a search uses it to prune); `None` for none.
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
        checkpoint_every_steps=0,
        keep_checkpoints=3,
        log_every_steps=0,
        histogram_freq=0,
        profile_steps=None,
        image_summaries=False,
        on_epoch_end=None,
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
        self.checkpoint_every_steps = checkpoint_every_steps
        self.keep_checkpoints = keep_checkpoints
        self.log_every_steps = log_every_steps
        self.histogram_freq = histogram_freq
        self.profile_steps = profile_steps
        self.image_summaries = image_summaries
        self.on_epoch_end = on_epoch_end
        self.run_config = run_config or {}
        self.verbose = verbose
        self._signal_received = None

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
        """Trains `model` on `data` until `max_epochs` epochs are done (resuming if possible).

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
            train_totals = _Totals()
            val_totals = _Totals(data.num_classes if self.image_summaries else None)
            stop_votes = _summed_on_read()  # > 0 once any worker got SIGINT/SIGTERM
            # What a checkpoint holds besides model and optimizer: enough to continue
            # exactly (the data order follows from seed, epoch and step).
            step = tf.Variable(0, dtype=tf.int64, trainable=False)
            epochs_done = tf.Variable(0, dtype=tf.int64, trainable=False)
            history_table = tf.Variable(tf.zeros((self.max_epochs, len(HISTORY_KEYS)), tf.float64))
            partial_sums = tf.Variable(tf.zeros(3, tf.float64))  # train totals of a cut epoch
        checkpoint = tf.train.Checkpoint(
            model=model,
            optimizer=optimizer,
            step=step,
            epochs_done=epochs_done,
            history=history_table,
            partial_sums=partial_sums,
        )
        resumed = self._restore(checkpoint)
        steps_per_epoch = len(data.train_images) // global_batch
        first_epoch = int(epochs_done.numpy()) + 1
        skip_steps = int(step.numpy()) - int(epochs_done.numpy()) * steps_per_epoch
        history = {
            key: [float(v) for v in history_table.numpy()[: int(epochs_done.numpy()), i]]
            for i, key in enumerate(HISTORY_KEYS)
        }
        if resumed and self.verbose:
            print(
                f"resuming from {resumed}: epoch {first_epoch}, step {skip_steps} of "
                f"{steps_per_epoch}",
                flush=True,
            )

        train_fn, _ = data_lib.train_dataset_fn(
            data.train_images,
            data.train_labels,
            global_batch,
            self.seed,
            first_epoch - 1,
            self.max_epochs - first_epoch + 1,
            skip_steps,
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

        @tf.function
        def weights_finite():
            return tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in model.weights])

        def save(sums):
            partial_sums.assign(sums)
            return manager.save(checkpoint_number=int(step.numpy())) if manager else None

        def stop_requested():
            """Whether any worker got SIGINT/SIGTERM: every worker learns it at the same step."""
            stop_votes.assign(1.0 if self._signal_received else 0.0)
            return float(stop_votes.read_value()) > 0

        writers = summaries.SummaryWriters(self.model_dir if is_chief(strategy) else None)
        profile_first, profile_last = self.profile_steps or (0, 0)

        def steps_to_boundary(at):
            """Steps from `at` to the next step where something must happen between calls."""
            gaps = [
                every - at % every
                for every in (self.checkpoint_every_steps, self.log_every_steps)
                if every
            ]
            gaps += [edge - at for edge in (profile_first - 1, profile_last) if edge > at]
            return min(gaps, default=self.steps_per_execution)

        def run_chunk(chunk, at):
            """One `train_steps` call, traced for the Graphs tab the first time and
            profiled inside `profile_steps`."""
            if profile_first and writers.enabled and at == profile_first - 1:
                tf.profiler.experimental.start(str(writers.logs))
            tracing = writers.enabled and train_steps.experimental_get_tracing_count() == 0
            if tracing:
                tf.summary.trace_on(graph=True)
            train_steps(train_iterator, tf.constant(chunk))
            if tracing:
                writers.trace_export("train_steps")
            if profile_first and writers.enabled and at < profile_last <= at + chunk:
                tf.profiler.experimental.stop()

        def run_epoch(epoch, done, offset):
            """Trains the rest of one epoch and validates; returns its `HISTORY_KEYS` values."""
            start = time.perf_counter()
            train_totals.reset()
            sums = logged = offset  # the totals so far, should no step remain
            with tqdm(
                total=steps_per_epoch,
                initial=done,
                desc=f"epoch {epoch}/{self.max_epochs}",
                unit="step",
                disable=None if self.verbose else True,
                leave=False,
            ) as bar:
                while done < steps_per_epoch:
                    before = int(step.numpy())
                    chunk = min(
                        self.steps_per_execution, steps_per_epoch - done, steps_to_boundary(before)
                    )
                    run_chunk(chunk, before)
                    done += chunk
                    at = int(step.assign_add(chunk).numpy())
                    sums = offset + train_totals.sums()
                    if not (np.isfinite(sums[0]) and bool(weights_finite())):
                        last_good = (manager and manager.latest_checkpoint) or "none"
                        raise FloatingPointError(
                            f"training loss became {sums[0]} in steps {at - chunk + 1}-{at} "
                            f"(epoch {epoch}); stopped without saving; the last good checkpoint "
                            f"is {last_good}; try a lower --learning_rate"
                        )
                    bar.set_postfix(loss=f"{_mean_and_accuracy(sums)[0]:.4f}", refresh=False)
                    bar.update(chunk)
                    if self.log_every_steps and at % self.log_every_steps == 0:
                        writers.write_step_loss(at, _mean_and_accuracy(sums - logged)[0])
                        logged = sums
                    if stop_requested():
                        raise TrainingInterrupted(
                            self._signal_received or signal.SIGTERM, at, save(sums)
                        )
                    every = self.checkpoint_every_steps
                    if every and at % every == 0 and done < steps_per_epoch:
                        save(sums)
            val_totals.reset()
            evaluate(val_dataset)
            seconds = time.perf_counter() - start
            steps_run = steps_per_epoch - (skip_steps if epoch == first_epoch else 0)
            return (
                *_mean_and_accuracy(sums),
                *_mean_and_accuracy(val_totals.sums()),
                float(optimizer.learning_rate.numpy()),
                seconds,
                steps_run * global_batch / seconds,
            )

        def write_epoch_extras(epoch):
            """Histograms and images, when asked for (chief only)."""
            if not writers.enabled:
                return
            if self.histogram_freq and epoch % self.histogram_freq == 0:
                images = data_lib.scale(data.train_images[:global_batch])
                with tf.GradientTape() as tape:
                    logits = tf.cast(model(images, training=False), tf.float32)
                    loss = tf.reduce_mean(
                        keras.losses.sparse_categorical_crossentropy(
                            data.train_labels[:global_batch], logits, from_logits=True
                        )
                    )
                variables = model.trainable_variables
                writers.write_histograms(epoch, variables, tape.gradient(loss, variables))
            if self.image_summaries:
                shown = data.val_images[:16]
                predicted = np.argmax(model(data_lib.scale(shown), training=False), axis=-1)
                writers.write_images(
                    epoch,
                    summaries.image_grid(shown, predicted, data.val_labels[:16], data.label_names),
                    summaries.confusion_image(
                        val_totals.confusion.read_value().numpy(), data.label_names
                    ),
                )

        writers.start_run(self.run_config, history)
        with (
            _checkpoint_manager(
                checkpoint, strategy, self.model_dir, self.keep_checkpoints
            ) as manager,
            self._stop_on_signals(),
        ):
            offset = partial_sums.numpy() if skip_steps else np.zeros(3)
            for epoch in range(first_epoch, self.max_epochs + 1):
                values = run_epoch(epoch, skip_steps if epoch == first_epoch else 0, offset)
                offset = np.zeros(3)
                for key, value in zip(HISTORY_KEYS, values, strict=True):
                    history[key].append(value)
                history_table[epoch - 1].assign(values)
                epochs_done.assign(epoch)
                save(np.zeros(3))  # checkpoint first: a summary is never ahead of it
                writers.write_epoch(epoch, history)
                write_epoch_extras(epoch)
                if self.on_epoch_end:
                    self.on_epoch_end(epoch, history)
                if self.verbose:
                    loss, accuracy, val_loss, val_accuracy, _, seconds, speed = values
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

    def _restore(self, checkpoint):
        """Restores the latest checkpoint in `<model_dir>/checkpoints`; returns its path or None.

        Every worker of a cluster reads the chief's checkpoints there. A state
        file that names no usable checkpoint is an error, not a fresh start.
        """
        if not self.model_dir:
            return None
        directory = Path(self.model_dir) / "checkpoints"
        latest = tf.train.latest_checkpoint(str(directory))
        if latest is None:
            if (directory / "checkpoint").exists():
                raise UserError(
                    f"{directory / 'checkpoint'} names no usable checkpoint (damaged or deleted); "
                    "use --overwrite to start over"
                )
            return None
        try:
            checkpoint.restore(latest).assert_existing_objects_matched()
        except Exception as e:  # damaged files fail in many ways (OpError, IndexError, ...)
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(
                f"cannot restore {latest} ({reason}); use --overwrite to start over"
            ) from None
        return latest

    @contextlib.contextmanager
    def _stop_on_signals(self):
        """SIGINT/SIGTERM ask for a stop at the next step boundary instead of killing."""
        self._signal_received = None
        if threading.current_thread() is not threading.main_thread():
            yield  # only the main thread may handle signals
            return

        def request_stop(signal_number, frame):
            self._signal_received = signal_number

        previous = {
            sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def weights_fingerprint(model):
    """A short hash of the model's weights, to compare replicas or runs at a glance."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]


@contextlib.contextmanager
def _checkpoint_manager(checkpoint, strategy, model_dir, keep):
    """Checkpoints in `<model_dir>/checkpoints` (the last `keep` kept), or `None`.

    In a cluster every worker must save (TensorFlow's documented pattern); only
    the chief's copy is kept, the others go to a temporary folder removed at the end.
    """
    if not model_dir:
        yield None
        return
    if is_chief(strategy):
        yield tf.train.CheckpointManager(
            checkpoint, Path(model_dir) / "checkpoints", max_to_keep=keep
        )
        return
    scratch = tempfile.mkdtemp(prefix="keras_mlp_worker_checkpoints_")
    try:
        yield tf.train.CheckpointManager(checkpoint, scratch, max_to_keep=1)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
