"""The trainer's own concerns as Keras callbacks, each small and testable alone.

`Checkpointer` saves and restores, `DivergenceGuard` stops on non-finite
values, `SignalStop` turns SIGINT/SIGTERM into a clean stop that every worker
agrees on, and `ProgressLogger` shows a progress bar and one line per epoch.
(The TensorBoard callback is `summaries.TensorBoardLogger`.)

The trainer's callback protocol. Besides Keras' hooks, any callback (a plain
`keras.callbacks.Callback` too: the trainer looks the methods up by name) may have

- `steps_until_due(step)`: steps from global step `step` until the callback must see
  a chunk end (`on_train_batch_end`); the trainer ends its compiled chunk of steps
  there. `None` or `0`: no need.
- `close()`: releases files, handlers or threads; called once on every exit from
  `fit`, error or not.

A resumed run is signalled explicitly: `on_train_begin`'s logs hold `resumed` (true
when a checkpoint was restored) beside the restored history's per-epoch lists (keyed
by `train_state.HISTORY_KEYS`; empty for a new run), and `self.params` holds `resumed`,
`history` and `initial_epoch` (the first epoch this run trains) from then on.
`self.params["train_step"]` is the training step itself, `train_step(images, labels)`,
one replica's step that each compiled chunk runs through `strategy.run`
(`steps.CompiledSteps`): a callback may trace it (TensorBoard's Graphs tab does);
calling it would train.
`Callback` below is a convenience base with both methods as no-ops.
"""

import contextlib
import re
import shutil
import signal
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from keras_mlp import signals
from keras_mlp.distribute import summed_on_read
from keras_mlp.errors import OutputError, TrainingDiverged, TrainingInterrupted, UserError
from keras_mlp.reporting import WRITE_ERRORS


class Callback(keras.callbacks.Callback):
    """A Keras callback with the protocol's two methods as no-ops (module docstring)."""

    def steps_until_due(self, step):
        """Steps from global step `step` until this callback must see a chunk end; `None`: any."""
        return None

    def close(self):
        """Releases files, handlers or threads; called on every exit from `fit`."""


def steps_to_multiple(interval, step):
    """Steps from `step` to the next multiple of `interval`; `None` when `interval` is 0."""
    return interval - step % interval if interval else None


