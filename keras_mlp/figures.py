"""The pictures and tables a run shows of its results: TensorBoard's prediction grid
and confusion matrix (`summaries.TensorBoardLogger` logs them).

Drawing only: each function takes numbers and returns a matplotlib `Figure`, an
image tensor or Markdown, so how a figure looks changes here and nowhere else.
No pyplot, no global backend: a `Figure` is drawn on its own canvas.
"""

import io

import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure


def figure_png(fig, dpi=80):
    """A matplotlib `Figure` as a `(1, H, W, 4)` image tensor (`dpi` pixels per inch)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return tf.image.decode_png(buffer.getvalue(), channels=4)[tf.newaxis]


def image_grid(images, predicted, labels, label_names):
    """Validation images titled `predicted (true)`, green when right, red when wrong."""
    side = int(np.ceil(np.sqrt(len(images))))
    fig = Figure(figsize=(1.6 * side, 1.8 * side))
    axes = fig.subplots(side, side, squeeze=False)
    for ax in np.ravel(axes):
        ax.axis("off")
    for ax, image, p, t in zip(np.ravel(axes), images, predicted, labels, strict=False):
        ax.imshow(image, cmap="gray_r")
        ax.set_title(
            f"{label_names[p]}\n({label_names[t]})", fontsize=7, color="green" if p == t else "red"
        )
    fig.tight_layout()
    return figure_png(fig)


def confusion_image(confusion, label_names):
    """The confusion matrix (rows: true label, columns: predicted), counts written in."""
    k = len(label_names)
    fig = Figure(figsize=(0.5 * k + 2, 0.5 * k + 1.5))
    ax = fig.subplots()
    ax.imshow(confusion, cmap="Blues")
    ax.set_xticks(range(k), label_names, rotation=90, fontsize=7)
    ax.set_yticks(range(k), label_names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(confusion):
        dark = count > confusion.max() / 2
        ax.text(
            j,
            i,
            int(count),
            ha="center",
            va="center",
            fontsize=6,
            color="white" if dark else "black",
        )
    fig.tight_layout()
    return figure_png(fig)


def confusion_table(confusion, label_names):
    """The confusion matrix as a Markdown table (TensorBoard's Text tab), counts exact."""
    header = "| true \\ predicted | " + " | ".join(label_names) + " |"
    rule = "|---" * (len(label_names) + 1) + "|"
    rows = [
        f"| {name} | " + " | ".join(str(int(c)) for c in counts) + " |"
        for name, counts in zip(label_names, confusion, strict=True)
    ]
    return "\n".join([header, rule, *rows])
