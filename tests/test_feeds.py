"""Tests for keras_mlp.feeds: what each replica's step gathers from arrays, read back
through real strategies (the default one and MirroredStrategy over two CPUs)."""

import numpy as np
import tensorflow as tf
from feed_util import feed_batches, feed_chunk

from keras_mlp import data as data_lib
from keras_mlp import feeds
from keras_mlp.distribute import get_strategy


def _labels(step):
    """The labels of one step's batch, the replicas' parts in replica order."""
    return np.concatenate([replica[1] for replica in step])


class ArrayFeedTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        # Image i is filled with the value i, so batches reveal which examples they hold.
        self.n = 103
        self.images = np.repeat(np.arange(self.n, dtype=np.uint8)[:, None, None], 4, axis=1)
        self.images = np.repeat(self.images, 3, axis=2)
        self.labels = np.arange(self.n, dtype=np.int32)

    def _train(self, seed=3, strategy=None, epoch=0, step=0, num_steps=10):
        feed = feeds.ShuffledArrays(self.images, self.labels, 20, seed, data_lib.scale)
        return feed_batches(feed, feed.chunk_args(epoch, step), num_steps, strategy)

    def test_each_epoch_is_a_fresh_shuffle_of_distinct_examples(self):
        feed = feeds.ShuffledArrays(self.images, self.labels, 20, 3, data_lib.scale)
        self.assertEqual(feed.steps, 5)  # 103 // 20: the last partial batch is dropped
        epochs = [self._train(epoch=epoch, num_steps=5) for epoch in (0, 1)]
        first, second = ([_labels(step) for step in steps] for steps in epochs)
        self.assertLen(set(np.concatenate(first)), 100)
        self.assertLen(set(np.concatenate(second)), 100)
        self.assertNotAllEqual(np.concatenate(first), np.concatenate(second))
        x, y = epochs[0][0][0]
        self.assertEqual(x.dtype, np.float32)
        self.assertAllClose(x[:, 0, 0], y / 255.0)

    def test_order_depends_only_on_seed_and_epoch(self):
        whole = [_labels(step) for step in self._train(epoch=1, num_steps=5)]
        resumed = [_labels(step) for step in self._train(epoch=1, step=3, num_steps=2)]
        self.assertAllEqual(resumed, whole[3:])  # a chunk starting mid-epoch: the same steps
        again = [_labels(step) for step in self._train(epoch=1, num_steps=5)]
        self.assertAllEqual(again, whole)
        other_seed = [_labels(step) for step in self._train(seed=4, epoch=1, num_steps=5)]
        self.assertNotAllEqual(other_seed, whole)

    def test_replicas_split_the_same_global_batches(self):
        single = self._train(epoch=2, num_steps=5)
        mirrored = self._train(strategy=get_strategy("mirrored", num_gpus=0), epoch=2, num_steps=5)
        for one, two in zip(single, mirrored, strict=True):
            self.assertEqual([len(replica[1]) for replica in two], [10, 10])
            self.assertAllEqual(_labels(two), _labels(one))
            self.assertAllEqual(np.concatenate([r[0] for r in two]), one[0][0])

    def test_eval_covers_every_example_once_with_padding_weighted_zero(self):
        feed = feeds.OrderedArrays(self.images, self.labels, 20)
        self.assertEqual(feed.steps, 6)
        for strategy, replicas in ((None, 1), (get_strategy("mirrored", num_gpus=0), 2)):
            seen, total_weight = [], 0.0
            for step in feed_batches(feed, feed.chunk_args(), feed.steps, strategy):
                for x, y, w in step:
                    self.assertEqual(len(y), 20 // replicas)
                    self.assertAllEqual(x[:, 0, 0], y)  # unscaled without preprocess
                    seen.extend(y[w == 1])
                    total_weight += float(w.sum())
            self.assertEqual(seen, list(range(self.n)))  # in order
            self.assertEqual(total_weight, self.n)

    def test_the_compiled_graphs_do_not_grow_with_the_data(self):
        """The arrays stay in host variables, out of the graphs: a graph constant (or a
        tensor captured by value) would copy the set into every function and stop at 2
        GB. Counted: the traced chunk's graph and every tensor it captures by value; a
        captured variable is a handle and counts nothing."""

        def graph_bytes(feed):
            concrete = feed_chunk(feed, 2).get_concrete_function(feed.chunk_args())
            by_value = sum(
                int(np.prod(t.shape)) * t.dtype.size
                for t in concrete.captured_inputs
                if t.dtype != tf.resource
            )
            return concrete.graph.as_graph_def().ByteSize() + by_value

        def sizes(n):
            images, labels = np.zeros((n, 8, 8), np.uint8), np.zeros(n, np.int32)
            train = feeds.ShuffledArrays(images, labels, 20, 0, data_lib.scale)
            return [graph_bytes(train), graph_bytes(feeds.OrderedArrays(images, labels, 20))]

        small, large = sizes(1_000), sizes(100_000)  # 64 KB, 6.4 MB of images
        for a, b in zip(small, large, strict=True):
            self.assertBetween(b, 1_000, 30_000)  # the ops are there, the data not
            self.assertLess(abs(b - a), 100)


if __name__ == "__main__":
    tf.test.main()
