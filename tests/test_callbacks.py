"""Keras callbacks in the Trainer's loop (stock ones unchanged, a user's own), and
the package's own callbacks, each on its own."""

import csv
import os
import signal
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from train_util import split_optimizer_settings, use_package_optimizer

from keras_mlp import callbacks as callbacks_lib
from keras_mlp.config import RunConfig
from keras_mlp.data import load_dataset
from keras_mlp.errors import TrainingDiverged, TrainingInterrupted, UserError
from keras_mlp.models import build_model
from keras_mlp.run import train
from keras_mlp.training import HISTORY_KEYS, Trainer

STEPS = 2000 // 64  # synthetic training set, batch 64


def _fit(callbacks, epochs=3, model_dir=None, **kwargs):
    data = load_dataset("synthetic")
    kwargs, optimizer_settings = split_optimizer_settings(kwargs)
    trainer = Trainer(
        epochs=epochs,
        batch_size=64,
        model_dir=model_dir,
        callbacks=callbacks,
        verbose=False,
        **kwargs,
    )
    keras.utils.set_random_seed(1)
    model = build_model("scratch", data.input_shape, data.num_classes, hidden_units=(16,))
    use_package_optimizer(trainer, model, data, optimizer_settings)
    return trainer, model, trainer.fit(model, data)


