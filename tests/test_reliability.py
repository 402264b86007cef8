"""Nothing lost: kill -9 and resume, SIGTERM and Ctrl-C, the NaN guard, determinism,
and the exported model served by the predict tool and by plain TensorFlow.

Real `python -m keras_mlp.train` processes where the process boundary is the point
(signals, --deterministic); every process is bounded in time and killed at the end.
"""

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import parameterized
from cli_util import Result, error_lines, run_main, run_tool, start_tool, tool_env
from PIL import Image

import keras_mlp.models  # noqa: F401 (registers the custom classes for load_model)
from keras_mlp import predict, train
from keras_mlp.data import synthetic_arrays
from keras_mlp.idx import write_idx

pytestmark = pytest.mark.slow

# The synthetic set: 2000 training examples, so 62 steps per epoch at batch 32.
SYNTHETIC = ("--dataset=synthetic", "--hidden_units=32", "--batch_size=32")
STEPS_PER_EPOCH = 2000 // 32


@contextlib.contextmanager
def running(*args, timeout=180):
    """A `keras_mlp.train` process, killed when the block ends or `timeout` passes."""
    process = start_tool("train", *args)
    watchdog = threading.Timer(timeout, process.kill)
    watchdog.start()
    try:
        yield process
    finally:
        watchdog.cancel()
        process.kill()
        process.communicate()


def wait_for_line(process, prefix):
    for line in process.stdout:
        if line.startswith(prefix):
            return line
    raise AssertionError(f"the run ended before printing {prefix!r}")


def checkpoint_step(model_dir):
    """The step of the checkpoint that `checkpoints/checkpoint` names (what a rerun restores)."""
    state = Path(model_dir) / "checkpoints" / "checkpoint"
    match = re.search(r'^model_checkpoint_path: ".*ckpt-(\d+)"', state.read_text(), re.M)
    return int(match[1])


def saved_step(path):
    """The global step stored inside the checkpoint at `path`."""
    return int(tf.train.load_variable(str(path), "step/.ATTRIBUTES/VARIABLE_VALUE"))


def weights(model_dir):
    return keras.models.load_model(Path(model_dir) / "model.keras").get_weights()


def metrics(model_dir):
    return json.loads((Path(model_dir) / "metrics.json").read_text())


def logged_epochs(log_dir, tag="epoch_loss"):
    """`{epoch: times written}` of the per-epoch scalar `tag` in TensorBoard event files."""
    counts = Counter()
    for path in Path(log_dir).glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            counts.update(event.step for value in event.summary.value if value.tag == tag)
    return dict(counts)


