"""What a run leaves in its model_dir: TensorBoard events, metrics.json,
progress.png and model.keras.

Files are written under a temporary name and renamed into place, so a run that
dies mid-write never leaves a half-written file where a good one was.
"""

import json
import os
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
            logs = Path(model_dir) / "logs"
            self._writers = {
                name: tf.summary.create_file_writer(str(logs / name))
                for name in ("train", "validation")
            }

    def write_epoch(self, epoch, history):
        """Writes the last entry of each history list as a scalar at step `epoch`."""
        for key, (writer, tag) in _SCALARS.items():
            if writer in self._writers:
                with self._writers[writer].as_default():
                    tf.summary.scalar(tag, history[key][-1], step=epoch)
        for writer in self._writers.values():
            writer.flush()

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


def save_run(model_dir, model, history, data, run_config):
    """Writes `metrics.json`, `progress.png` and `model.keras` into `model_dir`."""
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
    plot_progress(model_dir / "progress.png", history)
    # metrics.json last: its presence marks a finished run.
    write_json(model_dir / "metrics.json", metrics)
