"""Tests for keras_mlp.layers: the hand-written ReLU and ScratchDense."""

import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_mlp.layers import ReLU, ScratchDense, relu


class ReluTest(tf.test.TestCase):
    def test_matches_tf_relu_forward_and_backward(self):
        values = np.random.default_rng(0).normal(size=(64, 33))
        values[::3, ::2] = 0.0  # exact zeros: where the two could disagree
        x = tf.constant(values, tf.float32)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            ours, reference = relu(x), tf.nn.relu(x)
        self.assertAllEqual(ours, reference)
        self.assertAllEqual(tape.gradient(ours, x), tape.gradient(reference, x))

    def test_gradient_at_zero_is_zero(self):
        # The documented choice (as tf.nn.relu): a unit whose input is exactly 0 gets no gradient.
        x = tf.constant([-1.0, 0.0, 2.0])
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(relu(x))
        self.assertAllEqual(tape.gradient(y, x), [0.0, 0.0, 1.0])

    def test_layer_wraps_function_and_round_trips_config(self):
        layer = ReLU()
        self.assertAllEqual(layer(tf.constant([-2.0, 0.0, 3.0])), [0.0, 0.0, 3.0])
        self.assertIsInstance(ReLU.from_config(layer.get_config()), ReLU)


class ScratchDenseTest(tf.test.TestCase, parameterized.TestCase):
    def test_creates_tracked_kernel_and_bias(self):
        layer = ScratchDense(256, sigma=0.01)
        layer.build((None, 784))
        self.assertLen(layer.trainable_weights, 2)
        self.assertEqual(tuple(layer.kernel.shape), (784, 256))
        self.assertAllEqual(layer.bias, np.zeros(256))
        self.assertNear(float(np.std(layer.kernel.numpy())), 0.01, 0.0005)
        self.assertNear(float(np.mean(layer.kernel.numpy())), 0.0, 0.0005)

    def test_matches_keras_dense_with_same_weights(self):
        rng = np.random.default_rng(1)
        x = tf.constant(rng.normal(size=(8, 5)), tf.float32)
        ours = ScratchDense(3, activation="relu")
        reference = keras.layers.Dense(3, activation="relu")
        ours.build((None, 5))
        reference.build((None, 5))
        weights = [rng.normal(size=(5, 3)).astype("float32"), rng.normal(size=3).astype("float32")]
        ours.set_weights(weights)
        reference.set_weights(weights)
        with tf.GradientTape(persistent=True) as tape:
            y_ours, y_ref = ours(x), reference(x)
            loss_ours, loss_ref = tf.reduce_sum(y_ours**2), tf.reduce_sum(y_ref**2)
        self.assertAllClose(y_ours, y_ref)
        expected = np.maximum(x.numpy() @ weights[0] + weights[1], 0)
        self.assertAllClose(y_ours, expected)
        for g_ours, g_ref in zip(
            tape.gradient(loss_ours, ours.trainable_weights),
            tape.gradient(loss_ref, reference.trainable_weights),
            strict=True,
        ):
            self.assertAllClose(g_ours, g_ref)

    def test_training_step_changes_weights(self):
        model = keras.Sequential([keras.Input((4,)), ScratchDense(2)])
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        before = [w.numpy().copy() for w in model.trainable_weights]
        model.fit(np.ones((8, 4), "float32"), np.ones((8, 2), "float32"), epochs=1, verbose=0)
        for old, new in zip(before, model.trainable_weights, strict=True):
            self.assertNotAllClose(old, new.numpy())

    def test_config_round_trip_keeps_names_initializer_and_activation(self):
        layer = ScratchDense(
            4,
            sigma=0.3,
            activation="tanh",
            kernel_initializer="he_normal",
            kernel_name="W7",
            bias_name="b7",
        )
        clone = ScratchDense.from_config(layer.get_config())
        clone.build((None, 3))
        self.assertEqual([w.name for w in clone.weights], ["W7", "b7"])
        self.assertIsInstance(clone.kernel_initializer, keras.initializers.HeNormal)
        self.assertIs(clone.activation, keras.activations.tanh)
        self.assertEqual(clone.sigma, 0.3)

    def test_save_and_load_keras_file(self):
        model = keras.Sequential([keras.Input((4,)), ScratchDense(3, activation="relu"), ReLU()])
        path = os.path.join(self.get_temp_dir(), "scratch_dense.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        x = np.random.default_rng(2).normal(size=(5, 4)).astype("float32")
        self.assertAllClose(model(x), loaded(x))
        self.assertIs(loaded.layers[0].activation, relu)

    @parameterized.named_parameters(
        ("zero_units", {"units": 0}, "units=0"),
        ("negative_units", {"units": -3}, "units=-3"),
        ("float_units", {"units": 2.5}, "units=2.5"),
        ("zero_sigma", {"units": 2, "sigma": 0.0}, "sigma=0.0"),
        (
            "unknown_activation",
            {"units": 2, "activation": "swoosh"},
            "accepted.*activation='swoosh'",
        ),
    )
    def test_rejects_bad_arguments(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            ScratchDense(**kwargs)


if __name__ == "__main__":
    tf.test.main()
