"""Multi-worker training: real worker processes on 127.0.0.1, started by the
launcher or by hand with TF_CONFIG / --worker_hosts."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import tensorflow as tf
from cli_util import LAUNCH, error_lines, run_train

from keras_mlp.launch import free_ports

QUICK = ("--dataset=synthetic", "--epochs=2", "--batch_size=64", "--hidden_units=32")


def _fingerprints(output):
    return re.findall(r"weights fingerprint ([0-9a-f]+)", output)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class MultiWorkerTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = Path(self.get_temp_dir())
        # Workers' throw-away checkpoint folders go here, so the test can see them removed.
        self.worker_tmp = self.tmp / "worker_tmp"
        self.worker_tmp.mkdir(exist_ok=True)

    def launch(self, *args, workers=2):
        return run_train(
            f"--workers={workers}",
            "--timeout=150",
            "--",
            *args,
            script=LAUNCH,
            env={"TMPDIR": str(self.worker_tmp)},
            timeout=200,
        )

    def _history(self, model_dir):
        return json.loads((Path(model_dir) / "metrics.json").read_text())["history"]

    def test_two_workers_train_like_one_machine(self):
        """1 worker, 2 workers, mirrored on 2 CPUs and one device: the same losses."""
        runs = {}
        for name, how in [
            ("one_device", ["--strategy=one_device"]),
            ("mirrored", ["--strategy=mirrored", "--cpu_devices=2"]),
            ("one_worker", None),
            ("two_workers", None),
        ]:
            model_dir = self.tmp / name
            args = [*QUICK, "--model=scratch", f"--model_dir={model_dir}"]
            if how is None:
                result = self.launch(*args, workers=1 if name == "one_worker" else 2)
            else:
                result = run_train(*args, *how)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            runs[name] = (self._history(model_dir), result.stdout)
        reference = runs["one_device"][0]
        for name, (history, _) in runs.items():
            # Same global batches everywhere; only the order of float sums differs.
            self.assertAllClose(history["loss"], reference["loss"], atol=1e-4, msg=name)
            self.assertAllClose(history["val_loss"], reference["val_loss"], atol=1e-4, msg=name)
        prints = _fingerprints(runs["two_workers"][1])
        self.assertLen(prints, 2)
        self.assertEqual(prints[0], prints[1])  # both workers hold identical weights

    def test_only_the_chief_writes_and_artifacts_are_complete(self):
        model_dir = self.tmp / "concise_cluster"
        result = self.launch(*QUICK, "--model=concise", f"--model_dir={model_dir}")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("[worker 0] epoch 2/2", result.stdout)
        self.assertIn("[worker 1] epoch 2/2", result.stdout)
        prints = _fingerprints(result.stdout)
        self.assertLen(set(prints), 1)
        history = self._history(model_dir)
        self.assertLen(history["val_accuracy"], 2)
        self.assertEqual(
            sorted(p.name for p in model_dir.iterdir()),
            [
                "checkpoints",
                "export",
                "logs",
                "metrics.json",
                "model.keras",
                "progress.png",
                "run_config.json",
            ],
        )
        self.assertTrue(tf.train.latest_checkpoint(str(model_dir / "checkpoints")))
        self.assertEqual(list(self.worker_tmp.iterdir()), [])  # worker 1's copy removed

    def test_killed_worker_stops_the_cluster_and_a_rerun_resumes(self):
        train_args = [
            "--dataset=synthetic",
            "--epochs=25",
            "--batch_size=32",
            "--hidden_units=16",
            f"--model_dir={self.tmp / 'killed'}",
        ]
        launcher = subprocess.Popen(
            [sys.executable, str(LAUNCH), "--workers=2", "--timeout=120", "--", *train_args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        )
        try:
            pids = {}
            for line in launcher.stdout:
                match = re.match(r"\[launcher\] worker (\d) \(pid (\d+)\)", line)
                if match:
                    pids[int(match[1])] = int(match[2])
                if line.startswith("[worker 1] epoch 2/"):
                    break
            os.kill(pids[1], signal.SIGKILL)
            killed_at = time.monotonic()
            launcher.wait(timeout=60)
            elapsed = time.monotonic() - killed_at
            stderr = launcher.stderr.read()
        finally:
            launcher.kill()
            launcher.wait()
        self.assertLess(elapsed, 30)
        self.assertNotEqual(launcher.returncode, 0)
        self.assertIn("error: worker 1 failed (killed by SIGKILL); stopped the others", stderr)
        self.assertFalse(any(_alive(pid) for pid in pids.values()))
        self.assertFalse((self.tmp / "killed" / "metrics.json").exists())
        # The same launch again resumes from the chief's last checkpoint and finishes.
        rerun = self.launch(*train_args)
        self.assertEqual(rerun.returncode, 0, rerun.stdout + rerun.stderr)
        self.assertRegex(rerun.stdout, r"\[worker 0\] resuming from .*ckpt-\d+: epoch ([2-9]|1\d)")
        self.assertRegex(rerun.stdout, r"\[worker 1\] resuming from .*ckpt-\d+: epoch ([2-9]|1\d)")
        self.assertLen(self._history(self.tmp / "killed")["loss"], 25)
        self.assertLen(set(_fingerprints(rerun.stdout)), 1)

    def test_bad_cluster_input(self):
        ports = free_ports(2)
        hosts = f"--worker_hosts=127.0.0.1:{ports[0]},127.0.0.1:{ports[1]}"
        cases = [
            ({"TF_CONFIG": "{not json"}, [], "TF_CONFIG is not valid JSON"),
            (
                {"TF_CONFIG": json.dumps({"cluster": {"worker": []}})},
                [],
                "TF_CONFIG must look like",
            ),
            (
                {
                    "TF_CONFIG": json.dumps(
                        {
                            "cluster": {"worker": ["127.0.0.1:1"]},
                            "task": {"type": "worker", "index": 3},
                        }
                    )
                },
                [],
                "TF_CONFIG task index 3 is outside its 1 worker",
            ),
            (
                {},
                [hosts, "--task_index=5"],
                r"--task_index=5 is outside --worker_hosts \(2 hosts: 0..1\)",
            ),
            ({}, [], "needs TF_CONFIG or --worker_hosts"),
            ({}, ["--worker_hosts=localhost", "--task_index=0"], "'localhost' is not host:port"),
        ]
        for env, args, message in cases:
            result = run_train(
                *QUICK,
                "--strategy=multi_worker_mirrored",
                *args,
                f"--model_dir={self.tmp / 'never'}",
                env={"TF_CONFIG": None, **env},
            )
            self.assertEqual(result.returncode, 2, result.stderr)
            self.assertNotIn("Traceback", result.stderr)
            self.assertLen(error_lines(result), 1, result.stderr)
            self.assertRegex(error_lines(result)[0], message)
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            result = run_train(
                *QUICK,
                "--strategy=multi_worker_mirrored",
                f"--worker_hosts=127.0.0.1:{port},127.0.0.1:{ports[1]}",
                "--task_index=0",
                env={"TF_CONFIG": None},
            )
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn(
            f"port {port} of this worker (127.0.0.1:{port}) is already in use",
            error_lines(result)[0],
        )
        self.assertFalse((self.tmp / "never").exists())

    def test_launcher_rejects_bad_arguments(self):
        result = run_train("--workers=0", "--", *QUICK, script=LAUNCH)
        self.assertEqual(result.returncode, 2)
        self.assertEqual(
            error_lines(result), ["error: --workers must be a positive integer. Received: 0"]
        )
        self.assertNotIn("Traceback", result.stderr)

    def test_failing_worker_is_named_with_its_reason(self):
        result = self.launch("--model=nope")
        self.assertEqual(result.returncode, 2)
        self.assertRegex(
            error_lines(result)[-1],
            r"worker \d failed \(exit status 2: flag --model=nope: value should be one of",
        )


if __name__ == "__main__":
    tf.test.main()
