"""The figures TensorBoard shows, checked on the Figure or the image: sizes that read at
TensorBoard's image card size, and short tick labels."""

import numpy as np
import tensorflow as tf

from keras_mlp.figures import confusion_image, confusion_table, image_grid, short_label
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


if __name__ == "__main__":
    tf.test.main()