class ResumeTest(tf.test.TestCase, parameterized.TestCase):
    # Checkpoints every 10 steps (most of them mid-epoch), 5 steps per compiled call.
    DETERMINISTIC = (
        *SYNTHETIC,
        "--epochs=4",
        "--deterministic",
        "--checkpoint_every_steps=10",
        "--steps_per_execution=5",
    )

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = Path(tf.compat.v1.test.get_temp_dir()) / "resume"
        cls.full = cls.tmp / "full"  # the uninterrupted reference run
        result = run_tool("train", *cls.DETERMINISTIC, f"--model_dir={cls.full}")
        assert result.returncode == 0, result.stderr

    def test_killed_run_resumes_to_the_same_weights_bitwise(self):
        killed = self.tmp / "killed"
        with running(*self.DETERMINISTIC, f"--model_dir={killed}") as process:
            # SIGKILL just after the first mid-epoch checkpoint past epoch 1.
            state, seen = killed / "checkpoints" / "checkpoint", 0
            while seen <= STEPS_PER_EPOCH or seen % STEPS_PER_EPOCH == 0:
                self.assertIsNone(process.poll(), "the run ended before it could be killed")
                time.sleep(0.005)
                seen = checkpoint_step(killed) if state.exists() else 0
            process.kill()
        self.assertFalse((killed / "metrics.json").exists())

        resumed = run_tool("train", *self.DETERMINISTIC, f"--model_dir={killed}")
        self.assertEqual(resumed.returncode, 0, resumed.stderr)
        where = re.search(
            r"resuming from .*ckpt-(\d+): epoch (\d+), step (\d+) of 62$", resumed.stdout, re.M
        )
        self.assertIsNotNone(where, resumed.stdout)
        step, epoch, in_epoch = map(int, where.groups())
        self.assertEqual(step, (epoch - 1) * STEPS_PER_EPOCH + in_epoch)
        self.assertBetween(step, seen, 4 * STEPS_PER_EPOCH - 1)  # not before, not after the end
        for a, b in zip(weights(self.full), weights(killed), strict=True):
            self.assertAllEqual(a, b)  # bitwise
        history, reference = metrics(killed)["history"], metrics(self.full)["history"]
        # A cut epoch's loss is summed in two parts: equal up to float rounding.
        self.assertAllClose(history["loss"], reference["loss"], atol=1e-6)
        self.assertEqual(history["val_accuracy"], reference["val_accuracy"])
        self.assertEqual(history["val_loss"], reference["val_loss"])
        for log in ("train", "validation"):  # every epoch logged exactly once
            self.assertEqual(logged_epochs(killed / "logs" / log), {e: 1 for e in range(1, 5)}, log)

    def test_two_deterministic_runs_are_identical(self):
        again = self.tmp / "again"
        result = run_tool("train", *self.DETERMINISTIC, f"--model_dir={again}")
        self.assertEqual(result.returncode, 0, result.stderr)
        for a, b in zip(weights(self.full), weights(again), strict=True):
            self.assertAllEqual(a, b)
        self.assertEqual(metrics(again)["history"]["loss"], metrics(self.full)["history"]["loss"])

    @parameterized.named_parameters(
        ("sigterm", signal.SIGTERM, 143), ("sigint", signal.SIGINT, 130)
    )
    def test_signal_saves_a_checkpoint_and_the_rerun_finishes(self, sig, exit_code):
        model_dir = self.tmp / sig.name
        args = [*SYNTHETIC, "--epochs=10", "--steps_per_execution=5", f"--model_dir={model_dir}"]
        with running(*args) as process:
            wait_for_line(process, "epoch 2/10")
            process.send_signal(sig)
            _, stderr = process.communicate(timeout=60)
        self.assertEqual(process.returncode, exit_code, stderr)
        self.assertNotIn("Traceback", stderr)
        errors = error_lines(Result(process.returncode, "", stderr))
        self.assertLen(errors, 1, stderr)
        message = errors[0]
        self.assertRegex(
            message,
            rf"^error: stopped by {sig.name} at step (\d+); checkpoint saved as "
            rf"{re.escape(str(model_dir))}/checkpoints/ckpt-\1; rerun the same command to resume$",
        )
        step = int(re.search(r"at step (\d+)", message)[1])
        self.assertGreater(step, STEPS_PER_EPOCH)  # stopped in epoch 2 or later
        self.assertEqual(checkpoint_step(model_dir), step)
        self.assertEqual(saved_step(model_dir / "checkpoints" / f"ckpt-{step}"), step)
        self.assertFalse((model_dir / "metrics.json").exists())

        resumed = run_tool("train", *args)
        self.assertEqual(resumed.returncode, 0, resumed.stderr)
        epoch, in_epoch = divmod(step, STEPS_PER_EPOCH)
        self.assertIn(
            f"resuming from {model_dir}/checkpoints/ckpt-{step}: epoch {epoch + 1}, "
            f"step {in_epoch} of 62",
            resumed.stdout,
        )
        final = metrics(model_dir)
        self.assertLen(final["history"]["loss"], 10)
        self.assertEqual(final["final"]["epochs"], 10)

    def test_nan_guard_stops_naming_the_steps(self):
        model_dir = self.tmp / "nan"
        result = run_main(  # in-process: the exit status comes from the same wrapper
            train.main,
            *SYNTHETIC,
            "--epochs=3",
            "--learning_rate=1e4",
            "--activation=linear",  # ReLU nets die at this rate with finite (huge) losses
            "--divergence_factor=0",  # the check of finite but exploding losses: off
            "--steps_per_execution=1",
            f"--model_dir={model_dir}",
        )
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertLen(error_lines(result), 1, result.stderr)
        self.assertRegex(
            error_lines(result)[0],
            r"^error: training loss became (nan|inf) in steps (\d+)-\2 \(epoch 1\); stopped "
            r"without saving; the last good checkpoint is none; try a lower learning_rate$",
        )
        self.assertFalse((model_dir / "checkpoints").exists())
        self.assertFalse((model_dir / "metrics.json").exists())


