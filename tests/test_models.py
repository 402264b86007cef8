"""Tests for keras_mlp.models: MLPScratch and the concise MLP."""

import os
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized

from keras_mlp.layers import Dropout, L2Penalty, ReLU, ScratchDense
from keras_mlp.models import MLPScratch, build_model, concise_mlp
from keras_mlp.names import INITIALIZERS


def _copy_weights(source, target):
    target.set_weights([w.numpy() for w in source.trainable_weights])


class MLPScratchTest(tf.test.TestCase, parameterized.TestCase):
    def test_seed_model_has_the_chapters_parameters(self):
        model = build_model("scratch", (28, 28), 10)
        names = [v.name for v in model.trainable_variables]
        self.assertEqual(names, ["W1", "b1", "W2", "b2"])
        self.assertEqual(
            [v.path for v in model.trainable_variables],
            [f"{model.name}/hidden1/W1", f"{model.name}/hidden1/b1"]
            + [f"{model.name}/output/W2", f"{model.name}/output/b2"],
        )
        self.assertEqual(tuple(model.W1.shape), (784, 256))
        self.assertEqual(tuple(model.W2.shape), (256, 10))
        self.assertAllEqual(model.b1, np.zeros(256))
        self.assertNear(float(np.std(model.W1.numpy())), 0.01, 0.0005)
        self.assertEqual(model.count_params(), 784 * 256 + 256 + 256 * 10 + 10)

    def test_built_from_the_packages_scratch_dense_and_relu_layers(self):
        model = build_model("scratch", (4, 4), 3, hidden_units=(8, 6))
        self.assertEqual(
            [type(layer) for layer in model.layers],
            [ScratchDense, ScratchDense, ScratchDense, ReLU, ReLU],
        )
        self.assertIs(
            model.W2, model.layers[1].kernel
        )  # the chapter's names are the layers' weights
        self.assertIs(model.b3, model.layers[2].bias)
        with self.assertRaises(AttributeError):
            getattr(model, "W4")  # noqa: B009 (the lookup is what is tested)
        tanh = build_model("scratch", (4, 4), 3, hidden_units=(8,), activation="tanh")
        self.assertIsInstance(tanh.layers[-1], keras.layers.Activation)
        self.assertNotIn(ReLU, [type(layer) for layer in tanh.layers])

    def test_same_seed_same_weights_and_each_kernel_its_own_draw(self):
        keras.utils.set_random_seed(5)
        a = build_model("scratch", (6, 6), 3, hidden_units=(36,))
        keras.utils.set_random_seed(5)
        b = build_model("scratch", (6, 6), 3, hidden_units=(36,))
        for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
            self.assertAllEqual(wa, wb)
        # W1 (36x36) and W2 (36x3) drawn from one seed would share their first values.
        self.assertNotAllClose(a.W1.numpy().ravel()[:108], a.W2.numpy().ravel())

    def test_input_size_and_classes_come_from_the_data(self):
        model = build_model("scratch", (5, 7), 3, hidden_units=(16, 8))
        self.assertEqual(
            [tuple(v.shape) for v in model.trainable_variables],
            [(35, 16), (16,), (16, 8), (8,), (8, 3), (3,)],
        )
        self.assertEqual(tuple(model(np.zeros((4, 5, 7), "float32")).shape), (4, 3))

    def test_forward_is_the_chapters_formula(self):
        model = build_model("scratch", (2, 3), 4, hidden_units=(5,))
        rng = np.random.default_rng(0)
        model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.weights])
        x = rng.normal(size=(6, 2, 3)).astype("float32")
        W1, b1, W2, b2 = (w.numpy() for w in model.weights)
        expected = np.maximum(x.reshape(-1, 6) @ W1 + b1, 0) @ W2 + b2
        self.assertAllClose(model(x), expected, rtol=1e-5, atol=1e-5)

    @parameterized.parameters(((256,),), ((64, 32),), ((32, 16, 8),))
    def test_scratch_and_concise_agree_on_logits_and_gradients(self, hidden_units):
        scratch = build_model("scratch", (28, 28), 10, hidden_units=hidden_units)
        concise = build_model("concise", (28, 28), 10, hidden_units=hidden_units)
        rng = np.random.default_rng(3)
        concise.set_weights(
            [rng.normal(0, 0.1, size=w.shape).astype("float32") for w in concise.weights]
        )
        _copy_weights(concise, scratch)
        x = tf.constant(rng.uniform(size=(16, 28, 28)), tf.float32)
        y = tf.constant(rng.integers(0, 10, size=16))
        grads = []
        for model in (scratch, concise):
            with tf.GradientTape() as tape:
                logits = model(x)
                loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            grads.append(tape.gradient(loss, model.trainable_variables))
            if model is scratch:
                scratch_logits = logits
        self.assertAllClose(scratch_logits, concise(x), rtol=1e-5, atol=1e-5)
        for g_scratch, g_concise in zip(*grads, strict=True):
            self.assertAllClose(g_scratch, g_concise, rtol=1e-5, atol=1e-6)

    @parameterized.parameters("scratch", "concise")
    def test_plain_compile_and_fit_trains_every_weight(self, name):
        model = build_model(name, (4, 4), 3, hidden_units=(8,))
        model.compile(
            optimizer=keras.optimizers.SGD(0.5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        before = [w.numpy().copy() for w in model.trainable_weights]
        rng = np.random.default_rng(0)
        model.fit(rng.uniform(size=(32, 4, 4)), rng.integers(0, 3, size=32), epochs=1, verbose=0)
        self.assertLen(model.trainable_weights, 4)
        for old, new in zip(before, model.trainable_weights, strict=True):
            self.assertNotAllClose(old, new.numpy())

    def test_keras_file_reloads_in_a_fresh_process(self):
        model = build_model("scratch", (6, 6), 4, hidden_units=(8, 8), activation="tanh", sigma=0.2)
        path = os.path.join(self.get_temp_dir(), "scratch.keras")
        model.save(path)
        x = np.linspace(0, 1, 2 * 36, dtype="float32").reshape(2, 6, 6)
        expected = model(x).numpy()
        code = (
            "import sys, numpy as np, keras, keras_mlp.models;"
            f"m = keras.models.load_model({path!r});"
            "x = np.linspace(0, 1, 72, dtype='float32').reshape(2, 6, 6);"
            "print(type(m).__name__, m.get_config()['hidden_units']);"
            "np.save(sys.argv[1], m(x).numpy())"
        )
        out = os.path.join(self.get_temp_dir(), "logits.npy")
        result = subprocess.run(
            [sys.executable, "-c", code, out], capture_output=True, text=True, timeout=120
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("MLPScratch [8, 8]", result.stdout)
        self.assertAllClose(np.load(out), expected)

    @parameterized.named_parameters(
        ("zero_width", {"hidden_units": (0,)}, "hidden_units=0"),
        ("bad_classes", {"num_classes": -1}, "num_classes=-1"),
        ("bad_sigma", {"sigma": -0.1}, "sigma=-0.1"),
        ("bad_activation", {"activation": "nope"}, "activation='nope'"),
    )
    def test_scratch_rejects_bad_arguments(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            MLPScratch(**kwargs)

    @parameterized.parameters(
        ("scratch", "default", 0.01),
        ("concise", "normal", 0.01),
        ("scratch", "he_normal", (2 / 784) ** 0.5),
        ("concise", "he_normal", (2 / 784) ** 0.5),
        ("concise", "glorot_normal", (2 / (784 + 256)) ** 0.5),
    )
    def test_kernel_initializers(self, model_name, initializer, expected_std):
        keras.utils.set_random_seed(0)
        model = build_model(model_name, (28, 28), 10, initializer=initializer, sigma=0.01)
        first_kernel = model.trainable_variables[0].numpy()
        # Keras rescales its truncated normals, so the std is the nominal one.
        self.assertNear(float(np.std(first_kernel)), expected_std, 0.03 * expected_std)
        if model_name == "scratch":
            self.assertEqual(MLPScratch.from_config(model.get_config()).initializer, initializer)

    @parameterized.parameters(
        *((model, name) for model in ("scratch", "concise") for name in INITIALIZERS)
    )
    def test_every_kernel_starts_from_its_own_draw(self, model_name, initializer):
        # One initializer instance shared by the layers would fix one seed for all, and
        # kernels of equal shape would start identical (hidden layers 2 and 3 here).
        keras.utils.set_random_seed(0)
        model = build_model(
            model_name, (8, 8), 64, hidden_units=(64, 64, 64), initializer=initializer
        )
        kernels = [w.numpy() for w in model.trainable_weights if len(w.shape) == 2]
        self.assertLen(kernels, 4)
        flat = [k.ravel()[: 64 * 64] for k in kernels]
        for i in range(len(flat)):
            for j in range(i):
                self.assertNotAllClose(flat[i], flat[j], msg=f"kernels {j + 1} and {i + 1}")

    def test_concise_and_factory_reject_bad_arguments(self):
        with self.assertRaisesRegex(ValueError, "hidden_units='8'"):
            concise_mlp((4,), 3, hidden_units=("8",))
        with self.assertRaisesRegex(
            ValueError, "^name='big' is not known; accepted: scratch, concise$"
        ):
            build_model("big", (4,), 3)
        with self.assertRaisesRegex(ValueError, "^initializer='zeros' is not known; accepted: "):
            build_model("scratch", (4,), 3, initializer="zeros")


def _layer_types(model):
    return [type(layer).__name__ for layer in model.layers]


class RegularisedModelsTest(tf.test.TestCase, parameterized.TestCase):
    def test_scratch_dropout_layers_follow_the_hidden_activations(self):
        model = build_model("scratch", (4, 4), 3, hidden_units=(8, 6), dropout=(0.2, 0.5))
        self.assertEqual([d.rate for d in model.dropout_layers], [0.2, 0.5])
        self.assertTrue(all(type(d) is Dropout for d in model.dropout_layers))
        one = build_model("scratch", (4, 4), 3, hidden_units=(8, 6), dropout=(0.0, 0.3))
        self.assertEqual([d.rate for d in one.dropout_layers], [0.3])
        self.assertEqual(MLPScratch(hidden_units=(8, 6), dropout=0.4).dropout, (0.4, 0.4))
        # Dropout after the second hidden layer only: the first hidden layer's output is
        # untouched in training, the second's has zeros, the logits change.
        x = np.random.default_rng(0).uniform(size=(64, 4, 4)).astype("float32")
        H1 = np.maximum(x.reshape(64, 16) @ one.W1.numpy() + one.b1.numpy(), 0)
        H2 = np.maximum(H1 @ one.W2.numpy() + one.b2.numpy(), 0)
        self.assertAllClose(one(x), H2 @ one.W3.numpy() + one.b3.numpy(), rtol=1e-5, atol=1e-6)
        self.assertNotAllClose(one(x, training=True), one(x))

    def test_concise_dropout_layers_follow_the_hidden_dense_layers(self):
        model = build_model("concise", (4, 4), 3, hidden_units=(8, 6), dropout=(0.2, 0.5))
        self.assertEqual(
            _layer_types(model), ["Flatten", "Dense", "Dropout", "Dense", "Dropout", "Dense"]
        )
        self.assertEqual([layer.rate for layer in model.layers[2:5:2]], [0.2, 0.5])
        self.assertIsInstance(model.layers[2], keras.layers.Dropout)
        partly = build_model("concise", (4, 4), 3, hidden_units=(8, 6), dropout=(0.3, 0.0))
        self.assertEqual(_layer_types(partly), ["Flatten", "Dense", "Dropout", "Dense", "Dense"])

    @parameterized.parameters("scratch", "concise")
    def test_zero_dropout_and_decay_is_exactly_the_model_without(self, name):
        extra = {"weight_decay": 0.0} if name == "scratch" else {}
        keras.utils.set_random_seed(5)
        plain = build_model(name, (6, 6), 4, hidden_units=(16, 8))
        keras.utils.set_random_seed(5)
        zero = build_model(name, (6, 6), 4, hidden_units=(16, 8), dropout=(0.0, 0.0), **extra)
        self.assertEqual(_layer_types(zero), _layer_types(plain))
        self.assertNotIn("Dropout", _layer_types(zero))
        # No seed generator: the variables are the weights, and no penalty.
        self.assertEqual([v.path for v in zero.variables], [v.path for v in zero.weights])
        self.assertLen(zero.variables, len(plain.weights))
        self.assertEqual(zero.losses, [])
        for a, b in zip(plain.get_weights(), zero.get_weights(), strict=True):
            self.assertAllEqual(a, b)
        x = np.random.default_rng(1).uniform(size=(8, 6, 6)).astype("float32")
        self.assertAllEqual(zero(x, training=True), plain(x, training=True))
        # And the draws that follow the build are the same: no random number was taken.
        self.assertAllEqual(keras.random.uniform((3,)), self._draws_after_plain_build(name))

    def _draws_after_plain_build(self, name):
        keras.utils.set_random_seed(5)
        build_model(name, (6, 6), 4, hidden_units=(16, 8))
        return keras.random.uniform((3,))

    @parameterized.parameters("scratch", "concise")
    def test_dropout_leaves_the_initial_weights_as_they_were(self, name):
        keras.utils.set_random_seed(6)
        plain = build_model(name, (6, 6), 4, hidden_units=(16,))
        keras.utils.set_random_seed(6)
        dropped = build_model(name, (6, 6), 4, hidden_units=(16,), dropout=0.5)
        for a, b in zip(plain.get_weights(), dropped.get_weights(), strict=True):
            self.assertAllEqual(a, b)
        x = np.ones((4, 6, 6), "float32")
        self.assertAllEqual(dropped(x), plain(x))  # inference: no dropout

    def test_weight_decay_penalty_and_its_gradient_on_a_hand_computed_case(self):
        weight_decay = 0.2
        model = build_model("scratch", (2,), 2, hidden_units=(2,), weight_decay=weight_decay)
        W1 = np.array([[1.0, -2.0], [0.5, 3.0]], "float32")
        W2 = np.array([[-1.0, 4.0], [2.0, 0.0]], "float32")
        b1, b2 = np.array([5.0, 6.0], "float32"), np.array([7.0, -8.0], "float32")
        model.set_weights([W1, b1, W2, b2])
        with tf.GradientTape() as tape:
            model(np.zeros((1, 2), "float32"))
            penalty = tf.add_n(model.losses)
        # weight_decay / 2 * (||W1||^2 + ||W2||^2) = 0.1 * (1 + 4 + 0.25 + 9 + 1 + 16 + 4 + 0)
        self.assertAllClose(penalty, 0.1 * 35.25)
        grads = tape.gradient(penalty, model.trainable_variables)
        self.assertAllClose(grads[0], weight_decay * W1)
        self.assertAllClose(grads[2], weight_decay * W2)
        self.assertEqual((grads[1], grads[3]), (None, None))  # biases are not decayed
        self.assertTrue(all(isinstance(d.kernel_regularizer, L2Penalty) for d in model.layers[:2]))

    def test_plain_fit_adds_the_penalty_to_the_training_loss(self):
        model = build_model("scratch", (4,), 3, hidden_units=(8,), weight_decay=0.5, sigma=0.5)
        model.compile(
            optimizer=keras.optimizers.SGD(0.0),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        x, y = np.ones((16, 4), "float32"), np.zeros(16, "int64")
        fit_loss = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history["loss"][0]
        data_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x))
        penalty = 0.5 / 2 * (np.sum(model.W1.numpy() ** 2) + np.sum(model.W2.numpy() ** 2))
        self.assertAllClose(fit_loss, float(data_loss) + penalty, rtol=1e-5)

    def test_config_round_trip_keeps_dropout_and_weight_decay(self):
        model = MLPScratch(3, hidden_units=(8, 4), dropout=(0.1, 0.3), weight_decay=1e-3)
        clone = MLPScratch.from_config(model.get_config())
        self.assertEqual((clone.dropout, clone.weight_decay), ((0.1, 0.3), 1e-3))
        model.build((None, 5))
        path = os.path.join(self.get_temp_dir(), "regularised.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
        self.assertEqual([d.rate for d in loaded.dropout_layers], [0.1, 0.3])
        x = np.ones((2, 5), "float32")
        self.assertAllClose(loaded(x), model(x))

    @parameterized.named_parameters(
        ("too_many_rates", {"hidden_units": (8, 4), "dropout": (0.1, 0.2, 0.3)}, "dropout="),
        ("rate_one", {"dropout": 1.0}, "dropout=1.0"),
        ("negative_rate", {"dropout": (-0.1,)}, "dropout="),
        ("negative_decay", {"weight_decay": -1.0}, "weight_decay=-1.0"),
        ("nan_decay", {"weight_decay": float("nan")}, "weight_decay=nan"),
    )
    def test_rejects_bad_regularisation(self, kwargs, message):
        with self.assertRaisesRegex(ValueError, message):
            MLPScratch(**kwargs)

    def test_concise_model_refuses_a_penalty(self):
        with self.assertRaisesRegex(ValueError, "through the optimizer.*weight_decay=0.1"):
            build_model("concise", (4,), 3, weight_decay=0.1)
        with self.assertRaisesRegex(ValueError, "dropout=1.5"):
            concise_mlp((4,), 3, dropout=1.5)


if __name__ == "__main__":
    tf.test.main()
