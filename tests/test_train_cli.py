"""End-to-end: the train and predict tools with flagfiles, as a user runs them.

Most runs call the tools' `main(argv)` in this process (fast); real processes
are kept where the process boundary is the point: the installed console script,
`--help`, a `--cpu_devices` count other than the test process's 2, and the
deterministic real-data seed runs (slow tier).
"""

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from cli_util import CONFIGS, REPO, error_lines, run_main, run_tool, tool_env
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import keras_mlp.models  # noqa: F401  (registers MLPScratch for load_model)
from keras_mlp import launch, predict, train
from keras_mlp.config import RunConfig
from keras_mlp.data import load_dataset, synthetic_arrays
from keras_mlp.idx import read_idx, write_idx
from keras_mlp.sources.find import FASHION_MNIST_LABELS

REAL_DATA_DIR = os.environ.get("KERAS_MLP_FASHION_MNIST_DIR")
QUICK = ("--dataset=synthetic", "--epochs=1", "--batch_size=64")


def metrics_of(model_dir):
    return json.loads((Path(model_dir) / "metrics.json").read_text())


def train_ok(test, *args):
    """Runs the train tool in-process and asserts it succeeded; returns the Result."""
    result = run_main(train.main, *args)
    test.assertEqual(result.returncode, 0, result.stderr)
    test.assertEqual(error_lines(result), [])
    return result


