"""Trainer.fit on a user's data: arrays, a tf.data.Dataset of examples, a dataset_fn;
and how each resumes."""

import gc
import os
import weakref
from unittest import mock

import keras
import numpy as np
import tensorflow as tf

from keras_mlp import data as data_lib
from keras_mlp import feeds
from keras_mlp.data import load_dataset
from keras_mlp.distribute import get_strategy
from keras_mlp.errors import UserError
from keras_mlp.training import Trainer

STEPS = 2000 // 64  # synthetic training set, batch 64


def _functional_model(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    hidden = keras.layers.Dense(16, activation="relu")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(hidden))


def _arrays():
    data = load_dataset("synthetic")
    x = data.train_images.astype("float32") / 255.0
    val_x = data.val_images.astype("float32") / 255.0
    return data, (x, data.train_labels), (val_x, data.val_labels)


def _fit(data, validation_data=None, strategy="default", epochs=2, model_dir=None, **kwargs):
    trainer = Trainer(
        epochs=epochs,
        batch_size=64,
        strategy=get_strategy(strategy, num_gpus=0),
        model_dir=model_dir,
        verbose=False,
        **kwargs,
    )
    keras.utils.set_random_seed(1)
    with trainer.strategy.scope():
        model = _functional_model((12, 12), 5)
    return trainer, model, trainer.fit(model, data, validation_data)


class _CrashAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise RuntimeError("crash")


