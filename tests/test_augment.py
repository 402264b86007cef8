"""Tests for keras_mlp.augment: the mirror, shift and erasing themselves, their draws in the
training pipeline (exact resume, every topology alike, validation untouched), and the
flags of a run."""

import json
from pathlib import Path

import numpy as np
import tensorflow as tf
from feed_util import feed_batches

from keras_mlp import config as config_lib
from keras_mlp import feeds, run
from keras_mlp.augment import Augmentation
from keras_mlp.distribute import get_strategy
from keras_mlp.errors import UserError


def _draws(*rows):
    return tf.constant(rows, tf.float32)


class AugmentationTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.images = np.arange(2 * 5 * 6, dtype=np.uint8).reshape(2, 5, 6)

    def test_mirrors_exactly_the_images_drawn_below_one_half(self):
        out = Augmentation(flip=True)(self.images, _draws([0.2, 0.9, 0.9], [0.7, 0.1, 0.1]))
        self.assertEqual(out.dtype, tf.uint8)
        self.assertAllEqual(out[0], self.images[0][:, ::-1])
        self.assertAllEqual(out[1], self.images[1])  # its shift draws are unused: no shift

    def test_shift_moves_each_image_by_its_own_offset_filling_zeros(self):
        image = np.zeros((1, 5, 6), np.uint8)
        image[0, 2, 3] = 200
        shift = Augmentation(shift=2)
        # A draw d gives the offset floor(d * 5) in 0..4; offset 2 leaves the image in place.
        for (row_draw, column_draw), (row, column) in [
            ((0.5, 0.5), (2, 3)),  # offsets 2, 2
            ((0.0, 0.99), (4, 1)),  # offsets 0, 4: two rows down, two columns left
            ((0.25, 0.2), (3, 4)),  # offsets 1, 1
        ]:
            out = shift(image, _draws([0.9, row_draw, column_draw])).numpy()
            self.assertEqual(out.shape, image.shape)
            self.assertEqual(out[0, row, column], 200)
            self.assertEqual(out.sum(), 200)  # moved, not copied or interpolated

    def test_shift_off_the_edge_zero_fills_and_keeps_colour_channels(self):
        images = np.full((1, 4, 4, 3), 9, np.uint8)
        out = Augmentation(shift=1)(images, _draws([0.9, 0.0, 0.0])).numpy()
        self.assertEqual(out.shape, images.shape)
        self.assertAllEqual(out[0, 0], np.zeros((4, 3)))  # the row the shift uncovered
        self.assertAllEqual(out[0, :, 0], np.zeros((4, 3)))
        self.assertAllEqual(out[0, 1:, 1:], np.full((3, 3, 3), 9))

    def test_erase_zeroes_the_rectangle_drawn_in_images_drawn_below_one_half(self):
        images = np.full((3, 5, 6, 2), 7, np.uint8)  # colour channels are erased together
        erase = Augmentation(erase=3)
        # Sizes 1 + floor(d * 3); the corner floor(d * room), room = frame - size + 1.
        out = erase(
            images,
            _draws(
                [0.9, 0.9, 0.9, 0.2, 0.4, 0.0, 0.5, 0.99],  # 2 x 1 at rows 2-3, column 5
                [0.9, 0.9, 0.9, 0.7, 0.99, 0.99, 0.0, 0.0],  # not erased (0.7)
                [0.9, 0.9, 0.9, 0.0, 0.99, 0.4, 0.99, 0.0],  # 3 x 2 at rows 2-4, columns 0-1
            ),
        ).numpy()
        expected = np.full_like(images, 7)
        expected[0, 2:4, 5] = 0
        expected[2, 2:5, 0:2] = 0
        self.assertAllEqual(out, expected)

    def test_erase_draws_come_after_and_leave_the_mirror_and_shift_draws_alone(self):
        plain = Augmentation(flip=True, shift=1).epoch_draws(3, 2, 10)
        with_erase = Augmentation(flip=True, shift=1, erase=4).epoch_draws(3, 2, 10)
        self.assertEqual(with_erase.shape, (10, 8))
        self.assertAllEqual(with_erase[:, :3], plain)  # runs without erasing are unchanged
        # Over many examples: about half erased, every size from 1 to 4, inside the frame.
        images = np.full((2000, 28, 28), 255, np.uint8)
        erase = Augmentation(erase=4)
        out = erase(images, erase.epoch_draws(0, 0, 2000)).numpy()
        zeros = out == 0
        erased = zeros.any(axis=(1, 2))
        self.assertBetween(erased.mean(), 0.45, 0.55)
        heights = zeros[erased].any(axis=2).sum(axis=1)
        widths = zeros[erased].any(axis=1).sum(axis=1)
        self.assertEqual(set(heights), {1, 2, 3, 4})
        self.assertEqual(set(widths), {1, 2, 3, 4})
        self.assertAllEqual(zeros[erased].sum(axis=(1, 2)), heights * widths)  # rectangles
        self.assertTrue(zeros[:, 0].any() and zeros[:, -1].any())  # both edges reachable

    def test_off_is_false_and_a_shift_must_leave_the_frame(self):
        self.assertFalse(Augmentation())
        self.assertTrue(Augmentation(flip=True))
        Augmentation(shift=27).check((28, 28))
        with self.assertRaisesRegex(UserError, r"random_shift=28 must be smaller .* 28x28"):
            Augmentation(shift=28).check((28, 28))
        with self.assertRaisesRegex(UserError, "random_shift=-1"):
            config_lib.RunConfig(random_shift=-1)
        self.assertTrue(Augmentation(erase=1))
        Augmentation(erase=28).check((28, 28))
        with self.assertRaisesRegex(UserError, r"random_erase=29 must be at most .* 28x28"):
            Augmentation(erase=29).check((28, 28))
        with self.assertRaisesRegex(UserError, "random_erase=-2"):
            config_lib.RunConfig(random_erase=-2)


class AugmentedPipelineTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        # Image i holds a distinct left-to-right ramp and is labelled i.
        self.n = 64
        ramp = np.arange(8, dtype=np.uint8)[None, None, :] * 10
        self.images = np.repeat(ramp, 8, axis=1) + np.arange(self.n, dtype=np.uint8)[:, None, None]
        self.labels = np.arange(self.n, dtype=np.int32)
        self.augment = Augmentation(flip=True, shift=1, erase=3)

    def _batches(self, epoch=0, step=0, num_steps=4, augment=True, strategy=None):
        """`(images, labels)` of each step, the replicas' parts joined."""
        augment = self.augment if augment else None
        feed = feeds.ShuffledArrays(self.images, self.labels, 16, 5, augment=augment)
        steps = feed_batches(feed, feed.chunk_args(epoch, step), num_steps, strategy)
        return [tuple(np.concatenate(part) for part in zip(*step, strict=True)) for step in steps]

    def test_draws_are_per_example_and_epoch_and_resume_exactly(self):
        plain, augmented = self._batches(augment=False), self._batches()
        changed = 0
        for (x_plain, y_plain), (x_aug, y_aug) in zip(plain, augmented, strict=True):
            self.assertAllEqual(y_plain, y_aug)  # the same examples in the same order
            changed += int(np.sum(np.any(x_plain != x_aug, axis=(1, 2))))
        self.assertGreater(changed, 32)  # most of the 64 images moved or mirrored
        # An example is transformed anew each epoch.
        second_epoch = self._batches(epoch=1)
        first = {y: x for b in augmented for x, y in zip(*b, strict=True)}
        second = {y: x for b in second_epoch for x, y in zip(*b, strict=True)}
        self.assertTrue(any(not np.array_equal(first[k], second[k]) for k in first))
        resumed = self._batches(epoch=1, step=2, num_steps=2)
        for (x_full, _), (x_resumed, _) in zip(second_epoch[2:], resumed, strict=True):
            self.assertAllEqual(x_full, x_resumed)

    def test_every_topology_sees_the_same_augmented_global_batches(self):
        single = self._batches()
        mirrored = self._batches(strategy=get_strategy("mirrored", num_gpus=0))
        for (one, labels), (two, labels_two) in zip(single, mirrored, strict=True):
            self.assertAllEqual(labels_two, labels)
            self.assertAllEqual(two, one)


class AugmentedRunTest(tf.test.TestCase):
    def test_a_run_trains_augmented_and_validates_on_plain_images(self):
        config = config_lib.RunConfig(
            dataset="synthetic",
            epochs=1,
            random_flip=True,
            random_shift=2,
            random_erase=3,
            model_dir=str(Path(self.get_temp_dir()) / "run"),
        )
        data, _ = run.build(config, tf.distribute.get_strategy())
        train, validation = run.fit_inputs(config, data)
        augment = train.augment
        self.assertEqual((augment.flip, augment.shift, augment.erase), (True, 2, 3))
        self.assertIsNone(validation.augment)
        self.assertAllEqual(validation.x, data.val_images)
        result = run.train(config, verbose=False)
        saved = json.loads((Path(result.model_dir) / "run_config.json").read_text())
        self.assertEqual(
            (saved["random_flip"], saved["random_shift"], saved["random_erase"]), (True, 2, 3)
        )
        plain = config_lib.RunConfig(dataset="synthetic")
        self.assertEqual(run.fit_inputs(plain, data), (data, None))


if __name__ == "__main__":
    tf.test.main()
