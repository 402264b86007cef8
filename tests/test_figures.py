"""The figures TensorBoard shows, checked on the Figure or the image: sizes that read at
TensorBoard's image card size, and short tick labels."""

import types

import numpy as np
import tensorflow as tf

from keras_mlp.figures import (
    confusion_image,
    confusion_table,
    image_grid,
    progress_figure,
    short_label,
)
from keras_mlp.reporting import progress_title
from keras_mlp.sources.find import FASHION_MNIST_LABELS


class FiguresTest(tf.test.TestCase):
    def test_confusion_image_of_ten_classes_fits_an_image_card(self):
        rng = np.random.default_rng(0)
        confusion = rng.integers(0, 1000, (10, 10))
        image = confusion_image(confusion, FASHION_MNIST_LABELS)
        _, height, width, channels = image.shape
        self.assertEqual(channels, 4)
        self.assertBetween(width, 400, 520)  # 5 x 4.5 inches at 100 dpi
        self.assertBetween(height, 360, 470)

    def test_more_classes_grow_the_figure_within_a_bound(self):
        confusion = np.ones((30, 30), int)
        _, height, width, _ = confusion_image(confusion, [f"c{i}" for i in range(30)]).shape
        self.assertBetween(width, 900, 1200)
        self.assertLessEqual(height, 1100)

    def test_short_labels(self):
        self.assertEqual(
            [short_label(name) for name in FASHION_MNIST_LABELS],
            ["T-shirt", "Trouser", "Pullover", "Dress", "Coat"]
            + ["Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
        )
        self.assertEqual(short_label("a very long class name"), "a very lo\u2026")
        self.assertEqual(short_label("/odd"), "/odd")

    def test_confusion_table_keeps_the_full_names(self):
        table = confusion_table(np.eye(2, dtype=int) * 3, ["T-shirt/top", "Ankle boot"])
        self.assertEqual(
            table.splitlines(),
            [
                "| true \\ predicted | T-shirt/top | Ankle boot |",
                "|---|---|---|",
                "| T-shirt/top | 3 | 0 |",
                "| Ankle boot | 0 | 3 |",
            ],
        )

    def test_prediction_grid(self):
        images = np.zeros((16, 8, 8), np.uint8)
        grid = image_grid(images, [0] * 16, [0] * 8 + [1] * 8, ["a", "b"])
        self.assertEqual(grid.shape[0], 1)
        self.assertEqual(grid.shape[-1], 4)


class ProgressFigureTest(tf.test.TestCase):
    HISTORY = {
        "loss": [2.0, 1.2, 0.9, 0.8, 0.7, 0.65, 0.6],
        "val_loss": [1.5, 1.1, 0.95, 0.85, 0.8, 0.78, 0.77],
        "accuracy": [0.4, 0.6, 0.7, 0.74, 0.77, 0.79, 0.8],
        "val_accuracy": [0.5, 0.62, 0.69, 0.72, 0.74, 0.75, 0.76],
    }

    def test_loss_and_accuracy_on_labelled_axes_by_whole_epochs(self):
        fig = progress_figure(self.HISTORY, "scratch MLP; validation: held out")
        loss, accuracy = fig.axes
        self.assertEqual((loss.get_xlabel(), accuracy.get_xlabel()), ("epoch", "epoch"))
        self.assertEqual(loss.get_ylabel(), "loss (cross-entropy)")
        self.assertEqual(accuracy.get_ylabel(), "accuracy")
        for ax, train, validation in (
            (loss, "loss", "val_loss"),
            (accuracy, "accuracy", "val_accuracy"),
        ):
            self.assertEqual([line.get_label() for line in ax.get_lines()], ["train", "validation"])
            self.assertAllClose(ax.get_lines()[0].get_ydata(), self.HISTORY[train])
            self.assertAllClose(ax.get_lines()[1].get_ydata(), self.HISTORY[validation])
            ticks = [t for t in ax.get_xticks() if 1 <= t <= 7]
            self.assertNotEmpty(ticks)
            self.assertAllEqual(ticks, np.round(ticks))  # whole epochs only
        self.assertEqual(fig.get_suptitle(), "scratch MLP; validation: held out")

    def test_one_epoch_has_whole_ticks_too(self):
        one = {key: values[:1] for key, values in self.HISTORY.items()}
        for ax in progress_figure(one).axes:
            self.assertAllEqual(ax.get_xticks(), np.round(ax.get_xticks()))

    def test_title_names_the_model_and_the_validation_split(self):
        data = types.SimpleNamespace(
            name="fashion_mnist", validation="test", val_images=np.zeros((10000, 1))
        )
        self.assertEqual(
            progress_title({"model": "concise"}, data),
            "concise MLP on fashion_mnist; validation: the test split (10,000 examples)",
        )
        held = types.SimpleNamespace(
            name="fashion_mnist", validation="holdout", val_images=np.zeros((6000, 1))
        )
        self.assertEqual(
            progress_title({"model": "scratch", "validation_split": 0.1}, held),
            "scratch MLP on fashion_mnist; validation: held out "
            "(10% of the training set, 6,000 examples)",
        )


if __name__ == "__main__":
    tf.test.main()
