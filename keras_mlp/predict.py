"""Classify images with a trained run's exported SavedModel.

    python scripts/predict.py --model_dir=runs/concise shirt.png t10k-images-idx3-ubyte.gz

PNG/JPEG/... images and IDX image files are accepted. Images must already have
the model's size and be grayscale unless `--resize` is given.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from PIL import Image, UnidentifiedImageError  # noqa: E402

from keras_mlp.data import read_idx  # noqa: E402
from keras_mlp.errors import UserError  # noqa: E402
from keras_mlp.flags import parse_flags  # noqa: E402

IDX_SUFFIXES = ("-ubyte", "-ubyte.gz", ".idx", ".idx.gz")


def load_serving(model_dir):
    """The `serving_default` signature of `<model_dir>/export` and its (H, W)."""
    import tensorflow as tf

    export = Path(model_dir) / "export"
    if not (export / "saved_model.pb").exists():
        raise UserError(f"{export} holds no exported model; train a run there first")
    try:
        serve = tf.saved_model.load(str(export)).signatures["serving_default"]
    except (OSError, ValueError, KeyError, tf.errors.OpError) as e:
        raise UserError(f"cannot load the model in {export} ({type(e).__name__})") from None
    spec = serve.structured_input_signature[1]["images"]
    return serve, tuple(spec.shape[1:])


def _fit(image, shape, resize, name):
    """A PIL image as uint8 (H, W), converted and resized only when `resize` says so."""
    height, width = shape
    if image.mode != "L":
        if not resize:
            raise UserError(
                f"{name}: image mode {image.mode} is not grayscale (L); pass --resize to convert"
            )
        image = image.convert("L")
    if image.size != (width, height):
        if not resize:
            raise UserError(
                f"{name}: image is {image.size[0]}x{image.size[1]}, the model takes "
                f"{width}x{height}; pass --resize to resize"
            )
        image = image.resize((width, height))
    return np.asarray(image, dtype=np.uint8)


def load_images(path, shape, resize, max_images):
    """`[(name, uint8 (H, W))]` from an image file or an IDX file of images."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    if path.name.endswith(IDX_SUFFIXES):
        images = read_idx(path)
        if images.ndim != 3:
            raise UserError(
                f"{path}: an IDX file of images has 3 dimensions, this one {images.ndim}"
            )
        return [
            (f"{path.name}[{i}]", _fit(Image.fromarray(image), shape, resize, f"{path.name}[{i}]"))
            for i, image in enumerate(images[:max_images])
        ]
    try:
        with Image.open(path) as image:
            return [(path.name, _fit(image, shape, resize, path))]
    except UnidentifiedImageError:
        raise UserError(
            f"{path}: not an image file PIL can read, nor an IDX file ({', '.join(IDX_SUFFIXES)})"
        ) from None


def predict(model_dir, paths, top_k=3, resize=False, max_images=20):
    """`[(name, [(label, probability), ...])]`, the top `top_k` classes of each image."""
    serve, shape = load_serving(model_dir)
    named = [item for path in paths for item in load_images(path, shape, resize, max_images)]
    outputs = serve(images=np.stack([image for _, image in named]))
    names = [n.decode() for n in outputs["label_names"].numpy()]
    results = []
    for (name, _), probabilities in zip(named, outputs["probabilities"].numpy(), strict=True):
        best = np.argsort(probabilities)[::-1][:top_k]
        results.append((name, [(names[i], float(probabilities[i])) for i in best]))
    return results


flags.DEFINE_string("model_dir", None, "A finished run's directory (it holds export/).")
flags.DEFINE_integer("top_k", 3, "How many labels to print per image.")
flags.DEFINE_boolean(
    "resize", False, "Convert to grayscale and resize images to the model's input."
)
flags.DEFINE_integer("max_images", 20, "At most this many images from each IDX file.")


def _main(argv):
    try:
        if not flags.FLAGS.model_dir:
            raise UserError("--model_dir is required")
        if len(argv) < 2:
            raise UserError("give at least one image or IDX file")
        if flags.FLAGS.top_k < 1 or flags.FLAGS.max_images < 1:
            raise UserError("--top_k and --max_images must be positive integers")
        for name, top in predict(
            flags.FLAGS.model_dir,
            argv[1:],
            flags.FLAGS.top_k,
            flags.FLAGS.resize,
            flags.FLAGS.max_images,
        ):
            print(f"{name}: " + ", ".join(f"{label} {p:.3f}" for label, p in top))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def main():
    app.run(_main, flags_parser=parse_flags)
