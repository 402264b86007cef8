"""Multi-worker training: real worker processes on 127.0.0.1, started by the launcher
(`keras_mlp.launch`) or by hand with TF_CONFIG / --worker_hosts.

The bad-input cases fail before any cluster forms, so they run in-process in the
fast tier; everything that forms a cluster is slow. Every process is bounded in
time and killed at the end.
"""

import contextlib
import json
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path
from unittest import mock

import pytest
import tensorflow as tf
from cli_util import Result, error_lines, run_main, run_tool, start_tool

from keras_mlp import launch, train
from keras_mlp.launch import free_ports, tf_config

# CPU only (num_gpus=0), also on a GPU host: one device, mirrored on 2 logical CPUs
# and 1 or 2 workers then all train on the same global batches.
QUICK = (
    "--dataset=synthetic",
    "--epochs=2",
    "--batch_size=64",
    "--hidden_units=32",
    "--num_gpus=0",
)
MULTI_WORKER = "--strategy=multi_worker_mirrored"
LAUNCHED = re.compile(r"\[launcher\] worker (\d+) \(pid (\d+)\) on 127\.0\.0\.1:\d+$", re.M)
STOPPED = re.compile(r"^error: stopped by (\w+) at step (\d+); checkpoint saved as (\S+);", re.M)


def fingerprints(output):
    return re.findall(r"weights fingerprint ([0-9a-f]+)", output)


def history(model_dir):
    return json.loads((Path(model_dir) / "metrics.json").read_text())["history"]


def group_alive(pid):
    """Whether any process is left in the process group that worker `pid` led
    (the launcher starts each worker in its own session)."""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.contextmanager
def started(*commands, timeout=180):
    """Starts `(tool, args, env)` processes; each is killed at the end or after
    `timeout` seconds. Threads collect their output lines in `.out` and `.err`."""
    processes = []
    watchdog = threading.Timer(timeout, lambda: [p.kill() for p in processes])
    watchdog.start()
    try:
        for tool, args, env in commands:
            process = start_tool(tool, *args, env=env)
            process.out, process.err = [], []
            process.readers = [
                threading.Thread(target=lines.extend, args=(stream,), daemon=True)
                for lines, stream in ((process.out, process.stdout), (process.err, process.stderr))
            ]
            for reader in process.readers:
                reader.start()
            processes.append(process)
        yield processes
    finally:
        watchdog.cancel()
        for process in processes:
            process.kill()
            process.wait()
            for reader in process.readers:
                reader.join(timeout=10)


def finished(process, timeout=60):
    """Waits for `process` to end; returns its Result (exit status, stdout, stderr)."""
    process.wait(timeout=timeout)
    for reader in process.readers:
        reader.join(timeout=10)
    return Result(process.returncode, "".join(process.out), "".join(process.err))


def wait_until(condition, processes, timeout=120):
    end = time.monotonic() + timeout
    while not condition():
        if any(p.poll() is not None for p in processes):
            raise AssertionError("a process ended before " + condition.__doc__)
        if time.monotonic() > end:
            raise AssertionError("timed out waiting until " + condition.__doc__)
        time.sleep(0.05)