class Checkpointer(Callback):
    """Checkpoints in `<model_dir>/checkpoints` at every epoch end and every
    `every_steps` steps (the last `keep` kept); with no `model_dir`, none.

    In a cluster every worker must save (TensorFlow's documented pattern); only
    the chief's copy is kept, the others go to a temporary folder removed at the end.
    """

    def __init__(self, checkpoint, strategy, model_dir, keep=3, every_steps=0):
        super().__init__()
        self.checkpoint, self.every_steps, self.keep = checkpoint, every_steps, keep
        self.directory = Path(model_dir) / "checkpoints" if model_dir else None
        self._scratch = None
        self._manager = None  # made at the first save, after restore() had its look
        self.skipped = []  # (checkpoint, reason) that restore() could not use
        if self.directory and not strategy.extended.should_checkpoint:
            self._scratch = tempfile.mkdtemp(prefix="keras_mlp_worker_checkpoints_")

    @property
    def latest(self):
        """The newest saved checkpoint of this run (the chief's) that restore() did not
        skip as damaged, or `None`."""
        skipped = {path for path, _ in self.skipped}
        candidates = [p for p in self._candidates() if p not in skipped] if self.directory else []
        return candidates[0] if candidates else None

    def _state(self):
        """The parsed `checkpoint` state file, or `None` when it is missing or unreadable."""
        try:
            return tf.train.get_checkpoint_state(str(self.directory))
        except (ValueError, OSError, tf.errors.OpError):  # an emptied or garbled state file
            return None

    def _candidates(self):
        """The run's checkpoints, newest first: as the state file lists them, or, when it
        cannot be read, as the `ckpt-N.index` files in the folder say. Only the names
        CheckpointManager gives (`ckpt-<step>`) count: a user's `ckpt-291-backup` is not one."""
        state = self._state()
        if state and state.all_model_checkpoint_paths:
            names = [Path(p).name for p in state.all_model_checkpoint_paths]
        else:
            names = [p.stem for p in self.directory.glob("ckpt-*.index")]
        steps = {int(m[1]): name for name in names if (m := re.fullmatch(r"ckpt-(\d+)", name))}
        return [str(self.directory / steps[step]) for step in sorted(steps, reverse=True)]

    def restore(self):
        """Restores the newest checkpoint in `<model_dir>/checkpoints` that restores;
        returns its path, or `None` when the run has none yet.

        A damaged newest checkpoint is skipped for an older intact one (each skip is
        listed in `skipped`, with its reason); when checkpoints exist but none
        restores, that is an error, not a fresh start. Every worker of a cluster
        reads the chief's checkpoints there.
        """
        self.skipped = []
        if not self.directory or not self.directory.is_dir():
            return None
        candidates = self._candidates()
        for path in candidates:
            try:
                self.checkpoint.restore(path).assert_existing_objects_matched()
            except Exception as e:  # damaged files fail in many ways (OpError, IndexError, ...)
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                self.skipped.append((path, reason))
                continue
            state_file = self.directory / "checkpoint"
            if self._scratch is None and state_file.exists() and self._state() is None:
                # Unreadable, it would stop the next save; the files are what count (the
                # chief's CheckpointManager starts a new one).
                state_file.unlink()
            return path
        if self.skipped:
            path, reason = self.skipped[0]
            raise UserError(
                f"cannot restore any checkpoint in {self.directory} (newest: {path}: {reason}); "
                "set overwrite=True to start over"
            )
        if (self.directory / "checkpoint").exists():
            raise UserError(
                f"{self.directory / 'checkpoint'} names no usable checkpoint (damaged or "
                "deleted); set overwrite=True to start over"
            )
        return None

    def save(self):
        """Saves now, numbered by the global step; returns the path (or `None` without a model_dir)."""
        if not self.directory:
            return None
        # In a cluster every worker must save (TensorFlow's documented pattern); only
        # the chief keeps its copy.
        where = self._scratch or self.directory
        if self._manager is None:
            self._manager = tf.train.CheckpointManager(
                self.checkpoint, where, max_to_keep=1 if self._scratch else self.keep
            )
        step = int(self.checkpoint.step.numpy())
        try:
            path = self._manager.save(checkpoint_number=step)
        except WRITE_ERRORS as e:  # the checkpoints before it stay usable
            raise OutputError.from_error(Path(where) / f"ckpt-{step}", e) from None
        # A worker names the chief's checkpoint of the same step (being written now).
        return path if self._scratch is None else str(self.directory / f"ckpt-{step}")

    def steps_until_due(self, step):
        return steps_to_multiple(self.every_steps, step)

    def on_train_batch_end(self, batch, logs=None):
        mid_epoch = batch + 1 < self.params["steps"]  # the epoch end saves anyway
        if self.every_steps and int(logs["step"]) % self.every_steps == 0 and mid_epoch:
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        self.save()

    def close(self):
        if self._scratch:
            shutil.rmtree(self._scratch, ignore_errors=True)