# Our own label names (from labels.txt), so a label cannot pass for a class index.
LABELS = ("sun", "moon", "star", "comet", "cloud")

# Loads the export with TensorFlow alone and prints what serving_default returns.
SERVE = """
import json, sys
import numpy as np
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
out = serve(images=tf.constant(np.load(sys.argv[2])))
print(json.dumps({
    "imported": sorted(m for m in sys.modules if m.split(".")[0] == "keras_mlp"),
    "labels": [label.decode() for label in out["labels"].numpy()],
    "label_names": [name.decode() for name in out["label_names"].numpy()],
    "class_ids": out["class_ids"].numpy().tolist(),
    "probabilities": out["probabilities"].numpy().tolist(),
}))
"""


class ExportAndPredictTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = Path(tf.compat.v1.test.get_temp_dir()) / "predict"
        data_dir = cls.tmp / "data"
        data_dir.mkdir(parents=True, exist_ok=True)
        train_x, train_y, cls.images, _ = arrays = synthetic_arrays()
        for name, array in zip(
            ("train-images", "train-labels", "t10k-images", "t10k-labels"), arrays, strict=True
        ):
            kind = "idx3" if array.ndim == 3 else "idx1"
            write_idx(data_dir / f"{name}-{kind}-ubyte.gz", array)
        (data_dir / "labels.txt").write_text("\n".join(LABELS) + "\n")
        cls.model_dir = cls.tmp / "run"
        result = run_main(
            train.main,
            f"--data_dir={data_dir}",
            "--epochs=2",
            "--batch_size=32",
            "--hidden_units=32",
            f"--model_dir={cls.model_dir}",
        )
        assert result.returncode == 0, result.stderr
        model = keras.models.load_model(cls.model_dir / "model.keras")
        cls.logits = model(cls.images[:8].astype(np.float32) / np.float32(255)).numpy()

    def test_png_and_idx_predictions_match_the_model(self):
        Image.fromarray(self.images[0]).save(self.tmp / "first.png")
        write_idx(self.tmp / "three-images-idx3-ubyte.gz", self.images[:3])
        result = run_main(
            predict.main,
            f"--model_dir={self.model_dir}",
            "--top_k=2",
            self.tmp / "first.png",
            self.tmp / "three-images-idx3-ubyte.gz",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.strip().splitlines()
        self.assertLen(lines, 4)
        expected = np.argmax(self.logits, axis=-1)
        self.assertTrue(lines[0].startswith(f"first.png: {LABELS[expected[0]]} "), lines[0])
        for i, line in enumerate(lines[1:]):
            top = re.match(
                rf"three-images-idx3-ubyte.gz\[{i}\]: (\S+) ([0-9.]+), (\S+) ([0-9.]+)$", line
            )
            self.assertIsNotNone(top, line)
            self.assertEqual(top[1], LABELS[expected[i]])
            self.assertNotEqual(top[3], top[1])
            self.assertGreaterEqual(float(top[2]), float(top[4]))

    def test_resize_converts_other_sizes_and_modes(self):
        Image.fromarray(self.images[0]).convert("RGB").resize((30, 30)).save(self.tmp / "big.png")
        result = run_main(
            predict.main, f"--model_dir={self.model_dir}", "--resize", self.tmp / "big.png"
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, rf"^big.png: ({'|'.join(LABELS)}) [0-9.]+")

    def test_saved_model_serves_without_keras_mlp(self):
        """README: the export "needs no keras_mlp code to load"."""
        np.save(self.tmp / "images.npy", self.images[:8])
        served = subprocess.run(
            [sys.executable, "-c", SERVE, self.model_dir / "export", self.tmp / "images.npy"],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=self.tmp,  # outside the repository
            env=tool_env({"PYTHONPATH": None}),
        )
        self.assertEqual(served.returncode, 0, served.stderr)
        out = json.loads(served.stdout.strip().splitlines()[-1])
        self.assertEqual(out["imported"], [])
        self.assertEqual(out["label_names"], list(LABELS))
        expected = np.argmax(self.logits, axis=-1).tolist()
        self.assertEqual(out["class_ids"], expected)
        self.assertEqual(out["labels"], [LABELS[i] for i in expected])
        self.assertAllClose(out["probabilities"], tf.nn.softmax(self.logits), atol=1e-5)


if __name__ == "__main__":
    tf.test.main()
