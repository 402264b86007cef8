"""Tests for keras_mlp.training.Trainer: learning, strategies, outputs, errors."""

import json
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2
from train_util import split_optimizer_settings, use_package_optimizer

from keras_mlp import training
from keras_mlp.config import RunConfig
from keras_mlp.data import load_dataset
from keras_mlp.distribute import get_strategy
from keras_mlp.errors import TrainingDiverged, UserError
from keras_mlp.feeds import IteratorFeed
from keras_mlp.models import build_model
from keras_mlp.optimizers import build_optimizer
from keras_mlp.run import train
from keras_mlp.training import HISTORY_KEYS, Trainer, TrainState

STEPS = 2000 // 64  # synthetic training set, batch 64


def _train(strategy_name, model_name="scratch", epochs=1, batch_size=64, model_dir=None, **kwargs):
    data = load_dataset("synthetic")
    kwargs, optimizer_settings = split_optimizer_settings(kwargs)
    trainer = Trainer(
        epochs=epochs,
        batch_size=batch_size,
        strategy=get_strategy(strategy_name, num_gpus=0),  # CPU devices, even on a GPU host
        model_dir=model_dir,
        verbose=False,
        **kwargs,
    )
    keras.utils.set_random_seed(1)
    with trainer.strategy.scope():
        model = build_model(model_name, data.input_shape, data.num_classes, hidden_units=(32,))
    use_package_optimizer(trainer, model, data, optimizer_settings)
    history = trainer.fit(model, data)
    return model, history


def scalars(log_dir):
    """{tag: [(step, value), ...]} of the scalar summaries in TensorBoard event files."""
    accumulator = event_accumulator.EventAccumulator(str(log_dir), size_guidance={"tensors": 0})
    accumulator.Reload()
    found = {}
    for tag in accumulator.Tags()["tensors"]:
        events = [(e.step, tf.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)]
        if all(value.ndim == 0 and value.dtype.kind == "f" for _, value in events):
            found[tag] = [(step, float(value)) for step, value in events]
    return found


class TrainerTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters("scratch", "concise")
    def test_learns_the_synthetic_set(self, model_name):
        model, history = _train("default", model_name, epochs=2, batch_size=32)
        self.assertEqual(set(history), set(HISTORY_KEYS))
        self.assertLen(history["loss"], 2)
        self.assertLess(history["loss"][1], history["loss"][0])
        # Both models separate the 5 noisy prototypes after 2 epochs (chance: 0.2).
        self.assertGreaterEqual(history["val_accuracy"][-1], 0.99)

    @parameterized.parameters(None, 96, 1000)
    def test_validation_accuracy_is_exact_over_the_whole_split(self, validation_batch_size):
        # 500 validation examples: 2 batches of 384 (the default for batch 96), the last
        # padded; 6 batches of 96; one batch of 1000, half padding.
        model, history = _train(
            "default", epochs=1, batch_size=96, validation_batch_size=validation_batch_size
        )
        data = load_dataset("synthetic")
        logits = model.predict(data.val_images.astype("float32") / 255.0, verbose=0)
        expected = np.mean(np.argmax(logits, axis=-1) == data.val_labels)
        self.assertAllClose(history["val_accuracy"][0], expected, atol=1e-6)
        loss = keras.losses.sparse_categorical_crossentropy(
            data.val_labels, logits, from_logits=True
        )
        self.assertAllClose(history["val_loss"][0], float(np.mean(loss)), rtol=1e-5)

    @parameterized.parameters("scratch", "concise")
    def test_mirrored_on_two_cpus_matches_one_device(self, model_name):
        one, one_history = _train("one_device", model_name, epochs=2)
        mirrored, mirrored_history = _train("mirrored", model_name, epochs=2)
        for a, b in zip(one.get_weights(), mirrored.get_weights(), strict=True):
            self.assertAllClose(a, b, atol=1e-5, rtol=0)
        self.assertAllClose(one_history["loss"], mirrored_history["loss"], atol=1e-5)
        self.assertAllClose(
            one_history["val_accuracy"], mirrored_history["val_accuracy"], atol=1e-6
        )

    def test_mirrored_runs_of_different_models_in_one_process(self):
        # A second MirroredStrategy would reuse the first's collective keys with other shapes.
        self.assertIs(get_strategy("mirrored", num_gpus=0), get_strategy("mirrored", num_gpus=0))
        data = load_dataset("synthetic")
        for hidden_units in ((48,), (8, 8)):
            trainer = Trainer(
                epochs=1,
                batch_size=64,
                strategy=get_strategy("mirrored", num_gpus=0),
                verbose=False,
            )
            with trainer.strategy.scope():
                model = build_model(
                    "concise", data.input_shape, data.num_classes, hidden_units=hidden_units
                )
            history = trainer.fit(model, data)
            self.assertTrue(np.isfinite(history["loss"][0]))

    def test_default_validation_batch_reaches_1024_examples_within_4_batches(self):
        self.assertEqual(Trainer(batch_size=256).validation_batch_size, 1024)
        self.assertEqual(Trainer(batch_size=300).validation_batch_size, 1200)
        self.assertEqual(Trainer(batch_size=32).validation_batch_size, 128)
        self.assertEqual(Trainer(batch_size=2000).validation_batch_size, 2000)
        self.assertEqual(Trainer(batch_size=32, validation_batch_size=50).validation_batch_size, 50)
        with self.assertRaisesRegex(
            UserError, "validation_batch_size=0 must be a positive integer"
        ):
            Trainer(validation_batch_size=0)
        with self.assertRaisesRegex(UserError, "batch_size=0 must be a positive integer"):
            Trainer(batch_size=0)

    def test_each_tf_function_is_traced_once(self):
        data = load_dataset("synthetic")
        # 2000 // 64 = 31 steps per epoch in chunks of 7: the last chunk of each epoch is 3.
        trainer = Trainer(epochs=3, batch_size=64, steps_per_execution=7, verbose=False)
        model = build_model("scratch", data.input_shape, data.num_classes, hidden_units=(16,))
        trainer.fit(model, data)
        self.assertEqual(trainer.tracing_counts, {"train_steps": 1, "evaluate": 1})

    def test_steps_per_execution_does_not_change_results(self):
        a, _ = _train("default", steps_per_execution=1)
        b, _ = _train("default", steps_per_execution=7)
        for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
            self.assertAllClose(wa, wb, atol=1e-6)

    def test_a_run_writes_metrics_plot_model_export_and_scalars(self):
        model_dir = Path(self.get_temp_dir()) / "run"
        config = RunConfig(
            dataset="synthetic",
            hidden_units=(32,),
            epochs=3,
            batch_size=64,
            model_dir=str(model_dir),
        )
        result = train(config, verbose=False)
        model, history = result.model, result.history
        metrics = json.loads((model_dir / "metrics.json").read_text())
        self.assertEqual(metrics["history"]["val_accuracy"], history["val_accuracy"])
        self.assertEqual(metrics["final"]["val_accuracy"], history["val_accuracy"][-1])
        self.assertEqual(metrics["final"]["validation"], "test")
        self.assertEqual(
            (metrics["final"]["epochs"], metrics["final"]["stopped_early"]), (3, False)
        )
        self.assertEqual(metrics["config"], config.to_dict())
        self.assertEqual((model_dir / "progress.png").read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
        reloaded = keras.models.load_model(model_dir / "model.keras")
        x = np.zeros((2, 12, 12), "float32")
        self.assertAllClose(reloaded(x), model(x))
        self.assertEqual([p for p in os.listdir(model_dir) if p.startswith(".")], [])
        # The SavedModel serves uint8 images without any keras_mlp code.
        served = tf.saved_model.load(str(model_dir / "export")).signatures["serving_default"]
        images = load_dataset("synthetic").val_images[:4]
        outputs = served(images=tf.constant(images))
        expected = tf.nn.softmax(model(images.astype("float32") / 255.0))
        self.assertAllClose(outputs["probabilities"], expected, atol=1e-6)
        self.assertAllEqual(outputs["class_ids"], np.argmax(expected, axis=-1))
        self.assertAllEqual(outputs["label_names"], [b"0", b"1", b"2", b"3", b"4"])
        train_scalars = scalars(model_dir / "logs" / "train")
        validation = scalars(model_dir / "logs" / "validation")
        self.assertEqual([step for step, _ in train_scalars["epoch_loss"]], [1, 2, 3])
        self.assertAllClose([v for _, v in train_scalars["epoch_loss"]], history["loss"])
        self.assertAllClose([v for _, v in validation["epoch_accuracy"]], history["val_accuracy"])
        self.assertIn("examples_per_second", train_scalars)
        # HParams: the hyperparameters only (no model_dir, cpu_devices, ...), and the metrics.
        root = event_accumulator.EventAccumulator(str(model_dir / "logs"))
        root.Reload()
        content = root.PluginTagToContent("hparams")
        session = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/session_start_info"]
        ).session_start_info
        # Typed for comparing: the hidden layers as depth and width, the seed no column.
        expected = set(config.hyperparameters()) - {"seed", "hidden_units"} | {"depth", "width"}
        self.assertEqual(set(session.hparams), expected)
        self.assertEqual(session.hparams["width"].number_value, config.hidden_units[0])
        self.assertNotIn("model_dir", session.hparams)
        experiment = plugin_data_pb2.HParamsPluginData.FromString(
            content["_hparams_/experiment"]
        ).experiment
        self.assertEqual(
            {(m.name.group, m.name.tag) for m in experiment.metric_infos},
            {
                ("validation", "epoch_accuracy"),
                ("validation", "epoch_loss"),
                ("train", "epoch_loss"),
                ("train", "epoch_seconds"),
            },
        )
        # The last epoch's checkpoint restores the trained weights and the history.
        fresh = build_model("scratch", (12, 12), 5, hidden_units=(32,))
        state = TrainState()
        latest = tf.train.latest_checkpoint(str(model_dir / "checkpoints"))
        self.assertTrue(latest.endswith(f"ckpt-{3 * (2000 // 64)}"))  # numbered by global step
        tf.train.Checkpoint(model=fresh, **state.checkpoint_items()).restore(
            latest
        ).expect_partial()
        self.assertEqual(int(state.step), 3 * (2000 // 64))
        self.assertEqual(state.history, history)
        for a, b in zip(fresh.get_weights(), model.get_weights(), strict=True):
            self.assertAllEqual(a, b)

    def test_rejects_misuse(self):
        data = load_dataset("synthetic")
        mirrored = Trainer(
            batch_size=33, strategy=get_strategy("mirrored", num_gpus=0), verbose=False
        )
        with mirrored.strategy.scope():
            model = build_model("concise", data.input_shape, data.num_classes)
        with self.assertRaisesRegex(
            UserError, "batch_size=33 must be divisible by the number of replicas"
        ):
            mirrored.fit(model, data)
        mirrored.batch_size, mirrored.validation_batch_size = 32, 99
        with self.assertRaisesRegex(
            UserError, "validation_batch_size=99 must be divisible by the number of replicas"
        ):
            mirrored.fit(model, data)
        outside = build_model("concise", data.input_shape, data.num_classes)
        with self.assertRaisesRegex(ValueError, "inside `trainer.strategy.scope"):
            Trainer(
                batch_size=32, strategy=get_strategy("mirrored", num_gpus=0), verbose=False
            ).fit(outside, data)
        with self.assertRaisesRegex(UserError, "larger than the training set"):
            Trainer(batch_size=4096, verbose=False).fit(outside, data)
        with self.assertRaisesRegex(UserError, "optimizer='sgdd' is not known"):
            Trainer(optimizer="sgdd")

    def test_diverging_loss_stops_with_a_hint(self):
        with self.assertRaisesRegex(
            TrainingDiverged, "became nan in steps 2-31 .*epoch 1.*lower learning_rate"
        ):
            _train("default", learning_rate=1e12)

    @parameterized.parameters(
        ("scratch", "mixed_bfloat16"),
        ("concise", "mixed_bfloat16"),
        ("scratch", "mixed_float16"),
    )
    def test_mixed_precision_computes_in_16_bits_and_tracks_float32(self, model_name, policy):
        _, reference = _train("default", model_name, epochs=2, batch_size=32)
        keras.mixed_precision.set_global_policy(policy)
        try:
            model, history = _train("default", model_name, epochs=2, batch_size=32)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        self.assertEqual(model.dtype_policy.name, policy)
        self.assertEqual({v.dtype for v in model.trainable_variables}, {"float32"})
        compute = policy.removeprefix("mixed_")
        self.assertEqual(model(np.zeros((1, 12, 12), "float32")).dtype, compute)
        # 16-bit math changes the numbers a little, not the learning.
        self.assertNotEqual(history["loss"], reference["loss"])
        self.assertAllClose(history["loss"], reference["loss"], rtol=0.05)
        self.assertAllClose(history["val_accuracy"], reference["val_accuracy"], atol=0.02)

    def test_mixed_precision_under_mirrored(self):
        _, reference = _train("mirrored", "concise", epochs=2, batch_size=32)
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        try:
            model, history = _train("mirrored", "concise", epochs=2, batch_size=32)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        self.assertEqual(model(np.zeros((1, 12, 12), "float32")).dtype, "bfloat16")
        self.assertEqual({v.dtype for v in model.trainable_variables}, {"float32"})
        self.assertAllClose(history["loss"], reference["loss"], rtol=0.05)

    def test_float16_uses_loss_scaling_and_bfloat16_does_not(self):
        for policy, scaled in (("mixed_float16", True), ("mixed_bfloat16", False)):
            keras.mixed_precision.set_global_policy(policy)
            try:
                model, _ = _train("default", "concise", epochs=1)
            finally:
                keras.mixed_precision.set_global_policy("float32")
            self.assertEqual(
                isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer), scaled, policy
            )

    @parameterized.parameters(
        ("scratch", "mixed_float16", True),
        ("concise", "mixed_float16", True),
        ("scratch", "mixed_bfloat16", False),
        ("concise", "mixed_bfloat16", False),
    )
    def test_a_run_scales_the_loss_for_float16_only(self, model_name, dtype, scaled):
        """The command line's path (run.train: make_optimizer, build_optimizer): float16
        gradients underflow without loss scaling, bfloat16 (float32's exponent) needs none."""
        self.addCleanup(keras.mixed_precision.set_global_policy, "float32")
        config = RunConfig(
            model=model_name,
            dataset="synthetic",
            hidden_units=(32,),
            epochs=1,
            batch_size=64,
            optimizer="adam",
            learning_rate=1e-3,
            dtype=dtype,
            model_dir=self.get_temp_dir() + f"/{model_name}_{dtype}",
        )
        optimizer = train(config, verbose=False).model.optimizer
        self.assertEqual(isinstance(optimizer, keras.optimizers.LossScaleOptimizer), scaled)
        inner = optimizer.inner_optimizer if scaled else optimizer
        self.assertIsInstance(inner, keras.optimizers.Adam)  # the one asked for, inside
        if scaled:  # dynamic: a finite scale, and the run's steps applied (not all skipped)
            self.assertTrue(np.isfinite(float(optimizer.dynamic_scale.numpy())))
            self.assertGreater(int(optimizer.iterations.numpy()), 0)

    def test_the_package_optimizer_scales_the_loss_for_float16_only(self):
        for policy, scaled in (
            ("mixed_float16", True),
            ("mixed_bfloat16", False),
            ("float32", False),
        ):
            keras.mixed_precision.set_global_policy(policy)
            try:
                model = build_model("scratch", (4,), 3, hidden_units=(8,))
            finally:
                keras.mixed_precision.set_global_policy("float32")
            optimizer = build_optimizer(model, "sgd", steps_per_epoch=1, epochs=1)
            self.assertEqual(
                isinstance(optimizer, keras.optimizers.LossScaleOptimizer), scaled, policy
            )

    def test_float16_replicas_skip_a_non_finite_step_together(self):
        """One replica's overflow skips the step on every replica (Keras' loss scaling
        would follow replica 0 alone and apply the other's inf), and a skipped step does
        not advance `optimizer.iterations`, the counter the schedules follow."""
        strategy = get_strategy("mirrored", cpu_devices=2, num_gpus=0)
        keras.mixed_precision.set_global_policy("mixed_float16")
        try:
            with strategy.scope():
                model = build_model("concise", (4,), 3, hidden_units=(8,))
            model.optimizer = build_optimizer(
                model, lr_schedule="cosine", steps_per_epoch=10, epochs=10, strategy=strategy
            )
        finally:
            keras.mixed_precision.set_global_policy("float32")
        fine, huge = np.ones((4, 4), np.float32), np.full((4, 4), 6e4, np.float32)  # float16 max
        labels = np.zeros((4,), np.int32)
        # One batch per replica and step, replica 0 first: replica 1's first batch overflows.
        batches = tf.data.Dataset.from_tensor_slices(([fine, huge, fine, fine], [labels] * 4))
        feed = IteratorFeed(strategy, lambda _: batches)
        with strategy.scope():
            steps = training.CompiledSteps(model, strategy, 8, feed)

        def step():
            steps.train_steps(feed.chunk_args(), 1)

        before, scale = model.get_weights(), float(model.optimizer.dynamic_scale.numpy())
        first_rate = float(model.optimizer.learning_rate)
        step()  # replica 1's loss and gradients overflow float16
        for w, b in zip(model.get_weights(), before, strict=True):
            self.assertAllEqual(w, b)  # skipped on both replicas: no inf was applied
        self.assertEqual(float(model.optimizer.dynamic_scale.numpy()), scale / 2)
        self.assertEqual(int(model.optimizer.iterations.numpy()), 0)
        self.assertEqual(float(model.optimizer.learning_rate), first_rate)
        step()  # both finite
        self.assertEqual(int(model.optimizer.iterations.numpy()), 1)
        self.assertNotAllClose(model.get_weights()[0], before[0])
        self.assertLess(float(model.optimizer.learning_rate), first_rate)  # the schedule moved

    def test_optimizer_is_chosen_by_name_with_keras_defaults(self):
        data = load_dataset("synthetic")
        weights = {}
        for name, rate in (("sgd", 0.01), ("adam", 1e-3), ("rmsprop", 1e-3)):
            trainer = Trainer(epochs=1, batch_size=64, optimizer=name, verbose=False)
            keras.utils.set_random_seed(1)
            model = build_model("scratch", data.input_shape, data.num_classes, hidden_units=(32,))
            history = trainer.fit(model, data)
            self.assertEqual(type(model.optimizer).__name__.lower(), name)
            self.assertAllClose(float(model.optimizer.learning_rate), rate)
            self.assertTrue(np.isfinite(history["loss"][-1]), name)
            weights[name] = model.get_weights()[0]
        self.assertNotAllClose(weights["sgd"], weights["adam"])
        self.assertNotAllClose(weights["adam"], weights["rmsprop"])

    def test_takes_a_keras_optimizer_with_its_schedule(self):
        data = load_dataset("synthetic")
        strategy = get_strategy("mirrored", num_gpus=0)
        with strategy.scope():
            model = build_model("concise", data.input_shape, data.num_classes, hidden_units=(8,))
            schedule = keras.optimizers.schedules.ExponentialDecay(0.05, STEPS, 0.5)
            optimizer = keras.optimizers.Adam(learning_rate=schedule)
        trainer = Trainer(
            epochs=2, batch_size=64, optimizer=optimizer, strategy=strategy, verbose=False
        )
        history = trainer.fit(model, data)
        self.assertIs(model.optimizer, optimizer)
        self.assertEqual(int(optimizer.iterations.numpy()), 2 * STEPS)
        self.assertAllClose(history["learning_rate"], [0.025, 0.0125])
        with self.assertRaisesRegex(ValueError, "create the optimizer inside"):
            Trainer(optimizer=keras.optimizers.SGD(), strategy=strategy, verbose=False).fit(
                model, data
            )


if __name__ == "__main__":
    tf.test.main()
