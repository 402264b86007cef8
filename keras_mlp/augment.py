"""Label-preserving augmentation of training images: random mirror and shift.

The draws are per example and stateless: each epoch draws three uniforms per training
example from `(seed, epoch)`, and a batch takes the rows of its examples. So an
augmented run resumes exactly (mid-epoch included) and is the same on every replica
topology, like the batches themselves (`feeds.ShuffledArrays`). Validation and test
images are never augmented.
"""

import tensorflow as tf

from keras_mlp.errors import UserError

# Folded into the run's seed so that the augmentation draws are not the shuffle's.
_SEED_SALT = 0x5EED_A06


class Augmentation:
    """Mirror each image left-right with probability 1/2 (`flip`) and shift it by up to
    `shift` pixels along each axis, the uncovered border filled with zeros (0 in the raw
    images: the background of Fashion-MNIST and MNIST).

    Mirroring preserves the label of clothing and of objects (CIFAR-10), not of digits
    or letters."""

    def __init__(self, flip=False, shift=0):
        self.flip, self.shift = bool(flip), int(shift)

    def __bool__(self):
        return self.flip or self.shift > 0

    def check(self, image_shape):
        """Raises `UserError` when a shift would move an image entirely out of its frame."""
        height, width = image_shape[:2]
        if self.shift >= min(height, width):
            raise UserError(
                f"random_shift={self.shift} must be smaller than the images' "
                f"{height}x{width} pixels"
            )

    def epoch_draws(self, seed, epoch, count):
        """`(count, 3)` uniforms in [0, 1) for epoch `epoch`: mirror, row shift, column
        shift of each training example."""
        seed = tf.stack([tf.cast(seed, tf.int64) ^ _SEED_SALT, tf.cast(epoch, tf.int64)])
        return tf.random.stateless_uniform((count, 3), seed=seed)

    def __call__(self, images, draws):
        """`images` `(b, H, W)` or `(b, H, W, C)` transformed by their `draws` `(b, 3)`."""
        images = tf.convert_to_tensor(images)
        if self.flip:
            mirrored = tf.reshape(draws[:, 0] < 0.5, (-1,) + (1,) * (images.shape.rank - 1))
            images = tf.where(mirrored, tf.reverse(images, axis=[2]), images)
        if self.shift:
            images = self._shift(images, draws[:, 1:])
        return images

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
