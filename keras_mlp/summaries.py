"""TensorBoard: what a run writes under `<model_dir>/logs`, as one callback.

`logs/train` and `logs/validation` hold the per-epoch scalars (and, on request,
per-step scalars, histograms, images and the training step's graph); `logs/` itself
holds the run's HParams session and config text. A profile
(`logs/plugins/profile`) is `profiling.StepProfiler`'s.

One public callback, `TensorBoardLogger`, because everything here goes through the
same summary writers (one event file per folder: TensorBoard follows the newest
file of a folder while a run is live, so a second writer into `logs/train` would hide
the first's later events) and one call in `run.py` stays one call. Its own concern
is the run's record: which scalars, when, written once each across resumes, and
the HParams session. What it logs beside them is computed elsewhere, each for its
own reason to change: `diagnostics` (histograms, predictions, confusion matrix),
`figures` (how those look), `step_graph` (the trainer's step for the Graphs tab).
"""

import json
from pathlib import Path

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from keras_mlp import diagnostics
from keras_mlp import hparams as hparams_lib
from keras_mlp.callbacks import Callback, steps_to_multiple
from keras_mlp.diagnostics import MAX_CONFUSION_FIGURE_CLASSES
from keras_mlp.step_graph import train_step_graph
from keras_mlp.train_state import HISTORY_KEYS

# Per-epoch scalar tags, from history keys: (writer, tag).
SCALARS = {
    "loss": ("train", "epoch_loss"),
    "accuracy": ("train", "epoch_accuracy"),
    "learning_rate": ("train", "learning_rate"),
    "epoch_seconds": ("train", "epoch_seconds"),
    "examples_per_second": ("train", "examples_per_second"),
    "val_loss": ("validation", "epoch_loss"),
    "val_accuracy": ("validation", "epoch_accuracy"),
}

# Per-step scalar tags (`train` writer), from the trainer's running means: each the
# mean over the steps since the last one was written.
BATCH_SCALARS = {"loss": "batch_loss", "accuracy": "batch_accuracy"}


def write_hparams_experiment(directory, names):
    """The HParams experiment of a run of its own at `directory`: columns `names` (no
    domain: other runs in the same tree may take other values), the metrics.

    TensorBoard takes one experiment per log tree, the first it finds; a sweep or search
    writes its own (typed, the swept hyperparameters first) at its root, and its trials
    write none."""
    with tf.summary.create_file_writer(str(directory)).as_default():
        hp.hparams_config(hparams=[hp.HParam(name) for name in names], metrics=hparams_lib.METRICS)


def logged_epochs(directory, tag="epoch_loss"):
    """The steps at which `tag` was written in the event files of `directory`."""
    steps = set()
    for path in sorted(Path(directory).glob("events.out.tfevents.*")):
        try:
            for record in tf.data.TFRecordDataset(str(path)):
                event = tf.compat.v1.Event.FromString(record.numpy())
                steps.update(event.step for v in event.summary.value if v.tag == tag)
        except tf.errors.DataLossError:
            pass  # a file cut short by a kill: what was read before the cut stands
    return steps


class StepWindow:
    """Means over a window of steps from the running means of an epoch.

    The trainer reports the epoch's running means (`loss`, `accuracy`: means over its
    steps so far, a resumed epoch's first steps included); a mean times the steps it
    covers is a total, and two totals give the window between them.
    """

    def __init__(self, keys):
        self.keys = tuple(keys)
        self._first, self._totals = 0, None

    def start(self, steps, running):
        """Opens a window after `steps` steps of the epoch, whose running means are `running`."""
        self._first, self._totals = steps, {k: running[k] * steps for k in self.keys}

    @property
    def started(self):
        return self._totals is not None

    def close(self, steps, running):
        """The means over the steps since the window opened, up to `steps` steps of the
        epoch; the next window opens here."""
        totals = {k: running[k] * steps for k in self.keys}
        means = {k: (totals[k] - self._totals[k]) / (steps - self._first) for k in self.keys}
        self._first, self._totals = steps, totals
        return means

    def reset(self):
        self._totals = None


