"""The files a run leaves in its model_dir: metrics.json, progress.png,
model.keras and export/ (TensorBoard events are summaries.py's).

Files are written under a temporary name and renamed into place, so a run that
dies mid-write never leaves a half-written file where a good one was.
"""

import csv
import json
import os
import shutil
from pathlib import Path

import tensorflow as tf

from keras_mlp import process
from keras_mlp.errors import OutputError
from keras_mlp.figures import progress_figure

# What a write that failed raises: OSError from Python's files, and TensorFlow's
# errors for ENOSPC/EDQUOT (RESOURCE_EXHAUSTED) and EACCES/EROFS (PERMISSION_DENIED).
WRITE_ERRORS = (OSError, tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError)


def print_table(title, header, rows):
    """Prints `rows` under `header` in aligned columns."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    print(f"\n{title}")
    for row in [header, ["-" * w for w in widths], *rows]:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))


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


def write_csv(path, rows, columns):
    """Writes `rows` (dicts) as CSV with `columns`, atomically; other keys are left out."""

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, columns, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    _atomic_path(path, write)


def progress_title(run_config, data):
    """`progress.png`'s title: the model, the data and the validation split."""
    model = run_config.get("model")
    what = f"{model} MLP on {data.name}" if model else data.name
    count = f"{len(data.val_images):,} examples"
    if data.validation == "holdout":
        fraction = run_config.get("validation_split")
        share = f"{fraction:.0%} of the training set, " if fraction else ""
        return f"{what}; validation: held out ({share}{count})"
    return f"{what}; validation: the {data.validation} split ({count})"


def plot_progress(path, history, title=""):
    """Writes `progress.png`: loss and accuracy by epoch (`figures.progress_figure`)."""
    save_figure(progress_figure(history, title), path)


def save_figure(fig, path, dpi=120):
    """Writes a matplotlib `Figure` as a PNG file, atomically (no pyplot, no global backend)."""
    _atomic_path(path, lambda tmp: fig.savefig(tmp, dpi=dpi, format="png"))


class _Serving(tf.Module):
    """The exported model: uint8 images in, as the data holds them (`[N, H, W]`, or
    `[N, H, W, C]` for a colour set), class probabilities, ids and names out."""

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
    try:
        tf.saved_model.save(module, str(tmp), signatures={"serving_default": module.serve})
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a half-written export frees its space
        raise
    if export_dir.exists():
        export_dir.rename(old)
    tmp.rename(export_dir)
    shutil.rmtree(old, ignore_errors=True)


def save_run(model_dir, model, history, data, run_config, stopped_early=False):
    """Writes `model.keras`, `export/`, `progress.png` and `metrics.json` into `model_dir`."""
    model_dir = Path(model_dir)
    final = {key: values[-1] for key, values in history.items()}
    final["epochs"] = len(history["loss"])
    final["stopped_early"] = stopped_early
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
        "process": process.settings(),  # what TensorFlow started with (oneDNN on or off)
    }
    writes = [
        ("model.keras", lambda path: _atomic_path(path, model.save)),
        ("export", lambda path: export_serving(path, model_dir / "model.keras", data)),
        (
            "progress.png",
            lambda path: plot_progress(path, history, progress_title(run_config, data)),
        ),
        # metrics.json last: its presence marks a finished run.
        ("metrics.json", lambda path: write_json(path, metrics)),
    ]
    for name, write in writes:
        try:
            write(model_dir / name)
        except WRITE_ERRORS as e:  # a full disk: the checkpoints stay, a rerun writes these
            raise OutputError.from_error(model_dir / name, e) from None