class BadClusterInputTest(tf.test.TestCase):
    """One-line errors, exit 2, nothing written: in-process, as no cluster ever forms."""

    def setUp(self):
        super().setUp()
        self.never = Path(self.get_temp_dir()) / "never"

    def train(self, *args, tf_config=None):
        with mock.patch.dict(os.environ):
            os.environ.pop("TF_CONFIG", None)
            if tf_config is not None:
                os.environ["TF_CONFIG"] = tf_config
            return run_main(train.main, *QUICK, MULTI_WORKER, *args, f"--model_dir={self.never}")

    def assert_bad_input(self, result, message):
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertNotIn("Traceback", result.stderr)
        self.assertEqual(error_lines(result), [f"error: {message}"], result.stderr)
        self.assertFalse(self.never.exists())

    def test_malformed_tf_config(self):
        cases = [
            ("{not json", "TF_CONFIG is not valid JSON (Expecting property name enclosed in "),
            (json.dumps({"cluster": {"worker": []}}), 'TF_CONFIG must look like {"cluster": '),
            (
                json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"index": 0}}),
                "TF_CONFIG task type None is not in its cluster ['worker']",
            ),
            (
                json.dumps(
                    {"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}
                ),
                "TF_CONFIG task index 3 is outside its 1 worker address(es)",
            ),
        ]
        for config, message in cases:
            with self.subTest(config):
                result = self.train(tf_config=config)
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertLen(error_lines(result), 1, result.stderr)
                self.assertStartsWith(error_lines(result)[0], f"error: {message}")
                self.assertFalse(self.never.exists())

    def test_bad_worker_hosts_or_task_index(self):
        hosts = "--worker_hosts=127.0.0.1:1,127.0.0.1:2"
        self.assert_bad_input(
            self.train(hosts, "--task_index=5"),
            "--task_index=5 is outside --worker_hosts (2 hosts: 0..1)",
        )
        self.assert_bad_input(
            self.train(hosts), "--task_index=None is outside --worker_hosts (2 hosts: 0..1)"
        )
        self.assert_bad_input(
            self.train(),
            "--strategy='multi_worker_mirrored' needs TF_CONFIG or --worker_hosts=host:port,...",
        )
        self.assert_bad_input(
            self.train("--worker_hosts=localhost", "--task_index=0"),
            "worker address 'localhost' is not host:port",
        )

    def test_port_in_use(self):
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            address = f"127.0.0.1:{port}"
            self.assert_bad_input(
                self.train(f"--worker_hosts={address},127.0.0.1:1", "--task_index=0"),
                f"port {port} of this worker ({address}) is already in use",
            )
            config = tf_config([address, "127.0.0.1:1"], 0)
            self.assert_bad_input(
                self.train(tf_config=config),
                f"port {port} of this worker ({address}) is already in use",
            )


class LauncherInputTest(tf.test.TestCase):
    """The launcher in-process; its workers fail on their flags before TensorFlow loads."""

    def test_rejects_bad_arguments(self):
        for flag, message in [
            ("--workers=0", "--workers=0 must be a positive integer"),
            ("--timeout=0", "--timeout=0 must be a positive number of seconds"),
        ]:
            result = run_main(launch.main, flag, "--", *QUICK)
            self.assertEqual(result.returncode, 2, result.stderr)
            self.assertEqual(error_lines(result), [f"error: {message}"])
            self.assertNotIn("[launcher] worker", result.stdout)

    def test_failing_worker_is_named_with_its_reason(self):
        result = run_main(launch.main, "--workers=2", "--timeout=60", "--", "--model=nope")
        self.assertEqual(result.returncode, 2, result.stdout + result.stderr)
        self.assertRegex(
            result.stdout, r"\[worker \d\] error: flag --model=nope: value should be one of"
        )
        self.assertRegex(
            error_lines(result)[-1],
            r"^error: worker \d failed \(exit status 2: flag --model=nope: value should be one "
            r"of <scratch\|concise>\); stopped the others$",
        )


