"""TensorBoard: what a run writes under `<model_dir>/logs`, as one callback.

`logs/train` and `logs/validation` hold the per-epoch scalars (and, on request,
per-step losses, histograms, images and the train step's graph); `logs/` itself
holds the run's HParams session and config text. A profile
(`logs/plugins/profile`) is `profiling.StepProfiler`'s.
"""

import json
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hp

from keras_mlp import data as data_lib
from keras_mlp import hparams as hparams_lib
from keras_mlp.callbacks import Callback, steps_to_multiple
from keras_mlp.figures import confusion_image, confusion_table, image_grid
from keras_mlp.step_graph import train_step_graph
from keras_mlp.steps import compute_loss
from keras_mlp.training import HISTORY_KEYS

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

# Past this many classes the confusion matrix is logged as counts only: its figure
# grows with the square of the classes (256 classes: 155 s and 5.4 GB per epoch).
MAX_CONFUSION_FIGURE_CLASSES = 30


def write_hparams_experiment(directory, names):
    """The HParams experiment of a run of its own at `directory`: columns `names` (no
    domain: other runs in the same tree may take other values), the metrics.

    TensorBoard takes one experiment per log tree, the first it finds; a sweep or search
    writes its own (typed, the swept hyperparameters first) at its root, and its trials
    write none."""
    with tf.summary.create_file_writer(str(directory)).as_default():
        hp.hparams_config(hparams=[hp.HParam(name) for name in names], metrics=hparams_lib.METRICS)


def confusion_matrix(model, images, labels, num_classes, batch_size=1024):
    """Counts of (true label, predicted label) over a whole split, computed locally."""
    predicted = np.concatenate(
        [
            np.argmax(model(data_lib.scale(images[i : i + batch_size]), training=False), axis=-1)
            for i in range(0, len(images), batch_size)
        ]
    )
    return np.bincount(labels * num_classes + predicted, minlength=num_classes**2).reshape(
        num_classes, num_classes
    )


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


class TensorBoardLogger(Callback):
    """Writes a run's TensorBoard logs under `log_dir` (`None`: nothing, e.g. on a
    non-chief worker, which still takes part in every step).

    Per epoch: the scalars of `SCALARS` at step `epoch + 1`. New runs also get an
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
        log_every_steps: Log `batch_loss`, the mean over the last N steps. `0`: off.
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
        self._window = None  # (first batch, loss total before it) of the batch_loss window

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
            for epoch in range(1, len(history["loss"]) + 1):
                if epoch not in logged:
                    self._write_scalars(name, epoch, {k: v[epoch - 1] for k, v in history.items()})

    def steps_until_due(self, step):
        return steps_to_multiple(self.log_every_steps, step)

    def on_epoch_begin(self, epoch, logs=None):
        self._window = None

    def on_train_batch_begin(self, batch, logs=None):
        if self._window is None:
            self._window = (batch, logs["loss"] * batch)

    def on_train_batch_end(self, batch, logs=None):
        if not self.logs:
            return
        if self.log_every_steps and int(logs["step"]) % self.log_every_steps == 0:
            first, before = self._window
            total = logs["loss"] * (batch + 1)  # the running mean covers steps 0..batch
            with self._writer("train").as_default():
                tf.summary.scalar(
                    "batch_loss", (total - before) / (batch + 1 - first), int(logs["step"])
                )
            self._window = (batch + 1, total)

    def on_epoch_end(self, epoch, logs=None):
        if not self.logs:
            return
        for name in ("train", "validation"):
            self._write_scalars(name, epoch + 1, logs)
        if self.histogram_freq and (epoch + 1) % self.histogram_freq == 0:
            self._write_histograms(epoch + 1)
        if self.image_summaries:
            self._write_images(epoch + 1)
        for writer in self._writers.values():
            writer.flush()

    def _write_scalars(self, name, step, values):
        with self._writer(name).as_default():
            for key, (writer, tag) in SCALARS.items():
                if writer == name:
                    tf.summary.scalar(tag, values[key], step=step)

    def _write_histograms(self, step):
        """Each weight (by its path: `mlp_scratch/hidden1/W1`, ...) and its gradient on
        a fixed training batch."""
        images = data_lib.scale(self.data.train_images[: self.batch_size])
        with tf.GradientTape() as tape:
            per_example, _ = compute_loss(
                self.model, images, self.data.train_labels[: self.batch_size], training=False
            )
            loss = tf.reduce_mean(per_example)
        variables = self.model.trainable_variables
        with self._writer("train").as_default():
            for variable, gradient in zip(variables, tape.gradient(loss, variables), strict=True):
                tf.summary.histogram(variable.path, variable, step=step)
                tf.summary.histogram(f"{variable.path}/gradient", gradient, step=step)

    def _write_images(self, step):
        """A grid of predictions, and the confusion matrix as a picture and as counts.

        Computed on this process alone (it writes only on the chief): in a cluster,
        reading a variable summed over workers would be a collective the others never
        join (docs/design.md, "Multi-worker collectives")."""
        data = self.data
        shown = data.val_images[:16]
        predicted = np.argmax(self.model(data_lib.scale(shown), training=False), axis=-1)
        confusion = confusion_matrix(self.model, data.val_images, data.val_labels, data.num_classes)
        with self._writer("validation").as_default():
            grid = image_grid(shown, predicted, data.val_labels[:16], data.label_names)
            tf.summary.image("predictions", grid, step=step)
            if data.num_classes <= MAX_CONFUSION_FIGURE_CLASSES:
                figure = confusion_image(confusion, data.label_names)
                tf.summary.image("confusion_matrix", figure, step=step)
            table = confusion_table(confusion, data.label_names)
            tf.summary.text("confusion_matrix_counts", table, step=step)

    def on_train_end(self, logs=None):
        if self.logs and self.session_group is None:  # a trial's end is its experiment's to say
            with self._writer(".").as_default():
                end = hparams_lib.session_end_summary("done")
                tf.summary.experimental.write_raw_pb(end.SerializeToString(), step=0)

    def close(self):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
