"""`Trainer`: the one training loop, for every distribution strategy.

Keras 3 `model.fit` cannot run real multi-worker training (keras-team/keras#20585),
so the trainer owns its loop: a `tf.function` that runs several steps through
`strategy.run`, the same code for the default, one-device and mirrored
strategies and a multi-worker cluster. Like `fit`, it drives a
`keras.callbacks.CallbackList`: every per-epoch and per-chunk concern
(checkpoints, progress, TensorBoard, the NaN guard, the signal stop, early
stopping, a search's pruning) is a callback, not a line of the loop.
"""

import hashlib
import time
import types

import keras
import numpy as np
import tensorflow as tf

from keras_mlp import callbacks as callbacks_lib
from keras_mlp import inputs as inputs_lib
from keras_mlp.checks import check_accepted, check_positive_int
from keras_mlp.distribute import from_every_worker
from keras_mlp.errors import TrainingInterrupted, UserError
from keras_mlp.names import OPTIMIZERS, STEPS_PER_EXECUTION
from keras_mlp.steps import (  # noqa: F401  (compute_loss, replica_penalty: public here too)
    CompiledSteps,
    compute_loss,
    means,
    replica_penalty,
)
from keras_mlp.train_state import HISTORY_KEYS, TrainState  # noqa: F401  (public here too)

# The default evaluation batch: the training batch times up to 4, to reach 1024 examples.
EVAL_BATCH_TARGET, EVAL_BATCH_MAX_FACTOR = 1024, 4