@pytest.mark.slow
class MultiWorkerTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.tmp = Path(self.get_temp_dir())
        # Non-chief workers' throw-away checkpoint folders go here, to see them removed.
        self.worker_tmp = self.tmp / "worker_tmp"
        self.worker_tmp.mkdir(exist_ok=True)

    def launch(self, *args, workers=2, timeout=150):
        return run_tool(
            "launch",
            f"--workers={workers}",
            f"--timeout={timeout}",
            "--",
            *args,
            env={"TMPDIR": str(self.worker_tmp), "TF_CONFIG": None},
            timeout=timeout + 30,
        )

    def test_two_workers_train_like_one_machine(self):
        """1 worker, 2 workers and mirrored on 2 CPUs each give one device's losses;
        the 2-worker run's workers agree and only the chief writes."""
        runs = {}
        for name, strategy in [("one_device", "one_device"), ("mirrored", "mirrored")]:
            model_dir = self.tmp / name
            result = run_main(
                train.main, *QUICK, "--cpu_devices=2", f"--strategy={strategy}", f"--model_dir={model_dir}"
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            runs[name] = history(model_dir)
        for workers, name in [(1, "one_worker"), (2, "two_workers")]:
            model_dir = self.tmp / name
            result = self.launch(*QUICK, f"--model_dir={model_dir}", workers=workers)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertIn(f"{workers} replica(s)", result.stdout)
            runs[name] = history(model_dir)
        reference = runs.pop("one_device")
        self.assertLen(reference["loss"], 2)
        for name, other in runs.items():
            # Same global batches everywhere; only the order of float sums differs.
            self.assertAllClose(other["loss"], reference["loss"], atol=1e-4, msg=name)
            self.assertAllClose(other["val_loss"], reference["val_loss"], atol=1e-4, msg=name)

        # The 2-worker run (the last `result`): identical weights on both workers.
        for worker in (0, 1):
            self.assertIn(f"[worker {worker}] epoch 2/2", result.stdout)
        prints = fingerprints(result.stdout)
        self.assertLen(prints, 2)
        self.assertEqual(prints[0], prints[1])
        # Only the chief writes the run's files; worker 1's checkpoint copy is removed.
        model_dir = self.tmp / "two_workers"
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
        self.assertEqual(list(self.worker_tmp.iterdir()), [])

    def test_cluster_from_worker_hosts(self):
        """No TF_CONFIG: --worker_hosts and --task_index, as the README shows."""
        model_dir = self.tmp / "hosts"
        hosts = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
        args = [*QUICK, "--model=concise", MULTI_WORKER, f"--worker_hosts={hosts}"]
        env = {"TF_CONFIG": None, "TMPDIR": str(self.worker_tmp)}
        with started(
            *[("train", [*args, f"--task_index={i}", f"--model_dir={model_dir}"], env) for i in (0, 1)]
        ) as workers:
            results = [finished(worker, timeout=150) for worker in workers]
        for result in results:
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            self.assertIn("2 replica(s)", result.stdout)
        prints = [fingerprints(result.stdout) for result in results]
        self.assertEqual([len(p) for p in prints], [1, 1])
        self.assertEqual(prints[0], prints[1])
        self.assertLen(history(model_dir)["loss"], 2)
        self.assertEqual(list(self.worker_tmp.iterdir()), [])

    def test_sigterm_to_one_worker_stops_both_at_the_same_step(self):
        """The SIGTERM vote: only worker 1 gets the signal; both stop at one step,
        and the chief's checkpoint holds that step."""
        model_dir = self.tmp / "vote"
        hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
        args = [
            *QUICK,
            "--epochs=40",
            "--batch_size=32",
            "--steps_per_execution=5",
            MULTI_WORKER,
            f"--model_dir={model_dir}",
        ]
        with started(
            *[("train", args, {"TF_CONFIG": tf_config(hosts, i)}) for i in (0, 1)]
        ) as workers:

            def in_epoch_2():
                """worker 1 finished epoch 1"""
                return any(line.startswith("epoch 1/40") for line in workers[1].out)

            wait_until(in_epoch_2, workers)
            workers[1].send_signal(signal.SIGTERM)
            results = [finished(worker) for worker in workers]
        stops = []
        for result in results:
            self.assertEqual(result.returncode, 128 + signal.SIGTERM, result.stderr)
            self.assertNotIn("Traceback", result.stderr)
            self.assertLen(error_lines(result), 1, result.stderr)
            stops.append(STOPPED.match(error_lines(result)[0]).groups())
        (chief_signal, step, chief_saved), (_, other_step, other_saved) = stops
        self.assertEqual(chief_signal, "SIGTERM")
        self.assertEqual(other_step, step)  # both stopped at the same step
        self.assertGreater(int(step), 2000 // 32)  # after epoch 1
        checkpoint = f"{model_dir}/checkpoints/ckpt-{step}"
        self.assertEqual(chief_saved, checkpoint)
        self.assertEqual(other_saved, checkpoint)  # the checkpoint to resume from
        self.assertEqual(tf.train.latest_checkpoint(str(model_dir / "checkpoints")), checkpoint)
        saved = tf.train.load_variable(checkpoint, "step/.ATTRIBUTES/VARIABLE_VALUE")
        self.assertEqual(int(saved), int(step))
        self.assertFalse((model_dir / "metrics.json").exists())

    def test_killed_worker_stops_the_cluster_and_a_rerun_resumes(self):
        train_args = [
            *QUICK,
            "--epochs=12",
            "--batch_size=32",
            "--hidden_units=16",
            f"--model_dir={self.tmp / 'killed'}",
        ]
        launcher_args = ["--workers=2", "--timeout=120", "--", *train_args]
        with started(("launch", launcher_args, {"TF_CONFIG": None})) as (launcher,):

            def epoch_1_done():
                """worker 1 finished epoch 1"""
                return any(line.startswith("[worker 1] epoch 1/12") for line in launcher.out)

            wait_until(epoch_1_done, [launcher])
            pids = {int(i): int(pid) for i, pid in LAUNCHED.findall("".join(launcher.out))}
            self.assertEqual(sorted(pids), [0, 1])
            os.kill(pids[1], signal.SIGKILL)
            killed_at = time.monotonic()
            result = finished(launcher)
            elapsed = time.monotonic() - killed_at
        self.assertLess(elapsed, 30)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertEqual(
            error_lines(result), ["error: worker 1 failed (killed by SIGKILL); stopped the others"]
        )
        self.assertFalse(any(group_alive(pid) for pid in pids.values()))
        self.assertFalse((self.tmp / "killed" / "metrics.json").exists())
        # The same launch again resumes from the chief's last checkpoint and finishes.
        rerun = self.launch(*train_args)
        self.assertEqual(rerun.returncode, 0, rerun.stdout + rerun.stderr)
        resumed = re.findall(r"^\[worker (\d)\] resuming from (\S+): epoch (\d+)", rerun.stdout, re.M)
        self.assertEqual(sorted(w for w, _, _ in resumed), ["0", "1"])
        self.assertEqual(resumed[0][1:], resumed[1][1:])  # both from the same checkpoint
        self.assertBetween(int(resumed[0][2]), 2, 12)
        self.assertLen(history(self.tmp / "killed")["loss"], 12)
        prints = fingerprints(rerun.stdout)
        self.assertLen(prints, 2)
        self.assertEqual(prints[0], prints[1])

    def test_launcher_timeout_stops_every_worker(self):
        model_dir = self.tmp / "timeout"
        start = time.monotonic()
        result = self.launch(*QUICK, "--epochs=100000", f"--model_dir={model_dir}", timeout=2)
        elapsed = time.monotonic() - start
        self.assertEqual(result.returncode, 124, result.stdout + result.stderr)
        self.assertEqual(
            error_lines(result),
            ["error: the cluster did not finish within --timeout=2s; stopped all workers"],
        )
        pids = [int(pid) for _, pid in LAUNCHED.findall(result.stdout)]
        self.assertLen(pids, 2)
        self.assertFalse(any(group_alive(pid) for pid in pids))
        self.assertLess(elapsed, 2 + launch.GRACE_SECONDS + 10)
        self.assertFalse((model_dir / "metrics.json").exists())


if __name__ == "__main__":
    tf.test.main()
