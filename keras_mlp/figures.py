"""The pictures and tables a run shows of its results: TensorBoard's prediction grid
and confusion matrix (`diagnostics` logs them), and `progress.png`'s learning curves
(`reporting.save_run` writes it).

Drawing only: each function takes numbers and returns a matplotlib `Figure`, an
image tensor or Markdown, so how a figure looks changes here and nowhere else.
No pyplot, no global backend: a `Figure` is drawn on its own canvas.
"""

import io

import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


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


def short_label(name, width=10):
    """A tick label for class `name`: the part before a `/` (`T-shirt/top`: `T-shirt`),
    cut to `width` characters with an ellipsis. The Text tab keeps the full names."""
    name = name.split("/")[0] or name
    return name if len(name) <= width else f"{name[: width - 1]}\u2026"


def confusion_image(confusion, label_names):
    """The confusion matrix (rows: true label, columns: predicted), counts written in.

    Sized to be read at TensorBoard's image card size: 500 x 450 pixels for 10 classes
    (5 x 4.5 inches at 100 dpi), counts in 9 points, short tick labels; more classes
    widen it (up to 12 inches) and shrink the counts (to 6 points at 30 classes)."""
    k = len(label_names)
    width = min(max(5.0, 0.3 * k + 2), 12.0)
    fig = Figure(figsize=(width, 0.9 * width))
    ax = fig.subplots()
    ax.imshow(confusion, cmap="Blues")
    ticks = [short_label(name) for name in label_names]
    tick_size = 8 if k <= 10 else 7
    ax.set_xticks(range(k), ticks, rotation=45, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), ticks)
    ax.tick_params(labelsize=tick_size)
    ax.set_xlabel("predicted", fontsize=9)
    ax.set_ylabel("true", fontsize=9)
    count_size = min(9.0, max(6.0, 90 / k))
    for (i, j), count in np.ndenumerate(confusion):
        dark = count > confusion.max() / 2
        ax.text(
            j,
            i,
            int(count),
            ha="center",
            va="center",
            fontsize=count_size,
            color="white" if dark else "black",
        )
    fig.tight_layout()
    return figure_png(fig, dpi=100)


def confusion_table(confusion, label_names):
    """The confusion matrix as a Markdown table (TensorBoard's Text tab), counts exact."""
    header = "| true \\ predicted | " + " | ".join(label_names) + " |"
    rule = "|---" * (len(label_names) + 1) + "|"
    rows = [
        f"| {name} | " + " | ".join(str(int(c)) for c in counts) + " |"
        for name, counts in zip(label_names, confusion, strict=True)
    ]
    return "\n".join([header, rule, *rows])


def progress_figure(history, title=""):
    """The learning curves by epoch (`progress.png`): loss and accuracy on two panels,
    each with its training and validation curve, whole epochs on the x axis, and
    `title` above (the model and the validation split)."""
    epochs = np.arange(1, len(history["loss"]) + 1)  # docs/design.md, "Epoch numbers"
    fig = Figure(figsize=(8, 3.5))
    panels = zip(
        fig.subplots(1, 2),
        (("loss", "val_loss", "loss (cross-entropy)"), ("accuracy", "val_accuracy", "accuracy")),
        strict=True,
    )
    for ax, (train, validation, label) in panels:
        ax.plot(epochs, history[train], "-o", markersize=3, label="train")
        ax.plot(epochs, history[validation], "--o", markersize=3, label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.set_xlim(0.75, max(len(epochs), 2) + 0.25)  # whole markers at the ends
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
