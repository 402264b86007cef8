"""The profiler's controller: a TensorFlow profile of global training steps FIRST..LAST
for TensorBoard's Profile tab, written under `<log_dir>/plugins/profile`.

A callback of its own, not a part of `summaries.TensorBoardLogger`: it writes no
summaries, and what it changes is the trainer's chunking, not a log.

What a step marker covers. The trainer runs several steps per compiled call (a
chunk) and marks each call as one profiler step, numbered by the global number of
its first step (`training.Trainer`: `tf.profiler.experimental.Trace("train",
step_num=..., _r=1)`). While profiling, this callback asks for a chunk end after
every step, so in a profile each marked step is exactly one training step and the
overview page shows steps FIRST..LAST by their own numbers. Each then pays the
Python call that a chunk of `steps_per_execution` steps shares: the profile shows
a step's device work as in any run, and its host overhead as with
`steps_per_execution=1`.

The markers are the ones TensorFlow documents for the overview page's step times
(`Trace("train", step_num=..., _r=1)`, as tf.keras 2's `fit` marked its steps). A
CPU-only profile shows them in the trace viewer, but the overview page of the
profile plugin (xprof 2.24) still says "No step marker observed" for it: its step
analysis is built for GPU and TPU profiles (openxla/xprof#282).

Every worker of a cluster takes the same one-step chunks (a chunk end is a point
where the workers meet, so all must agree on where they are); only the chief, given
a `log_dir`, records.
"""

import tensorflow as tf

from keras_mlp.callbacks import Callback
from keras_mlp.checks import check_profile_steps


class StepProfiler(Callback):
    """Profiles global training steps FIRST..LAST (counted from 1) into `log_dir`.

    Args:
        log_dir: The folder (a run's `<model_dir>/logs`), or `None`: record nothing
            (a non-chief worker, which still takes the same chunks).
        profile_steps: `(first, last)`, the first and last step profiled.
    """

    def __init__(self, log_dir, profile_steps):
        super().__init__()
        check_profile_steps("profile_steps", profile_steps)
        self.log_dir = log_dir
        self.first, self.last = profile_steps
        self._profiling = False

    def steps_until_due(self, step):
        """A chunk end just before step `first`, then after every step through `last`."""
        if step < self.first - 1:
            return self.first - 1 - step
        return 1 if step < self.last else None

    def on_train_batch_begin(self, batch, logs=None):
        if self.log_dir and int(logs["step"]) == self.first - 1:
            tf.profiler.experimental.start(str(self.log_dir))
            self._profiling = True

    def on_train_batch_end(self, batch, logs=None):
        if self._profiling and int(logs["step"]) >= self.last:
            self.close()

    def close(self):
        if self._profiling:
            tf.profiler.experimental.stop()
            self._profiling = False