class DivergenceGuard(Callback):
    """Stops training with `TrainingDiverged` before anything bad is saved, when

    - the running training loss or any weight is not finite, or
    - the running training loss exceeds `factor` times the loss of the run's first
      step (a diverging run's loss explodes while staying finite: 1e24 at a
      learning rate of 1e5). The first step's loss is about log(num_classes) for a
      fresh model, and larger for a badly scaled one, which then still may learn.
      `factor=0` keeps the non-finite check only.

    `reference` is a float64 `tf.Variable` holding the first step's loss (NaN until
    it is seen); the trainer keeps it in its checkpoints, so that a resumed run is
    judged against its own first step, not the resumed process's. The error names
    the last good checkpoint.
    """

    def __init__(self, checkpointer, factor=100.0, reference=None):
        super().__init__()
        self.checkpointer, self.factor = checkpointer, factor
        self.reference = (
            tf.Variable(float("nan"), dtype=tf.float64, trainable=False)
            if reference is None
            else reference
        )
        self._epoch = self._first_step = 0

    def _reference_loss(self):
        value = float(self.reference.numpy())
        return None if np.isnan(value) else value

    def steps_until_due(self, step):
        return 1 if self.factor and self._reference_loss() is None else None

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self._first_step = int(logs["step"]) + 1

    def on_train_batch_end(self, batch, logs=None):
        loss = logs["loss"]
        if self._reference_loss() is None and np.isfinite(loss):
            self.reference.assign(loss)
        reference = self._reference_loss()
        # Steps and epochs as a user reads them, from 1 (docs/design.md, "Epoch numbers").
        steps = f"steps {self._first_step}-{int(logs['step'])} (epoch {self._epoch + 1})"
        if not (np.isfinite(loss) and self._weights_finite()):
            problem, hint = f"training loss became {loss} in {steps}", ""
        elif self.factor and loss > self.factor * reference:
            problem = (
                f"training loss reached {loss:.4g} in {steps}, over {self.factor:g} x the "
                f"first step's {reference:.4g}"
            )
            hint = ", or divergence_factor=0 to turn this check off"
        else:
            return
        raise TrainingDiverged(
            f"{problem}; stopped without saving; the last good checkpoint is "
            f"{self.checkpointer.latest or 'none'}; try a lower learning_rate{hint}"
        )

    def _weights_finite(self):
        return all(bool(np.all(np.isfinite(w))) for w in self.model.get_weights())


class SignalStop(Callback):
    """SIGINT/SIGTERM ask for a stop at the next chunk boundary instead of killing.

    Every worker of a cluster votes at each boundary (a sum over workers), so all
    stop at the same step even when only one got the signal; the trainer then
    saves a checkpoint and `TrainingInterrupted` propagates. Handlers are
    installed for the duration of training, in the main thread only.
    """

    def __init__(self):
        super().__init__()
        self.received = None
        self._handlers = contextlib.ExitStack()
        self._votes = None

    def on_train_begin(self, logs=None):
        with self.model.distribute_strategy.scope():
            self._votes = summed_on_read()
        self._handlers.enter_context(signals.handled(self._request_stop))

    def _request_stop(self, signal_number, frame):
        self.received = signal_number

    def on_train_batch_end(self, batch, logs=None):
        self._votes.assign(1.0 if self.received else 0.0)
        if float(self._votes.read_value()) > 0:  # a collective: every worker reads it here
            raise TrainingInterrupted(self.received or signal.SIGTERM, int(logs["step"]))

    def close(self):
        self._handlers.close()


class ProgressLogger(Callback):
    """A progress bar over each epoch's steps and one printed line per epoch, which
    number the epochs from 1 (`epoch + 1`: docs/design.md, "Epoch numbers")."""

    def __init__(self):
        super().__init__()
        self._bar = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._bar is None:
            self._bar = tqdm(
                total=self.params["steps"],
                initial=batch,
                desc=f"epoch {self._epoch + 1}/{self.params['epochs']}",
                unit="step",
                disable=None,  # off when stderr is not a terminal
                leave=False,
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self._bar.set_postfix(loss=f"{logs['loss']:.4f}", refresh=False)
        self._bar.update(batch + 1 - self._bar.n)

    def on_epoch_end(self, epoch, logs=None):
        self.close()
        print(
            f"epoch {epoch + 1}/{self.params['epochs']}: loss {logs['loss']:.4f} "
            f"accuracy {logs['accuracy']:.4f} val_loss {logs['val_loss']:.4f} "
            f"val_accuracy {logs['val_accuracy']:.4f} ({logs['epoch_seconds']:.2f}s, "
            f"{logs['examples_per_second']:,.0f} examples/s)",
            flush=True,
        )

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
