"""TensorBoard: what a run writes under `<model_dir>/logs`.

`logs/train` and `logs/validation` hold the per-epoch scalars (and, on request,
per-step losses, histograms, images and the train step's graph); `logs/` itself
holds the run's HParams session and config text; a profile goes to
`logs/plugins/profile`.
"""

import io
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorboard.plugins.hparams import api as hp  # noqa: E402

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

# The metrics that the HParams dashboard shows for every run (and sweep).
HPARAMS_METRICS = [
    hp.Metric("epoch_accuracy", group="validation", display_name="val_accuracy"),
    hp.Metric("epoch_loss", group="validation", display_name="val_loss"),
    hp.Metric("epoch_loss", group="train", display_name="train_loss"),
]


def hparams_values(config):
    """A run config as HParams values (bool, int, float or str only)."""
    return {
        key: value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
        for key, value in config.items()
        if value is not None
    }


def _figure_png(fig):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return tf.image.decode_png(buffer.getvalue(), channels=4)[tf.newaxis]


def image_grid(images, predicted, labels, label_names):
    """Validation images titled `predicted (true)`, green when right, red when wrong."""
    side = int(np.ceil(np.sqrt(len(images))))
    fig, axes = plt.subplots(side, side, figsize=(1.6 * side, 1.8 * side))
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, image, p, t in zip(np.ravel(axes), images, predicted, labels, strict=False):
        ax.imshow(image, cmap="gray_r")
        ax.set_title(
            f"{label_names[p]}\n({label_names[t]})", fontsize=7, color="green" if p == t else "red"
        )
    fig.tight_layout()
    return _figure_png(fig)


def confusion_image(confusion, label_names):
    """The confusion matrix (rows: true label, columns: predicted), counts written in."""
    k = len(label_names)
    fig, ax = plt.subplots(figsize=(0.5 * k + 2, 0.5 * k + 1.5))
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(k), label_names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), label_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(confusion):
        ax.text(
            j,
            i,
            int(count),
            ha="center",
            va="center",
            fontsize=6,
            color="white" if count > confusion.max() / 2 else "black",
        )
    fig.tight_layout()
    return _figure_png(fig)


class SummaryWriters:
    """The run's TensorBoard writers; with `model_dir=None` (no outputs, or a
    non-chief worker) every method does nothing."""

    def __init__(self, model_dir):
        self._writers = {}
        self.logs = Path(model_dir) / "logs" if model_dir else None
        if self.logs:
            self._writers = {
                name: tf.summary.create_file_writer(str(self.logs / name))
                for name in ("train", "validation", ".")
            }

    @property
    def enabled(self):
        return bool(self._writers)

    def _logged_epochs(self, writer):
        """The epochs already in `logs/<writer>`'s event files."""
        steps = set()
        for path in sorted((self.logs / writer).glob("events.out.tfevents.*")):
            try:
                for record in tf.data.TFRecordDataset(str(path)):
                    event = tf.compat.v1.Event.FromString(record.numpy())
                    steps.update(event.step for v in event.summary.value if v.tag == "epoch_loss")
            except tf.errors.DataLossError:
                pass  # a file cut short by a kill: what was read before the cut stands
        return steps

    def start_run(self, config, history):
        """HParams session and config text for a new run; catch-up scalars for a resumed one.

        A run killed after a checkpoint but before that epoch's summaries would leave
        a hole; summaries are written only after the checkpoint, so none is doubled.
        """
        if not self.enabled:
            return
        if not history["loss"]:
            with self._writers["."].as_default():
                hp.hparams(hparams_values(config))
                tf.summary.text("config", f"```\n{json.dumps(config, indent=2)}\n```", step=0)
        for writer in ("train", "validation"):
            logged = self._logged_epochs(writer)
            for epoch in range(1, len(history["loss"]) + 1):
                if epoch not in logged:
                    self._write(writer, epoch, {k: v[epoch - 1] for k, v in history.items()})
        self.flush()

    def _write(self, writer, epoch, values):
        with self._writers[writer].as_default():
            for key, (name, tag) in SCALARS.items():
                if name == writer:
                    tf.summary.scalar(tag, values[key], step=epoch)

    def write_epoch(self, epoch, history):
        """Writes the last entry of each history list as a scalar at step `epoch`."""
        if self.enabled:
            last = {key: values[-1] for key, values in history.items()}
            for writer in ("train", "validation"):
                self._write(writer, epoch, last)
            self.flush()

    def write_step_loss(self, step, loss):
        if self.enabled:
            with self._writers["train"].as_default():
                tf.summary.scalar("batch_loss", loss, step=step)

    def write_histograms(self, epoch, variables, gradients):
        """Each weight (by its path: `mlp_scratch/W1`, ...) and its gradient."""
        if self.enabled:
            with self._writers["train"].as_default():
                for variable, gradient in zip(variables, gradients, strict=True):
                    tf.summary.histogram(variable.path, variable, step=epoch)
                    tf.summary.histogram(f"{variable.path}/gradient", gradient, step=epoch)

    def write_images(self, epoch, grid, confusion):
        if self.enabled:
            with self._writers["validation"].as_default():
                tf.summary.image("predictions", grid, step=epoch)
                tf.summary.image("confusion_matrix", confusion, step=epoch)

    def trace_export(self, name):
        """Writes the graph traced since `tf.summary.trace_on` (the Graphs tab)."""
        if self.enabled:
            with self._writers["train"].as_default():
                tf.summary.trace_export(name=name, step=0)

    def flush(self):
        for writer in self._writers.values():
            writer.flush()

    def close(self):
        for writer in self._writers.values():
            writer.close()
