"""One run per model_dir: the lock, restarts after a failed start, leftovers of dead
writers, and the final save that a signal cannot cut."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import tensorflow as tf

from keras_mlp import reporting, run, run_dir
from keras_mlp.config import RunConfig
from keras_mlp.errors import TrainingInterrupted, UserError

CONFIG = RunConfig(dataset="synthetic", hidden_units=(8,), epochs=1, batch_size=64)

HOLD_LOCK = """
import sys, time
from keras_mlp.run_dir import RunLock
lock = RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(60)
"""


class RunLockTest(tf.test.TestCase):
    def test_a_second_run_is_refused_and_a_killed_holder_leaves_no_lock(self):
        model_dir = Path(self.get_temp_dir())
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(model_dir)], stdout=subprocess.PIPE, text=True
        )
        try:
            self.assertEqual(holder.stdout.readline().strip(), "locked")
            with self.assertRaisesRegex(
                UserError, rf"in use by another run \(pid {holder.pid} on {os.uname().nodename}\)"
            ):
                run_dir.RunLock(model_dir).acquire()
        finally:
            holder.kill()
            holder.wait()
        lock = run_dir.RunLock(model_dir).acquire()  # SIGKILL freed it
        self.assertEqual((model_dir / ".lock").read_text().split()[0], str(os.getpid()))
        lock.release()
        self.assertFalse((model_dir / ".lock").exists())

    def test_claim_holds_the_lock_for_the_block(self):
        model_dir = Path(self.get_temp_dir()) / "run"
        config = RunConfig(**{**CONFIG.to_dict(), "model_dir": str(model_dir)})
        with run_dir.claim(model_dir, config) as status:
            self.assertEqual(status, run_dir.NEW)
            self.assertEqual(
                json.loads((model_dir / "run_config.json").read_text()), config.to_dict()
            )
            with self.assertRaisesRegex(UserError, "in use by another run"):
                with run_dir.claim(model_dir, config):
                    pass
        with run_dir.claim(model_dir, config) as status:  # released: claimable again
            self.assertEqual(status, run_dir.RESTART)  # no checkpoint was saved


class ModelDirRulesTest(tf.test.TestCase):
    def test_an_attempt_without_a_checkpoint_is_replaced_by_a_corrected_run(self):
        model_dir = Path(self.get_temp_dir())
        failed = RunConfig(**{**CONFIG.to_dict(), "learning_rate": 1e30})
        reporting.write_json(model_dir / "run_config.json", failed.to_dict())
        (model_dir / "logs" / "train").mkdir(parents=True)
        (model_dir / "logs" / "train" / "events.out.tfevents.1").write_bytes(b"x")
        self.assertEqual(run_dir.inspect(model_dir, CONFIG), run_dir.RESTART)
        with run_dir.claim(model_dir, CONFIG) as status:
            self.assertEqual(status, run_dir.RESTART)
        self.assertFalse((model_dir / "logs").exists())
        saved = json.loads((model_dir / "run_config.json").read_text())
        self.assertEqual(saved["learning_rate"], CONFIG.learning_rate)

    def test_a_run_with_a_checkpoint_and_other_settings_is_refused(self):
        model_dir = Path(self.get_temp_dir())
        reporting.write_json(model_dir / "run_config.json", CONFIG.to_dict())
        (model_dir / "checkpoints").mkdir()
        (model_dir / "checkpoints" / "ckpt-31.index").write_bytes(b"")
        other = RunConfig(**{**CONFIG.to_dict(), "learning_rate": 0.5})
        with self.assertRaisesRegex(UserError, "learning_rate 0.1 there, 0.5 now"):
            run_dir.inspect(model_dir, other)
        self.assertEqual(run_dir.inspect(model_dir, CONFIG), run_dir.RESUME)

    def test_temporary_files_of_dead_writers_are_removed(self):
        model_dir = Path(self.get_temp_dir())
        (model_dir / ".model.4242.tmp.keras").write_bytes(b"half a model")
        (model_dir / ".metrics.4242.tmp.json").write_text("{")
        (model_dir / ".export.4242.tmp").mkdir()
        (model_dir / "notes.txt").write_text("mine")
        with run_dir.claim(model_dir, CONFIG):
            pass
        self.assertEqual(
            sorted(p.name for p in model_dir.iterdir()), ["notes.txt", "run_config.json"]
        )


class FinalSaveTest(tf.test.TestCase):
    def test_a_signal_during_the_final_save_waits_for_it(self):
        saved = []

        def save_run(model_dir, *args):
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C in the middle of the export
            saved.append(model_dir)

        before = signal.getsignal(signal.SIGINT)  # SIG_IGN where started in the background
        signal.signal(signal.SIGINT, signal.default_int_handler)
        original = reporting.save_run
        reporting.save_run = save_run
        try:
            with self.assertRaises(TrainingInterrupted) as caught:
                run._save_outputs("runs/x", None, {"loss": [1.0]}, None, CONFIG, False)
        finally:
            reporting.save_run = original
            restored = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, before)
        self.assertEqual(saved, ["runs/x"])  # the save ran to its end
        self.assertEqual(caught.exception.signal_number, signal.SIGINT)
        self.assertIn("the run in runs/x is complete", str(caught.exception))
        self.assertIs(restored, signal.default_int_handler)  # the handler from before the save


if __name__ == "__main__":
    tf.test.main()
