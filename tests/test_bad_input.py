"""Bad input to scripts/train.py: one clear error line, non-zero exit, no traceback,
and nothing created or changed in the model_dir."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from cli_util import LAUNCH, REPO, error_lines, run_train
from PIL import Image
from test_data import write_idx_set

from keras_mlp.data import load_dataset, write_idx

PREDICT = REPO / "scripts" / "predict.py"

QUICK = ("--dataset=synthetic", "--epochs=1", "--batch_size=64")


def _snapshot(directory):
    """{relative path: sha256} of every file below `directory`."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(directory).rglob("*"))
        if p.is_file()
    }


class BadInputTest(tf.test.TestCase, parameterized.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = Path(self.get_temp_dir())

    def assert_rejected(self, args, message, model_dir):
        result = run_train(*args, f"--model_dir={model_dir}")
        self.assertNotEqual(result.returncode, 0, result.stdout)
        self.assertNotIn("Traceback", result.stderr)
        errors = error_lines(result)
        self.assertLen(errors, 1, result.stderr)
        self.assertRegex(errors[0], message)
        self.assertEqual(result.stderr.strip().splitlines()[-1], errors[0])

    @parameterized.named_parameters(
        (
            "unknown_model",
            ["--model=big"],
            r"--model=big: value should be one of <scratch\|concise>",
        ),
        ("unknown_strategy", ["--strategy=tpu"], "--strategy=tpu: value should be one of"),
        ("unknown_optimizer", ["--optimizer=sgdd"], "--optimizer=sgdd: value should be one of"),
        (
            "unknown_activation",
            ["--activation=swoosh"],
            "--activation=swoosh: value should be one of",
        ),
        ("unknown_dataset", ["--dataset=cifar"], "--dataset=cifar: value should be one of"),
        (
            "zero_width",
            ["--hidden_units=0"],
            "--hidden_units must be a positive integer. Received: 0",
        ),
        (
            "text_width",
            ["--hidden_units=12,abc"],
            "comma-separated positive integers. Received: '12,abc'",
        ),
        ("zero_batch", ["--batch_size=0"], "--batch_size must be a positive integer. Received: 0"),
        ("negative_epochs", ["--epochs=-1"], "--epochs must be a positive integer"),
        (
            "negative_lr",
            ["--learning_rate=-0.1"],
            "--learning_rate must be a positive finite number",
        ),
        (
            "nan_lr",
            ["--learning_rate=nan"],
            "--learning_rate must be a positive finite number. Received: nan",
        ),
        (
            "inf_lr",
            ["--learning_rate=inf"],
            "--learning_rate must be a positive finite number. Received: inf",
        ),
        (
            "text_lr",
            ["--learning_rate=fast"],
            "--learning_rate=fast: could not convert string to float",
        ),
        ("zero_sigma", ["--sigma=0"], "--sigma must be a positive finite number"),
        ("unknown_dtype", ["--dtype=float8"], "--dtype=float8: value should be one of"),
        ("bad_split", ["--validation_split=1.5"], r"--validation_split must be in \[0, 1\)"),
        (
            "zero_cpus",
            ["--strategy=mirrored", "--cpu_devices=0"],
            "--cpu_devices must be a positive integer",
        ),
        ("too_many_gpus", ["--num_gpus=8"], "--num_gpus=8 but this machine has"),
        (
            "odd_batch_mirrored",
            ["--strategy=mirrored", "--cpu_devices=2", "--batch_size=63"],
            "--batch_size=63 must be divisible by the number of replicas",
        ),
        ("batch_over_data", ["--batch_size=100000"], "larger than the training set"),
        (
            "missing_flagfile",
            ["--flagfile=configs/nope.flags"],
            "^error: Unable to open flagfile.*nope.flags",
        ),
        ("unknown_flag", ["--hidden_unit=3"], "Unknown command line flag 'hidden_unit'"),
        ("positional_argument", ["train"], "unexpected arguments 'train'"),
        (
            "missing_data_dir",
            ["--dataset=fashion_mnist", "--data_dir=/no/such/dir"],
            "/no/such/dir does not exist",
        ),
    )
    def test_rejected_without_touching_model_dir(self, args, message):
        model_dir = self.tmp / "never_created"
        self.assert_rejected([*QUICK, *args], message, model_dir)
        self.assertFalse(model_dir.exists())

    def test_flagfile_with_unknown_flag(self):
        flagfile = self.tmp / "bad.flags"
        flagfile.write_text("--model=scratch\n--bogus=1\n")
        self.assert_rejected(
            [f"--flagfile={flagfile}"],
            "Unknown command line flag 'bogus'",
            self.tmp / "never_created",
        )

    def test_corrupt_and_mismatched_idx_files(self):
        corrupt = write_idx_set(self.tmp / "corrupt")
        raw = (corrupt / "train-images-idx3-ubyte.gz").read_bytes()
        (corrupt / "train-images-idx3-ubyte.gz").write_bytes(raw[:-20])
        self.assert_rejected(
            [*QUICK, "--dataset=fashion_mnist", f"--data_dir={corrupt}"],
            "train-images-idx3-ubyte.gz: truncated or corrupt gzip",
            self.tmp / "never_created",
        )
        mismatched = write_idx_set(self.tmp / "mismatched")
        write_idx(mismatched / "t10k-labels-idx1-ubyte.gz", np.zeros(7, np.uint8))
        self.assert_rejected(
            [*QUICK, "--dataset=fashion_mnist", f"--data_dir={mismatched}"],
            "holds 20 images but .*t10k-labels-idx1-ubyte.gz holds 7 labels",
            self.tmp / "never_created",
        )
        self.assertFalse((self.tmp / "never_created").exists())

    def test_earlier_run_is_never_overwritten(self):
        model_dir = self.tmp / "earlier"
        first = run_train(*QUICK, f"--model_dir={model_dir}")
        self.assertEqual(first.returncode, 0, first.stderr)
        before = _snapshot(model_dir)
        self.assertIn("metrics.json", before)
        self.assert_rejected(
            [*QUICK, "--model=concise", "--learning_rate=0.5"],
            r"holds a run with other settings \(learning_rate 0.1 there, 0.5 now; "
            r"model 'scratch' there, 'concise' now\)",
            model_dir,
        )
        self.assertEqual(_snapshot(model_dir), before)
        # The same command again: reported complete, nothing retrained or rewritten.
        again = run_train(*QUICK, f"--model_dir={model_dir}")
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn("already complete", again.stdout)
        self.assertEqual(_snapshot(model_dir), before)

    def test_foreign_files_in_model_dir_are_not_touched(self):
        model_dir = self.tmp / "foreign"
        (model_dir / "logs").mkdir(parents=True)
        (model_dir / "logs" / "mine.txt").write_text("someone else's")
        before = _snapshot(model_dir)
        self.assert_rejected(QUICK, "holds logs but no run_config.json", model_dir)
        self.assertEqual(_snapshot(model_dir), before)

    def test_unwritable_model_dir(self):
        blocker = self.tmp / "a_file"
        blocker.write_text("not a directory")
        self.assert_rejected(QUICK, "is not writable", blocker / "run")
        self.assertEqual(blocker.read_text(), "not a directory")


class CheckpointAndPredictBadInputTest(tf.test.TestCase, parameterized.TestCase):
    """Damaged checkpoints, and bad input to predict.py and the launcher."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = Path(tf.compat.v1.test.get_temp_dir()) / "bad_input_runs"
        cls.run_dir = cls.tmp / "run"
        result = run_train(*QUICK, f"--model_dir={cls.run_dir}")
        assert result.returncode == 0, result.stderr

    def assert_one_error(self, result, message):
        self.assertNotEqual(result.returncode, 0)
        self.assertNotIn("Traceback", result.stderr)
        self.assertLen(error_lines(result), 1, result.stderr)
        self.assertRegex(error_lines(result)[0], message)

    def _unfinished_copy(self, name):
        """The run as a kill before its end would leave it: no metrics.json yet."""
        copy = self.tmp / name
        shutil.copytree(self.run_dir, copy)
        (copy / "metrics.json").unlink()
        return copy

    def test_damaged_checkpoint_state_is_an_error_not_a_fresh_start(self):
        model_dir = self._unfinished_copy("damaged_state")
        (model_dir / "checkpoints" / "checkpoint").write_text("garbage {")
        before = _snapshot(model_dir)
        self.assert_one_error(
            run_train(*QUICK, f"--model_dir={model_dir}"),
            "checkpoints/checkpoint names no usable checkpoint .* --overwrite",
        )
        self.assertEqual(_snapshot(model_dir), before)

    def test_corrupt_checkpoint_data_is_an_error(self):
        model_dir = self._unfinished_copy("corrupt_data")
        for shard in (model_dir / "checkpoints").glob("*.data-*"):
            shard.write_bytes(shard.read_bytes()[:100])
        before = _snapshot(model_dir)
        self.assert_one_error(
            run_train(*QUICK, f"--model_dir={model_dir}"),
            r"cannot restore .*ckpt-\d+ .*--overwrite",
        )
        self.assertEqual(_snapshot(model_dir), before)

    def test_overwrite_replaces_a_run(self):
        model_dir = self.tmp / "replaced"
        shutil.copytree(self.run_dir, model_dir)
        result = run_train(*QUICK, "--model=concise", "--overwrite", f"--model_dir={model_dir}")
        self.assertEqual(result.returncode, 0, result.stderr)
        config = json.loads((model_dir / "metrics.json").read_text())["config"]
        self.assertEqual(config["model"], "concise")

    @parameterized.named_parameters(
        ("no_model_dir", [], "--model_dir is required"),
        ("no_files", ["MODEL_DIR"], "give at least one image or IDX file"),
        ("missing_file", ["MODEL_DIR", "nope.png"], "nope.png: no such file"),
        ("not_an_image", ["MODEL_DIR", "TEXT"], "not an image file PIL can read, nor an IDX file"),
        (
            "wrong_size",
            ["MODEL_DIR", "BIG"],
            "image is 30x30, the model takes 12x12; pass --resize",
        ),
        ("color", ["MODEL_DIR", "RGB"], "image mode RGB is not grayscale .*--resize"),
        ("run_without_export", ["EMPTY_DIR", "SMALL"], "holds no exported model"),
        (
            "bad_top_k",
            ["MODEL_DIR", "--top_k=0", "SMALL"],
            "--top_k and --max_images must be positive",
        ),
        ("corrupt_idx", ["MODEL_DIR", "CORRUPT_IDX"], "truncated or corrupt gzip"),
    )
    def test_predict_rejects(self, args, message):
        files = {
            "MODEL_DIR": f"--model_dir={self.run_dir}",
            "EMPTY_DIR": f"--model_dir={self.tmp}",
            "TEXT": self.tmp / "notes.png",
            "BIG": self.tmp / "big.png",
            "RGB": self.tmp / "rgb.png",
            "SMALL": self.tmp / "small.png",
            "CORRUPT_IDX": self.tmp / "bad-images-idx3-ubyte.gz",
        }
        image = load_dataset("synthetic").val_images[0]
        (self.tmp / "notes.png").write_text("not a picture")
        Image.fromarray(image).resize((30, 30)).save(self.tmp / "big.png")
        Image.fromarray(image).convert("RGB").save(self.tmp / "rgb.png")
        Image.fromarray(image).save(self.tmp / "small.png")
        write_idx(self.tmp / "bad-images-idx3-ubyte.gz", np.zeros((50, 12, 12), np.uint8))
        raw = (self.tmp / "bad-images-idx3-ubyte.gz").read_bytes()
        (self.tmp / "bad-images-idx3-ubyte.gz").write_bytes(raw[:-10])
        before = _snapshot(self.run_dir)
        result = run_train(*[files.get(a, a) for a in args], script=PREDICT)
        self.assert_one_error(result, message)
        self.assertEqual(_snapshot(self.run_dir), before)

    @parameterized.named_parameters(
        ("zero_workers", ["--workers=0"], "--workers must be a positive integer"),
        ("negative_timeout", ["--timeout=-5"], "--timeout must be a positive number"),
        ("unknown_flag", ["--nodes=2"], "Unknown command line flag 'nodes'"),
    )
    def test_launcher_rejects(self, args, message):
        result = run_train(*args, "--", *QUICK, f"--model_dir={self.tmp / 'never'}", script=LAUNCH)
        self.assert_one_error(result, message)
        self.assertFalse((self.tmp / "never").exists())


if __name__ == "__main__":
    tf.test.main()
