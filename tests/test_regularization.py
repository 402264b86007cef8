"""Regularisation and learning-rate schedules in training: weight decay through the
Trainer (both forms), learning-rate schedules per step and across a resume, dropout
across a resume, ReduceLROnPlateau, and the settings' checks (fast tier)."""

import math
from pathlib import Path

import keras
import numpy as np
import optuna
import tensorflow as tf
from absl import flags
from absl.testing import parameterized
from cli_util import run_main
from test_training import scalars
from train_util import split_optimizer_settings, use_package_optimizer

from keras_mlp import cli, search
from keras_mlp import train as train_tool
from keras_mlp.config import RunConfig
from keras_mlp.data import load_dataset
from keras_mlp.distribute import get_strategy
from keras_mlp.errors import UserError
from keras_mlp.layers import ScratchDense
from keras_mlp.models import MLPScratch, build_model, concise_mlp
from keras_mlp.optimizers import build_optimizer
from keras_mlp.run import train
from keras_mlp.schedules import Warmup, learning_rate_schedule
from keras_mlp.training import Trainer

STEPS_PER_EPOCH = 2000 // 64  # the synthetic set's 2000 training examples, batch 64: 31


def _fit(
    model_name="scratch",
    strategy="default",
    model_kwargs=None,
    seed=1,
    weights=None,
    **trainer_kwargs,
):
    """A tiny model (from `weights` if given) trained on the synthetic set; returns the
    model and history."""
    data = load_dataset("synthetic")
    trainer_kwargs = {"epochs": 1, "batch_size": 64, "verbose": False, **trainer_kwargs}
    trainer_kwargs, optimizer_settings = split_optimizer_settings(trainer_kwargs)
    trainer = Trainer(strategy=get_strategy(strategy, num_gpus=0), **trainer_kwargs)
    keras.utils.set_random_seed(seed)
    with trainer.strategy.scope():
        model = build_model(
            model_name,
            data.input_shape,
            data.num_classes,
            **{"hidden_units": (32,), **(model_kwargs or {})},
        )
    if weights is not None:
        model.set_weights(weights)
    use_package_optimizer(trainer, model, data, optimizer_settings)
    return model, trainer.fit(model, data)


def _expected_rate(name, learning_rate, step, total, warmup=0):
    """The schedules' formulas, written independently of Keras and the package."""
    if step < warmup:
        return learning_rate * step / warmup
    step, total = step - warmup, total - warmup
    fraction = min(step / total, 1.0)
    if name == "constant":
        return learning_rate
    if name == "cosine":
        return learning_rate * 0.5 * (1 + math.cos(math.pi * fraction))
    if name == "exponential":
        return learning_rate * 0.01**fraction
    # step: divided by 10 after half of the steps, by 100 after three quarters.
    return learning_rate * (1.0 if step <= total / 2 else 0.1 if step <= 3 * total / 4 else 0.01)


class _RecordRates(keras.callbacks.Callback):
    """(global step, the optimizer's learning rate) after every compiled chunk."""

    def __init__(self):
        super().__init__()
        self.rates = []

    def on_train_batch_end(self, batch, logs=None):
        self.rates.append((logs["step"], float(self.model.optimizer.learning_rate)))


class _Crash(Exception):
    pass


class _CrashAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 0:
            raise _Crash()


class ScheduleTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.product(name=["constant", "cosine", "exponential", "step"], warmup_epochs=[0, 1])
    def test_schedules_follow_their_formulas(self, name, warmup_epochs):
        schedule = learning_rate_schedule(
            name, 0.5, steps_per_epoch=10, epochs=4, warmup_epochs=warmup_epochs
        )
        if name == "constant" and not warmup_epochs:
            self.assertEqual(schedule, 0.5)  # a plain number: the optimizer as before
            return
        self.assertIsInstance(schedule, keras.optimizers.schedules.LearningRateSchedule)
        for step in range(0, 41):
            expected = _expected_rate(name, 0.5, step, 40, warmup=10 * warmup_epochs)
            self.assertAllClose(float(schedule(step)), expected, rtol=1e-5, atol=1e-7, msg=step)

    def test_cosine_warmup_equals_keras_cosine_decay_with_its_own_warmup(self):
        ours = learning_rate_schedule("cosine", 0.2, steps_per_epoch=7, epochs=5, warmup_epochs=2)
        reference = keras.optimizers.schedules.CosineDecay(
            0.0, 21, warmup_target=0.2, warmup_steps=14
        )
        steps = tf.range(36, dtype=tf.int64)
        self.assertAllClose(
            [float(ours(s)) for s in steps], [float(reference(s)) for s in steps], atol=1e-7
        )

    def test_warmup_schedule_round_trips_its_config(self):
        schedule = learning_rate_schedule("step", 0.3, steps_per_epoch=5, epochs=4, warmup_epochs=1)
        clone = keras.optimizers.schedules.deserialize(
            keras.optimizers.schedules.serialize(schedule)
        )
        self.assertIsInstance(clone, Warmup)
        for step in (0, 3, 5, 12, 20):
            self.assertEqual(float(clone(step)), float(schedule(step)))

    @parameterized.parameters("cosine", "exponential", "step")
    def test_the_rate_changes_every_step_and_is_logged_each_epoch(self, name):
        recorder = _RecordRates()
        _, history = _fit(
            epochs=3,
            lr_schedule=name,
            warmup_epochs=1,
            steps_per_execution=7,
            callbacks=[recorder],
        )
        total = 3 * STEPS_PER_EPOCH
        # Mid-epoch chunk ends (steps 7, 14, ...) see the rate of their own step.
        self.assertGreater(len(recorder.rates), 9)
        for step, rate in recorder.rates:
            expected = _expected_rate(name, 0.1, step, total, STEPS_PER_EPOCH)
            self.assertAllClose(rate, expected, rtol=1e-5, atol=1e-8, msg=step)
        # The history's learning_rate: the rate at each epoch's last step count.
        expected = [
            _expected_rate(name, 0.1, (e + 1) * STEPS_PER_EPOCH, total, STEPS_PER_EPOCH)
            for e in range(3)
        ]
        self.assertAllClose(history["learning_rate"], expected, rtol=1e-5, atol=1e-8)

    def test_a_run_logs_the_scheduled_rate_to_tensorboard(self):
        model_dir = Path(self.get_temp_dir()) / "cosine"
        config = RunConfig(
            dataset="synthetic",
            hidden_units=(16,),
            epochs=3,
            batch_size=64,
            lr_schedule="cosine",
            model_dir=str(model_dir),
        )
        history = train(config, verbose=False).history
        logged = scalars(model_dir / "logs" / "train")["learning_rate"]
        expected = [0.1 * 0.5 * (1 + math.cos(math.pi * e / 3)) for e in (1, 2, 3)]
        self.assertEqual([step for step, _ in logged], [1, 2, 3])
        self.assertAllClose([v for _, v in logged], expected, atol=1e-7)
        self.assertAllClose(history["learning_rate"], expected, atol=1e-7)

    def test_resume_continues_the_schedule_and_the_dropout_masks_exactly(self):
        kwargs = dict(
            epochs=3,
            lr_schedule="cosine",
            warmup_epochs=1,
            optimizer="adam",
            learning_rate=0.01,
            model_kwargs={"dropout": 0.3, "weight_decay": 1e-3, "initializer": "he_normal"},
        )
        whole, whole_history = _fit(**kwargs)
        model_dir = str(Path(self.get_temp_dir()) / "resumed")
        with self.assertRaises(_Crash):
            _fit(model_dir=model_dir, callbacks=[_CrashAfterFirstEpoch()], **kwargs)
        resumed, resumed_history = _fit(model_dir=model_dir, **kwargs)
        self.assertEqual(resumed_history["learning_rate"], whole_history["learning_rate"])
        self.assertEqual(resumed_history["loss"], whole_history["loss"])
        self.assertEqual(int(resumed.optimizer.iterations), 3 * STEPS_PER_EPOCH)
        for a, b in zip(whole.get_weights(), resumed.get_weights(), strict=True):
            self.assertAllEqual(a, b)
        # The masks' generator continued from its checkpointed state.
        self.assertAllEqual(
            whole.dropout_layers[0].seed_generator.state,
            resumed.dropout_layers[0].seed_generator.state,
        )


class WeightDecayTrainingTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters("scratch", "concise")
    def test_one_sgd_step_shrinks_kernels_by_rate_times_decay(self, model_name):
        """Full batch, one step: with SGD both forms subtract lr * weight_decay * W from each
        kernel and leave the biases alone; the reported loss is the cross-entropy alone."""
        lr, weight_decay, init = 0.1, 0.05, {"initializer": "he_normal"}
        keras.utils.set_random_seed(3)
        start = build_model(model_name, (12, 12), 5, hidden_units=(32,), **init).get_weights()
        rng = np.random.default_rng(0)  # nonzero biases: a decay of them would show
        start = [w if w.ndim == 2 else rng.normal(size=w.shape).astype("float32") for w in start]
        # The synthetic set's 2000 training examples in one batch: one step.
        common = {"batch_size": 2000, "learning_rate": lr, "weights": start}
        plain, plain_history = _fit(model_name, model_kwargs=init, **common)
        if model_name == "scratch":  # the L2 penalty in the model's loss
            decay = {"model_kwargs": {**init, "weight_decay": weight_decay}}
        else:  # decoupled, in the optimizer
            decay = {"model_kwargs": init, "weight_decay": weight_decay}
        decayed, decayed_history = _fit(model_name, **decay, **common)
        for w0, a, b in zip(start, plain.get_weights(), decayed.get_weights(), strict=True):
            if w0.ndim == 2:  # a kernel
                self.assertAllClose(b, a - lr * weight_decay * w0, atol=1e-7, rtol=0)
                self.assertNotAllClose(a, b, atol=1e-6)
            else:  # a bias
                self.assertAllClose(b, a, atol=1e-7, rtol=0)
        self.assertEqual(decayed_history["loss"], plain_history["loss"])

    @parameterized.parameters("scratch", "concise")
    def test_mirrored_on_two_cpus_with_weight_decay_matches_one_device(self, model_name):
        init = {"initializer": "he_normal"}
        if model_name == "scratch":  # each replica adds half the penalty
            decay = {"model_kwargs": {**init, "weight_decay": 0.1}}
        else:
            decay = {"model_kwargs": init, "weight_decay": 0.1}
        one, one_history = _fit(model_name, "one_device", epochs=2, **decay)
        mirrored, mirrored_history = _fit(model_name, "mirrored", epochs=2, **decay)
        for a, b in zip(one.get_weights(), mirrored.get_weights(), strict=True):
            self.assertAllClose(a, b, atol=1e-5, rtol=0)
        self.assertAllClose(one_history["loss"], mirrored_history["loss"], atol=1e-5)
        # The decay mattered: without it the weights end elsewhere.
        plain, _ = _fit(model_name, "one_device", epochs=2, model_kwargs=init)
        self.assertNotAllClose(plain.get_weights()[0], one.get_weights()[0], atol=1e-4)