class Recorder(keras.callbacks.Callback):
    """Writes down every hook call with its arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def on_train_begin(self, logs=None):
        self.calls.append(("train_begin", None, logs))

    def on_epoch_begin(self, epoch, logs=None):
        self.calls.append(("epoch_begin", epoch, logs))

    def on_train_batch_end(self, batch, logs=None):
        self.calls.append(("batch_end", batch, dict(logs)))

    def on_epoch_end(self, epoch, logs=None):
        self.calls.append(("epoch_end", epoch, dict(logs)))
        self.weights = getattr(self, "weights", []) + [self.model.get_weights()]

    def on_train_end(self, logs=None):
        self.calls.append(("train_end", None, logs))


class StockCallbacksTest(tf.test.TestCase):
    def test_a_callback_sees_the_documented_hooks_and_logs(self):
        recorder = Recorder()
        _, _, history = _fit([recorder], epochs=2, steps_per_execution=7)
        kinds = [kind for kind, _, _ in recorder.calls]
        self.assertEqual(kinds[0], "train_begin")
        self.assertEqual(kinds[-1], "train_end")
        self.assertEqual(kinds.count("epoch_end"), 2)
        batches = [b for kind, b, _ in recorder.calls if kind == "batch_end"]
        # Chunks of 7 steps (the last index of each), after a first chunk of one step
        # that gives the divergence guard its reference loss.
        self.assertEqual(batches, [0, 7, 14, 21, 28, 30, 6, 13, 20, 27, 30])
        for kind, _, logs in recorder.calls:
            if kind == "batch_end":
                self.assertEqual(set(logs), {"loss", "accuracy", "step"})
            if kind == "epoch_end":
                self.assertContainsSubset(HISTORY_KEYS, logs)
        steps = [logs["step"] for kind, _, logs in recorder.calls if kind == "batch_end"]
        self.assertEqual(steps[-1], 2 * STEPS)
        last_epoch = [logs for kind, _, logs in recorder.calls if kind == "epoch_end"][-1]
        self.assertEqual(last_epoch["val_accuracy"], history["val_accuracy"][-1])

    def test_early_stopping_with_best_weights(self):
        # Rising loss counts as improvement in "max" mode: epoch 0 stays best, so
        # training stops after `patience` more epochs and restores epoch 0's weights.
        stopper = keras.callbacks.EarlyStopping(
            monitor="loss", mode="max", patience=2, restore_best_weights=True
        )
        recorder = Recorder()
        trainer, model, history = _fit([recorder, stopper], epochs=10)
        self.assertLen(history["loss"], 3)
        self.assertTrue(trainer.stopped_early)
        for restored, best in zip(model.get_weights(), recorder.weights[0], strict=True):
            self.assertAllEqual(restored, best)

    def test_reduce_lr_on_plateau_changes_the_optimizers_rate(self):
        reducer = keras.callbacks.ReduceLROnPlateau(
            monitor="loss", mode="max", patience=0, factor=0.5
        )
        _, model, history = _fit([reducer], epochs=3)
        self.assertAllClose(history["learning_rate"], [0.1, 0.1, 0.05])
        self.assertAllClose(float(model.optimizer.learning_rate), 0.025)

    def test_csv_logger_writes_one_row_per_epoch(self):
        path = Path(self.get_temp_dir()) / "log.csv"
        _, _, history = _fit([keras.callbacks.CSVLogger(str(path))], epochs=2)
        with open(path) as f:
            rows = list(csv.DictReader(f))
        self.assertEqual([int(r["epoch"]) for r in rows], [0, 1])
        self.assertAllClose([float(r["val_loss"]) for r in rows], history["val_loss"])

    def test_a_callback_may_write_into_a_model_dir_that_does_not_exist_yet(self):
        # The README's library example: CSVLogger opens its file at on_train_begin,
        # inside the model_dir the trainer was given (here two levels not yet there).
        model_dir = Path(self.get_temp_dir()) / "runs" / "lib"
        self.assertFalse(model_dir.parent.exists())
        logger = keras.callbacks.CSVLogger(str(model_dir / "history.csv"))
        _, _, history = _fit([logger], epochs=2, model_dir=str(model_dir))
        with open(model_dir / "history.csv") as f:
            rows = list(csv.DictReader(f))
        self.assertAllClose([float(r["val_loss"]) for r in rows], history["val_loss"])
        self.assertTrue((model_dir / "checkpoints").is_dir())

    def test_terminate_on_nan_stops_a_run_without_the_guard(self):
        trainer, _, history = _fit(
            [keras.callbacks.TerminateOnNaN()],
            epochs=3,
            learning_rate=1e30,
            stop_on_divergence=False,
        )
        self.assertTrue(trainer.stopped_early)
        self.assertLen(history["loss"], 1)
        self.assertFalse(np.isfinite(history["loss"][0]))

    def test_a_stop_mid_epoch_is_recorded_as_cut_and_a_rerun_resumes_at_the_next_epoch(self):
        class StopInSecondEpoch(keras.callbacks.Callback):  # as TerminateOnNaN would
            def on_train_batch_end(self, batch, logs=None):
                if int(logs["step"]) == STEPS + 10:
                    self.model.stop_training = True

        model_dir = self.get_temp_dir()
        trainer, _, history = _fit(
            [StopInSecondEpoch()], epochs=4, model_dir=model_dir, steps_per_execution=10
        )
        self.assertTrue(trainer.stopped_early)
        self.assertEqual(history["steps"], [STEPS, 10])  # the cut epoch, as what it is
        recorder = Recorder()
        _, _, history = _fit([recorder], epochs=4, model_dir=model_dir, steps_per_execution=10)
        self.assertEqual(history["steps"], [STEPS, 10, STEPS, STEPS])
        self.assertEqual([e for kind, e, _ in recorder.calls if kind == "epoch_begin"], [2, 3])
        batches = [(e, logs["step"]) for kind, e, logs in recorder.calls if kind == "batch_end"]
        self.assertEqual(batches[0], (9, STEPS + 10 + 10))  # from the third epoch's first step
        latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
        self.assertTrue(latest.endswith(f"ckpt-{3 * STEPS + 10}"))

    def test_the_divergence_reference_is_the_runs_first_step_after_a_resume(self):
        model_dir = self.get_temp_dir()
        _fit([], epochs=1, model_dir=model_dir)
        checkpoints = os.path.join(model_dir, "checkpoints")

        def first_loss():
            reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(checkpoints))
            return reader.get_tensor("first_loss/.ATTRIBUTES/VARIABLE_VALUE")

        reference = first_loss()
        self.assertNear(reference, np.log(5), 0.1)  # a fresh model's first step, 5 classes
        _fit([], epochs=2, model_dir=model_dir)  # resumed: its first chunk has a lower loss
        self.assertEqual(first_loss(), reference)

    def test_a_plain_keras_callback_may_follow_the_trainers_protocol(self):
        """No base class of this package: `steps_until_due` and `close` are found by
        name, and `resumed` tells a new run from a resumed one."""

        class EveryFive(keras.callbacks.Callback):
            def __init__(self, fail=False):
                super().__init__()
                self.steps, self.closed, self.resumed, self.fail = [], 0, None, fail

            def steps_until_due(self, step):
                return 5 - step % 5

            def on_train_begin(self, logs=None):
                self.resumed = (logs["resumed"], self.params["resumed"])

            def on_train_batch_end(self, batch, logs=None):
                self.steps.append(logs["step"])
                if self.fail:
                    raise RuntimeError("boom")

            def close(self):
                self.closed += 1

        model_dir = self.get_temp_dir()
        first = EveryFive()
        _fit([first], epochs=1, model_dir=model_dir, steps_per_execution=50)
        # The guard's one-step first chunk, then chunks ending at every fifth step, and
        # the epoch's end (31).
        self.assertEqual(first.steps, [1, 5, 10, 15, 20, 25, 30, 31])
        self.assertEqual((first.closed, first.resumed), (1, (False, False)))
        again = EveryFive()
        _fit([again], epochs=2, model_dir=model_dir, steps_per_execution=50)
        self.assertEqual(again.resumed, (True, True))
        self.assertEqual(again.steps[:2], [35, 40])
        failing = EveryFive(fail=True)
        with self.assertRaisesRegex(RuntimeError, "boom"):
            _fit([failing], epochs=1, steps_per_execution=50)
        self.assertEqual(failing.closed, 1)  # on every exit path

    def test_lambda_callback(self):
        seen = []
        callback = keras.callbacks.LambdaCallback(
            on_epoch_end=lambda epoch, logs: seen.append((epoch, logs["val_accuracy"]))
        )
        _, _, history = _fit([callback], epochs=2)
        self.assertEqual(seen, list(enumerate(history["val_accuracy"])))

    def test_an_exception_in_a_callback_leaves_the_last_checkpoint_intact(self):
        model_dir = self.get_temp_dir()

        class Boom(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if epoch == 1:
                    raise RuntimeError("boom")

        with self.assertRaisesRegex(RuntimeError, "boom"):
            _fit([Boom()], epochs=3, model_dir=model_dir)
        latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
        self.assertTrue(latest.endswith(f"ckpt-{2 * STEPS}"))  # epoch 2 was saved first
        recorder = Recorder()
        _, _, history = _fit([recorder], epochs=3, model_dir=model_dir)
        self.assertLen(history["loss"], 3)
        self.assertEqual([e for kind, e, _ in recorder.calls if kind == "epoch_begin"], [2])
        begin = recorder.calls[0][2]  # on_train_begin: resumed, with the restored history
        self.assertTrue(begin["resumed"])
        self.assertLen(begin["loss"], 2)
        self.assertTrue(recorder.params["resumed"])
        self.assertLen(recorder.params["history"]["loss"], 2)
        self.assertEqual(recorder.params["initial_epoch"], 2)

    def test_a_run_stopped_early_is_complete_and_says_so(self):
        class StopAfterFirstEpoch(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                self.model.stop_training = True

        model_dir = Path(self.get_temp_dir()) / "early"
        config = RunConfig(
            dataset="synthetic",
            hidden_units=(8,),
            epochs=5,
            batch_size=64,
            model_dir=str(model_dir),
        )
        result = train(config, callbacks=[StopAfterFirstEpoch()], verbose=False)
        self.assertTrue(result.stopped_early)
        self.assertLen(result.history["loss"], 1)
        again = train(config, verbose=False)
        self.assertIsNone(again.model)  # reported, not resumed into more epochs
        self.assertTrue(again.stopped_early)
        self.assertLen(again.history["loss"], 1)

    def test_early_stopping_patience_setting_adds_keras_early_stopping(self):
        from keras_mlp.run import run_callbacks

        config = RunConfig(dataset="synthetic", early_stopping_patience=4)
        (stopper,) = [
            c
            for c in run_callbacks(config, None, "unused", chief=False)
            if isinstance(c, keras.callbacks.EarlyStopping)
        ]
        self.assertEqual((stopper.monitor, stopper.patience), ("val_loss", 4))
        self.assertEmpty(
            [
                c
                for c in run_callbacks(RunConfig(), None, "unused", chief=False)
                if isinstance(c, keras.callbacks.EarlyStopping)
            ]
        )


class PackageCallbacksTest(tf.test.TestCase):
    def _model(self):
        model = build_model("scratch", (2, 2), 2, hidden_units=(3,))
        return model

    def test_checkpointer_saves_mid_epoch_on_its_steps_and_keeps_the_last_few(self):
        model = self._model()
        step = tf.Variable(0, dtype=tf.int64)
        directory = self.get_temp_dir()
        saver = callbacks_lib.Checkpointer(
            tf.train.Checkpoint(model=model, step=step),
            tf.distribute.get_strategy(),
            directory,
            keep=2,
            every_steps=4,
        )
        saver.set_params({"steps": 10})
        self.assertEqual([saver.steps_until_due(s) for s in (0, 3, 4, 9)], [4, 1, 4, 3])
        for at in (4, 8):
            step.assign(at)
            saver.on_train_batch_end(at - 1, {"step": at})
        step.assign(10)
        saver.on_train_batch_end(9, {"step": 10})  # an epoch's last step: the epoch end saves
        saver.on_epoch_end(0, {})
        names = sorted(p.name for p in Path(directory, "checkpoints").glob("*.index"))
        self.assertEqual(names, ["ckpt-10.index", "ckpt-8.index"])
        model.W1.assign(tf.zeros_like(model.W1))
        self.assertEqual(saver.restore(), saver.latest)
        self.assertNotAllClose(model.W1, np.zeros(model.W1.shape))

    def _saved_run(self):
        """A Checkpointer over a folder holding ckpt-1, ckpt-2 and ckpt-3 (W1 = 1, 2, 3)."""
        model, step = self._model(), tf.Variable(0, dtype=tf.int64)
        directory = self.get_temp_dir()
        make = lambda: callbacks_lib.Checkpointer(  # noqa: E731
            tf.train.Checkpoint(model=model, step=step), tf.distribute.get_strategy(), directory
        )
        saver = make()
        for at in (1, 2, 3):
            step.assign(at)
            model.W1.assign(tf.fill(model.W1.shape, float(at)))
            saver.save()
        return model, Path(directory, "checkpoints"), make

    def test_a_damaged_newest_checkpoint_falls_back_to_an_older_one(self):
        model, folder, make = self._saved_run()
        next(folder.glob("ckpt-3.data-*")).unlink()
        restorer = make()
        self.assertEqual(restorer.restore(), str(folder / "ckpt-2"))
        self.assertAllEqual(model.W1, tf.fill(model.W1.shape, 2.0))
        self.assertEqual([p for p, _ in restorer.skipped], [str(folder / "ckpt-3")])
        self.assertIn("ckpt-3.data", restorer.skipped[0][1])

    def test_an_unreadable_state_file_falls_back_to_the_files(self):
        model, folder, make = self._saved_run()
        (folder / "checkpoint").write_text("")
        restorer = make()
        self.assertEqual(restorer.restore(), str(folder / "ckpt-3"))
        self.assertAllEqual(model.W1, tf.fill(model.W1.shape, 3.0))
        restorer.save()  # the next save works (the state file starts anew)
        self.assertTrue((folder / "checkpoint").exists())

    def test_no_checkpoint_that_restores_is_an_error(self):
        _, folder, make = self._saved_run()
        for shard in folder.glob("*.data-*"):
            shard.unlink()
        with self.assertRaisesRegex(
            UserError, "cannot restore any checkpoint .*ckpt-3.*overwrite=True"
        ):
            make().restore()
        for index in folder.glob("*.index"):
            index.unlink()
        (folder / "checkpoint").write_text("garbage {")
        with self.assertRaisesRegex(UserError, "names no usable checkpoint"):
            make().restore()

    def test_divergence_guard_names_the_last_good_checkpoint(self):
        model = self._model()

        class Saved:
            latest = "/runs/x/checkpoints/ckpt-40"

        guard = callbacks_lib.DivergenceGuard(Saved())
        guard.set_model(model)
        guard.on_epoch_begin(1)
        guard.on_train_batch_begin(0, {"step": 40, "loss": 0.0})
        guard.on_train_batch_end(4, {"step": 45, "loss": 1.5})  # finite: nothing happens
        model.W1.assign(tf.fill(model.W1.shape, np.inf))
        with self.assertRaisesRegex(TrainingDiverged, "steps 41-45 \\(epoch 2\\).*ckpt-40"):
            guard.on_train_batch_end(4, {"step": 45, "loss": 1.5})

    def test_divergence_guard_stops_an_exploding_but_finite_loss(self):
        guard = callbacks_lib.DivergenceGuard(callbacks_lib.Checkpointer(None, None, None), 100)
        guard.set_model(self._model())
        self.assertEqual(guard.steps_until_due(0), 1)  # a one-step chunk gives the reference
        guard.on_epoch_begin(0)
        guard.on_train_batch_begin(0, {"step": 0, "loss": 0.0})
        guard.on_train_batch_end(0, {"step": 1, "loss": 2.5})
        self.assertIsNone(guard.steps_until_due(1))
        guard.on_train_batch_end(9, {"step": 10, "loss": 249.0})  # under 100 x 2.5: goes on
        with self.assertRaisesRegex(
            TrainingDiverged, "reached 251 in .*over 100 x the first step's 2.5"
        ):
            guard.on_train_batch_end(19, {"step": 20, "loss": 251.0})
        off = callbacks_lib.DivergenceGuard(callbacks_lib.Checkpointer(None, None, None), 0)
        off.set_model(self._model())
        self.assertIsNone(off.steps_until_due(0))
        off.on_train_batch_end(0, {"step": 1, "loss": 2.5})
        off.on_train_batch_end(9, {"step": 10, "loss": 1e30})  # finite: only non-finite stops it

    def test_divergence_guard_takes_a_kept_reference(self):
        reference = tf.Variable(2.0, dtype=tf.float64)  # restored from a checkpoint
        guard = callbacks_lib.DivergenceGuard(
            callbacks_lib.Checkpointer(None, None, None), 100, reference=reference
        )
        guard.set_model(self._model())
        self.assertIsNone(guard.steps_until_due(500))  # no one-step chunk needed
        guard.on_epoch_begin(3)
        guard.on_train_batch_begin(0, {"step": 500, "loss": 0.0})
        with self.assertRaisesRegex(TrainingDiverged, "over 100 x the first step's 2"):
            guard.on_train_batch_end(9, {"step": 510, "loss": 201.0})
        self.assertEqual(float(reference.numpy()), 2.0)

    def test_signal_stop_turns_sigterm_into_a_clean_stop(self):
        stop = callbacks_lib.SignalStop()
        stop.set_model(self._model())
        before = signal.getsignal(signal.SIGTERM)
        stop.on_train_begin()
        try:
            stop.on_train_batch_end(0, {"step": 1})  # no signal: training goes on
            os.kill(os.getpid(), signal.SIGTERM)
            with self.assertRaises(TrainingInterrupted) as caught:
                stop.on_train_batch_end(1, {"step": 2})
        finally:
            stop.close()
        self.assertEqual(
            (caught.exception.signal_number, caught.exception.step), (signal.SIGTERM, 2)
        )
        self.assertIs(signal.getsignal(signal.SIGTERM), before)

    def test_progress_logger_prints_one_line_per_epoch(self):
        logger = callbacks_lib.ProgressLogger()
        logger.set_params({"steps": 10, "epochs": 3})
        logs = dict(loss=0.5, accuracy=0.8, val_loss=0.6, val_accuracy=0.75, epoch_seconds=1.5)
        logs["examples_per_second"] = 12345.6
        with self.captureWritesToStream(__import__("sys").stdout) as captured:
            logger.on_epoch_begin(1)
            logger.on_train_batch_begin(0, {"loss": 0.0, "step": 10})
            logger.on_train_batch_end(9, {"loss": 0.5, "step": 20})
            logger.on_epoch_end(1, logs)
        self.assertEqual(
            captured.contents(),
            "epoch 2/3: loss 0.5000 accuracy 0.8000 val_loss 0.6000 val_accuracy 0.7500 "
            "(1.50s, 12,346 examples/s)\n",
        )


if __name__ == "__main__":
    tf.test.main()
