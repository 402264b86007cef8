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

import numpy as np
import pytest
import tensorflow as tf
from cli_util import Result, error_lines, run_main, run_tool, start_tool
from tensorboard.backend.event_processing import event_accumulator

from keras_mlp import launch, train
from keras_mlp.data import load_dataset
from keras_mlp.errors import UserError
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
STOPPED = re.compile(r"error: stopped by (\w+) at step (\d+); checkpoint saved as (\S+);")


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


def wait_for_line(process, text, *, others=(), timeout=120):
    """Waits until `process` printed a line holding `text`; fails if it (or one of
    `others`) ends first, or after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not any(text in line for line in process.out):
        if any(p.poll() is not None for p in (process, *others)):
            raise AssertionError(f"a process ended before {text!r} was printed")
        if time.monotonic() > end:
            raise AssertionError(f"{text!r} not printed within {timeout} s")
        time.sleep(0.05)


def _listening_addresses():
    """{(IPv4 address, port)} of the TCP sockets listening on this machine (IPv6 "any"
    reads as 0.0.0.0), from /proc/net/tcp and tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as f:
            for row in list(f)[1:]:
                local, state = row.split()[1], row.split()[3]
                if state != "0A":  # LISTEN
                    continue
                address, port = local.split(":")
                if set(address) == {"0"}:
                    found.add(("0.0.0.0", int(port, 16)))
                elif len(address) == 8:
                    octets = bytes.fromhex(address)[::-1]  # little-endian on x86 and arm
                    found.add((".".join(map(str, octets)), int(port, 16)))
    return found


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

    def test_tf_config_outside_what_the_strategy_runs(self):
        """Issue 16: an integer address (AttributeError), a 'ps' task (ValueError deep in
        TensorFlow) and a port past 65535 (OverflowError) were tracebacks, exit 1."""

        def config(cluster, task_type="worker"):
            return json.dumps({"cluster": cluster, "task": {"type": task_type, "index": 0}})

        mwms = "MultiWorkerMirroredStrategy trains with 'worker' tasks (and at most one 'chief')"
        cases = [
            (config({"worker": [12345]}), "TF_CONFIG address 12345 is not host:port"),
            (
                config({"worker": ["127.0.0.1:1", 7]}),
                "TF_CONFIG address 7 is not host:port",
            ),
            (
                config({"worker": ["127.0.0.1:99999"]}),
                "TF_CONFIG address '127.0.0.1:99999' has port 99999; ports are 1..65535",
            ),
            (
                config({"worker": ["127.0.0.1:1"], "ps": ["127.0.0.1:2"]}, "ps"),
                f"TF_CONFIG cluster has 'ps' tasks; {mwms}",
            ),
            (
                config({"worker": ["127.0.0.1:1"], "evaluator": ["127.0.0.1:2"]}),
                f"TF_CONFIG cluster has 'evaluator' tasks; {mwms}",
            ),
            (
                config({"chief": ["127.0.0.1:1", "127.0.0.1:2"]}, "chief"),
                "TF_CONFIG cluster has 2 'chief' tasks; at most 1",
            ),
        ]
        for bad_config, message in cases:
            with self.subTest(bad_config):
                self.assert_bad_input(self.train(tf_config=bad_config), message)

    def test_worker_hosts_port_outside_the_port_range(self):
        """Issue 16: an OverflowError traceback from bind(), exit 1."""
        for hosts, address in (
            ("127.0.0.1:99999,127.0.0.1:2", "127.0.0.1:99999"),
            ("127.0.0.1:1,127.0.0.1:0", "127.0.0.1:0"),
        ):
            self.assert_bad_input(
                self.train(f"--worker_hosts={hosts}", "--task_index=0"),
                f"worker address {address!r} has port {address.rpartition(':')[2]}; "
                "ports are 1..65535",
            )

    def test_bad_worker_hosts_or_task_index(self):
        hosts = "--worker_hosts=127.0.0.1:1,127.0.0.1:2"
        self.assert_bad_input(
            self.train(hosts, "--task_index=5"),
            f"--task_index=5 is outside {hosts} (2 hosts: 0..1)",
        )
        self.assert_bad_input(
            self.train(hosts),
            f"{hosts} (2 hosts: 0..1) needs --task_index=N, this worker's position in the list",
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

    def test_the_library_call_checks_what_the_flags_check(self):
        for args, message in [
            ((0, ["true"], 60.0), "workers=0 must be a positive integer"),
            ((1, ["true"], 0.0), "timeout=0 must be a positive number of seconds"),
            ((1, ["true"], float("inf")), "timeout=inf must be a positive number of seconds"),
        ]:
            with self.assertRaisesRegex(UserError, f"^{re.escape(message)}$"):
                launch.launch(*args)

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

    def worker_hosts_cluster(self, *args):
        """Two workers started by hand from --worker_hosts/--task_index (no TF_CONFIG,
        as the README shows); returns both Results."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in free_ports(2))
        env = {"TF_CONFIG": None, "TMPDIR": str(self.worker_tmp)}
        commands = [
            ("train", [*args, MULTI_WORKER, f"--worker_hosts={hosts}", f"--task_index={i}"], env)
            for i in (0, 1)
        ]
        with started(*commands) as workers:
            return [finished(worker, timeout=150) for worker in workers]

    def test_two_workers_train_like_one_machine(self):
        """Mirrored on 2 CPUs, a 1-worker launch and a 2-worker cluster from
        --worker_hosts each give one device's losses; both workers end with the
        same weights, and only the chief writes."""
        runs = {}
        for strategy in ("one_device", "mirrored"):
            model_dir = self.tmp / strategy
            result = run_main(
                train.main,
                *QUICK,
                f"--strategy={strategy}",
                "--cpu_devices=2",
                f"--model_dir={model_dir}",
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertIn(f"{1 if strategy == 'one_device' else 2} replica(s)", result.stdout)
            runs[strategy] = history(model_dir)
        result = self.launch(*QUICK, f"--model_dir={self.tmp / 'one_worker'}", workers=1)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        self.assertIn("[worker 0] epoch 2/2", result.stdout)
        runs["one_worker"] = history(self.tmp / "one_worker")

        model_dir = self.tmp / "two_workers"
        workers = self.worker_hosts_cluster(*QUICK, f"--model_dir={model_dir}")
        for worker in workers:
            self.assertEqual(worker.returncode, 0, worker.stdout + worker.stderr)
            self.assertIn("2 replica(s)", worker.stdout)
        runs["two_workers"] = history(model_dir)

        reference = runs.pop("one_device")
        self.assertLen(reference["loss"], 2)
        for name, other in runs.items():
            # Same global batches everywhere; only the order of float sums differs.
            self.assertAllClose(other["loss"], reference["loss"], atol=1e-4, msg=name)
            self.assertAllClose(other["val_loss"], reference["val_loss"], atol=1e-4, msg=name)

        prints = [fingerprints(worker.stdout) for worker in workers]
        self.assertEqual([len(p) for p in prints], [1, 1])
        self.assertEqual(prints[0], prints[1])  # both workers hold identical weights
        # Only the chief writes the run's files; worker 1's checkpoint copy is removed.
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

    def test_sigterm_to_one_worker_stops_both_at_the_same_step(self):
        """The SIGTERM vote: only worker 1 gets the signal; both stop at one step,
        and the chief's checkpoint holds that step."""
        model_dir = self.tmp / "vote"
        hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
        args = [
            *QUICK,
            "--epochs=10",
            "--batch_size=32",
            "--steps_per_execution=5",
            MULTI_WORKER,
            f"--model_dir={model_dir}",
        ]
        with started(
            *[("train", args, {"TF_CONFIG": tf_config(hosts, i)}) for i in (0, 1)]
        ) as workers:
            wait_for_line(workers[1], "epoch 1/10", others=workers)
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
        self.assertEqual(tf.train.latest_checkpoint(str(model_dir / "checkpoints")), checkpoint)
        saved = tf.train.load_variable(checkpoint, "step/.ATTRIBUTES/VARIABLE_VALUE")
        self.assertEqual(int(saved), int(step))
        self.assertFalse((model_dir / "metrics.json").exists())
        # Worker 1's line must name the same checkpoint, not the chief's previous one.
        self.assertEqual(other_saved, checkpoint, "worker 1 names another checkpoint")

    def test_sigterm_before_training_starts_is_not_swallowed(self):
        """Creating the strategy installs TensorFlow's own SIGTERM handler, which
        ignored the signal: the worker then trained to the end and exited 0."""
        model_dir = self.tmp / "early"
        config = tf_config([f"127.0.0.1:{free_ports(1)[0]}"], 0)  # a cluster of one
        args = [*QUICK, "--epochs=20", "--batch_size=32", MULTI_WORKER, f"--model_dir={model_dir}"]
        with started(("train", args, {"TF_CONFIG": config})) as (worker,):
            # Printed once strategy, data and model are built, before training starts.
            wait_for_line(worker, "oneDNN")  # in the first line only
            worker.send_signal(signal.SIGTERM)
            result = finished(worker)
        # Killed by the signal before training, or stopped cleanly at a step: never trained on.
        self.assertIn(result.returncode, (-signal.SIGTERM, 128 + signal.SIGTERM), result.stdout)
        self.assertNotIn("epoch 20/20", result.stdout)
        self.assertFalse((model_dir / "metrics.json").exists())

    def test_killed_worker_stops_the_cluster_and_a_rerun_resumes(self):
        train_args = [
            *QUICK,
            "--epochs=6",
            "--batch_size=32",
            f"--model_dir={self.tmp / 'killed'}",
        ]
        launcher_args = ["--workers=2", "--timeout=120", "--", *train_args]
        with started(("launch", launcher_args, {"TF_CONFIG": None})) as (launcher,):
            wait_for_line(launcher, "[worker 1] epoch 1/6")
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
        resumed = re.findall(
            r"^\[worker (\d)\] resuming from (\S+): epoch (\d+)", rerun.stdout, re.M
        )
        self.assertEqual(sorted(w for w, _, _ in resumed), ["0", "1"])
        self.assertEqual(resumed[0][1:], resumed[1][1:])  # both from the same checkpoint
        self.assertBetween(int(resumed[0][2]), 2, 6)
        self.assertLen(history(self.tmp / "killed")["loss"], 6)
        prints = fingerprints(rerun.stdout)
        self.assertLen(prints, 2)
        self.assertEqual(prints[0], prints[1])

    def test_two_workers_with_image_summaries(self):
        """Image summaries in a cluster (they once crashed it after epoch 1): the run
        finishes, both workers agree, and the confusion counts logged by the chief equal
        those of the exported model's predictions on the validation split."""
        model_dir = self.tmp / "images"
        result = self.launch(*QUICK, "--image_summaries", f"--model_dir={model_dir}")
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        prints = fingerprints(result.stdout)
        self.assertLen(prints, 2)
        self.assertEqual(prints[0], prints[1])
        accumulator = event_accumulator.EventAccumulator(
            str(model_dir / "logs" / "validation"), size_guidance={"tensors": 0}
        )
        accumulator.Reload()
        events = accumulator.Tensors("confusion_matrix_counts")
        self.assertEqual([e.step for e in events], [1, 2])
        table = tf.make_ndarray(events[-1].tensor_proto).item().decode()
        logged = np.array(
            [[int(c) for c in row.split("|")[2:-1]] for row in table.splitlines()[2:]]
        )
        data = load_dataset("synthetic")
        served = tf.saved_model.load(str(model_dir / "export")).signatures["serving_default"]
        predicted = served(images=tf.constant(data.val_images))["class_ids"].numpy()
        expected = np.zeros((data.num_classes, data.num_classes), int)
        np.add.at(expected, (data.val_labels, predicted), 1)
        self.assertAllEqual(logged, expected)

    def test_sigterm_to_the_launcher_stops_every_worker(self):
        with started(
            (
                "launch",
                [
                    "--workers=1",
                    "--",
                    *QUICK,
                    "--epochs=100000",
                    f"--model_dir={self.tmp / 'term'}",
                ],
                {"TF_CONFIG": None},
            )
        ) as (launcher,):
            wait_for_line(launcher, "epoch 1/100000")
            pids = [int(pid) for _, pid in LAUNCHED.findall("".join(launcher.out))]
            launcher.send_signal(signal.SIGTERM)
            result = finished(launcher, timeout=30)
        self.assertEqual(result.returncode, 143, result.stderr)
        self.assertIn("error: stopped by SIGTERM; stopped all workers", error_lines(result))
        self.assertLen(pids, 1)
        self.assertFalse(group_alive(pids[0]))

    def test_the_launcher_says_which_ports_every_interface_can_reach(self):
        """TensorFlow's gRPC server binds 0.0.0.0 whatever host the cluster names: the
        launcher's note says so, naming the ports; /proc/net/tcp shows them."""
        model_dir = self.tmp / "exposed"
        with started(
            (
                "launch",
                [
                    "--workers=2",
                    "--timeout=90",
                    "--",
                    *QUICK,
                    "--epochs=1000",
                    f"--model_dir={model_dir}",
                ],
                {"TF_CONFIG": None},
            )
        ) as (launcher,):
            wait_for_line(launcher, "[worker 0] epoch 1/1000")
            output = "".join(launcher.out)
            ports = [int(p) for p in re.findall(r"on 127\.0\.0\.1:(\d+)$", output, re.M)]
            self.assertLen(ports, 2)
            self.assertIn(launch.EXPOSED_NOTE.format(ports=",".join(map(str, ports))), output)
            listening = _listening_addresses()
            launcher.send_signal(signal.SIGTERM)
            finished(launcher)
        for port in ports:
            self.assertIn(("0.0.0.0", port), listening)
            self.assertNotIn(("127.0.0.1", port), listening)

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


@pytest.mark.slow
class ClusterAgreementTest(tf.test.TestCase):
    """Only the chief decides what happens to the model_dir, and every worker ends the
    way it decided; a worker never waits for ever, and stops on SIGINT/SIGTERM."""

    def setUp(self):
        super().setUp()
        self.tmp = Path(self.get_temp_dir())

    def finished_run(self, name, *args):
        model_dir = self.tmp / name
        result = run_main(train.main, *QUICK, *args, f"--model_dir={model_dir}")
        self.assertEqual(result.returncode, 0, result.stderr)
        return model_dir

    def cluster(self, *per_worker_args, timeout=120):
        """Workers from --worker_hosts, worker i with the QUICK flags and `per_worker_args[i]`;
        returns their Results and the seconds until the last one ended."""
        hosts = ",".join(f"127.0.0.1:{port}" for port in free_ports(len(per_worker_args)))
        env = {"TF_CONFIG": None, "TMPDIR": str(self.tmp)}
        commands = [
            (
                "train",
                [*QUICK, *args, MULTI_WORKER, f"--worker_hosts={hosts}", f"--task_index={i}"],
                env,
            )
            for i, args in enumerate(per_worker_args)
        ]
        start = time.monotonic()
        with started(*commands, timeout=timeout) as workers:
            results = [finished(worker, timeout=timeout) for worker in workers]
        return results, time.monotonic() - start

    def test_the_chiefs_refusal_ends_every_worker(self):
        model_dir = self.finished_run("refused")  # a scratch run; the cluster asks for concise
        args = ["--model=concise", f"--model_dir={model_dir}"]
        (chief, other), seconds = self.cluster(args, args)
        self.assertEqual((chief.returncode, other.returncode), (2, 2), chief.stderr + other.stderr)
        self.assertRegex(error_lines(chief)[0], "holds a run with other settings")
        self.assertEqual(
            error_lines(other),
            [
                "error: worker 0 of the cluster could not start (its own output says why); "
                "every worker stops"
            ],
        )
        self.assertLess(seconds, 60)  # not left waiting in a collective

    def test_a_run_the_chief_finds_complete_is_complete_for_every_worker(self):
        model_dir = self.finished_run("complete")
        args = [f"--model_dir={model_dir}"]
        (chief, other), _ = self.cluster(args, args)
        self.assertEqual((chief.returncode, other.returncode), (0, 0), chief.stderr + other.stderr)
        self.assertIn("is already complete (finished)", chief.stdout)
        self.assertIn("is already complete (the chief's decision)", other.stdout)
        self.assertNotIn("epoch 1/2", chief.stdout + other.stdout)

    def test_workers_that_restored_different_steps_stop_together(self):
        """Worker 1 cannot see the chief's checkpoints (another folder here; another host's
        disk in life): it would have started over alone."""
        model_dir = self.finished_run("restored")
        (model_dir / "metrics.json").unlink()  # unfinished: the chief resumes
        blind = self.tmp / "blind"
        (chief, other), _ = self.cluster([f"--model_dir={model_dir}"], [f"--model_dir={blind}"])
        self.assertEqual((chief.returncode, other.returncode), (2, 2), chief.stderr + other.stderr)
        steps = 2 * (2000 // 64)
        expected = (
            f"error: the workers restored different steps (worker 0: step {steps}, worker 1: "
            f"step 0); every worker must read the chief's checkpoints in --model_dir="
        )
        self.assertStartsWith(error_lines(chief)[0], expected)
        self.assertStartsWith(error_lines(other)[0], expected)

    def test_a_worker_whose_peers_never_come_stops_on_a_signal_or_its_timeout(self):
        peer, mine = free_ports(2)
        hosts = f"--worker_hosts=127.0.0.1:{peer},127.0.0.1:{mine}"
        env = {"TF_CONFIG": None}
        lone = [*QUICK, MULTI_WORKER, hosts, "--task_index=1"]
        commands = [
            ("train", [*lone, f"--model_dir={self.tmp / name}", *extra], env)
            for name, extra in (("int", []), ("term", []), ("late", ["--cluster_timeout=3"]))
        ]
        # One at a time: the three would share one port.
        for (tool, args, env_), sig in zip(
            commands, (signal.SIGINT, signal.SIGTERM, None), strict=True
        ):
            with started((tool, args, env_), timeout=90) as (worker,):
                wait_for_line(
                    worker,
                    f"waiting up to {3 if sig is None else 180} s for the workers at 127.0.0.1:{peer}",
                )
                start = time.monotonic()
                if sig:
                    worker.send_signal(sig)
                result = finished(worker, timeout=30)
            if sig:
                self.assertEqual(result.returncode, 128 + sig, result.stderr)
                self.assertEqual(
                    error_lines(result),
                    [
                        f"error: stopped by {sig.name} while waiting for the cluster's workers; "
                        "nothing was written"
                    ],
                )
                self.assertLess(time.monotonic() - start, 5)
            else:
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertEqual(
                    error_lines(result),
                    [
                        f"error: the cluster did not form within --cluster_timeout=3 seconds: no "
                        f"answer from 127.0.0.1:{peer}; start every worker with the same worker "
                        "list, or give a larger --cluster_timeout=SECONDS"
                    ],
                )
            self.assertFalse(Path(args[-1 if sig else -2].split("=", 1)[1]).exists())


if __name__ == "__main__":
    tf.test.main()