class PlateauAndSettingsTest(tf.test.TestCase, parameterized.TestCase):
    def test_reduce_lr_on_plateau_divides_the_rate_by_ten(self):
        # A rate too small to improve the validation loss by Keras' min_delta (1e-4): after
        # one epoch without improvement the callback divides it by 10 (the history holds
        # each epoch's rate before the callbacks run).
        config = RunConfig(
            dataset="synthetic",
            hidden_units=(16,),
            epochs=3,
            batch_size=64,
            learning_rate=1e-6,
            reduce_lr_on_plateau=1,
            model_dir=str(Path(self.get_temp_dir()) / "plateau"),
        )
        result = train(config, verbose=False)
        self.assertAllClose(result.history["learning_rate"], [1e-6, 1e-6, 1e-7], rtol=1e-5)
        self.assertAllClose(float(result.model.optimizer.learning_rate), 1e-8, rtol=1e-5)

    @parameterized.named_parameters(
        (
            "plateau_and_cosine",
            {"reduce_lr_on_plateau": 2, "lr_schedule": "cosine"},
            r"^reduce_lr_on_plateau=2 cannot be combined with lr_schedule='cosine'",
        ),
        (
            "plateau_and_warmup",
            {"reduce_lr_on_plateau": 2, "warmup_epochs": 1},
            r"^reduce_lr_on_plateau=2 cannot be combined with warmup_epochs=1",
        ),
        ("dropout_above_one", {"dropout": 1.5}, r"^dropout=1.5 must be in \[0, 1\)$"),
        (
            "dropout_one_of_two",
            {"hidden_units": (8, 8), "dropout": (0.2, 1.0)},
            r"^dropout=0.2,1.0 must be in \[0, 1\) each$",
        ),
        (
            "dropout_count",
            {"hidden_units": (8, 8), "dropout": (0.1, 0.2, 0.3)},
            r"^dropout=0.1,0.2,0.3 gives 3 rates for 2 hidden layers",
        ),
        ("negative_decay", {"weight_decay": -0.1}, r"^weight_decay=-0.1 must be 0 \(off\)"),
        ("infinite_decay", {"weight_decay": float("inf")}, r"^weight_decay=inf must be"),
        ("negative_warmup", {"warmup_epochs": -1}, r"^warmup_epochs=-1 must be 0 \(off\)"),
        (
            "warmup_too_long",
            {"warmup_epochs": 10},
            r"^warmup_epochs=10 must be smaller than epochs=10",
        ),
        ("unknown_schedule", {"lr_schedule": "linear"}, r"^lr_schedule='linear' is not known"),
        ("negative_patience", {"reduce_lr_on_plateau": -2}, r"^reduce_lr_on_plateau=-2 must be"),
    )
    def test_bad_settings_are_refused_naming_the_arguments(self, kwargs, message):
        with self.assertRaisesRegex(UserError, message):
            RunConfig(**kwargs)

    @parameterized.named_parameters(
        (
            "sigma",
            {"sigma": 0.0},
            [lambda: MLPScratch(sigma=0.0), lambda: ScratchDense(2, sigma=0.0)],
        ),
        (
            "dropout",
            {"dropout": 1.5},
            [lambda: MLPScratch(dropout=1.5), lambda: concise_mlp((4,), 3, dropout=1.5)],
        ),
        (
            "dropout_count",
            {"hidden_units": (8, 8), "dropout": (0.1, 0.2, 0.3)},
            [lambda: MLPScratch(hidden_units=(8, 8), dropout=(0.1, 0.2, 0.3))],
        ),
        ("weight_decay", {"weight_decay": -1.0}, [lambda: MLPScratch(weight_decay=-1.0)]),
        (
            "optimizer",
            {"optimizer": "sgdd"},
            [
                lambda: Trainer(optimizer="sgdd"),
                lambda: build_optimizer(None, "sgdd", steps_per_epoch=1, epochs=1),
            ],
        ),
        (
            "lr_schedule",
            {"lr_schedule": "linear"},
            [lambda: learning_rate_schedule("linear", 0.1, steps_per_epoch=1, epochs=1)],
        ),
    )
    def test_config_and_library_refuse_a_setting_with_one_check(self, kwargs, library_calls):
        """Each check is written once (keras_mlp.checks): the config and the layer, model,
        optimizer or schedule taking the value raise the same error."""
        with self.assertRaises(UserError) as from_config:
            RunConfig(**kwargs)
        for call in library_calls:
            with self.assertRaises(UserError) as from_library:
                call()
            self.assertEqual(str(from_library.exception), str(from_config.exception))

    def test_settings_default_off_and_one_rate_means_every_layer(self):
        config = RunConfig()
        self.assertEqual(
            (config.dropout, config.weight_decay, config.lr_schedule, config.warmup_epochs),
            ((0.0,), 0.0, "constant", 0),
        )
        self.assertEqual(config.reduce_lr_on_plateau, 0)
        self.assertEqual(RunConfig(dropout=0.2).dropout, (0.2,))
        self.assertEqual(RunConfig(hidden_units=(8, 4), dropout=[0.2, 0.5]).dropout, (0.2, 0.5))

    def test_flags_parse_rates_and_errors_name_flags(self):
        flag_values = flags.FlagValues()
        cli.define_run_flags(flag_values)
        flag_values(
            [
                "prog",
                "--hidden_units=64,32",
                "--dropout=0.2,0.5",
                "--weight_decay=1e-4",
                "--lr_schedule=step",
                "--warmup_epochs=2",
            ]
        )
        config = cli.config_from_flags(flag_values)
        self.assertEqual(config.dropout, (0.2, 0.5))
        self.assertEqual(
            (config.weight_decay, config.lr_schedule, config.warmup_epochs), (1e-4, "step", 2)
        )
        cases = [
            (["--dropout=1.5"], "error: --dropout=1.5 must be in [0, 1)"),
            (["--dropout=a"], "error: --dropout='a' must be comma-separated numbers"),
            (
                ["--reduce_lr_on_plateau=3", "--lr_schedule=cosine"],
                "error: --reduce_lr_on_plateau=3 cannot be combined with --lr_schedule='cosine'",
            ),
        ]
        for args, message in cases:
            result = run_main(train_tool.main, "--dataset=synthetic", *args)
            self.assertEqual(result.returncode, 2, args)
            lines = result.stderr.strip().splitlines()
            self.assertLen(lines, 1, result.stderr)
            self.assertStartsWith(lines[0], message)

    def test_search_proposes_dropout_decay_and_schedule(self):
        base = RunConfig(model="concise", validation_split=0.1)
        trial = optuna.trial.FixedTrial(
            {
                "optimizer": "adam",
                "adam_learning_rate": 1e-3,
                "epochs": 10,
                "depth": 2,
                "width": 64,
                "dropout": 0.3,
                "weight_decay": 1e-4,
                "lr_schedule": "cosine",
            }
        )
        config = search.suggest_config(trial, base, 10, [64], ["adam"])
        self.assertEqual(config.hidden_units, (64, 64))
        self.assertEqual(
            (config.dropout, config.weight_decay, config.lr_schedule), ((0.3,), 1e-4, "cosine")
        )
        self.assertTrue({"dropout", "weight_decay", "lr_schedule"} <= set(search.SEARCHED))
        with self.assertRaisesRegex(UserError, "reduce_lr_on_plateau=2 cannot be combined"):
            search.run_search(
                self.get_temp_dir(), RunConfig(validation_split=0.1, reduce_lr_on_plateau=2), 1
            )
        with self.assertRaisesRegex(UserError, "warmup_epochs=5 must be smaller than"):
            search.run_search(
                self.get_temp_dir(),
                RunConfig(validation_split=0.1, warmup_epochs=5),
                1,
                epochs=10,
            )

    def test_the_package_optimizer_refuses_an_unknown_schedule(self):
        model = build_model("concise", (4,), 3)
        with self.assertRaisesRegex(UserError, "lr_schedule='linear' is not known; accepted: "):
            build_optimizer(model, lr_schedule="linear", steps_per_epoch=1, epochs=1)

    def test_adamw_decays_only_when_asked(self):
        # AdamW's own default (0.004) does not apply: --weight_decay is the one setting.
        model, _ = _fit("concise", optimizer="adamw", learning_rate=1e-3)
        self.assertEqual(model.optimizer.weight_decay, 0.0)
        model, _ = _fit("concise", optimizer="adamw", learning_rate=1e-3, weight_decay=0.1)
        self.assertAllClose(model.optimizer.weight_decay, 0.1)


if __name__ == "__main__":
    tf.test.main()
