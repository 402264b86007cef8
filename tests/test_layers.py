"""Tests for keras_mlp.layers: the hand-written ReLU, ScratchDense, Dropout and L2Penalty."""

import os

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_mlp.layers import Dropout, L2Penalty, ReLU, ScratchDense, relu


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

    def test_non_finite_and_half_precision_as_tf_relu(self):
        # The derivative is written by hand (`relu`'s docstring): it must agree with
        # tf.nn.relu's own gradient where that is least obvious, and keep the dtype.
        for dtype in (tf.float32, tf.float16):
            x = tf.constant([-np.inf, -2.0, -0.0, 0.0, 3.0, np.inf, np.nan], dtype)
            with tf.GradientTape(persistent=True) as tape:
                tape.watch(x)
                ours, reference = relu(x), tf.nn.relu(x)
            self.assertEqual(ours.dtype, dtype)
            self.assertAllEqual(ours, reference)
            gradient, expected = tape.gradient(ours, x), tape.gradient(reference, x)
            self.assertEqual(gradient.dtype, dtype)
            self.assertAllEqual(gradient[:-1], expected[:-1])
            # The one documented difference: a NaN input's derivative is NaN (tf.nn.relu: 0).
            self.assertTrue(np.isnan(gradient[-1].numpy()))
            self.assertEqual(float(expected[-1]), 0.0)

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
            "activation='swoosh' is not known; accepted: relu, ",
        ),
    )
    def test_rejects_bad_arguments(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            ScratchDense(**kwargs)


class DropoutTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(0.1, 0.5, 0.8)
    def test_mask_zeroes_with_probability_rate_and_scales_survivors(self, rate):
        layer = Dropout(rate, seed=3)
        x = np.full((400, 500), 2.0, "float32")
        y = layer(x, training=True).numpy()
        zeroed = y == 0
        # 200,000 independent draws: the zero fraction's std is below 0.0012.
        self.assertNear(zeroed.mean(), rate, 0.006)
        self.assertAllClose(y[~zeroed], np.full((~zeroed).sum(), 2.0 / (1 - rate)), rtol=1e-6)
        # Units of one example are independent: no whole row or column is zeroed together.
        self.assertNear(zeroed[:, :250].mean(), zeroed[:, 250:].mean(), 0.01)

    def test_each_unit_keeps_its_expectation(self):
        rate = 0.5
        layer = Dropout(rate, seed=4)
        values = np.array([-3.0, -0.5, 0.25, 1.0, 2.0, 3.0], "float32")
        x = np.tile(values, (100_000, 1))  # each column: one value, 100,000 draws
        mean = layer(x, training=True).numpy().mean(axis=0)
        # std of each column's mean: |value| * sqrt(rate / (1 - rate) / 1e5) ~ 0.0032 |value|.
        self.assertAllClose(mean, values, rtol=0.02, atol=0)

    def test_gradient_is_the_mask_over_keep_probability(self):
        rate = 0.3
        layer = Dropout(rate, seed=5)
        x = tf.constant(np.random.default_rng(0).uniform(1, 2, size=(64, 32)), tf.float32)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            total = tf.reduce_sum(y)
        kept = (y.numpy() != 0).astype("float32")
        self.assertAllClose(tape.gradient(total, x), kept / (1 - rate))

    def test_identity_at_inference_draws_nothing(self):
        layer = Dropout(0.5, seed=6)
        x = np.random.default_rng(1).normal(size=(8, 16)).astype("float32")
        state = layer.seed_generator.state.numpy().copy()
        self.assertAllEqual(layer(x), x)
        self.assertAllEqual(layer(x, training=False), x)
        self.assertAllEqual(layer.seed_generator.state.numpy(), state)
        self.assertNotAllClose(layer(x, training=True), x)
        self.assertNotAllClose(layer.seed_generator.state.numpy(), state)

    def test_matches_keras_dropout(self):
        rate = 0.4
        x = np.ones((200, 1000), "float32")
        ours = Dropout(rate, seed=7)(x, training=True).numpy()
        keras_dropout = keras.layers.Dropout(rate, seed=7)(x, training=True).numpy()
        for y in (ours, keras_dropout):
            self.assertNear((y == 0).mean(), rate, 0.006)
            self.assertNear(y.mean(), 1.0, 0.01)  # std of the mean ~0.0018
            self.assertAllClose(np.unique(y), [0.0, 1 / (1 - rate)])
        # With the TensorFlow backend both draw stateless uniforms from the seed and keep
        # the units whose draw is >= rate: the same seed gives the same mask.
        self.assertAllEqual(ours, keras_dropout)
        self.assertNotAllClose(ours, keras.layers.Dropout(rate, seed=8)(x, training=True))

    def test_rate_zero_is_the_identity_and_makes_no_generator(self):
        layer = Dropout(0.0)
        x = np.random.default_rng(2).normal(size=(4, 5)).astype("float32")
        self.assertAllEqual(layer(x, training=True), x)
        self.assertIsNone(layer.seed_generator)
        self.assertEqual(layer.variables, [])

    def test_same_seed_same_masks_in_eager_and_compiled_calls(self):
        x = np.ones((16, 64), "float32")
        eager = Dropout(0.5, seed=11)
        first, second = eager(x, training=True).numpy(), eager(x, training=True).numpy()
        self.assertNotAllClose(first, second)  # a fresh mask each call
        compiled = Dropout(0.5, seed=11)
        step = tf.function(lambda inputs: compiled(inputs, training=True))
        self.assertAllEqual(step(x), first)
        self.assertAllEqual(step(x), second)
        self.assertNotAllClose(Dropout(0.5, seed=12)(x, training=True), first)

    def test_config_round_trip_and_keras_file(self):
        layer = Dropout(0.25, seed=9, name="drop")
        clone = Dropout.from_config(layer.get_config())
        self.assertEqual((clone.rate, clone.seed, clone.name), (0.25, 9, "drop"))
        self.assertIs(keras.saving.get_registered_object("keras_mlp>Dropout"), Dropout)
        model = keras.Sequential([keras.Input((4,)), ScratchDense(3), Dropout(0.5, seed=1)])
        path = os.path.join(self.get_temp_dir(), "dropout.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertIsInstance(loaded.layers[-1], Dropout)
        self.assertEqual(loaded.layers[-1].rate, 0.5)
        x = np.ones((2, 4), "float32")
        self.assertAllClose(loaded(x), model(x))

    @parameterized.named_parameters(
        ("one", 1.0, "rate=1.0"),
        ("above_one", 1.5, "rate=1.5"),
        ("negative", -0.1, "rate=-0.1"),
        ("string", "0.2", "rate='0.2'"),
        ("bool", True, "rate=True"),
    )
    def test_rejects_bad_rates(self, rate, message):
        with self.assertRaisesRegex(ValueError, message):
            Dropout(rate)


class L2PenaltyTest(tf.test.TestCase):
    def test_value_and_gradient_on_a_hand_computed_case(self):
        W = tf.Variable([[3.0, 0.0], [-4.0, 1.0]])
        with tf.GradientTape() as tape:
            penalty = L2Penalty(0.1)(W)
        self.assertAllClose(penalty, 0.1 / 2 * (9 + 16 + 1))  # 1.3
        self.assertAllClose(tape.gradient(penalty, W), [[0.3, 0.0], [-0.4, 0.1]])
        # Keras' L2(l2) is l2 * ||W||^2: the same as weight_decay / 2.
        self.assertAllClose(penalty, keras.regularizers.L2(0.05)(W))

    def test_config_round_trip_and_bad_values(self):
        self.assertEqual(L2Penalty.from_config(L2Penalty(0.3).get_config()).weight_decay, 0.3)
        self.assertIsInstance(
            keras.regularizers.deserialize(keras.regularizers.serialize(L2Penalty(0.3))),
            L2Penalty,
        )
        for bad in (-1.0, float("nan"), "0.1"):
            with self.assertRaisesRegex(ValueError, "weight_decay="):
                L2Penalty(bad)

    def test_scratch_dense_kernel_penalty_reaches_model_losses(self):
        layer = ScratchDense(2, kernel_regularizer=L2Penalty(0.5))
        layer.build((None, 3))
        layer.set_weights([np.full((3, 2), 2.0, "float32"), np.full(2, 7.0, "float32")])
        (penalty,) = layer.losses
        self.assertAllClose(penalty, 0.5 / 2 * 6 * 4.0)  # the bias is not penalised
        clone = ScratchDense.from_config(layer.get_config())
        self.assertIsInstance(clone.kernel_regularizer, L2Penalty)
        self.assertEqual(clone.kernel_regularizer.weight_decay, 0.5)


if __name__ == "__main__":
    tf.test.main()
