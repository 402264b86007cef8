"""What a run leaves in its model_dir: TensorBoard events, metrics.json,
progress.png and model.keras.

Files are written under a temporary name and renamed into place, so a run that
dies mid-write never leaves a half-written file where a good one was.
"""

import json
import os
import shutil
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import tensorflow as tf  # noqa: E402

# TensorBoard scalar tags per epoch, from history keys: (writer, tag).
_SCALARS = {
    "loss": ("train", "epoch_loss"),
    "accuracy": ("train", "epoch_accuracy"),
    "epoch_seconds": ("train", "epoch_seconds"),
    "examples_per_second": ("train", "examples_per_second"),
    "val_loss": ("validation", "epoch_loss"),
    "val_accuracy": ("validation", "epoch_accuracy"),
}


class SummaryWriters:
    """TensorBoard writers for `<model_dir>/logs/train` and `<model_dir>/logs/validation`.

    With `model_dir=None` (no outputs, or a non-chief worker) it writes nothing.
    """

    def __init__(self, model_dir):
        self._writers = {}
        if model_dir:
            self._logs = Path(model_dir) / "logs"
            self._writers = {
                name: tf.summary.create_file_writer(str(self._logs / name))
                for name in ("train", "validation")
            }

    def _logged_epochs(self, writer):
        """The epochs already in `logs/<writer>`'s event files."""
        steps = set()
        for path in sorted((self._logs / writer).glob("events.out.tfevents.*")):
            try:
                for event in tf.compat.v1.train.summary_iterator(str(path)):
                    steps.update(
                        event.step for value in event.summary.value if value.tag == "epoch_loss"
                    )
            except tf.errors.DataLossError:
                pass  # a file cut short by a kill: what was read before the cut stands
        return steps

    def write_missing_epochs(self, history):
        """Writes the epochs of `history` that no event file holds yet.

        A run killed after a checkpoint but before that epoch's summaries would
        otherwise leave a hole; summaries are written only after the checkpoint,
        so no epoch can be there twice.
        """
        for writer in list(self._writers):
            logged = self._logged_epochs(writer)
            for epoch in range(1, len(history["loss"]) + 1):
                if epoch not in logged:
                    self._write(writer, epoch, {k: v[epoch - 1] for k, v in history.items()})
            self._writers[writer].flush()

    def _write(self, writer, epoch, values):
        with self._writers[writer].as_default():
            for key, (name, tag) in _SCALARS.items():
                if name == writer:
                    tf.summary.scalar(tag, values[key], step=epoch)

    def write_epoch(self, epoch, history):
        """Writes the last entry of each history list as a scalar at step `epoch`."""
        for writer in self._writers:
            self._write(writer, epoch, {key: values[-1] for key, values in history.items()})
            self._writers[writer].flush()

    def close(self):
        for writer in self._writers.values():
            writer.close()


def _atomic_path(path, write):
    """Calls `write(tmp_path)`, then renames the temporary file to `path`."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path, obj):
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")

    _atomic_path(path, write)


def plot_progress(path, history):
    """The chapter's plot: train loss, validation loss and validation accuracy by epoch."""
    epochs = range(1, len(history["loss"]) + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(epochs, history["loss"], "-", label="train_loss")
    ax.plot(epochs, history["val_loss"], "--", label="val_loss")
    ax.plot(epochs, history["val_accuracy"], "-.", label="val_acc")
    ax.set_xlabel("epoch")
    ax.set_xlim(1, max(len(epochs), 2))
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _atomic_path(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    plt.close(fig)


class _Serving(tf.Module):
    """The exported model: uint8 images in, class probabilities, ids and names out."""

    def __init__(self, model, input_shape, label_names):
        super().__init__()
        self.model = model
        self.label_names = tf.constant(list(label_names))
        self.serve = tf.function(
            self._serve,
            input_signature=[tf.TensorSpec((None, *input_shape), tf.uint8, name="images")],
        )

    def _serve(self, images):
        logits = self.model(tf.cast(images, tf.float32) / 255.0, training=False)
        probabilities = tf.nn.softmax(tf.cast(logits, tf.float32))  # (batch, classes)
        class_ids = tf.argmax(probabilities, axis=-1)
        return {
            "probabilities": probabilities,
            "class_ids": class_ids,
            "labels": tf.gather(self.label_names, class_ids),
            "label_names": self.label_names,  # (classes,), for top-k names
        }


def export_serving(export_dir, keras_file, data):
    """Writes a SavedModel with a `serving_default` signature to `export_dir`.

    The model is reloaded from `keras_file`, so the export holds plain variables
    whatever strategy trained it. Written beside the target, then renamed.
    """
    import keras

    model = keras.models.load_model(keras_file)
    export_dir = Path(export_dir)
    tmp = export_dir.with_name(f".{export_dir.name}.{os.getpid()}.tmp")
    old = export_dir.with_name(f".{export_dir.name}.{os.getpid()}.old")
    module = _Serving(model, data.input_shape, data.label_names)
    tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
    if export_dir.exists():
        export_dir.rename(old)
    tmp.rename(export_dir)
    shutil.rmtree(old, ignore_errors=True)


def save_run(model_dir, model, history, data, run_config):
    """Writes `model.keras`, `export/`, `progress.png` and `metrics.json` into `model_dir`."""
    model_dir = Path(model_dir)
    final = {key: values[-1] for key, values in history.items()}
    final["validation"] = data.validation
    final["num_validation_examples"] = len(data.val_images)
    metrics = {
        "history": history,
        "final": final,
        "config": run_config,
        "data": {
            "name": data.name,
            "source": data.source,
            "input_shape": list(data.input_shape),
            "num_classes": data.num_classes,
            "label_names": list(data.label_names),
            "num_train_examples": len(data.train_images),
        },
    }
    _atomic_path(model_dir / "model.keras", model.save)
    export_serving(model_dir / "export", model_dir / "model.keras", data)
    plot_progress(model_dir / "progress.png", history)
    # metrics.json last: its presence marks a finished run.
    write_json(model_dir / "metrics.json", metrics)