class Trainer:
    """Trains a classifier with sparse softmax cross-entropy on logits.

    With a `model_dir`, the run is checkpointed (model, optimizer, step, history)
    after every epoch and every `checkpoint_every_steps` steps, and `fit` resumes
    from the latest checkpoint found there. SIGINT/SIGTERM save a checkpoint at
    the next step boundary and raise `TrainingInterrupted`; a non-finite loss or
    weight raises `TrainingDiverged` before anything bad is saved.

    Callbacks see Keras' hooks: `on_train_begin` (logs: `resumed`, true when a
    checkpoint was restored, and the restored history's per-epoch lists keyed by
    `HISTORY_KEYS`; `params` also hold `resumed`, `history`, `initial_epoch` and
    `train_step`, the step each compiled chunk runs),
    `on_epoch_begin/end` (Keras' epoch index, from 0, where everything a user reads
    counts from 1: docs/design.md, "Epoch numbers"; logs hold `HISTORY_KEYS`),
    `on_train_batch_begin/end` once per compiled chunk of steps (batch: the step's
    index in the epoch; logs: the epoch's running `loss` and `accuracy`, and `step`,
    the global step count, `TrainState.step`), `on_train_end`.
    A callback that sets `model.stop_training` ends training after the current
    epoch's evaluation, as in `fit`; `model.optimizer` is the optimizer in use.
    Any callback with `steps_until_due(step)` or `close()` takes part in the
    trainer's protocol (`keras_mlp.callbacks`: chunks end where it is due; `close`
    runs on every exit). Each compiled chunk is one profiler step (`profiling`).

    Args:
        epochs: Epochs to train. Defaults to `10`.
        batch_size: Global batch size, split across all replicas. Defaults to `256`.
        validation_batch_size: Global batch size of the evaluation passes. Defaults to
            `None`: `batch_size` times the smallest factor (up to 4) that reaches 1024
            examples (`default_validation_batch_size`).
        optimizer: A `keras.optimizers.Optimizer` (a learning-rate schedule, weight
            decay, a `LossScaleOptimizer` included) made inside `strategy.scope()`, or
            a name from `OPTIMIZERS` (that optimizer with Keras' defaults, made at
            `fit`, in a `LossScaleOptimizer` for a `mixed_float16` model as
            `model.compile` does; an optimizer given is used as it is). Defaults to
            `None`: SGD with learning rate 0.1, the chapter's.
            `keras_mlp.optimizers.build_optimizer` makes the package's (schedules,
            warm-up, decoupled decay of the kernels, loss scaling for float16).
        strategy: The `tf.distribute.Strategy`; create the model inside its
            `scope()`. Defaults to `None` (the default strategy).
        model_dir: Where `checkpoints/` go; `None` keeps none. `fit` creates it (on
            the chief) before `on_train_begin`, so a callback may write there.
            Defaults to `None`.
        seed: Seed of the data order. Defaults to `0`.
        steps_per_execution: Training steps per `tf.function` call; more means
            less Python overhead, fewer callback calls. Defaults to
            `STEPS_PER_EXECUTION` (250).
        checkpoint_every_steps: Also checkpoint every this many steps; `0` means
            at epoch ends only. Defaults to `0`.
        keep_checkpoints: How many checkpoints to keep. Defaults to `3`.
        callbacks: Keras callbacks, called after the trainer's own. Defaults to `()`.
        stop_on_divergence: Raise `TrainingDiverged` when the loss or a weight is
            not finite, or the loss exceeds `divergence_factor` times the first
            step's (`DivergenceGuard`). Defaults to `True`.
        divergence_factor: See `stop_on_divergence`; `0` checks non-finite values
            only. Defaults to `100`.
        verbose: Show a progress bar and print one line per epoch. Defaults to `True`.

    Example:
        >>> trainer = Trainer(epochs=10, callbacks=[keras.callbacks.EarlyStopping()])
        >>> with trainer.strategy.scope():
        ...     model = build_model("scratch", data.input_shape, data.num_classes)
        >>> history = trainer.fit(model, data)
    """

    def __init__(
        self,
        *,
        epochs=10,
        batch_size=256,
        validation_batch_size=None,
        optimizer=None,
        strategy=None,
        model_dir=None,
        seed=0,
        steps_per_execution=STEPS_PER_EXECUTION,
        checkpoint_every_steps=0,
        keep_checkpoints=3,
        callbacks=(),
        stop_on_divergence=True,
        divergence_factor=100.0,
        verbose=True,
    ):
        if isinstance(optimizer, str):
            check_accepted("optimizer", optimizer, OPTIMIZERS)  # now, not at fit
        self.epochs = epochs
        self.batch_size = batch_size
        check_positive_int("batch_size", batch_size)
        if validation_batch_size is None:
            validation_batch_size = default_validation_batch_size(batch_size)
        check_positive_int("validation_batch_size", validation_batch_size)
        self.validation_batch_size = validation_batch_size
        self.optimizer = optimizer
        self.strategy = strategy or tf.distribute.get_strategy()
        self.model_dir = model_dir
        self.seed = seed
        self.steps_per_execution = steps_per_execution
        self.checkpoint_every_steps = checkpoint_every_steps
        self.keep_checkpoints = keep_checkpoints
        self.callbacks = list(callbacks)
        self.stop_on_divergence = stop_on_divergence
        self.divergence_factor = divergence_factor
        self.verbose = verbose
        self.stopped_early = False

    def check(self, model, data, validation_data=None):
        """Raises if `fit(model, data, validation_data)` cannot run: call it before
        creating outputs. Returns the inputs `fit` reads (`inputs.adapt`)."""
        replicas = self.strategy.num_replicas_in_sync
        for name in ("batch_size", "validation_batch_size"):
            if getattr(self, name) % replicas:
                raise UserError(
                    f"{name}={getattr(self, name)} must be divisible by the number of "
                    f"replicas ({replicas})"
                )
        train, validation = inputs_lib.adapt(data, validation_data)
        _check_steps(train, self.batch_size)
        if self.checkpoint_every_steps and not train.exact_resume:
            raise UserError(
                f"checkpoint_every_steps={self.checkpoint_every_steps}: a tf.data Dataset or "
                "dataset_fn resumes at epoch boundaries only, so checkpoints are kept at epoch "
                "ends; train on arrays or a keras_mlp Dataset for mid-epoch checkpoints"
            )
        if tf.distribute.has_strategy():
            # The input pipelines' host variables (data.host_variables) would be made
            # per replica device, copies of the whole set, on the accelerators too.
            raise ValueError("call fit outside `strategy.scope()` (create the model inside it)")
        if not all(
            self.strategy.extended.variable_created_in_scope(v.value) for v in model.weights
        ):
            raise ValueError("create the model inside `trainer.strategy.scope()` before fit")
        return train, validation

    def fit(self, model, data, validation_data=None):
        """Trains `model` until `epochs` epochs are done (resuming if possible).

        The contract is sparse-label classification: the model outputs logits, the
        labels are integer class indices, the loss is softmax cross-entropy.

        Args:
            model: A Keras model made inside `strategy.scope()`.
            data: A keras_mlp `Dataset` (validated on its own validation split unless
                `validation_data` is given), NumPy arrays `(x, y)`, a `tf.data.Dataset`
                of single `(x, y)` examples (the trainer batches it), or a
                `dataset_fn(input_context)` yielding per-replica batches (see
                `keras_mlp.inputs`). Arrays and a `Dataset` resume exactly mid-epoch; a
                `tf.data.Dataset` or `dataset_fn` at epoch boundaries.
            validation_data: The same kinds, evaluated exactly at every epoch end.
                Defaults to `None`: a `Dataset`'s own split, else no validation
                (`val_loss` and `val_accuracy` are NaN).

        Returns:
            The history: a dict of per-epoch lists keyed by `HISTORY_KEYS`.
        """
        run = self._prepare(model, data, validation_data)
        callbacks, steps, state = run.callbacks, run.steps, run.state
        model.stop_training = self.stopped_early = False
        logs, done = {}, state.steps_into_epoch
        try:
            # Keras flattens nested logs: the history's lists sit beside the flag.
            callbacks.on_train_begin({"resumed": run.resumed, **state.history})
            for epoch in range(state.epochs_done, self.epochs):
                callbacks.on_epoch_begin(epoch)
                start = time.perf_counter()
                logs, steps_run = self._train_epoch(steps, run.train, state, callbacks, epoch, done)
                logs.update(steps.evaluate())
                logs.update(self._epoch_figures(model, time.perf_counter() - start, steps_run))
                state.end_epoch(logs)
                callbacks.on_epoch_end(epoch, logs)
                done = 0
                if model.stop_training:
                    self.stopped_early = True
                    break
            callbacks.on_train_end(logs)
        except TrainingInterrupted as interrupted:
            # Resumable from exactly this step; data that resumes at epoch boundaries
            # from the last epoch end.
            exact = run.exact_resume
            interrupted.checkpoint = run.checkpoints.save() if exact else run.checkpoints.latest
            raise
        finally:
            for callback in callbacks.callbacks:
                close = getattr(callback, "close", None)
                if callable(close):
                    close()
            steps.close()
        self.tracing_counts = steps.tracing_counts()
        return state.history

    def _prepare(self, model, data, validation_data):
        """Everything `fit` loops over: optimizer set, checkpoint restored, pipelines
        built, model_dir made, callbacks ready."""
        train_input, validation_input = self.check(model, data, validation_data)
        model.optimizer = self._optimizer(model)  # where Keras callbacks look for it
        state = TrainState()
        checkpoints, resumed = self._restore(model, state)
        done = state.steps_into_epoch
        train, validation = self._feeds(train_input, validation_input, state.epochs_done, done)
        _check_steps(train_input, self.batch_size)  # a dataset_fn's length is known now
        steps_per_epoch = train_input.steps_per_epoch(self.batch_size)
        if resumed and self.verbose:
            where = _position(state, done, self.epochs, steps_per_epoch)
            print(f"resuming from {resumed}: {where}")
        if self.model_dir and self.strategy.extended.should_checkpoint:  # the chief's folder
            tf.io.gfile.makedirs(self.model_dir)  # exists before a callback opens a file there
        steps = CompiledSteps(model, self.strategy, self.batch_size, train, validation)
        return types.SimpleNamespace(
            callbacks=self._callback_list(
                model, checkpoints, state, resumed, steps_per_epoch, steps.train_step
            ),
            steps=steps,
            state=state,
            checkpoints=checkpoints,
            resumed=bool(resumed),
            train=train,
            exact_resume=train_input.exact_resume,
        )

    def _train_epoch(self, steps, feed, state, callbacks, epoch, done):
        """Trains from step `done` to the end of the epoch (or a callback's stop) in
        compiled chunks; returns the epoch's training `loss` and `accuracy`, and the
        number of steps run."""
        steps_per_epoch, first = callbacks.params["steps"], done
        offset = state.epoch_sums.numpy()  # sums of a cut epoch's first steps (resume)
        steps.train_totals.reset()
        logs = {**means(offset), "step": int(state.step.numpy())}
        while done < steps_per_epoch and not callbacks.model.stop_training:
            chunk = self._chunk_size(callbacks, logs["step"], steps_per_epoch - done)
            callbacks.on_train_batch_begin(done, logs)
            # A profiler step marker (a no-op unless profiling), numbered from 1.
            with tf.profiler.experimental.Trace("train", step_num=logs["step"] + 1, _r=1):
                steps.train_steps(feed.chunk_args(epoch, done), tf.constant(chunk))
            done += chunk
            sums = offset + steps.train_totals.sums()
            state.step.assign_add(chunk)
            state.epoch_sums.assign(sums)
            logs = {**means(sums), "step": int(state.step.numpy())}
            callbacks.on_train_batch_end(done - 1, logs)
        return means(offset + steps.train_totals.sums()), done - first

    def _epoch_figures(self, model, seconds, steps_run):
        return {
            "learning_rate": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
            "epoch_seconds": seconds,
            "examples_per_second": steps_run * self.batch_size / seconds,
        }

    def _restore(self, model, state):
        """The run's `Checkpointer`, and the checkpoint it restored (or `None`)."""
        # Dropout's seed-generator states are variables but not weights, which
        # tf.train.Checkpoint(model=...) leaves out: kept too, a resumed run draws the
        # masks an uninterrupted one would. A model without them adds nothing.
        weights = {id(w) for w in model.weights}
        random_states = [v for v in model.variables if id(v) not in weights]
        items = {"random_states": random_states} if random_states else {}
        checkpoints = callbacks_lib.Checkpointer(
            tf.train.Checkpoint(
                model=model, optimizer=model.optimizer, **state.checkpoint_items(), **items
            ),
            self.strategy,
            self.model_dir,
            self.keep_checkpoints,
            self.checkpoint_every_steps,
        )
        try:
            resumed = checkpoints.restore()
            self._check_workers_agree(state.step)
        except Exception:
            checkpoints.close()  # a worker's temporary folder
            raise
        for path, reason in checkpoints.skipped if self.verbose else ():
            print(f"skipped checkpoint {path}: it does not restore ({reason})")
        return checkpoints, resumed

    def _check_workers_agree(self, step):
        """In a cluster, every worker must have restored the same step (each reads the
        chief's checkpoints): one that could not see them would start over alone."""
        steps = [int(s) for s in from_every_worker(self.strategy, int(step.numpy()))]
        if len(set(steps)) > 1:
            each = ", ".join(f"worker {i}: step {s}" for i, s in enumerate(steps))
            raise UserError(
                f"the workers restored different steps ({each}); every worker must read the "
                f"chief's checkpoints in model_dir={self.model_dir} (shared storage)"
            )

    def _chunk_size(self, callbacks, step, remaining):
        """Steps of the next compiled call: up to `steps_per_execution`, ending where a
        callback must run (a checkpoint, a log line, a profile edge) or at the epoch's end."""
        due = [
            c.steps_until_due(step)
            for c in callbacks.callbacks
            if callable(getattr(c, "steps_until_due", None))
        ]
        return min(self.steps_per_execution, remaining, *(d for d in due if d))

    def _optimizer(self, model):
        """The optimizer `fit` uses: the one given, or one made from a name, built
        inside the strategy's scope."""
        optimizer = self.optimizer
        with self.strategy.scope():
            if optimizer is None or isinstance(optimizer, str):
                optimizer = keras.optimizers.get(
                    optimizer or {"class_name": "sgd", "config": {"learning_rate": 0.1}}
                )
                if model.dtype_policy.name == "mixed_float16":  # as `model.compile` does
                    optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            elif not self.strategy.extended.variable_created_in_scope(optimizer.iterations.value):
                raise ValueError(
                    "create the optimizer inside `trainer.strategy.scope()` before fit"
                )
            if not optimizer.built:
                # Without this, the first apply under a strategy fails (keras-team/keras#19246).
                optimizer.build(model.trainable_variables)
        return optimizer

    def _callback_list(self, model, checkpoints, state, resumed, steps_per_epoch, train_step):
        """The trainer's own callbacks first (guard, signal vote, checkpoints: a
        summary or a user's callback never runs ahead of the checkpoint), then the user's."""
        own = [callbacks_lib.SignalStop(), checkpoints]
        if self.stop_on_divergence:
            guard = callbacks_lib.DivergenceGuard(
                checkpoints, self.divergence_factor, reference=state.first_loss
            )
            own.insert(0, guard)
        if self.verbose:
            own.append(callbacks_lib.ProgressLogger())
        # The trainer's own callbacks act per chunk (on_train_batch_end), so Keras calls
        # every callback synchronously, in this order.
        callbacks = keras.callbacks.CallbackList([*own, *self.callbacks], model=model)
        callbacks.set_params(
            {
                "epochs": self.epochs,
                "steps": steps_per_epoch,
                "verbose": 0,
                "initial_epoch": state.epochs_done,
                "resumed": bool(resumed),
                "history": state.history,
                "train_step": train_step,
            }
        )
        return callbacks

    def _feeds(self, train, validation, epoch, done):
        """The training feed from step `done` of `epoch` to the end, and the validation
        feed (`None` without validation data): `feeds`."""
        train_feed = train.train_feed(
            self.strategy, self.batch_size, self.seed, epoch, self.epochs - epoch, done
        )
        if validation is None:
            return train_feed, None
        return train_feed, validation.eval_feed(self.strategy, self.validation_batch_size)


