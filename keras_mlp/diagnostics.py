"""What the model is doing, computed beside training for TensorBoard: each weight and
its gradient on a fixed training batch (Histograms), and its predictions on the
validation split (Images: a grid of examples and the confusion matrix, whose exact
counts also go to the Text tab).

Each is a pass of its own over the model, outside the compiled steps, so it changes
when what is inspected changes, not when the training step or the scalars do. They
write to the default summary writer (`summaries.TensorBoardLogger` opens it), and
compute on this process alone: the logger runs them on the chief only, and in a
cluster reading a variable summed over workers would be a collective the others
never join (docs/design.md, "Multi-worker collectives").
"""

import numpy as np
import tensorflow as tf

from keras_mlp import data as data_lib
from keras_mlp.figures import confusion_image, confusion_table, image_grid
from keras_mlp.steps import compute_loss

# Past this many classes the confusion matrix is logged as counts only: its figure
# grows with the square of the classes (256 classes: 155 s and 5.4 GB per epoch).
MAX_CONFUSION_FIGURE_CLASSES = 30


def write_histograms(model, images, labels, step):
    """Each weight (by its path: `mlp_scratch/hidden1/W1`, ...) and its gradient of the
    mean loss on `images` (uint8, scaled here) and `labels`."""
    with tf.GradientTape() as tape:
        per_example, _ = compute_loss(model, data_lib.scale(images), labels, training=False)
        loss = tf.reduce_mean(per_example)
    variables = model.trainable_variables
    for variable, gradient in zip(variables, tape.gradient(loss, variables), strict=True):
        tf.summary.histogram(variable.path, variable, step=step)
        tf.summary.histogram(f"{variable.path}/gradient", gradient, step=step)


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


def write_images(model, data, step, shown=16):
    """A grid of the first `shown` validation predictions, and the confusion matrix of
    the validation split as a picture (up to `MAX_CONFUSION_FIGURE_CLASSES` classes)
    and as a table of counts."""
    images, labels = data.val_images[:shown], data.val_labels[:shown]
    predicted = np.argmax(model(data_lib.scale(images), training=False), axis=-1)
    grid = image_grid(images, predicted, labels, data.label_names)
    tf.summary.image("predictions", grid, step=step)
    confusion = confusion_matrix(model, data.val_images, data.val_labels, data.num_classes)
    if data.num_classes <= MAX_CONFUSION_FIGURE_CLASSES:
        figure = confusion_image(confusion, data.label_names)
        tf.summary.image("confusion_matrix", figure, step=step)
    table = confusion_table(confusion, data.label_names)
    tf.summary.text("confusion_matrix_counts", table, step=step)
