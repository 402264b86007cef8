"""Label-preserving augmentation of training images: random mirror, shift and erasing.

The draws are per example and stateless: each epoch draws uniforms per training example
from `(seed, epoch)` (three for mirror and shift, five more for erasing, from a seed of
their own so that adding erasing leaves the others' draws as they were), and a batch
takes the rows of its examples. So an
augmented run resumes exactly (mid-epoch included) and is the same on every replica
topology, like the batches themselves (`feeds.ShuffledArrays`). Validation and test
images are never augmented.
"""

import tensorflow as tf

from keras_mlp.errors import UserError

# Folded into the run's seed so that the augmentation draws are not the shuffle's.
_SEED_SALT = 0x5EED_A06
_ERASE_SALT = 0xE2A5E


class Augmentation:
    """Mirror each image left-right with probability 1/2 (`flip`), shift it by up to
    `shift` pixels along each axis, the uncovered border filled with zeros (0 in the raw
    images: the background of Fashion-MNIST and MNIST), then, with probability 1/2, zero a
    rectangle of 1..`erase` by 1..`erase` pixels at a uniform place inside it (random
    erasing: Zhong et al., "Random Erasing Data Augmentation", 2020, who fill with noise or
    zeros; zeros here, the background).

    Mirroring preserves the label of clothing and of objects (CIFAR-10), not of digits
    or letters."""

    def __init__(self, flip=False, shift=0, erase=0):
        self.flip, self.shift, self.erase = bool(flip), int(shift), int(erase)

    def __bool__(self):
        return self.flip or self.shift > 0 or self.erase > 0

    def check(self, image_shape):
        """Raises `UserError` when a shift would move an image entirely out of its frame,
        or an erased rectangle could not fit in it."""
        height, width = image_shape[:2]
        if self.shift >= min(height, width):
            raise UserError(
                f"random_shift={self.shift} must be smaller than the images' "
                f"{height}x{width} pixels"
            )
        if self.erase > min(height, width):
            raise UserError(
                f"random_erase={self.erase} must be at most the images' {height}x{width} pixels"
            )

    def epoch_draws(self, seed, epoch, count):
        """`(count, 3)` uniforms in [0, 1) for epoch `epoch`: mirror, row shift, column
        shift of each training example; with erasing `(count, 8)`, then whether to erase,
        the rectangle's height and width, and its top and left edges."""
        draws = _uniforms(seed, _SEED_SALT, epoch, (count, 3))
        if self.erase:
            draws = tf.concat([draws, _uniforms(seed, _ERASE_SALT, epoch, (count, 5))], axis=1)
        return draws

    def __call__(self, images, draws):
        """`images` `(b, H, W)` or `(b, H, W, C)` transformed by their `draws`
        (`epoch_draws`' rows)."""
        images = tf.convert_to_tensor(images)
        if self.flip:
            mirrored = tf.reshape(draws[:, 0] < 0.5, (-1,) + (1,) * (images.shape.rank - 1))
            images = tf.where(mirrored, tf.reverse(images, axis=[2]), images)
        if self.shift:
            images = self._shift(images, draws[:, 1:3])
        if self.erase:
            images = self._erase(images, draws[:, 3:8])
        return images

    def _erase(self, images, draws):
        """Each image with its rectangle zeroed: draws `(b, 5)` say whether (< 1/2), the
        height and width (1..erase) and the top-left corner (uniform over the places where
        the rectangle fits)."""
        n, (height, width) = self.erase, images.shape[1:3]
        sizes = 1 + tf.cast(draws[:, 1:3] * n, tf.int32)  # (b, 2) rows, columns in 1..n
        room = tf.constant([height, width], tf.int32) - sizes + 1
        corners = tf.cast(draws[:, 3:5] * tf.cast(room, tf.float32), tf.int32)  # (b, 2)
        rows = _inside(tf.range(height), corners[:, 0], sizes[:, 0])  # (b, H)
        columns = _inside(tf.range(width), corners[:, 1], sizes[:, 1])  # (b, W)
        erased = rows[:, :, None] & columns[:, None, :] & (draws[:, 0] < 0.5)[:, None, None]
        if images.shape.rank == 4:  # every channel of an erased pixel
            erased = erased[..., None]
        return tf.where(erased, tf.zeros_like(images), images)

    def _shift(self, images, draws):
        """Each image cut from its zero-padded frame at its own offset: a gather of rows,
        then of columns (no interpolation: pixels stay pixels)."""
        s, (height, width) = self.shift, images.shape[1:3]
        padding = [[0, 0], [s, s], [s, s]] + [[0, 0]] * (images.shape.rank - 3)
        padded = tf.pad(images, padding)
        offsets = tf.cast(draws * (2 * s + 1), tf.int32)  # (b, 2) in 0..2s; s: unshifted
        rows = offsets[:, :1] + tf.range(height)
        columns = offsets[:, 1:] + tf.range(width)
        images = tf.gather(padded, rows, axis=1, batch_dims=1)
        return tf.gather(images, columns, axis=2, batch_dims=1)


def _uniforms(seed, salt, epoch, shape):
    """Uniforms in [0, 1) of `shape` from `(seed ^ salt, epoch)`: stateless."""
    seed = tf.stack([tf.cast(seed, tf.int64) ^ salt, tf.cast(epoch, tf.int64)])
    return tf.random.stateless_uniform(shape, seed=seed)


def _inside(positions, starts, sizes):
    """`(b, len(positions))`: whether each position lies in `[start, start + size)`."""
    return (positions >= starts[:, None]) & (positions < (starts + sizes)[:, None])
