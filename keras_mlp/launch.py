"""Run a multi-worker training cluster on this machine: N workers talking over 127.0.0.1.

    keras-mlp-launch --workers=2 --timeout=1800 -- --flagfile=configs/concise.flags

Flags before `--` are the launcher's; those after it go to every worker's
`keras_mlp.train`. Each worker gets its own TF_CONFIG on a free port; its output
lines are prefixed with `[worker i]`. If a worker fails, the others are stopped.

The launcher bounds the whole run in time (`--timeout`); a worker catches SIGTERM
to stop at a step boundary, so stragglers are ended with SIGKILL after a short grace.
TensorFlow's worker servers listen on every interface, not only 127.0.0.1: the
launcher says so, with the ports, when it starts them.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import ExitStack

from absl import flags

from keras_mlp import cli, signals
from keras_mlp.checks import check_positive_int, check_seconds

GRACE_SECONDS = 3.0
# The workers talk over 127.0.0.1, but TensorFlow's gRPC server binds every interface
# (its listening address is "0.0.0.0:PORT", whatever host the cluster names).
EXPOSED_NOTE = (
    "note: TensorFlow's worker servers listen on every network interface, not only "
    "127.0.0.1: ports {ports} can be reached from other machines while training runs; "
    "on a shared network, block them with a firewall"
)


def free_ports(count, host="127.0.0.1"):
    """`count` distinct ports that are free on `host` now."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]


def tf_config(hosts, index):
    return json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}})


def _describe_exit(code):
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit status {code}"


class Worker:
    """One worker process whose output is echoed with a `[worker i]` prefix."""

    def __init__(self, index, command, env):
        self.index = index
        self.last_error = None
        self.process = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,  # its own process group: killed as a whole
        )
        self._echo = threading.Thread(target=self._pump, daemon=True)
        self._echo.start()

    def _pump(self):
        for line in self.process.stdout:
            line = line.rstrip("\n")
            if line.startswith("error:"):
                self.last_error = line.removeprefix("error:").strip()
            print(f"[worker {self.index}] {line}", flush=True)

    def kill(self, sig):
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass

    def finish(self):
        self._echo.join(timeout=5)


def launch(workers, train_command, timeout):
    """Runs `train_command` as `workers` worker processes; returns the launcher's exit
    status.

    Exit 0 when every worker succeeds; otherwise the first failing worker's status
    (1 when it was killed by a signal, 124 on timeout), after stopping the rest.

    Raises:
        UserError: `workers` is not a positive integer, or `timeout` not a positive
            finite number of seconds (named as the flags, `--workers`, `--timeout`).
    """
    check_positive_int("workers", workers)
    check_seconds("timeout", timeout)
    hosts = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    started = [
        Worker(i, train_command, {**os.environ, "TF_CONFIG": tf_config(hosts, i)})
        for i in range(workers)
    ]
    for worker, host in zip(started, hosts, strict=True):
        print(f"[launcher] worker {worker.index} (pid {worker.process.pid}) on {host}", flush=True)
    ports = ",".join(host.rpartition(":")[2] for host in hosts)
    print(f"[launcher] {EXPOSED_NOTE.format(ports=ports)}", flush=True)
    try:
        with signals.handled(_interrupt):
            failed, status = _watch(started, time.monotonic() + timeout, timeout)
    except _Interrupted as e:
        failed, status = None, 128 + e.signal_number
        print(
            f"error: stopped by {signal.Signals(e.signal_number).name}; stopped all workers",
            file=sys.stderr,
            flush=True,
        )
    finally:
        _stop(started)
    if failed:
        code = failed.process.returncode
        reason = _describe_exit(code) + (f": {failed.last_error}" if failed.last_error else "")
        print(
            f"error: worker {failed.index} failed ({reason}); stopped the others",
            file=sys.stderr,
            flush=True,
        )
        status = code if code > 0 else 1
    return status


def _watch(workers, deadline, timeout):
    """Waits until every worker succeeded, one failed or the deadline passed:
    `(failed worker or None, status)`."""
    while True:
        codes = [w.process.poll() for w in workers]
        failed = next((w for w, c in zip(workers, codes, strict=True) if c not in (None, 0)), None)
        if failed or all(c == 0 for c in codes):
            return failed, 0
        if time.monotonic() > deadline:
            print(
                f"error: the cluster did not finish within --timeout={timeout:g}s; stopped all workers",
                file=sys.stderr,
                flush=True,
            )
            return None, 124
        time.sleep(0.2)


class _Interrupted(Exception):
    def __init__(self, signal_number):
        super().__init__(signal_number)
        self.signal_number = signal_number


def _interrupt(signal_number, frame):
    """Ctrl-C and SIGTERM both end the watch, so that the workers are stopped too."""
    raise _Interrupted(signal_number)


def _stop(workers):
    """SIGTERM, then SIGKILL after a grace period, to every worker still running; a
    second Ctrl-C meanwhile does not cut it short (the workers, in their own sessions,
    would be left running)."""
    with signals.handled(signal.SIG_IGN):
        _end_workers(workers)


def _end_workers(workers):
    running = [w for w in workers if w.process.poll() is None]
    for worker in running:
        worker.kill(signal.SIGTERM)
    end = time.monotonic() + GRACE_SECONDS
    while any(w.process.poll() is None for w in running) and time.monotonic() < end:
        time.sleep(0.1)
    for worker in running:
        worker.kill(signal.SIGKILL)
    for worker in workers:
        worker.process.wait()
        worker.finish()


def train_command(train_args):
    """What each worker runs: the train tool with the user's flags, multi-worker last so it wins."""
    return [
        sys.executable,
        "-m",
        "keras_mlp.train",
        *train_args,
        "--strategy=multi_worker_mirrored",
    ]


def define_flags(flag_values):
    flags.DEFINE_integer(
        "workers", 2, "Number of worker processes on 127.0.0.1.", flag_values=flag_values
    )
    flags.DEFINE_float(
        "timeout",
        1800,
        "Seconds the whole cluster may run before every worker is stopped.",
        flag_values=flag_values,
    )


def _launch(flag_values, train_args):
    return launch(flag_values.workers, train_command(train_args), flag_values.timeout)


def main(argv=None):
    """The `keras-mlp-launch` command; returns its exit status."""
    return cli.run_tool(_launch, define_flags, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
