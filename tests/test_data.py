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


def _pipeline_contexts(num_pipelines, replicas):
    return [tf.distribute.InputContext(num_pipelines, i, replicas) for i in range(num_pipelines)]


class PipelineTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        # Image i is filled with the value i, so batches reveal which examples they hold.
        self.n = 103
        self.images = np.repeat(np.arange(self.n, dtype=np.uint8)[:, None, None], 4, axis=1)
        self.images = np.repeat(self.images, 3, axis=2)
        self.labels = np.arange(self.n, dtype=np.int32)

    def _epochs(self, input_context, batch=20, seed=3, start=0, num=2, skip=0):
        fn = data_lib.train_dataset_fn(self.images, self.labels, batch, seed, start, num, skip)
        batches = [(x.numpy(), y.numpy()) for x, y in fn(input_context)]
        return batches, self.n // batch

    def test_each_epoch_is_a_fresh_shuffle_of_distinct_examples(self):
        (batches, steps) = self._epochs(tf.distribute.InputContext())
        self.assertEqual(steps, 5)  # 103 // 20: the last partial batch is dropped
        self.assertLen(batches, 10)
        first = np.concatenate([y for _, y in batches[:5]])
        second = np.concatenate([y for _, y in batches[5:]])
        self.assertLen(set(first), 100)
        self.assertLen(set(second), 100)
        self.assertNotAllEqual(first, second)
        x, y = batches[0]
        self.assertEqual(x.dtype, np.float32)
        self.assertAllClose(x[:, 0, 0], y / 255.0)

    def test_order_depends_only_on_seed_and_epoch(self):
        both, _ = self._epochs(tf.distribute.InputContext(), start=0, num=2)
        resumed, _ = self._epochs(tf.distribute.InputContext(), start=1, num=1)
        for (_, y_full), (_, y_resumed) in zip(both[5:], resumed, strict=True):
            self.assertAllEqual(y_full, y_resumed)
        mid_epoch, _ = self._epochs(tf.distribute.InputContext(), start=1, num=1, skip=3)
        self.assertLen(mid_epoch, 2)
        self.assertAllEqual(mid_epoch[0][1], both[8][1])
        # With two replicas per pipeline, skipping a step skips both replicas' batches.
        two_replicas, _ = self._epochs(tf.distribute.InputContext(1, 0, 2), start=1, num=1, skip=3)
        self.assertAllEqual(np.concatenate([two_replicas[0][1], two_replicas[1][1]]), both[8][1])
        other_seed, _ = self._epochs(tf.distribute.InputContext(), seed=4)
        self.assertNotAllEqual(other_seed[0][1], both[0][1])

    def test_pipelines_and_replicas_split_the_same_global_batches(self):
        single, _ = self._epochs(tf.distribute.InputContext())
        # Two workers with two replicas each: per replica 5 examples of each batch of 20.
        parts = [self._epochs(ctx)[0] for ctx in _pipeline_contexts(2, 4)]
        for step, (_, global_labels) in enumerate(single):
            pieces = [parts[p][2 * step + r][1] for p in range(2) for r in range(2)]
            self.assertEqual({len(piece) for piece in pieces}, {5})
            self.assertAllEqual(np.concatenate(pieces), global_labels)

    def test_eval_covers_every_example_once_with_padding_weighted_zero(self):
        fn = data_lib.eval_dataset_fn(self.images, self.labels, 20)
        seen, total_weight = [], 0.0
        for ctx in _pipeline_contexts(2, 2):
            for _, y, w in fn(ctx):
                self.assertEqual(len(y), 10)
                seen.extend(y.numpy()[w.numpy() == 1])
                total_weight += float(w.numpy().sum())
        self.assertEqual(sorted(seen), list(range(self.n)))
        self.assertEqual(total_weight, self.n)

    def test_the_pipeline_graphs_do_not_grow_with_the_data(self):
        """The arrays stay in host memory, out of the pipelines' graphs: a graph
        constant (or a tensor captured by value) would copy the set into every pipeline
        and stop at 2 GB. Counted: each pipeline function's graph and every tensor it
        captures by value; a captured variable is a handle and counts nothing."""

        def dataset_bytes(dataset):
            total, stack = 0, [dataset]
            while stack:
                dataset = stack.pop()
                for wrapper in dataset._functions():
                    function = wrapper.function
                    total += function.graph.as_graph_def().ByteSize()
                    total += sum(
                        int(np.prod(t.shape)) * t.dtype.size
                        for t in function.captured_inputs
                        if t.dtype != tf.resource
                    )
                stack.extend(dataset._inputs())
            return total

        def pipeline_bytes(n):
            images, labels = np.zeros((n, 8, 8), np.uint8), np.zeros(n, np.int32)
            train = data_lib.train_dataset_fn(images, labels, 20, 0, 0, 1)
            val = data_lib.eval_dataset_fn(images, labels, 20)
            return [dataset_bytes(fn(tf.distribute.InputContext())) for fn in (train, val)]

        small, large = pipeline_bytes(1_000), pipeline_bytes(100_000)  # 64 KB, 6.4 MB of images
        for a, b in zip(small, large, strict=True):
            self.assertBetween(b, 1_000, 20_000)  # the functions are there, the data not
            self.assertLess(abs(b - a), 100)


if __name__ == "__main__":
    tf.test.main()
