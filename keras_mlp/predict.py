"""Classify images with a trained run's exported SavedModel.

    keras-mlp-predict --model_dir=runs/concise shirt.png t10k-images-idx3-ubyte.gz

PNG/JPEG/... images and IDX image files are accepted. Images must already have
the model's size and mode (grayscale, or RGB for a colour model such as one trained
on cifar10) unless `--resize` is given; 16-bit and float grayscale is scaled to 8 bits.
"""

import sys
from pathlib import Path

import numpy as np
from absl import flags
from PIL import Image, UnidentifiedImageError

from keras_mlp import cli
from keras_mlp.errors import UserError
from keras_mlp.idx import read_idx

IDX_SUFFIXES = ("-ubyte", "-ubyte.gz", ".idx", ".idx.gz")


def load_serving(model_dir):
    """The `serving_default` signature of `<model_dir>/export` and its image shape:
    `(H, W)` for a grayscale model, `(H, W, C)` for a colour one."""
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


# Grayscale modes deeper than 8 bits: 16-bit integers, 32-bit integers, floats.
WIDE_GRAYSCALE = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def _to_8_bit(image):
    """A wide grayscale image scaled to 8 bits ("L"): 16-bit by 257 (65535 -> 255),
    floats in [0, 1] by 255, other values by their own maximum."""
    values = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or (image.mode == "I" and values.max() <= 65535):
        values = values / 257.0
    elif image.mode == "F" and values.min() >= 0 and values.max() <= 1:
        values = values * 255.0
    elif values.max() > 255:
        values = values * (255.0 / values.max())
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def _mode_problem(mode, wanted):
    """Why an image of PIL `mode` is not what a model taking `wanted` ("L" or "RGB") takes."""
    if wanted == "L":
        return f"image mode {mode} is colour (or a palette), the model takes grayscale"
    kind = "grayscale" if mode == "L" else "not RGB"
    return f"image mode {mode} is {kind}, the model takes colour (RGB)"


def _fit(image, shape, resize, name):
    """A PIL image as uint8 `shape`: `(H, W)` (grayscale) or `(H, W, 3)` (RGB). Wide
    grayscale is scaled to 8 bits; other modes are converted and sizes changed only
    when `resize` says so."""
    height, width = shape[:2]
    wanted = "RGB" if len(shape) == 3 else "L"
    if image.mode in WIDE_GRAYSCALE:
        image = _to_8_bit(image)
    if image.mode != wanted:
        if not resize:
            raise UserError(
                f"{name}: {_mode_problem(image.mode, wanted)}; pass --resize to convert"
            )
        image = image.convert(wanted)
    if image.size != (width, height):
        if not resize:
            raise UserError(
                f"{name}: image is {image.size[0]}x{image.size[1]}, the model takes "
                f"{width}x{height}; pass --resize to resize"
            )
        image = image.resize((width, height))
    return np.asarray(image, dtype=np.uint8)


def _idx_images(path):
    """The images of an IDX file: uint8 (N, H, W) or (N, H, W, 3)."""
    images = read_idx(path)
    if images.ndim == 4 and images.shape[-1] == 3:
        return images
    if images.ndim == 4:
        raise UserError(
            f"{path}: an IDX file of colour images has shape (N, H, W, 3), this one {images.shape}"
        )
    if images.ndim != 3:
        raise UserError(f"{path}: an IDX file of images has 3 dimensions, this one {images.ndim}")
    return images


def load_images(path, shape, resize, max_images):
    """`[(name, uint8 image of `shape`)]` from an image file or an IDX file of images."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: {'not a file' if path.exists() else 'no such file'}")
    if path.name.endswith(IDX_SUFFIXES):
        return [
            (f"{path.name}[{i}]", _fit(Image.fromarray(image), shape, resize, f"{path.name}[{i}]"))
            for i, image in enumerate(_idx_images(path)[:max_images])
        ]
    try:
        with Image.open(path) as image:
            return [(path.name, _fit(image, shape, resize, path))]
    except Image.DecompressionBombError as e:  # far more pixels than a resize should read
        raise UserError(f"{path}: too large to open ({e}); shrink it first") from None
    except UnidentifiedImageError:
        raise UserError(
            f"{path}: not an image file PIL can read, nor an IDX file ({', '.join(IDX_SUFFIXES)})"
        ) from None
    except OSError as e:  # a damaged file PIL recognised: "image file is truncated", ...
        raise UserError(f"{path}: cannot read the image ({e})") from None


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


def define_flags(flag_values):
    flags.DEFINE_string(
        "model_dir", None, "A finished run's directory (it holds export/).", flag_values=flag_values
    )
    flags.DEFINE_integer("top_k", 3, "How many labels to print per image.", flag_values=flag_values)
    flags.DEFINE_boolean(
        "resize",
        False,
        "Convert images to the model's mode (grayscale, or RGB for a colour model) and "
        "resize them to its input size.",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "max_images", 20, "At most this many images from each IDX file.", flag_values=flag_values
    )


def _predict(flag_values, paths):
    if not flag_values.model_dir:
        raise UserError("--model_dir is required")
    if not paths:
        raise UserError("give at least one image or IDX file")
    if flag_values.top_k < 1 or flag_values.max_images < 1:
        raise UserError("--top_k and --max_images must be positive integers")
    cli.quiet_tensorflow()
    results = predict(
        flag_values.model_dir, paths, flag_values.top_k, flag_values.resize, flag_values.max_images
    )
    for name, top in results:
        print(f"{name}: " + ", ".join(f"{label} {p:.3f}" for label, p in top))


def main(argv=None):
    """The `keras-mlp-predict` command; returns its exit status."""
    return cli.run_tool(_predict, define_flags, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
