"""The bad-input matrix: every bad input to the tools, in one place.

Each case is rejected with exit status 2, exactly one `error: ...` line on stderr
(its text checked whole), no traceback, and nothing created or changed in the
model_dir. The tools run in-process through their `main(argv)` (no TensorFlow
start-up per case); `test_train_cli.py` runs the real processes.
"""

import contextlib
import gzip
import hashlib
import json
import os
import pwd
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl.testing import parameterized
from cli_util import CONFIGS, error_lines, run_main, tool_env
from PIL import Image
from test_data import write_idx_set

from keras_mlp import launch, predict, train
from keras_mlp.data import synthetic_arrays
from keras_mlp.idx import write_idx

QUICK = ("--dataset=synthetic", "--epochs=1", "--batch_size=64")
BAD_INPUT = 2

_shared = {}


def trained_run():
    """One finished QUICK run (with its export), trained once for this module; tests
    that change a model_dir work on copies of it."""
    if "run" not in _shared:
        run = Path(tf.compat.v1.test.get_temp_dir()) / "bad_input_shared" / "run"
        shutil.rmtree(run, ignore_errors=True)
        result = run_main(train.main, *QUICK, f"--model_dir={run}")
        assert result.returncode == 0, result.stderr
        _shared["run"] = run
    return _shared["run"]