class InputsTest(tf.test.TestCase):
    def test_arrays_train_exactly_as_the_packages_dataset(self):
        data, train, validation = _arrays()
        _, own, own_history = _fit(data)
        _, arrays, history = _fit(train, validation)
        for a, b in zip(own.get_weights(), arrays.get_weights(), strict=True):
            self.assertAllClose(a, b, atol=1e-6)
        self.assertAllClose(history["val_accuracy"], own_history["val_accuracy"])

    def test_a_tf_data_dataset_of_examples_is_batched_and_validated_exactly(self):
        _, (x, y), (val_x, val_y) = _arrays()
        examples = tf.data.Dataset.from_tensor_slices((x, y))
        validation = tf.data.Dataset.from_tensor_slices((val_x, val_y))  # 500: 7 batches + 52
        _, model, history = _fit(examples, validation, strategy="mirrored")
        self.assertEqual(history["steps"], [STEPS, STEPS])
        self.assertGreater(history["val_accuracy"][-1], 0.9)
        logits = model.predict(val_x, verbose=0)
        expected = np.mean(np.argmax(logits, axis=-1) == val_y)
        self.assertAllClose(history["val_accuracy"][-1], expected, atol=1e-6)
        # Unshuffled examples make the same global batches as arrays in that order would.
        _, one_device, _ = _fit(examples, validation, strategy="one_device")
        for a, b in zip(model.get_weights(), one_device.get_weights(), strict=True):
            self.assertAllClose(a, b, atol=1e-5)

    def test_a_dataset_fn_of_per_replica_batches(self):
        _, (x, y), (val_x, val_y) = _arrays()

        def batches(images, labels, drop_remainder):
            def dataset_fn(input_context):
                per_replica = input_context.get_per_replica_batch_size(64)
                dataset = tf.data.Dataset.from_tensor_slices((images, labels))
                dataset = dataset.shard(
                    input_context.num_input_pipelines, input_context.input_pipeline_id
                )
                return dataset.batch(per_replica, drop_remainder=drop_remainder)

            return dataset_fn

        train, validation = batches(x, y, True), batches(val_x, val_y, False)
        _, model, history = _fit(train, validation, strategy="mirrored")
        self.assertEqual(history["steps"], [STEPS, STEPS])  # 62 batches of 32, 2 replicas
        logits = model.predict(val_x, verbose=0)
        expected = np.mean(np.argmax(logits, axis=-1) == val_y)
        self.assertAllClose(history["val_accuracy"][-1], expected, atol=1e-6)
        with self.assertRaisesRegex(UserError, "full per-replica batches of 32"):
            _fit(batches(x, y, False), strategy="mirrored")

    def test_without_validation_data_the_validation_figures_are_nan(self):
        _, train, _ = _arrays()
        _, _, history = _fit(train, epochs=1)
        self.assertTrue(np.isnan(history["val_loss"][0]))
        self.assertGreater(history["accuracy"][0], 0.5)

    def test_bad_data_is_refused_with_one_line(self):
        _, (x, y), _ = _arrays()
        cases = [
            ((x, y.astype("float32")), "integer class indices"),
            ((x, y[:10]), "one integer label per example"),
            (tf.data.Dataset.from_tensor_slices((x, y)).repeat(), "finite and of known length"),
            (tf.data.Dataset.from_tensor_slices((x, np.eye(5)[y])), "sparse labels"),
            ("fashion_mnist", "must be a keras_mlp Dataset, arrays"),
            ((x[:10], y[:10]), r"larger than the training set \(10 examples\)"),
        ]
        for data, message in cases:
            with self.assertRaisesRegex(UserError, message):
                _fit(data)
        with self.assertRaisesRegex(UserError, "checkpoint_every_steps=5: .*epoch boundaries"):
            _fit(tf.data.Dataset.from_tensor_slices((x, y)), checkpoint_every_steps=5)

    def test_every_epochs_validation_is_one_whole_pass(self):
        """The validation passes come from one iterator, back to back: each epoch's
        figures must be those of exactly the whole split (500 examples: 7 batches of 64,
        the last padded), for each kind of input and on two replicas."""
        _, train, (val_x, val_y) = _arrays()
        examples = tf.data.Dataset.from_tensor_slices((val_x, val_y))
        for strategy, validation in [
            ("default", (val_x, val_y)),
            ("default", examples),
            ("mirrored", (val_x, val_y)),
        ]:
            trainer, model, history = _fit(
                train, validation, strategy=strategy, epochs=3, validation_batch_size=64
            )
            logits = model.predict(val_x, verbose=0)
            accuracy = float(np.mean(np.argmax(logits, axis=-1) == val_y))
            loss = float(np.mean(keras.losses.sparse_categorical_crossentropy(val_y, logits, True)))
            self.assertAllClose(history["val_accuracy"][-1], accuracy, atol=1e-6)
            self.assertAllClose(history["val_loss"][-1], loss, rtol=1e-5)

    def test_fit_lets_go_of_its_data_and_iterators_when_it_returns(self):
        """The host copies of arrays and the iterators over a tf.data Dataset are released
        as `fit` returns, on success and on a crash, not when the garbage collector gets
        round to the compiled functions holding them (a 2 GB set would linger; a cluster's
        iterator freed at interpreter exit hung the workers)."""
        _, train, validation = _arrays()
        examples = tf.data.Dataset.from_tensor_slices(validation)
        made = []
        real_variables, real_iter = data_lib.host_variables, iter

        def recording_variables(*arrays):
            variables = real_variables(*arrays)
            made.extend(weakref.ref(v) for v in variables)
            return variables

        def recording_iter(distributed):
            iterator = real_iter(distributed)
            made.append(weakref.ref(iterator))
            return iterator

        with (
            mock.patch.object(data_lib, "host_variables", recording_variables),
            mock.patch.object(feeds, "iter", recording_iter, create=True),
        ):
            gc.disable()  # what is freed must be freed by fit itself
            try:
                _fit(train, examples)
                with self.assertRaisesRegex(RuntimeError, "crash"):
                    _fit(train, examples, callbacks=[_CrashAfterFirstEpoch()])
                self.assertLen(made, 6)  # per fit: the training arrays (2), the iterator
                self.assertEqual([ref() for ref in made], [None] * 6)
            finally:
                gc.enable()

    def test_fit_inside_the_strategy_scope_is_refused(self):
        """Inside the scope, the pipelines' host copies of the data would be made per
        replica device (data.host_variables)."""
        _, train, _ = _arrays()
        trainer = Trainer(epochs=1, batch_size=64, verbose=False)
        with trainer.strategy.scope():
            model = _functional_model((12, 12), 5)
        strategy = get_strategy("mirrored", num_gpus=0)
        with strategy.scope(), self.assertRaisesRegex(ValueError, r"outside `strategy\.scope\(\)`"):
            trainer.fit(model, train)

    def test_a_tf_data_run_resumes_at_the_epoch_boundary(self):
        """Checkpoints at epoch ends only; the rerun starts the next epoch with a fresh
        pass. Without reshuffling, that is the uninterrupted run exactly."""
        _, (x, y), validation = _arrays()
        examples = tf.data.Dataset.from_tensor_slices((x, y))
        _, whole, whole_history = _fit(examples, validation, epochs=3)
        model_dir = self.get_temp_dir()
        with self.assertRaisesRegex(RuntimeError, "crash"):
            _fit(
                examples,
                validation,
                epochs=3,
                model_dir=model_dir,
                callbacks=[_CrashAfterFirstEpoch()],
            )
        checkpoints = os.path.join(model_dir, "checkpoints")
        self.assertTrue(tf.train.latest_checkpoint(checkpoints).endswith(f"ckpt-{STEPS}"))
        _, resumed, history = _fit(examples, validation, epochs=3, model_dir=model_dir)
        self.assertEqual(history["steps"], [STEPS] * 3)
        self.assertAllClose(history["loss"], whole_history["loss"], rtol=1e-6)
        for a, b in zip(whole.get_weights(), resumed.get_weights(), strict=True):
            self.assertAllClose(a, b, atol=1e-6)

    def test_a_tf_data_run_interrupted_mid_epoch_names_the_epoch_end_checkpoint(self):
        from keras_mlp.errors import TrainingInterrupted

        class Interrupt(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if logs["step"] > STEPS + 5:
                    raise TrainingInterrupted(15, logs["step"])

        _, train, _ = _arrays()
        model_dir = self.get_temp_dir()
        examples = tf.data.Dataset.from_tensor_slices(train)
        with self.assertRaises(TrainingInterrupted) as caught:
            _fit(
                examples,
                epochs=3,
                model_dir=model_dir,
                callbacks=[Interrupt()],
                steps_per_execution=4,
            )
        self.assertTrue(caught.exception.checkpoint.endswith(f"ckpt-{STEPS}"))
        names = sorted(p for p in os.listdir(os.path.join(model_dir, "checkpoints")))
        self.assertEqual([n for n in names if n.endswith(".index")], [f"ckpt-{STEPS}.index"])


class PackageDataTest(tf.test.TestCase):
    def test_a_dataset_validated_on_other_data(self):
        data, _, (val_x, val_y) = _arrays()
        _, model, history = _fit(data, (val_x[:250], val_y[:250]), epochs=1)
        logits = model.predict(val_x[:250], verbose=0)
        expected = np.mean(np.argmax(logits, axis=-1) == val_y[:250])
        self.assertAllClose(history["val_accuracy"][0], expected, atol=1e-6)


if __name__ == "__main__":
    tf.test.main()
