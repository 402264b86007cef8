"""Tests for keras_mlp.idx and keras_mlp.data: IDX reading and validation, data_dir sets,
pipelines.

The searches of named sets (keras cache, tensorflow-datasets, downloads) are in
test_data_sources.py, where no URL leaves this machine."""

import gzip
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_mlp import data as data_lib
from keras_mlp import idx as idx_lib
from keras_mlp.errors import UserError
from keras_mlp.sources.find import FASHION_MNIST_LABELS

REAL_DATA_DIR = os.environ.get("KERAS_MLP_FASHION_MNIST_DIR")


def write_idx_set(directory, train=(60, 6, 5), test=(20, 6, 5), num_classes=3, seed=0):
    """Writes a small random IDX image set with the standard file names."""
    rng = np.random.default_rng(seed)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for split, shape in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, size=shape, dtype=np.uint8)
        labels = (np.arange(shape[0]) % num_classes).astype(np.uint8)
        idx_lib.write_idx(directory / f"{split}-images-idx3-ubyte.gz", images)
        idx_lib.write_idx(directory / f"{split}-labels-idx1-ubyte.gz", labels)
    return directory


class IdxTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.dir = Path(self.get_temp_dir())

    def test_round_trip(self):
        array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
        for name in ("a.gz", "a"):
            idx_lib.write_idx(self.dir / name, array)
            self.assertAllEqual(idx_lib.read_idx(self.dir / name), array)

    def _write_raw(self, payload, name="bad.gz"):
        with gzip.open(self.dir / name, "wb") as f:
            f.write(payload)
        return self.dir / name

    @parameterized.named_parameters(
        ("bad_magic", b"\x01\x02\x08\x01\x00\x00\x00\x01\x05", "bad magic"),
        ("float_type", b"\x00\x00\x0d\x01\x00\x00\x00\x01\x05", "type 0x0d"),
        ("short_header", b"\x00\x00\x08\x03\x00\x00", "header is truncated"),
        ("size_mismatch", b"\x00\x00\x08\x01\x00\x00\x00\x05\x01\x02", "needs 13"),
    )
    def test_rejects_bad_content_naming_the_file(self, payload, message):
        path = self._write_raw(payload)
        with self.assertRaisesRegex(UserError, f"{path}.*{message}"):
            idx_lib.read_idx(path)

    def test_rejects_truncated_gzip(self):
        idx_lib.write_idx(self.dir / "x.gz", np.zeros((100, 28, 28), np.uint8))
        raw = (self.dir / "x.gz").read_bytes()
        (self.dir / "x.gz").write_bytes(raw[: len(raw) // 2])
        with self.assertRaisesRegex(UserError, "x.gz: truncated or corrupt gzip"):
            idx_lib.read_idx(self.dir / "x.gz")

    def test_rejects_missing_files_and_directories(self):
        with self.assertRaisesRegex(UserError, "does not exist"):
            idx_lib.read_idx_dir(self.dir / "nowhere")
        write_idx_set(self.dir / "set")
        os.remove(self.dir / "set" / "t10k-labels-idx1-ubyte.gz")
        with self.assertRaisesRegex(UserError, "lacks t10k-labels-idx1-ubyte.gz"):
            idx_lib.read_idx_dir(self.dir / "set")

    def test_rejects_mismatched_files(self):
        directory = write_idx_set(self.dir / "counts")
        idx_lib.write_idx(directory / "train-labels-idx1-ubyte.gz", np.zeros(59, np.uint8))
        with self.assertRaisesRegex(UserError, "60 images but .* 59 labels"):
            idx_lib.read_idx_dir(directory)
        directory = write_idx_set(self.dir / "shapes", test=(20, 7, 5))
        with self.assertRaisesRegex(
            UserError, r"train images are \(6, 5\) but test images are \(7, 5\)"
        ):
            idx_lib.read_idx_dir(directory)
        directory = write_idx_set(self.dir / "labels")
        idx_lib.write_idx(directory / "t10k-labels-idx1-ubyte.gz", np.full(20, 9, np.uint8))
        with self.assertRaisesRegex(
            UserError, "label 9 is outside the training labels' range 0..2"
        ):
            idx_lib.read_idx_dir(directory)
        directory = write_idx_set(self.dir / "dims")
        idx_lib.write_idx(directory / "train-images-idx3-ubyte.gz", np.zeros((60, 30), np.uint8))
        with self.assertRaisesRegex(UserError, r"expected 3 dimensions \(N, H, W\)"):
            idx_lib.read_idx_dir(directory)


class LoadDatasetTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.dir = Path(self.get_temp_dir())

    def test_any_idx_set_gives_its_own_shape_and_classes(self):
        directory = write_idx_set(
            self.dir / "other", train=(90, 9, 11), test=(30, 9, 11), num_classes=6
        )
        data = data_lib.load_dataset("fashion_mnist", data_dir=directory)
        self.assertEqual(data.input_shape, (9, 11))
        self.assertEqual(data.num_classes, 6)
        self.assertEqual(data.label_names, tuple("012345"))
        self.assertEqual(data.validation, "test")
        (directory / "labels.txt").write_text("a\nb\nc\nd\ne\nf\n")
        self.assertEqual(
            data_lib.load_dataset("fashion_mnist", data_dir=directory).label_names, tuple("abcdef")
        )

    def test_labels_txt_with_a_byte_order_mark(self):
        """Issue 16: a BOM (as Windows editors write) became part of the first name."""
        directory = write_idx_set(self.dir / "bom")
        (directory / "labels.txt").write_text("cat\ndog\nbird\n", encoding="utf-8-sig")
        self.assertEqual(
            data_lib.load_dataset("fashion_mnist", data_dir=directory).label_names,
            ("cat", "dog", "bird"),
        )

    def test_validation_split_holds_out_a_seeded_disjoint_part(self):
        data = data_lib.load_dataset("synthetic", validation_split=0.25, seed=7)
        self.assertEqual(data.validation, "holdout")
        self.assertLen(data.val_images, 500)
        self.assertLen(data.train_images, 1500)
        train_rows = {row.tobytes() for row in data.train_images}
        self.assertFalse(any(row.tobytes() in train_rows for row in data.val_images))
        again = data_lib.load_dataset("synthetic", validation_split=0.25, seed=7)
        self.assertAllEqual(again.val_images, data.val_images)
        other = data_lib.load_dataset("synthetic", validation_split=0.25, seed=8)
        self.assertNotAllEqual(other.val_images, data.val_images)

    def test_rejects_bad_validation_split(self):
        for split in (1.0, -0.1, 0.0001):
            with self.assertRaisesRegex(UserError, "validation_split"):
                data_lib.load_dataset("synthetic", validation_split=split)

    def test_synthetic_is_deterministic_and_scaled_to_unit_interval(self):
        a, b = data_lib.load_dataset("synthetic"), data_lib.load_dataset("synthetic")
        self.assertAllEqual(a.train_images, b.train_images)
        self.assertEqual(a.train_images.dtype, np.uint8)
        self.assertGreater(a.num_classes, 2)

    def test_colour_idx_sets_keep_their_channel_axis(self):
        """A data_dir holding (N, H, W, 3) images loads as colour; (N, H, W, 1) as grayscale."""
        rng = np.random.default_rng(4)
        colour = self.dir / "colour"
        colour.mkdir()
        for split, count in (("train", 30), ("t10k", 10)):
            images = rng.integers(0, 256, (count, 5, 4, 3), dtype=np.uint8)
            idx_lib.write_idx(colour / f"{split}-images-idx3-ubyte.gz", images)
            labels = (np.arange(count) % 3).astype(np.uint8)
            idx_lib.write_idx(colour / f"{split}-labels-idx1-ubyte.gz", labels)
        data = data_lib.load_dataset("cifar10", data_dir=colour)
        self.assertEqual(data.input_shape, (5, 4, 3))
        self.assertEqual(data.label_names, ("0", "1", "2"))  # a data_dir is used as it is
        self.assertAllEqual(
            data.train_images, idx_lib.read_idx(colour / "train-images-idx3-ubyte.gz")
        )
        single = write_idx_set(self.dir / "single")
        train = idx_lib.read_idx(single / "train-images-idx3-ubyte.gz")
        idx_lib.write_idx(single / "train-images-idx3-ubyte.gz", train[..., None])
        data = data_lib.load_dataset("mnist", data_dir=single)
        self.assertEqual(data.input_shape, (6, 5))
        self.assertAllEqual(data.train_images, train)
        idx_lib.write_idx(single / "train-images-idx3-ubyte.gz", np.repeat(train[..., None], 2, 3))
        with self.assertRaisesRegex(
            UserError, r"or 4 \(N, H, W, 1 or 3\), found shape \(60, 6, 5, 2\)"
        ):
            data_lib.load_dataset("mnist", data_dir=single)

    def test_real_fashion_mnist(self):
        if not REAL_DATA_DIR:
            self.skipTest("set KERAS_MLP_FASHION_MNIST_DIR to the real Fashion-MNIST files")
        data = data_lib.load_dataset("fashion_mnist", data_dir=REAL_DATA_DIR)
        self.assertEqual(data.train_images.shape, (60000, 28, 28))
        self.assertEqual(data.val_images.shape, (10000, 28, 28))
        self.assertEqual(data.label_names, FASHION_MNIST_LABELS)
        self.assertNear(float(data.train_images.mean() / 255), 0.2860, 1e-4)
        self.assertNear(float((data.train_images / 255).std()), 0.3530, 1e-4)


if __name__ == "__main__":
    tf.test.main()