def snapshot(directory):
    """{relative path: sha256} of every file below `directory`."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(directory).rglob("*"))
        if p.is_file()
    }


@contextlib.contextmanager
def unprivileged():
    """Runs the body as user `nobody` when the tests run as root (root reads any file),
    switching back after; as any other user, as that user."""
    if os.geteuid() != 0:
        yield
        return
    os.seteuid(pwd.getpwnam("nobody").pw_uid)
    try:
        yield
    finally:
        os.seteuid(0)


class RejectsMixin:
    def assert_rejected(self, result, line):
        """Exit status 2 and `line` (a regex) as the one, whole, error line, last on stderr."""
        self.assertEqual(result.returncode, BAD_INPUT, result.stderr + result.stdout)
        self.assertNotIn("Traceback", result.stderr)
        errors = error_lines(result)
        self.assertLen(errors, 1, result.stderr)
        self.assertRegex(errors[0], f"^error: {line}$")
        self.assertEqual(result.stderr.strip().splitlines()[-1], errors[0])


ONE_OF = "value should be one of"


class TrainFlagsTest(tf.test.TestCase, parameterized.TestCase, RejectsMixin):
    """Bad flags, flagfiles and settings of the train tool."""

    def setUp(self):
        super().setUp()
        self.tmp = Path(self.get_temp_dir())
        self.model_dir = self.tmp / "never_created"
        shutil.rmtree(self.model_dir, ignore_errors=True)

    def assert_train_rejects(self, args, line):
        self.assert_rejected(run_main(train.main, *args, f"--model_dir={self.model_dir}"), line)
        self.assertFalse(self.model_dir.exists())

    @parameterized.named_parameters(
        # Names that are not known.
        ("unknown_model", ["--model=big"], rf"flag --model=big: {ONE_OF} <scratch\|concise>"),
        ("unknown_strategy", ["--strategy=tpu"], rf"flag --strategy=tpu: {ONE_OF} <default\|.*>"),
        ("unknown_optimizer", ["--optimizer=sgdd"], rf"flag --optimizer=sgdd: {ONE_OF} <sgd\|.*>"),
        ("unknown_activation", ["--activation=swoosh"], rf"flag --activation=swoosh: {ONE_OF} .*"),
        ("unknown_initializer", ["--initializer=zeros"], rf"flag --initializer=zeros: {ONE_OF} .*"),
        ("unknown_dataset", ["--dataset=cifar"], rf"flag --dataset=cifar: {ONE_OF} .*"),
        ("unknown_dtype", ["--dtype=float8"], rf"flag --dtype=float8: {ONE_OF} <float32\|.*>"),
        # Sizes and numbers.
        ("zero_width", ["--hidden_units=0"], "--hidden_units=0 must be a positive integer"),
        (
            "negative_width",
            ["--hidden_units=64,-3"],
            "--hidden_units=-3 must be a positive integer",
        ),
        (
            "text_width",
            ["--hidden_units=12,abc"],
            "--hidden_units='12,abc' must be comma-separated integers",
        ),
        ("no_width", ["--hidden_units="], r"--hidden_units=\(\) needs at least one width"),
        ("zero_batch", ["--batch_size=0"], "--batch_size=0 must be a positive integer"),
        ("negative_epochs", ["--epochs=-1"], "--epochs=-1 must be a positive integer"),
        ("text_epochs", ["--epochs=two"], "flag --epochs=two: invalid literal for int.*'two'"),
        (
            "negative_lr",
            ["--learning_rate=-0.1"],
            "--learning_rate=-0.1 must be a positive finite number",
        ),
        ("zero_lr", ["--learning_rate=0"], "--learning_rate=0.0 must be a positive finite number"),
        ("nan_lr", ["--learning_rate=nan"], "--learning_rate=nan must be a positive finite number"),
        ("inf_lr", ["--learning_rate=inf"], "--learning_rate=inf must be a positive finite number"),
        (
            "text_lr",
            ["--learning_rate=fast"],
            "flag --learning_rate=fast: could not convert string to float: 'fast'",
        ),
        ("zero_sigma", ["--sigma=0"], "--sigma=0.0 must be a positive finite number"),
        ("nan_sigma", ["--sigma=nan"], "--sigma=nan must be a positive finite number"),
        ("negative_seed", ["--seed=-1"], "--seed=-1 must be an integer in 0\\.\\.4294967295"),
        (
            "seed_over_32_bits",
            ["--seed=4294967296"],
            "--seed=4294967296 must be an integer in 0\\.\\.4294967295",
        ),
        ("text_seed", ["--seed=abc"], "flag --seed=abc: invalid literal for int.*'abc'"),
        (
            "negative_patience",
            ["--early_stopping_patience=-1"],
            r"--early_stopping_patience=-1 must be 0 \(off\) or a positive integer",
        ),
        (
            "negative_divergence_factor",
            ["--divergence_factor=-1"],
            r"--divergence_factor=-1.0 must be 0 \(off\) or a positive finite number",
        ),
        (
            "infinite_divergence_factor",  # would turn the guard off while seeming to keep it
            ["--divergence_factor=inf"],
            r"--divergence_factor=inf must be 0 \(off\) or a positive finite number",
        ),
        (
            "split_over_one",
            ["--validation_split=1.5"],
            r"--validation_split=1.5 must be in \[0, 1\)",
        ),
        (
            "negative_split",
            ["--validation_split=-0.1"],
            r"--validation_split=-0.1 must be in \[0, 1\)",
        ),
        (
            "split_holds_out_nothing",
            ["--validation_split=0.0001"],
            "--validation_split=0.0001 holds out 0 of 2000 examples; both parts must be non-empty",
        ),
        (
            "zero_steps_per_execution",
            ["--steps_per_execution=0"],
            "--steps_per_execution=0 must be a positive integer",
        ),
        (
            "zero_keep_checkpoints",
            ["--keep_checkpoints=0"],
            "--keep_checkpoints=0 must be a positive integer",
        ),
        (
            "negative_checkpoint_every",
            ["--checkpoint_every_steps=-1"],
            r"--checkpoint_every_steps=-1 must be 0 \(off\) or a positive integer",
        ),
        (
            "negative_log_every",
            ["--log_every_steps=-2"],
            r"--log_every_steps=-2 must be 0 \(off\) or a positive integer",
        ),
        (
            "negative_histogram_freq",
            ["--histogram_freq=-1"],
            r"--histogram_freq=-1 must be 0 \(off\) or a positive integer",
        ),
        (
            "one_profile_step",
            ["--profile_steps=5"],
            "--profile_steps=5 must be FIRST,LAST with 1 <= FIRST <= LAST",
        ),
        (
            "reversed_profile_steps",
            ["--profile_steps=3,2"],
            "--profile_steps=3,2 must be FIRST,LAST with 1 <= FIRST <= LAST",
        ),
        (
            "batch_over_data",
            ["--batch_size=100000"],
            r"--batch_size=100000 is larger than the training set \(2000 examples\)",
        ),
        # Devices and clusters (CPU devices named as such: the same on a GPU host).
        (
            "zero_cpus",
            ["--strategy=mirrored", "--num_gpus=0", "--cpu_devices=0"],
            "--cpu_devices=0 must be a positive integer",
        ),
        (
            "model_too_big_for_memory",
            ["--hidden_units=2147483648"],
            r"--hidden_units=2147483648 makes 322,122,547,205 parameters: training them with "
            r"sgd needs about 2,400.0 GiB, and this machine has [\d,.]+ GiB",
        ),
        (
            "too_many_gpus",
            ["--num_gpus=1000"],
            r"--num_gpus=1000 but this machine has \d+ GPU\(s\)",
        ),
        (
            "odd_batch_mirrored",
            ["--strategy=mirrored", "--num_gpus=0", "--cpu_devices=2", "--batch_size=63"],
            r"--batch_size=63 must be divisible by the number of replicas \(2\)",
        ),
        (
            "cluster_without_hosts",
            ["--strategy=multi_worker_mirrored"],
            "--strategy='multi_worker_mirrored' needs TF_CONFIG or --worker_hosts=host:port,...",
        ),
        (
            "cluster_without_task_index",
            ["--strategy=multi_worker_mirrored", "--worker_hosts=localhost:1,localhost:2"],
            r"--worker_hosts=localhost:1,localhost:2 \(2 hosts: 0..1\) needs --task_index=N, .*",
        ),
        (
            "task_index_outside_cluster",
            [
                "--strategy=multi_worker_mirrored",
                "--worker_hosts=localhost:1,localhost:2",
                "--task_index=2",
            ],
            r"--task_index=2 is outside --worker_hosts=localhost:1,localhost:2 \(2 hosts: 0..1\)",
        ),
        (
            "worker_address_without_port",
            ["--strategy=multi_worker_mirrored", "--worker_hosts=nohost", "--task_index=0"],
            "worker address 'nohost' is not host:port",
        ),
        # The command line itself.
        (
            "unknown_flag",
            ["--hidden_unit=3"],
            "Unknown command line flag 'hidden_unit'. Did you mean: hidden_units \\?",
        ),
        (
            "positional_argument",
            ["train"],
            "unexpected arguments 'train'; all settings are --flags",
        ),
        (
            "missing_flagfile",
            [f"--flagfile={CONFIGS / 'nope.flags'}"],
            re.escape(
                f"Unable to open flagfile: [Errno 2] No such file or directory: '{CONFIGS / 'nope.flags'}'"
            ),
        ),
        (
            "another_tools_flagfile",
            [f"--flagfile={CONFIGS / 'search.flags'}"],
            "Unknown command line flag 'search_dir'",
        ),
        (
            "missing_data_dir",
            ["--dataset=fashion_mnist", "--data_dir=/no/such/dir"],
            "data directory /no/such/dir does not exist or is not a directory",
        ),
    )
    def test_rejected(self, args, line):
        self.assert_train_rejects([*QUICK, *args], line)

    def test_flagfile_with_an_unknown_flag(self):
        flagfile = self.tmp / "unknown.flags"
        flagfile.write_text("--model=scratch\n--bogus=1\n")
        self.assert_train_rejects(
            [*QUICK, f"--flagfile={flagfile}"], "Unknown command line flag 'bogus'"
        )

    def test_flagfile_line_without_a_value(self):
        """A bare non-boolean flag at a flagfile's end took the next argument as its
        value (issue 13): `--model_dir` became `--epochs=1`, a folder in the cwd."""
        at_end = self.tmp / "at_end.flags"
        at_end.write_text("# a comment\n--model=concise\n--model_dir\n")
        in_middle = self.tmp / "in_middle.flags"
        in_middle.write_text("--model\n--epochs=1\n")
        cwd = self.tmp / "cwd"
        cwd.mkdir(exist_ok=True)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(cwd)  # where the swallowed argument became a model_dir
        for flagfile, line, flag in ((at_end, 3, "model_dir"), (in_middle, 1, "model")):
            self.assert_train_rejects(
                [f"--flagfile={flagfile}", *QUICK],
                re.escape(f"{flagfile}, line {line}: --{flag} has no value; write --{flag}=VALUE"),
            )
        self.assertEqual(list(cwd.iterdir()), [])

    def test_flagfile_that_is_not_text(self):
        """Issue 16: a UnicodeDecodeError traceback, exit 1; nested files too."""
        binary = self.tmp / "binary.flags"
        binary.write_bytes(b"\xff\xfe--epochs=1\n")
        nesting = self.tmp / "nesting.flags"
        nesting.write_text(f"--epochs=1\n--flagfile={binary}\n")
        for flagfile in (binary, nesting):
            self.assert_train_rejects(
                [*QUICK, f"--flagfile={flagfile}"],
                re.escape(
                    f"--flagfile={binary} is not UTF-8 text (byte 0xff at offset 0); "
                    "a flagfile holds one --flag=value per line"
                ),
            )

    def test_flagfile_naming_no_file(self):
        """Issue 16: `--flagfile=` was silently ignored (the run trained without its settings)."""
        nesting = self.tmp / "nesting_empty.flags"
        nesting.write_text("--flagfile=\n")
        for args in (["--flagfile="], ["--flagfile", ""], [f"--flagfile={nesting}"]):
            self.assert_train_rejects(
                [*QUICK, *args], "--flagfile= names no file; write --flagfile=PATH"
            )

    def test_bare_boolean_in_a_flagfile_is_fine(self):
        flagfile = self.tmp / "boolean.flags"
        flagfile.write_text("--overwrite\n")
        # The boolean line parses; the next bad setting is what is reported.
        self.assert_train_rejects(
            [f"--flagfile={flagfile}", *QUICK, "--batch_size=0"],
            "--batch_size=0 must be a positive integer",
        )

    def test_bad_flag_is_rejected_before_tensorflow_loads(self):
        """Issue 13: a bad flag took ~7 s to reject because TensorFlow loaded first."""
        # The console scripts' and scripts/*.py's entry point, as a user starts it.
        code = (
            "import sys; from keras_mlp import cli; sys.argv = ['train', '--batch_size=0']; "
            "status = cli.train_main(); "
            "print(status, 'tensorflow' in sys.modules)"
        )
        result = subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            timeout=120,
            env=tool_env(),
        )
        self.assertEqual(result.stdout.split(), ["2", "False"], result.stderr)
        self.assertEqual(error_lines(result), ["error: --batch_size=0 must be a positive integer"])


def _cut(path, nbytes):
    """Drops the last `nbytes` bytes of the file at `path`."""
    path.write_bytes(path.read_bytes()[:-nbytes])


def _raw_idx(path, dims, data=b""):
    """A gzipped IDX file of uint8 whose header claims `dims`, followed by `data`."""
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, 0x08, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + data)


# A header whose sizes multiply to 2**64: numpy's product wrapped to 0 (issue 16).
HUGE_DIMS = (65536,) * 4
HUGE_NEEDS = 4 + 4 * 4 + 2**64


def _png_header(width, height):
    """The start of a grayscale PNG of `width` x `height`: what PIL reads to open it
    (the pixels are never reached), without writing width x height bytes."""

    def chunk(kind, payload):
        return (
            struct.pack(">I", len(payload))
            + kind
            + payload
            + struct.pack(">I", zlib.crc32(kind + payload))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _uncompressed_and_cut(d):
    """The test images stored without gzip, one byte short."""
    (d / "t10k-images-idx3-ubyte.gz").unlink()
    write_idx(d / "t10k-images-idx3-ubyte", np.zeros((20, 6, 5), np.uint8))
    _cut(d / "t10k-images-idx3-ubyte", 1)


class DataFilesTest(tf.test.TestCase, parameterized.TestCase, RejectsMixin):
    """Damaged, inconsistent or unreadable data files in --data_dir."""

    @parameterized.named_parameters(
        (
            "truncated_gzip",
            lambda d: _cut(d / "train-images-idx3-ubyte.gz", 20),
            r"{d}/train-images-idx3-ubyte.gz: truncated or corrupt gzip data \(.*\)",
        ),
        (
            "label_count_mismatch",
            lambda d: write_idx(d / "t10k-labels-idx1-ubyte.gz", np.zeros(7, np.uint8)),
            "{d}/t10k-images-idx3-ubyte.gz holds 20 images but {d}/t10k-labels-idx1-ubyte.gz holds 7 labels",
        ),
        (
            "missing_file",
            lambda d: (d / "train-labels-idx1-ubyte.gz").unlink(),
            "data directory {d} lacks train-labels-idx1-ubyte.gz",
        ),
        (
            "truncated_uncompressed",
            _uncompressed_and_cut,
            r"{d}/t10k-images-idx3-ubyte: IDX data is 615 bytes but its header \(20, 6, 5\) needs 616",
        ),
        (
            "labels_header_past_2_64",
            lambda d: _raw_idx(d / "train-labels-idx1-ubyte.gz", HUGE_DIMS),
            rf"{{d}}/train-labels-idx1-ubyte.gz: IDX data is 20 bytes but its header "
            rf"\(65536, 65536, 65536, 65536\) needs {HUGE_NEEDS}",
        ),
        (
            "images_header_past_2_64",
            lambda d: _raw_idx(d / "t10k-images-idx3-ubyte.gz", HUGE_DIMS),
            rf"{{d}}/t10k-images-idx3-ubyte.gz: IDX data is 20 bytes but its header "
            rf"\(65536, 65536, 65536, 65536\) needs {HUGE_NEEDS}",
        ),
        (
            "images_with_255_dimensions",
            lambda d: _raw_idx(d / "train-images-idx3-ubyte.gz", (1,) * 255, b"\0"),
            r"{d}/train-images-idx3-ubyte.gz: IDX header has 255 dimensions; these files have "
            r"1 \(labels \(N,\)\) to 4 \(colour images \(N, H, W, C\)\)",
        ),
        (
            "compressed_and_uncompressed_copies",
            lambda d: write_idx(d / "train-images-idx3-ubyte", np.zeros((60, 6, 5), np.uint8)),
            "data directory {d} holds both train-images-idx3-ubyte.gz and "
            "train-images-idx3-ubyte; keep one of them",
        ),
        (
            "labels_txt_count",
            lambda d: (d / "labels.txt").write_text("cat\ndog\n"),
            "{d}/labels.txt: has 2 names but the data has 3 classes",
        ),
        (
            "labels_txt_not_utf8",
            lambda d: (d / "labels.txt").write_bytes(b"cat\n\xff\xfedog\nbird\n"),
            r"{d}/labels.txt: cannot be read as UTF-8 text, one class name per line \('utf-8' codec .*\)",
        ),
        (
            "labels_txt_is_a_folder",
            lambda d: (d / "labels.txt").mkdir(),
            r"{d}/labels.txt: cannot be read as UTF-8 text, one class name per line \(Is a directory\)",
        ),
    )
    def test_rejected(self, damage, line):
        data_dir = write_idx_set(Path(self.get_temp_dir()) / "data")
        damage(data_dir)
        model_dir = Path(self.get_temp_dir()) / "never_created"
        result = run_main(
            train.main,
            "--dataset=fashion_mnist",
            f"--data_dir={data_dir}",
            "--batch_size=20",
            f"--model_dir={model_dir}",
        )
        self.assert_rejected(result, line.format(d=re.escape(str(data_dir))))
        self.assertFalse(model_dir.exists())

    def test_unreadable_data_dir(self):
        """Issue 13: a --data_dir this user may not read gave a PermissionError traceback."""
        import keras_mlp.run  # noqa: F401  (imported while every file is still readable)

        base = Path(tempfile.mkdtemp(prefix="keras_mlp_unreadable_"))  # not in the 0700 temp dir
        self.addCleanup(shutil.rmtree, base, ignore_errors=True)
        base.chmod(0o755)
        data_dir = write_idx_set(base / "data")
        data_dir.chmod(0)
        self.addCleanup(data_dir.chmod, 0o755)
        model_dir = base / "never_created"
        with unprivileged():
            result = run_main(
                train.main,
                "--dataset=fashion_mnist",
                f"--data_dir={data_dir}",
                "--batch_size=20",
                f"--model_dir={model_dir}",
            )
        self.assert_rejected(
            result,
            f"data directory {re.escape(str(data_dir))} cannot be read \\(Permission denied\\)",
        )
        self.assertFalse(model_dir.exists())


class ModelDirTest(tf.test.TestCase, RejectsMixin):
    """A model_dir that holds something else, cannot be written, or has damaged checkpoints."""

    def setUp(self):
        super().setUp()
        self.tmp = Path(self.get_temp_dir())
        self.run_dir = trained_run()

    def copy_of_run(self, name, finished=True):
        """A copy of the shared run; unfinished (no metrics.json) as a kill would leave it."""
        copy = self.tmp / name
        shutil.rmtree(copy, ignore_errors=True)
        shutil.copytree(self.run_dir, copy)
        if not finished:
            (copy / "metrics.json").unlink()
        return copy

    def assert_untouched_rejection(self, model_dir, args, line):
        before = snapshot(model_dir)
        self.assert_rejected(run_main(train.main, *args, f"--model_dir={model_dir}"), line)
        self.assertEqual(snapshot(model_dir), before)

    def test_run_with_other_settings_is_never_overwritten(self):
        model_dir = self.copy_of_run("other_settings")
        self.assert_untouched_rejection(
            model_dir,
            [*QUICK, "--model=concise", "--learning_rate=0.5"],
            f"--model_dir={re.escape(str(model_dir))} holds a run with other settings "
            r"\(model 'scratch' there, 'concise' now; learning_rate 0.1 there, 0.5 now\); "
            "choose another model_dir or set --overwrite=True",
        )
        # The same command again: reported complete, nothing retrained or rewritten.
        before = snapshot(model_dir)
        again = run_main(train.main, *QUICK, f"--model_dir={model_dir}")
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn("already complete", again.stdout)
        self.assertEqual(snapshot(model_dir), before)

    def test_foreign_files_are_not_touched(self):
        model_dir = self.tmp / "foreign"
        (model_dir / "logs").mkdir(parents=True, exist_ok=True)
        (model_dir / "logs" / "mine.txt").write_text("someone else's")
        self.assert_untouched_rejection(
            model_dir,
            QUICK,
            f"--model_dir={re.escape(str(model_dir))} holds logs but no run_config.json; "
            "choose another model_dir or set --overwrite=True",
        )

    def test_unreadable_run_config(self):
        model_dir = self.copy_of_run("bad_run_config")
        (model_dir / "run_config.json").write_text("{")
        self.assert_untouched_rejection(
            model_dir,
            QUICK,
            f"{re.escape(str(model_dir))}/run_config.json is unreadable \\(.*\\); "
            "set --overwrite=True to start over",
        )

    def test_unwritable_model_dir(self):
        blocker = self.tmp / "a_file"
        blocker.write_text("not a directory")
        self.assert_rejected(
            run_main(train.main, *QUICK, f"--model_dir={blocker / 'run'}"),
            rf"--model_dir={re.escape(str(blocker / 'run'))} is not writable \(.*\)",
        )
        self.assertEqual(blocker.read_text(), "not a directory")

    def test_state_file_naming_no_checkpoint_is_an_error_not_a_fresh_start(self):
        model_dir = self.copy_of_run("damaged_state", finished=False)
        for path in (model_dir / "checkpoints").glob("ckpt-*"):
            path.unlink()
        (model_dir / "checkpoints" / "checkpoint").write_text("garbage {")
        self.assert_untouched_rejection(
            model_dir,
            QUICK,
            f"{re.escape(str(model_dir))}/checkpoints/checkpoint names no usable checkpoint "
            r"\(damaged or deleted\); set --overwrite=True to start over",
        )

    def test_deleted_checkpoint_files_are_an_error_not_a_fresh_start(self):
        model_dir = self.copy_of_run("deleted_files", finished=False)
        for path in (model_dir / "checkpoints").glob("ckpt-*"):
            path.unlink()
        directory = re.escape(str(model_dir / "checkpoints"))
        self.assert_untouched_rejection(
            model_dir,
            QUICK,
            rf"cannot restore any checkpoint in {directory} \(newest: {directory}/ckpt-31: .*\); "
            "set --overwrite=True to start over",
        )

    def test_corrupt_checkpoint_data_is_an_error(self):
        model_dir = self.copy_of_run("corrupt_data", finished=False)
        for shard in (model_dir / "checkpoints").glob("*.data-*"):
            shard.write_bytes(shard.read_bytes()[:100])
        directory = re.escape(str(model_dir / "checkpoints"))
        self.assert_untouched_rejection(
            model_dir,
            QUICK,
            rf"cannot restore any checkpoint in {directory} \(newest: {directory}/ckpt-31: .*\); "
            "set --overwrite=True to start over",
        )

    def test_unreadable_state_file_resumes_from_the_checkpoint_files(self):
        """An emptied or garbled `checkpoints/checkpoint` (a traceback in issue 13) is
        not bad input: the intact ckpt files are used, and nothing is retrained."""
        history = json.loads((self.run_dir / "metrics.json").read_text())["history"]
        for name, content in (("emptied", ""), ("garbled", "garbage {")):
            model_dir = self.copy_of_run(f"{name}_state", finished=False)
            (model_dir / "checkpoints" / "checkpoint").write_text(content)
            result = run_main(train.main, *QUICK, f"--model_dir={model_dir}")
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertEqual(error_lines(result), [])
            self.assertNotIn("epoch 1/1:", result.stdout)  # the checkpoint had the epoch
            resumed = json.loads((model_dir / "metrics.json").read_text())["history"]
            self.assertEqual(resumed["loss"], history["loss"])
            self.assertEqual(resumed["val_accuracy"], history["val_accuracy"])

    def test_a_resume_on_other_data_is_refused(self):
        """An interrupted run rerun on another image set of the same image size (a
        traceback and a wrong step count in issue 16), or another class count."""
        a = write_idx_set(self.tmp / "data_a", train=(600, 6, 5), num_classes=3)
        model_dir = self.tmp / "on_a"
        args = ["--epochs=3", "--batch_size=16", f"--model_dir={model_dir}"]
        result = run_main(train.main, *args, f"--data_dir={a}")
        self.assertEqual(result.returncode, 0, result.stderr)
        (model_dir / "metrics.json").unlink()  # unfinished, as a kill would leave it
        cases = {
            "smaller": (dict(train=(200, 6, 5)), "train_examples 600 there, 200 now"),
            "reshuffled": (dict(train=(600, 6, 5), seed=9), "sha256 '[0-9a-f]{64}' there"),
            "more_classes": (dict(train=(600, 6, 5), num_classes=4), "num_classes 3 there, 4 now"),
        }
        for name, (shape, difference) in cases.items():
            other = write_idx_set(self.tmp / f"data_{name}", **{"num_classes": 3, **shape})
            self.assert_untouched_rejection(
                model_dir,
                [*args[:-1], f"--data_dir={other}"],
                f"--model_dir={re.escape(str(model_dir))} holds a run on other data "
                rf"\(.*{difference}.*\); resume it with the data it started on, or choose "
                "another model_dir or set --overwrite=True",
            )
        result = run_main(train.main, *args, f"--data_dir={a}")  # its own data: resumes
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("all 3 epochs were done", result.stdout)

    def test_stray_backup_files_do_not_count_as_checkpoints(self):
        """Issue 16: a user's `ckpt-291-backup.index` beside an emptied state file was an
        int() ValueError traceback on the fallback path; only `ckpt-<step>` files count."""
        model_dir = self.copy_of_run("stray_backup", finished=False)
        checkpoints = model_dir / "checkpoints"
        for suffix in (".index", ".data-00000-of-00001"):
            shutil.copy(checkpoints / f"ckpt-31{suffix}", checkpoints / f"ckpt-291-backup{suffix}")
        (checkpoints / "checkpoint").write_text("")
        result = run_main(train.main, *QUICK, f"--model_dir={model_dir}")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"resuming from {checkpoints / 'ckpt-31'}", result.stdout)
        self.assertTrue((model_dir / "metrics.json").exists())
        self.assertTrue((checkpoints / "ckpt-291-backup.index").exists())  # not ours to remove

    def test_damaged_metrics_json_is_written_again_from_the_checkpoint(self):
        """Issue 16: a finished run's truncated, emptied or edited metrics.json was a
        JSONDecodeError / KeyError traceback on the rerun. The run counts as unfinished:
        the resume finds every epoch done, trains nothing and writes the outputs again."""
        original = json.loads((self.run_dir / "metrics.json").read_text())
        text = (self.run_dir / "metrics.json").read_text()
        damages = {
            "truncated": text[: len(text) // 2],
            "emptied": "",
            "without_final": json.dumps({"history": original["history"]}),
            "not_utf8": "\udcff",
        }
        for name, damaged in damages.items():
            with self.subTest(name):
                model_dir = self.copy_of_run(f"metrics_{name}")
                (model_dir / "metrics.json").write_text(damaged, errors="surrogateescape")
                result = run_main(train.main, *QUICK, f"--model_dir={model_dir}")
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertEqual(error_lines(result), [])
                self.assertIn("resuming from", result.stdout)
                self.assertNotIn("epoch 1/1:", result.stdout)  # nothing retrained
                rewritten = json.loads((model_dir / "metrics.json").read_text())
                self.assertEqual(rewritten["history"]["loss"], original["history"]["loss"])
                self.assertEqual(rewritten["final"]["epochs"], 1)
                again = run_main(train.main, *QUICK, f"--model_dir={model_dir}")
                self.assertIn("already complete", again.stdout)

    def test_damaged_metrics_json_without_checkpoints_is_an_error(self):
        model_dir = self.copy_of_run("metrics_no_checkpoints")
        shutil.rmtree(model_dir / "checkpoints")
        (model_dir / "metrics.json").write_text("{")
        self.assert_untouched_rejection(
            model_dir,
            QUICK,
            rf"{re.escape(str(model_dir))}/metrics.json is damaged \(Expecting property name .*\) "
            "and the run has no checkpoint to write it again from; set --overwrite=True to "
            "start over",
        )

    def test_overwrite_replaces_a_run(self):
        model_dir = self.copy_of_run("replaced")
        result = run_main(
            train.main, *QUICK, "--model=concise", "--overwrite", f"--model_dir={model_dir}"
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        metrics = (model_dir / "metrics.json").read_text()
        self.assertIn('"model": "concise"', metrics)
        self.assertNotIn('"model": "scratch"', (model_dir / "run_config.json").read_text())


class PredictTest(tf.test.TestCase, parameterized.TestCase, RejectsMixin):
    """Bad input to the predict tool."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.run_dir = trained_run()
        cls.tmp = Path(tf.compat.v1.test.get_temp_dir()) / "bad_predict_files"
        cls.tmp.mkdir(parents=True, exist_ok=True)
        image = synthetic_arrays()[2][0]  # a 12x12 validation image
        (cls.tmp / "notes.png").write_text("not a picture")
        Image.fromarray(image).resize((30, 30)).save(cls.tmp / "big.png")
        Image.fromarray(image).convert("RGB").save(cls.tmp / "rgb.png")
        Image.fromarray(image).save(cls.tmp / "small.png")
        noise = np.random.default_rng(0).integers(0, 256, (12, 12), dtype=np.uint8)
        Image.fromarray(noise).save(cls.tmp / "noise.png")
        raw = (cls.tmp / "noise.png").read_bytes()
        (cls.tmp / "truncated.png").write_bytes(raw[: len(raw) // 2])
        write_idx(cls.tmp / "bad-images-idx3-ubyte.gz", np.zeros((50, 12, 12), np.uint8))
        raw = (cls.tmp / "bad-images-idx3-ubyte.gz").read_bytes()
        (cls.tmp / "bad-images-idx3-ubyte.gz").write_bytes(raw[:-10])
        write_idx(cls.tmp / "labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
        (cls.tmp / "empty_run").mkdir(exist_ok=True)
        _raw_idx(cls.tmp / "huge-images-idx3-ubyte.gz", HUGE_DIMS)
        _raw_idx(cls.tmp / "deep-images-idx3-ubyte.gz", (1,) * 255, b"\0")
        (cls.tmp / "bomb.png").write_bytes(_png_header(15000, 15000))

    @parameterized.named_parameters(
        ("no_model_dir", ["{tmp}/small.png"], "--model_dir is required"),
        ("no_files", ["--model_dir={run}"], "give at least one image or IDX file"),
        ("missing_file", ["--model_dir={run}", "{tmp}/nope.png"], "{tmp}/nope.png: no such file"),
        ("a_folder", ["--model_dir={run}", "{tmp}"], "{tmp}: not a file"),
        (
            "not_an_image",
            ["--model_dir={run}", "{tmp}/notes.png"],
            r"{tmp}/notes.png: not an image file PIL can read, nor an IDX file \(.*\)",
        ),
        (
            "truncated_png",
            ["--model_dir={run}", "{tmp}/truncated.png"],
            r"{tmp}/truncated.png: cannot read the image \(image file is truncated.*\)",
        ),
        (
            "wrong_size",
            ["--model_dir={run}", "{tmp}/big.png"],
            "{tmp}/big.png: image is 30x30, the model takes 12x12; pass --resize to resize",
        ),
        (
            "color",
            ["--model_dir={run}", "{tmp}/rgb.png"],
            r"{tmp}/rgb.png: image mode RGB is colour \(or a palette\), the model takes grayscale; pass --resize to convert",
        ),
        (
            "run_without_export",
            ["--model_dir={tmp}/empty_run", "{tmp}/small.png"],
            "{tmp}/empty_run/export holds no exported model; train a run there first",
        ),
        (
            "zero_top_k",
            ["--model_dir={run}", "--top_k=0", "{tmp}/small.png"],
            "--top_k and --max_images must be positive integers",
        ),
        (
            "zero_max_images",
            ["--model_dir={run}", "--max_images=0", "{tmp}/small.png"],
            "--top_k and --max_images must be positive integers",
        ),
        (
            "corrupt_idx",
            ["--model_dir={run}", "{tmp}/bad-images-idx3-ubyte.gz"],
            r"{tmp}/bad-images-idx3-ubyte.gz: truncated or corrupt gzip data \(.*\)",
        ),
        (
            "idx_of_labels",
            ["--model_dir={run}", "{tmp}/labels-idx1-ubyte.gz"],
            "{tmp}/labels-idx1-ubyte.gz: an IDX file of images has 3 dimensions, this one 1",
        ),
        (
            "idx_header_past_2_64",
            ["--model_dir={run}", "{tmp}/huge-images-idx3-ubyte.gz"],
            rf"{{tmp}}/huge-images-idx3-ubyte.gz: IDX data is 20 bytes but its header "
            rf"\(65536, 65536, 65536, 65536\) needs {HUGE_NEEDS}",
        ),
        (
            "idx_with_255_dimensions",
            ["--model_dir={run}", "{tmp}/deep-images-idx3-ubyte.gz"],
            r"{tmp}/deep-images-idx3-ubyte.gz: IDX header has 255 dimensions; .*",
        ),
        (
            "decompression_bomb",
            ["--model_dir={run}", "--resize", "{tmp}/bomb.png"],
            r"{tmp}/bomb.png: too large to open \(Image size \(225000000 pixels\) exceeds "
            r"limit of \d+ pixels.*\); shrink it first",
        ),
        (
            "unknown_flag",
            ["--model_dir={run}", "--topk=2", "{tmp}/small.png"],
            "Unknown command line flag 'topk'. Did you mean: top_k \\?",
        ),
    )
    def test_rejected(self, args, line):
        paths = {"tmp": self.tmp, "run": self.run_dir}
        escaped = {key: re.escape(str(value)) for key, value in paths.items()}
        before = snapshot(self.run_dir)
        result = run_main(predict.main, *[a.format(**paths) for a in args])
        self.assert_rejected(result, line.format(**escaped))
        self.assertEqual(snapshot(self.run_dir), before)


class LaunchTest(tf.test.TestCase, parameterized.TestCase, RejectsMixin):
    """Bad input to the launcher: rejected before any worker starts."""

    @parameterized.named_parameters(
        ("zero_workers", ["--workers=0"], "--workers=0 must be a positive integer"),
        ("negative_timeout", ["--timeout=-5"], "--timeout=-5 must be a positive number of seconds"),
        ("text_workers", ["--workers=two"], "flag --workers=two: invalid literal for int.*'two'"),
        ("unknown_flag", ["--nodes=2"], "Unknown command line flag 'nodes'"),
    )
    def test_rejected(self, args, line):
        model_dir = Path(self.get_temp_dir()) / "never_created"
        result = run_main(launch.main, *args, "--", *QUICK, f"--model_dir={model_dir}")
        self.assert_rejected(result, line)
        self.assertNotIn("[launcher] worker", result.stdout)
        self.assertFalse(model_dir.exists())


if __name__ == "__main__":
    tf.test.main()
