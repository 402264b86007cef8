"""Nothing lost: kill -9 and resume, SIGTERM, the NaN guard, determinism, and the
exported model served by predict.py."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from cli_util import REPO, TRAIN, error_lines, run_train
from PIL import Image
from test_training import scalars

from keras_mlp.data import load_dataset, write_idx

PREDICT = REPO / "scripts" / "predict.py"


def _weights(model_dir):
    return keras.models.load_model(Path(model_dir) / "model.keras").get_weights()


def _start(*args):
    return subprocess.Popen(
        [sys.executable, str(TRAIN), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def _wait_for_line(process, prefix):
    for line in process.stdout:
        if line.startswith(prefix):
            return line
    raise AssertionError(f"the run ended before printing {prefix!r}")


class ResumeTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = Path(self.get_temp_dir())

    def _write_data(self):
        """A set large enough that an epoch lasts long enough to be killed inside."""
        rng = np.random.default_rng(0)
        data_dir = self.tmp / "data"
        data_dir.mkdir(exist_ok=True)
        for split, n in (("train", 24000), ("t10k", 2000)):
            labels = rng.integers(0, 4, n).astype(np.uint8)
            images = (rng.integers(0, 128, (n, 14, 14)) + 32 * labels[:, None, None]).astype(
                np.uint8
            )
            write_idx(data_dir / f"{split}-images-idx3-ubyte.gz", images)
            write_idx(data_dir / f"{split}-labels-idx1-ubyte.gz", labels)
        return data_dir

    def test_killed_run_resumes_to_the_same_weights_bitwise(self):
        args = [
            f"--data_dir={self._write_data()}",
            "--hidden_units=32",
            "--batch_size=32",
            "--epochs=5",
            "--deterministic",
            "--checkpoint_every_steps=150",
            "--steps_per_execution=10",
        ]
        full = run_train(*args, f"--model_dir={self.tmp / 'full'}")
        self.assertEqual(full.returncode, 0, full.stderr)

        killed_dir = self.tmp / "killed"
        process = _start(*args, f"--model_dir={killed_dir}")
        _wait_for_line(process, "epoch 2/5")
        time.sleep(0.3)  # into epoch 3
        process.kill()
        process.communicate(timeout=30)
        self.assertFalse((killed_dir / "metrics.json").exists())

        resumed = run_train(*args, f"--model_dir={killed_dir}")
        self.assertEqual(resumed.returncode, 0, resumed.stderr)
        self.assertRegex(resumed.stdout, r"resuming from .*ckpt-\d+: epoch [3-5], step \d+ of 750")
        for a, b in zip(_weights(self.tmp / "full"), _weights(killed_dir), strict=True):
            self.assertAllEqual(a, b)  # bitwise
        history = json.loads((killed_dir / "metrics.json").read_text())["history"]
        reference = json.loads((self.tmp / "full" / "metrics.json").read_text())["history"]
        self.assertAllClose(history["loss"], reference["loss"], atol=1e-6)
        self.assertEqual(history["val_accuracy"], reference["val_accuracy"])
        for log in ("train", "validation"):  # every epoch logged once, none twice
            self.assertEqual(
                [s for s, _ in scalars(killed_dir / "logs" / log)["epoch_loss"]], [1, 2, 3, 4, 5]
            )

    def test_two_deterministic_runs_are_identical(self):
        args = ["--dataset=synthetic", "--epochs=3", "--batch_size=32", "--deterministic"]
        for name in ("a", "b"):
            result = run_train(*args, f"--model_dir={self.tmp / name}")
            self.assertEqual(result.returncode, 0, result.stderr)
        for a, b in zip(_weights(self.tmp / "a"), _weights(self.tmp / "b"), strict=True):
            self.assertAllEqual(a, b)
        histories = [
            json.loads((self.tmp / n / "metrics.json").read_text())["history"] for n in "ab"
        ]
        self.assertEqual(histories[0]["loss"], histories[1]["loss"])

    def test_sigterm_saves_a_checkpoint_and_the_rerun_finishes(self):
        model_dir = self.tmp / "stopped"
        args = [
            "--dataset=synthetic",
            "--epochs=60",
            "--batch_size=32",
            "--hidden_units=16",
            "--steps_per_execution=5",
            f"--model_dir={model_dir}",
        ]
        process = _start(*args)
        _wait_for_line(process, "epoch 2/60")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        self.assertEqual(process.returncode, 128 + signal.SIGTERM)
        self.assertNotIn("Traceback", stderr)
        message = [line for line in stderr.splitlines() if line.startswith("error:")]
        self.assertLen(message, 1)
        self.assertRegex(
            message[0],
            r"stopped by SIGTERM at step (\d+); checkpoint saved as "
            r".*ckpt-\1; rerun the same command to resume",
        )
        self.assertFalse((model_dir / "metrics.json").exists())
        step = int(re.search(r"at step (\d+)", message[0])[1])
        resumed = run_train(*args)
        self.assertEqual(resumed.returncode, 0, resumed.stderr)
        self.assertIn(f"step {step % 62} of 62", resumed.stdout)
        history = json.loads((model_dir / "metrics.json").read_text())["history"]
        self.assertLen(history["loss"], 60)

    def test_nan_guard_stops_naming_the_steps(self):
        model_dir = self.tmp / "nan"
        result = run_train(
            "--dataset=synthetic",
            "--epochs=3",
            "--batch_size=32",
            "--learning_rate=1e4",
            "--activation=linear",  # ReLU nets die at this rate with finite (huge) losses
            "--steps_per_execution=1",
            f"--model_dir={model_dir}",
        )
        self.assertEqual(result.returncode, 1)
        self.assertNotIn("Traceback", result.stderr)
        self.assertRegex(
            error_lines(result)[0],
            r"training loss became (nan|inf) in steps (\d+)-\2 "
            r"\(epoch 1\); stopped without saving; the last good "
            r"checkpoint is none; try a lower --learning_rate",
        )
        self.assertFalse((model_dir / "checkpoints").exists())
        self.assertFalse((model_dir / "metrics.json").exists())


class ExportAndPredictTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = Path(tf.compat.v1.test.get_temp_dir()) / "predict"
        cls.model_dir = cls.tmp / "run"
        result = run_train(
            "--dataset=synthetic", "--epochs=2", "--batch_size=32", f"--model_dir={cls.model_dir}"
        )
        assert result.returncode == 0, result.stderr
        cls.data = load_dataset("synthetic")

    def predict(self, *args):
        return run_train(f"--model_dir={self.model_dir}", *args, script=PREDICT)

    def test_png_and_idx_predictions_match_the_model(self):
        images = self.data.val_images[:3]
        Image.fromarray(images[0]).save(self.tmp / "first.png")
        write_idx(self.tmp / "three-images-idx3-ubyte.gz", images)
        result = self.predict(
            "--top_k=2", self.tmp / "first.png", self.tmp / "three-images-idx3-ubyte.gz"
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.strip().splitlines()
        self.assertLen(lines, 4)
        expected = np.argmax(
            keras.models.load_model(self.model_dir / "model.keras")(images / 255.0), axis=-1
        )
        self.assertTrue(lines[0].startswith(f"first.png: {self.data.label_names[expected[0]]} "))
        for i, line in enumerate(lines[1:]):
            top = re.match(
                rf"three-images-idx3-ubyte.gz\[{i}\]: (\S+) ([0-9.]+), (\S+) ([0-9.]+)$", line
            )
            self.assertIsNotNone(top, line)
            self.assertEqual(top[1], self.data.label_names[expected[i]])
            self.assertGreaterEqual(float(top[2]), float(top[4]))

    def test_resize_converts_other_sizes_and_modes(self):
        Image.fromarray(self.data.val_images[0]).convert("RGB").resize((30, 30)).save(
            self.tmp / "big.png"
        )
        result = self.predict("--resize", self.tmp / "big.png")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, r"^big.png: \S+ [0-9.]+")


if __name__ == "__main__":
    tf.test.main()
