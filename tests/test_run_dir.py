"""One run per model_dir: the lock, restarts after a failed start, leftovers of dead
writers, and the final save that a signal cannot cut."""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import tensorflow as tf
from cli_util import error_lines, run_main

from keras_mlp import reporting, run, run_dir, train
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


# A run small enough for a 400 KiB disk to fill at the third checkpoint (about 156 KiB
# each) or, with one epoch, at the final export.
QUICK = ("--dataset=synthetic", "--batch_size=64")
NO_SPACE = (
    r" \(No space left on device\); what was saved before is kept: make room \(or move "
    r"the model_dir to a roomier disk\) and rerun the same command to resume"
)


class DiskFullTest(tf.test.TestCase):
    """Issue 16: a full disk during a checkpoint or the final save was a traceback with
    exit 1 (the divergence status). Now: one line naming the file and the cause, exit 3,
    and the rerun with room resumes. On a real tmpfs of 400 KiB."""

    @contextlib.contextmanager
    def small_disk(self, size="400k"):
        disk = Path(self.get_temp_dir()) / f"disk_{self.id().rsplit('.', 1)[1]}"
        disk.mkdir(parents=True, exist_ok=True)
        mount = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
            capture_output=True,
            text=True,
        )
        if mount.returncode != 0:
            self.skipTest(f"cannot mount a small tmpfs here (needs root): {mount.stderr.strip()}")
        try:
            yield disk
        finally:
            subprocess.run(["umount", str(disk)], check=True)

    def assert_disk_full(self, result, path_pattern):
        self.assertEqual(result.returncode, 3, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertLen(error_lines(result), 1, result.stderr)
        self.assertRegex(error_lines(result)[0], f"^error: cannot write {path_pattern}{NO_SPACE}$")

    def test_full_during_a_checkpoint_resumes_on_a_roomier_disk(self):
        roomy = Path(self.get_temp_dir()) / "roomy"
        shutil.rmtree(roomy, ignore_errors=True)
        with self.small_disk() as disk:
            result = run_main(train.main, *QUICK, "--epochs=3", f"--model_dir={disk / 'run'}")
            checkpoints = re.escape(str(disk / "run" / "checkpoints"))
            self.assert_disk_full(result, rf"{checkpoints}/ckpt-\d+")
            shutil.copytree(disk / "run", roomy)  # what a user does: move the run
        result = run_main(train.main, *QUICK, "--epochs=3", f"--model_dir={roomy}")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"resuming from {roomy / 'checkpoints' / 'ckpt-62'}", result.stdout)
        self.assertNotIn("epoch 2/3:", result.stdout)  # the saved epochs were kept
        self.assertIn("epoch 3/3:", result.stdout)
        history = json.loads((roomy / "metrics.json").read_text())["history"]
        self.assertLen(history["loss"], 3)

    def test_full_during_the_final_save_resumes_once_there_is_room(self):
        with self.small_disk() as disk:
            model_dir = disk / "run"
            result = run_main(train.main, *QUICK, "--epochs=1", f"--model_dir={model_dir}")
            outputs = "(model.keras|export|progress.png|metrics.json)"
            self.assert_disk_full(result, rf"{re.escape(str(model_dir))}/{outputs}")
            self.assertEqual([p.name for p in model_dir.glob(".*tmp*")], [])  # no half files
            self.assertFalse((model_dir / "metrics.json").exists())
            subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
            result = run_main(train.main, *QUICK, "--epochs=1", f"--model_dir={model_dir}")
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn("all 1 epochs were done; writing the outputs", result.stdout)
            self.assertTrue((model_dir / "export" / "saved_model.pb").exists())
            self.assertTrue((model_dir / "metrics.json").exists())


if __name__ == "__main__":
    tf.test.main()