class TensorBoardLogger(Callback):
    """Writes a run's TensorBoard logs under `log_dir` (`None`: nothing, e.g. on a
    non-chief worker, which still takes part in every step).

    Per epoch: the scalars of `SCALARS` at step `epoch + 1`, Keras' 0-based index
    made the epoch's number (docs/design.md, "Epoch numbers"). New runs also get an
    HParams session and the config as text; a resumed run first writes the epochs
    its checkpoint has but its event files lack, so none is missing or doubled.

    Args:
        log_dir: The folder (a run's `<model_dir>/logs`), or `None`.
        data: The `Dataset` (histograms use a fixed training batch, images the
            validation split).
        run_config: A dict recorded as text (and as HParams without `hparams`).
            Defaults to `{}`.
        hparams: The dict of hyperparameters the HParams dashboard shows (a run's
            `RunConfig.hyperparameters()`), typed by `hparams.session_values`.
            Defaults to `run_config`.
        session_group: The HParams session group of a sweep's or search's trial (its
            experiment, at the root, declares the columns, and it records how the
            trial ended). `None`: a run of its own, which declares its own columns,
            groups with the runs of equal hyperparameters, and ends `done` when it
            finishes.
        log_every_steps: Log `batch_loss` and `batch_accuracy`, the means over the last
            N steps, every N steps. `0`: off.
        histogram_freq: Every N epochs, histograms of each weight and its gradient.
        image_summaries: A grid of validation predictions and the confusion matrix
            every epoch (past `MAX_CONFUSION_FIGURE_CLASSES` classes, its counts as text
            only, no figure).
        batch_size: The batch of the gradient histograms. Defaults to `256`.
    """

    def __init__(
        self,
        log_dir,
        data,
        run_config=None,
        *,
        hparams=None,
        session_group=None,
        log_every_steps=0,
        histogram_freq=0,
        image_summaries=False,
        batch_size=256,
    ):
        super().__init__()
        self.logs = Path(log_dir) if log_dir else None
        self.data, self.run_config = data, run_config or {}
        self.hparams = self.run_config if hparams is None else hparams
        self.session_group = session_group
        self.log_every_steps, self.histogram_freq = log_every_steps, histogram_freq
        self.image_summaries, self.batch_size = image_summaries, batch_size
        self._writers = {}
        self._window = StepWindow(BATCH_SCALARS)  # the steps since the last batch scalars

    def _writer(self, name):
        if name not in self._writers:
            self._writers[name] = tf.summary.create_file_writer(str(self.logs / name))
        return self._writers[name]

    def on_train_begin(self, logs=None):
        if not self.logs:
            return
        if self.image_summaries and self.data.num_classes > MAX_CONFUSION_FIGURE_CLASSES:
            print(
                f"note: {self.data.num_classes} classes: the confusion matrix is logged as "
                f"counts only (TensorBoard's Text tab), no figure past "
                f"{MAX_CONFUSION_FIGURE_CLASSES} classes",
                flush=True,
            )
        resumed = logs and logs.get("resumed")  # a resumed run's logs hold its history
        history = {key: logs[key] for key in HISTORY_KEYS} if resumed else None
        if history is None:
            values = hparams_lib.session_values(self.hparams)
            if self.session_group is None:
                write_hparams_experiment(self.logs, list(values))
            with self._writer(".").as_default():
                hp.hparams(values, trial_id=self.session_group)
                text = f"```\n{json.dumps(self.run_config, indent=2)}\n```"
                tf.summary.text("config", text, step=0)
        else:
            self._catch_up(history)
        self._write_step_graph()

    def _write_step_graph(self):
        """The trainer's own training step (`params["train_step"]`), for the Graphs tab;
        nothing when the loop that runs this callback has none (`step_graph`)."""
        train_step = (self.params or {}).get("train_step")
        if train_step is None:
            return
        images = tf.TensorSpec((None, *self.data.input_shape), tf.float32)
        labels = tf.TensorSpec((None,), tf.int32)
        with self._writer("train").as_default():
            tf.summary.graph(train_step_graph(train_step, self.model, images, labels))

    def _catch_up(self, history):
        for name in ("train", "validation"):
            logged = logged_epochs(self.logs / name)
            for epoch in range(1, len(history["loss"]) + 1):  # history[k][epoch - 1]
                if epoch not in logged:
                    self._write_scalars(name, epoch, {k: v[epoch - 1] for k, v in history.items()})

    def steps_until_due(self, step):
        return steps_to_multiple(self.log_every_steps, step)

    def on_epoch_begin(self, epoch, logs=None):
        self._window.reset()

    def on_train_batch_begin(self, batch, logs=None):
        if not self._window.started:  # batch: the steps the epoch has run (a resume: > 0)
            self._window.start(batch, logs)

    def on_train_batch_end(self, batch, logs=None):
        if not (self.logs and self.log_every_steps):
            return
        step = int(logs["step"])
        if step % self.log_every_steps == 0:
            means = self._window.close(batch + 1, logs)  # the running means cover 0..batch
            with self._writer("train").as_default():
                for key, tag in BATCH_SCALARS.items():
                    tf.summary.scalar(tag, means[key], step)

    def on_epoch_end(self, epoch, logs=None):
        if not self.logs:
            return
        # TensorBoard's step is the epoch's number, from 1 (docs/design.md, "Epoch numbers").
        for name in ("train", "validation"):
            self._write_scalars(name, epoch + 1, logs)
        if self.histogram_freq and (epoch + 1) % self.histogram_freq == 0:
            with self._writer("train").as_default():
                diagnostics.write_histograms(
                    self.model,
                    self.data.train_images[: self.batch_size],  # a fixed batch
                    self.data.train_labels[: self.batch_size],
                    epoch + 1,
                )
        if self.image_summaries:
            with self._writer("validation").as_default():
                diagnostics.write_images(self.model, self.data, epoch + 1)
        for writer in self._writers.values():
            writer.flush()

    def _write_scalars(self, name, step, values):
        with self._writer(name).as_default():
            for key, (writer, tag) in SCALARS.items():
                if writer == name:
                    tf.summary.scalar(tag, values[key], step=step)

    def on_train_end(self, logs=None):
        if self.logs and self.session_group is None:  # a trial's end is its experiment's to say
            with self._writer(".").as_default():
                end = hparams_lib.session_end_summary("done")
                tf.summary.experimental.write_raw_pb(end.SerializeToString(), step=0)

    def close(self):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