def write_ten_class_set(directory, compressed):
    """A small 10-class IDX set that is not Fashion-MNIST (8x9 images)."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    suffix = ".gz" if compressed else ""
    for split, count in (("train", 100), ("t10k", 40)):
        write_idx(
            directory / f"{split}-images-idx3-ubyte{suffix}",
            rng.integers(0, 256, (count, 8, 9), dtype=np.uint8),
        )
        write_idx(
            directory / f"{split}-labels-idx1-ubyte{suffix}",
            (np.arange(count) % 10).astype(np.uint8),
        )
    return directory


class TrainCliTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = Path(self.get_temp_dir())

    def test_seed_flagfiles_train_and_leave_every_artifact(self):
        for name in ("scratch", "concise"):
            model_dir = self.tmp / name
            # Later flags override the flagfile's: a quick run of the seed config.
            result = train_ok(
                self,
                f"--flagfile={CONFIGS / f'{name}.flags'}",
                "--dataset=synthetic",
                "--epochs=2",
                f"--model_dir={model_dir}",
            )
            self.assertRegex(result.stdout, r"final val_accuracy \d\.\d{4}; outputs in ")
            metrics = metrics_of(model_dir)
            config = metrics["config"]
            self.assertEqual(config["model"], name)
            self.assertEqual(
                (
                    config["hidden_units"],
                    config["activation"],
                    config["learning_rate"],
                    config["batch_size"],
                    config["optimizer"],
                    config["epochs"],
                    config["sigma"],
                ),
                ([256], "relu", 0.1, 256, "sgd", 2, 0.01),
            )
            for key in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds"):
                self.assertLen(metrics["history"][key], 2)
            final = metrics["final"]
            self.assertEqual((final["epochs"], final["stopped_early"]), (2, False))
            self.assertEqual(final["validation"], "test")
            self.assertEqual(final["num_validation_examples"], 500)
            for artifact in (
                "progress.png",
                "model.keras",
                "run_config.json",
                "export/saved_model.pb",
                "logs/train",
                "logs/validation",
                "checkpoints/checkpoint",
            ):
                self.assertTrue((model_dir / artifact).exists(), artifact)

    def test_uncompressed_idx_set_with_labels_txt(self):
        """Any IDX set trains, .gz or not; labels.txt names its classes in metrics.json."""
        data_dir = write_ten_class_set(self.tmp / "plain", compressed=False)
        self.assertEqual(list(data_dir.glob("*.gz")), [])
        names = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "Öl nine"]
        (data_dir / "labels.txt").write_text("\n".join(names) + "\n", encoding="utf-8")
        model_dir = self.tmp / "plain_run"
        train_ok(
            self,
            f"--data_dir={data_dir}",
            "--batch_size=20",
            "--epochs=1",
            "--validation_split=0.2",
            f"--model_dir={model_dir}",
        )
        metrics = metrics_of(model_dir)
        self.assertEqual(
            metrics["data"],
            {
                "name": "fashion_mnist",
                "source": str(data_dir),
                "input_shape": [8, 9],
                "num_classes": 10,
                "label_names": names,
                "num_train_examples": 80,
            },
        )
        self.assertEqual(metrics["final"]["validation"], "holdout")
        self.assertEqual(metrics["final"]["num_validation_examples"], 20)

    def test_foreign_ten_class_set_gets_neutral_names(self):
        """A 10-class set that is not Fashion-MNIST, without labels.txt: "0".."9"."""
        data_dir = write_ten_class_set(self.tmp / "foreign", compressed=True)
        model_dir = self.tmp / "foreign_run"
        train_ok(
            self,
            f"--data_dir={data_dir}",
            "--batch_size=20",
            "--epochs=1",
            f"--model_dir={model_dir}",
        )
        label_names = metrics_of(model_dir)["data"]["label_names"]
        self.assertEqual(label_names, ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"])
        self.assertNotEqual(label_names, list(FASHION_MNIST_LABELS))

    def test_mnist_sized_set_is_not_taken_for_fashion_mnist(self):
        """Fashion-MNIST's names need Fashion-MNIST's labels, not only its sizes (MNIST
        has the same 60000 + 10000 28x28 images)."""
        data_dir = self.tmp / "mnist_like"
        data_dir.mkdir()
        for split, count in (("train", 60000), ("t10k", 10000)):
            write_idx(data_dir / f"{split}-images-idx3-ubyte", np.zeros((count, 28, 28), np.uint8))
            labels = np.random.default_rng(count).permutation(np.arange(count) % 10)
            write_idx(data_dir / f"{split}-labels-idx1-ubyte", labels.astype(np.uint8))
        data = load_dataset("fashion_mnist", data_dir=data_dir)
        self.assertEqual(data.label_names, tuple("0123456789"))

    def test_fashion_mnist_labels_in_a_data_dir_keep_their_names(self):
        if not REAL_DATA_DIR:
            self.skipTest("set KERAS_MLP_FASHION_MNIST_DIR to the real Fashion-MNIST files")
        data_dir = self.tmp / "fashion_labels"
        data_dir.mkdir()
        for split in ("train", "t10k"):
            labels = read_idx(Path(REAL_DATA_DIR) / f"{split}-labels-idx1-ubyte.gz")
            write_idx(data_dir / f"{split}-labels-idx1-ubyte", labels)
            write_idx(
                data_dir / f"{split}-images-idx3-ubyte", np.zeros((len(labels), 2, 2), np.uint8)
            )
        data = load_dataset("fashion_mnist", data_dir=data_dir)
        self.assertEqual(data.label_names, FASHION_MNIST_LABELS)

    def test_mirrored_strategy_in_process(self):
        model_dir = self.tmp / "mirrored"
        result = train_ok(
            self,
            *QUICK,
            "--model=concise",
            "--strategy=mirrored",
            "--num_gpus=0",  # CPU devices, also on a GPU host
            "--cpu_devices=2",
            f"--model_dir={model_dir}",
        )
        self.assertIn(", 2 replica(s),", result.stdout)
        self.assertLen(metrics_of(model_dir)["history"]["loss"], 1)

    def test_default_model_dir_is_a_new_folder_under_runs(self):
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(self.tmp)
        train_ok(self, *QUICK)
        runs = list((self.tmp / "runs").iterdir())
        self.assertLen(runs, 1)
        self.assertRegex(runs[0].name, r"^scratch-\d{8}-\d{6}$")
        self.assertTrue((runs[0] / "metrics.json").exists())

    def _bfloat16_run(self, model):
        self.addCleanup(keras.mixed_precision.set_global_policy, "float32")
        model_dir = self.tmp / f"bfloat16_{model}"
        train_ok(
            self, *QUICK, f"--model={model}", "--dtype=mixed_bfloat16", f"--model_dir={model_dir}"
        )
        self.assertEqual(metrics_of(model_dir)["config"]["dtype"], "mixed_bfloat16")
        # Reloaded in a float32 world: the saved policy, not the global one, decides.
        keras.mixed_precision.set_global_policy("float32")
        reloaded = keras.models.load_model(model_dir / "model.keras")
        layers = [layer for layer in reloaded.layers if layer.weights]
        self.assertLen(layers, 2)  # hidden + output
        for layer in layers:
            self.assertEqual(
                (layer.dtype_policy.name, layer.compute_dtype),
                ("mixed_bfloat16", "bfloat16"),
                layer.name,
            )
            self.assertEqual({v.dtype for v in layer.weights}, {"float32"}, layer.name)

    def test_mixed_bfloat16_from_the_command_line_concise(self):
        self._bfloat16_run("concise")

    def test_mixed_bfloat16_from_the_command_line_scratch(self):
        self._bfloat16_run("scratch")


class ProcessBoundaryTest(tf.test.TestCase):
    """What only a real process shows."""

    def test_help_explains_every_setting(self):
        result = run_tool("train", "--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("Train an MLP on Fashion-MNIST", result.stdout)
        squeezed = "".join(result.stdout.split())  # absl wraps (and hyphen-breaks) help lines
        for field in dataclasses.fields(RunConfig):
            self.assertRegex(result.stdout, rf"(?m)^\s+--(\[no\])?{field.name}:", field.name)
            self.assertIn("".join(field.metadata["help"].split()), squeezed, field.name)

    def test_a_run_starts_quietly_with_its_own_lines(self):
        # TensorFlow's C++ start-up lines (CUDA probing, oneDNN) are hidden unless
        # TF_CPP_MIN_LOG_LEVEL asks for more; scripts/*.py start every tool that way.
        model_dir = Path(self.get_temp_dir()) / "quiet"
        env = {"TF_CPP_MIN_LOG_LEVEL": None}
        result = run_tool("train", *QUICK, f"--model_dir={model_dir}", env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stderr, "")
        self.assertTrue(result.stdout.startswith("scratch MLP 12x12 -> 256 -> 5 on synthetic"))
        shim = subprocess.run(
            [sys.executable, str(REPO / "scripts" / "sweep.py"), "--help"],
            capture_output=True,
            text=True,
            timeout=120,
            env=tool_env(env),
        )
        self.assertEqual((shim.returncode, shim.stderr), (0, ""))
        loud = run_tool("train", "--help", env={"TF_CPP_MIN_LOG_LEVEL": "0"})
        self.assertEqual(loud.returncode, 0)

    def test_other_tools_help(self):
        for main, flag_names in (
            (predict.main, ("model_dir", "top_k", "resize", "max_images")),
            (launch.main, ("workers", "timeout")),
        ):
            result = run_main(main, "--help")
            self.assertEqual(result.returncode, 0, result.stderr)
            for name in flag_names:
                self.assertRegex(result.stdout, rf"(?m)^\s+--(\[no\])?{name}:")

    def test_console_script_rejects_a_bad_flag(self):
        # pip puts console scripts beside the interpreter it installs for.
        script = shutil.which("keras-mlp-train", path=os.path.dirname(sys.executable))
        if script is None:
            self.skipTest("package not installed with its console script")
        result = subprocess.run(
            [script, "--model=nope"], capture_output=True, text=True, timeout=120, env=tool_env()
        )
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertEqual(
            error_lines(result),
            ["error: flag --model=nope: value should be one of <scratch|concise>"],
        )

    def test_mirrored_on_three_cpu_devices(self):
        """A device count other than the test process's 2 needs a fresh process."""
        model_dir = Path(self.get_temp_dir()) / "three"
        result = run_tool(
            "train",
            *QUICK,
            "--batch_size=600",  # 3 steps of 200 per replica
            "--hidden_units=16",
            "--model=concise",
            "--strategy=mirrored",
            "--num_gpus=0",
            "--cpu_devices=3",
            f"--model_dir={model_dir}",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(", 3 replica(s),", result.stdout)
        self.assertEqual(metrics_of(model_dir)["config"]["cpu_devices"], 3)
        self.assertLen(metrics_of(model_dir)["history"]["loss"], 1)


class TrainedRunTest(tf.test.TestCase):
    """One synthetic run with the TensorBoard and checkpoint flags, then the
    checks of what it wrote and of predict on its export."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = Path(tf.compat.v1.test.get_temp_dir()) / "trained_run"
        shutil.rmtree(cls.tmp, ignore_errors=True)
        cls.model_dir = cls.tmp / "run"
        # 2000 examples / 64 = 31 steps.
        result = run_main(
            train.main,
            f"--flagfile={CONFIGS / 'scratch.flags'}",
            *QUICK,
            "--log_every_steps=5",
            "--histogram_freq=1",
            "--image_summaries",
            "--checkpoint_every_steps=4",
            "--keep_checkpoints=2",
            f"--model_dir={cls.model_dir}",
        )
        assert result.returncode == 0, result.stderr
        cls.images, cls.labels = synthetic_arrays()[2:]

    def _events(self, name):
        events = EventAccumulator(str(self.model_dir / "logs" / name), size_guidance={"tensors": 0})
        events.Reload()
        return events

    def _tags(self, events, plugin):
        return {
            tag
            for tag in events.Tags()["tensors"]
            if events.SummaryMetadata(tag).plugin_data.plugin_name == plugin
        }

    def test_tensorboard_flags(self):
        train_events = self._events("train")
        batch_loss = train_events.Tensors("batch_loss")
        self.assertEqual([e.step for e in batch_loss], [5, 10, 15, 20, 25, 30])
        windows = [float(tf.make_ndarray(e.tensor_proto)) for e in batch_loss]
        # Each value is the mean over its 5 steps: with the epoch's mean loss over all 31
        # steps, what is left is step 31's own loss, positive and below the first window's.
        epoch_loss = metrics_of(self.model_dir)["history"]["loss"][0]
        last_step = 31 * epoch_loss - 5 * sum(windows)
        self.assertBetween(last_step, 0.0, windows[0])
        # Weight paths: `mlp_scratch/hidden1/W1`, ... (Keras numbers the model's name,
        # `mlp_scratch_3`, when this test process built others before it).
        histograms = self._tags(train_events, "histograms")
        prefixes = {tag.split("/")[0] for tag in histograms}
        self.assertLen(prefixes, 1)
        self.assertRegex(prefixes.pop(), r"^mlp_scratch(_\d+)?$")
        weights = {"hidden1/W1", "hidden1/b1", "output/W2", "output/b2"}
        self.assertEqual(
            {tag.split("/", 1)[1] for tag in histograms},
            weights | {f"{w}/gradient" for w in weights},
        )
        for tag in histograms:
            self.assertEqual([e.step for e in train_events.Tensors(tag)], [1])
        validation = self._events("validation")
        self.assertEqual(self._tags(validation, "images"), {"predictions", "confusion_matrix"})
        self.assertEqual([e.step for e in validation.Tensors("confusion_matrix")], [1])

    def test_keep_checkpoints(self):
        """Saved every 4 steps and at the epoch end (step 31); the newest 2 are kept."""
        directory = self.model_dir / "checkpoints"
        self.assertEqual(
            sorted(p.name for p in directory.glob("*.index")), ["ckpt-28.index", "ckpt-31.index"]
        )
        state = tf.train.get_checkpoint_state(str(directory))
        self.assertEqual(
            [Path(p).name for p in state.all_model_checkpoint_paths], ["ckpt-28", "ckpt-31"]
        )

    def _predict(self, *args):
        result = run_main(predict.main, f"--model_dir={self.model_dir}", *args)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.strip().splitlines()

    def test_predict_max_images(self):
        idx = self.tmp / "ten-images-idx3-ubyte.gz"
        write_idx(idx, self.images[:10])
        lines = self._predict("--max_images=3", "--top_k=2", idx)
        self.assertLen(lines, 3)
        for i, line in enumerate(lines):
            top = re.fullmatch(
                rf"ten-images-idx3-ubyte\.gz\[{i}\]: (\d) [01]\.\d{{3}}, \d [01]\.\d{{3}}", line
            )
            self.assertIsNotNone(top, line)
            self.assertEqual(top[1], str(self.labels[i]))  # the run is near 100% accurate

    def test_predict_resize_gives_the_original_images_label(self):
        files = []
        for i in range(4):
            original = Image.fromarray(self.images[i])  # 12x12 grayscale: the model's input
            original.save(self.tmp / f"original{i}.png")
            original.convert("RGB").resize((30, 30), Image.BICUBIC).save(self.tmp / f"big{i}.png")
            files += [self.tmp / f"original{i}.png", self.tmp / f"big{i}.png"]
        lines = self._predict("--resize", "--top_k=1", *files)
        top = dict(re.fullmatch(r"(\S+): (\S+) [01]\.\d{3}", line).groups() for line in lines)
        for i in range(4):
            self.assertEqual(top[f"big{i}.png"], top[f"original{i}.png"])
            self.assertEqual(top[f"original{i}.png"], str(self.labels[i]))

    def test_predict_scales_16_bit_and_float_grayscale_to_8_bits(self):
        files = []
        for i in range(3):
            pixels = self.images[i]
            Image.fromarray(pixels).save(self.tmp / f"eight{i}.png")
            wide = Image.fromarray(pixels.astype(np.uint16) * 257)  # 16-bit grayscale, same picture
            self.assertEqual(wide.mode, "I;16")
            wide.save(self.tmp / f"sixteen{i}.png")
            Image.fromarray(pixels.astype(np.float32) / 255.0, mode="F").save(
                self.tmp / f"float{i}.tiff"
            )
            files += [
                self.tmp / f"eight{i}.png",
                self.tmp / f"sixteen{i}.png",
                self.tmp / f"float{i}.tiff",
            ]
        # Without --resize: a grayscale picture of the model's size needs no conversion flag.
        lines = self._predict("--top_k=2", *files)
        scores = dict(line.split(": ", 1) for line in lines)
        for i in range(3):
            self.assertEqual(scores[f"sixteen{i}.png"], scores[f"eight{i}.png"])
            self.assertEqual(scores[f"float{i}.tiff"], scores[f"eight{i}.png"])


# The chapter's bar is 0.85 after 10 epochs. The check is on the mean final val_accuracy
# of the first three seeds (fixed in advance, not picked), so that one seed's luck neither
# passes nor fails it. Deterministic runs on the 2-core test machine (2026-12-04) gave,
# for seeds 0-5: scratch 0.8515, 0.8536, 0.8524, 0.8542, 0.8543, 0.8530 (mean of 0-2:
# 0.8525; seed-to-seed std 0.0011, so that mean's std is about 0.0006 and the bar is about
# 4 of them below it); concise 0.8608, 0.8626, 0.8622, 0.8635, 0.8630, 0.8594 (mean of 0-2:
# 0.8619). Results differ across machines and thread counts (docs/design.md,
# "Determinism"); on another machine expect the same range, not the same digits. A run
# takes 12-22 s on the shared 2-core machine (half of it the process start): the six,
# 75-135 s, three times the single seed's two runs.
REAL_DATA_SEEDS = (0, 1, 2)
CHAPTER_BAR = 0.85


@pytest.mark.slow
class RealDataSeedRunTest(tf.test.TestCase):
    def _final_accuracy(self, name, seed):
        """The final val_accuracy of the chapter's run of model `name` with `seed`."""
        model_dir = Path(self.get_temp_dir()) / f"real_{name}_{seed}"
        result = run_tool(
            "train",
            f"--flagfile={CONFIGS / f'{name}.flags'}",
            f"--data_dir={REAL_DATA_DIR}",
            f"--model_dir={model_dir}",
            f"--seed={seed}",
            "--deterministic",  # the same digits on every rerun on one machine
            timeout=600,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        metrics = metrics_of(model_dir)
        history = metrics["history"]
        print(f"{name} seed {seed}: val_accuracy by epoch {history['val_accuracy']}")
        self.assertLen(history["val_accuracy"], 10)
        self.assertEqual(metrics["data"]["label_names"], list(FASHION_MNIST_LABELS))
        self.assertLess(history["loss"][-1], 0.75 * history["loss"][0])
        return history["val_accuracy"][-1]

    def test_seed_runs_reach_085_on_real_fashion_mnist_on_average(self):
        if not REAL_DATA_DIR:
            self.skipTest("set KERAS_MLP_FASHION_MNIST_DIR to the real Fashion-MNIST files")
        for name in ("scratch", "concise"):
            accuracies = [self._final_accuracy(name, seed) for seed in REAL_DATA_SEEDS]
            mean = float(np.mean(accuracies))
            print(f"{name}: mean final val_accuracy {mean:.4f} over seeds {REAL_DATA_SEEDS}")
            self.assertGreaterEqual(mean, CHAPTER_BAR, f"{name}: {accuracies}")


if __name__ == "__main__":
    tf.test.main()