def default_validation_batch_size(batch_size):
    """The evaluation batch for training batches of `batch_size`: `batch_size` times the
    smallest factor, up to `EVAL_BATCH_MAX_FACTOR`, that reaches `EVAL_BATCH_TARGET`
    examples (256: 1024; 32: 128; 2000: 2000).

    Evaluation keeps no activations for a backward pass, so a larger batch costs little
    memory, and fewer steps cost less overhead: on the chapter's model a pass over
    10,000 examples takes 20 ms in batches of 256 and 15 ms in batches of 1024
    (docs/design.md, "Evaluation batches"). A multiple of `batch_size` divides among
    the replicas as it does; the factor's bound keeps a large-input model's pass within
    4 training batches' inputs."""
    return batch_size * min(EVAL_BATCH_MAX_FACTOR, -(-EVAL_BATCH_TARGET // batch_size))


def _check_steps(train, batch_size):
    """Refuses training data without one full batch per epoch (a dataset_fn's length is
    known once its pipelines are built: `None` before)."""
    steps = train.steps_per_epoch(batch_size)
    if steps is not None and steps < 1:
        size = f"{train.count} examples" if train.count is not None else "not one full batch"
        raise UserError(f"batch_size={batch_size} is larger than the training set ({size})")


def _position(state, done, epochs, steps_per_epoch):
    """Where a resumed run stands, for its first line: the epoch in progress is the
    `epochs_done + 1`th (docs/design.md, "Epoch numbers")."""
    if state.epochs_done >= epochs:
        return f"all {epochs} epochs were done; writing the outputs"
    return f"epoch {state.epochs_done + 1}, step {done} of {steps_per_epoch}"


def weights_fingerprint(model):
    """A short hash of the model's weights, to compare replicas or runs at a glance."""
    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()[:16]
