"""`TrainState`: what a checkpoint holds besides model and optimizer, and the history
of a run (`HISTORY_KEYS`): the trainer's position, enough to continue exactly."""

import json

import tensorflow as tf

HISTORY_KEYS = (
    "loss",
    "accuracy",
    "val_loss",
    "val_accuracy",
    "learning_rate",
    "epoch_seconds",
    "examples_per_second",
    "steps",  # the epoch's training steps: fewer than an epoch's when a callback cut it short
)


class TrainState:
    """What a checkpoint holds besides model and optimizer: enough to continue
    exactly. The data order follows from seed, epoch and the step within the epoch
    (`step - epoch_first_step`), so those are the data position too.

    `step` is the run's global step: the training steps run (global batches
    consumed), 1 after the first. It is authoritative for what the trainer owns: the
    data position, checkpoint numbers, callbacks' `logs["step"]` and
    `steps_until_due(step)`, TensorBoard's per-step scalars, the profiler's step
    markers. The optimizer's `iterations` counts the updates it applied, and the
    learning-rate schedules read that one. The two agree for a fresh optimizer that
    skips nothing; a `LossScaleOptimizer`'s skipped (non-finite) step advances `step`
    only, and an optimizer that trained before starts at its own count
    (docs/design.md, "Step counts")."""

    def __init__(self):
        with tf.device("/cpu:0"):  # strings and counters live on the host
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False)
            # The run's step when the epoch in progress began: an epoch that a callback
            # cut short has fewer steps than a whole one, so this is not epochs x steps.
            self.epoch_first_step = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.history_json = tf.Variable(json.dumps({key: [] for key in HISTORY_KEYS}))
            # Training sums `[loss, correct, count]` of the epoch in progress.
            self.epoch_sums = tf.Variable(tf.zeros(3, tf.float64), trainable=False)
            # The loss of the run's first step, the divergence guard's reference (NaN: not
            # yet seen); kept, so that a resumed run is judged as the uninterrupted one.
            self.first_loss = tf.Variable(float("nan"), dtype=tf.float64, trainable=False)

    @property
    def history(self):
        """Per-epoch lists keyed by `HISTORY_KEYS`."""
        return json.loads(self.history_json.numpy())

    @property
    def epochs_done(self):
        return len(self.history["loss"])

    @property
    def steps_into_epoch(self):
        """Training steps already run in the epoch in progress."""
        return int(self.step.numpy() - self.epoch_first_step.numpy())

    def end_epoch(self, logs):
        history = self.history
        logs["steps"] = self.steps_into_epoch
        for key in HISTORY_KEYS:
            history[key].append(float(logs[key]))
        self.history_json.assign(json.dumps(history))
        self.epoch_sums.assign(tf.zeros(3, tf.float64))
        self.epoch_first_step.assign(self.step)

    def checkpoint_items(self):
        return {
            "step": self.step,
            "epoch_first_step": self.epoch_first_step,
            "history": self.history_json,
            "epoch_sums": self.epoch_sums,
            "first_loss": self.first_loss,
        }
