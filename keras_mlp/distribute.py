"""`get_strategy`: every supported `tf.distribute` strategy from one name, and the
cluster set-up of multi-worker training."""

import errno
import functools
import json
import os
import signal
import socket
import threading
import time

import numpy as np
import tensorflow as tf

from keras_mlp import signals
from keras_mlp.checks import check_accepted, check_positive_int
from keras_mlp.errors import TrainingInterrupted, UserError
from keras_mlp.names import CLUSTER_TIMEOUT, STRATEGIES

# The task types of a MultiWorkerMirroredStrategy cluster; "chief" is a worker too.
TASK_TYPES = ("worker", "chief")


def _logical_cpus(count):
    """Splits the CPU into `count` logical devices (if not done yet) and names them.

    This is how MirroredStrategy runs on a machine without GPUs; TensorFlow allows
    it only before its runtime starts, so call this before any other op.
    """
    cpu = tf.config.list_physical_devices("CPU")[0]
    configured = tf.config.get_logical_device_configuration(cpu)
    if configured is None or len(configured) < count:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * count
            )
        except RuntimeError:
            have = len(configured) if configured else 1
            raise UserError(
                f"cannot split the CPU into {count} devices: TensorFlow already started with "
                f"{have}; choose the strategy before running any TensorFlow op"
            ) from None
    return [f"/cpu:{i}" for i in range(count)]


def _parse_tf_config():
    """TF_CONFIG as `(cluster dict, task type, task index)`, validated."""
    try:
        config = json.loads(os.environ["TF_CONFIG"])
    except json.JSONDecodeError as e:
        raise UserError(f"TF_CONFIG is not valid JSON ({e})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if (
        not isinstance(cluster, dict)
        or not cluster
        or not all(isinstance(h, list) and h for h in cluster.values())
        or not isinstance(task, dict)
    ):
        raise UserError(
            'TF_CONFIG must look like {"cluster": {"worker": ["host:port", ...]}, '
            '"task": {"type": "worker", "index": 0}}'
        )
    others = sorted(str(job) for job in cluster if job not in TASK_TYPES)
    if others:  # "ps" is ParameterServerStrategy's, "evaluator" a side job run by nothing here
        raise UserError(
            f"TF_CONFIG cluster has {', '.join(map(repr, others))} tasks; "
            "MultiWorkerMirroredStrategy trains with 'worker' tasks (and at most one 'chief')"
        )
    if len(cluster.get("chief", ())) > 1:
        raise UserError(f"TF_CONFIG cluster has {len(cluster['chief'])} 'chief' tasks; at most 1")
    for address in (a for addresses in cluster.values() for a in addresses):
        _check_address(address, "TF_CONFIG")
    task_type, index = task.get("type"), task.get("index")
    if task_type not in cluster:
        raise UserError(
            f"TF_CONFIG task type {task_type!r} is not in its cluster {sorted(cluster)}"
        )
    if type(index) is not int or not 0 <= index < len(cluster[task_type]):  # (no bools)
        raise UserError(
            f"TF_CONFIG task index {index!r} is outside its {len(cluster[task_type])} "
            f"{task_type} address(es)"
        )
    return cluster, task_type, index


def _check_address(address, where="worker"):
    """`(host, port)` of a `"host:port"` string with a port in 1..65535, or a
    `UserError` naming `where` it came from."""
    host, _, port = address.rpartition(":") if isinstance(address, str) else ("", "", "")
    if not host or not port.isdigit():
        raise UserError(f"{where} address {address!r} is not host:port")
    if not 1 <= int(port) <= 65535:
        raise UserError(f"{where} address {address!r} has port {port}; ports are 1..65535")
    return host, int(port)


def _check_port_free(address):
    """Fails clearly when this worker cannot listen on its own `host:port`."""
    host, port = _check_address(address)
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise UserError(
                    f"port {port} of this worker ({address}) is already in use"
                ) from None
            raise UserError(f"this worker cannot listen on {address} ({e.strerror or e})") from None


def cluster_resolver(worker_hosts=None, task_index=None, num_gpus=None):
    """The cluster of a multi-worker run: TF_CONFIG when set, else `worker_hosts` and `task_index`.

    Args:
        worker_hosts: `["host:port", ...]`, one per worker, the same on every worker.
        task_index: This worker's position in `worker_hosts`; 0 is the chief.
        num_gpus: Local GPUs per worker; `None` means all.
    """
    if "TF_CONFIG" in os.environ:
        cluster, task_type, index = _parse_tf_config()
        _check_port_free(cluster[task_type][index])
        return tf.distribute.cluster_resolver.TFConfigClusterResolver()
    if not worker_hosts:
        raise UserError(
            "strategy='multi_worker_mirrored' needs TF_CONFIG or worker_hosts=host:port,..."
        )
    hosts = f"worker_hosts={','.join(worker_hosts)} ({len(worker_hosts)} hosts: 0..{len(worker_hosts) - 1})"
    if task_index is None:
        raise UserError(f"{hosts} needs task_index=N, this worker's position in the list")
    if not 0 <= task_index < len(worker_hosts):
        raise UserError(f"task_index={task_index} is outside {hosts}")
    for address in worker_hosts:
        _check_address(address)
    _check_port_free(worker_hosts[task_index])
    return tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec({"worker": list(worker_hosts)}),
        task_type="worker",
        task_id=task_index,
        rpc_layer="grpc",
        num_accelerators=None if num_gpus is None else {"GPU": num_gpus},
    )


class ClusterWaitInterrupted(TrainingInterrupted):
    """SIGINT/SIGTERM came while this worker waited for the rest of its cluster."""

    def __str__(self):
        name = signal.Signals(self.signal_number).name
        return f"stopped by {name} while waiting for the cluster's workers; nothing was written"


def _answers(address):
    try:
        socket.create_connection(_check_address(address), timeout=1).close()
        return True
    except OSError:
        return False


def _await_peers(resolver, timeout):
    """Returns once every other worker of the cluster accepts connections on its port;
    raises `UserError` naming those that did not within `timeout` seconds, and
    `ClusterWaitInterrupted` on SIGINT/SIGTERM meanwhile.

    Creating the strategy waits for the peers inside TensorFlow's C++ runtime, with
    Python's lock held: no Python signal handler or thread runs there, so a worker
    whose peers never came could only be killed. This rendezvous waits in Python
    instead. Meanwhile this worker listens on its own port (connections are never
    accepted: a peer only needs to see it there), then hands the port to TensorFlow.
    """
    spec = resolver.cluster_spec().as_dict()
    mine = spec[resolver.task_type][resolver.task_id]
    peers = [a for addresses in spec.values() for a in addresses if a != mine]
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    deadline = time.monotonic() + timeout

    def stop(signal_number, frame):
        raise ClusterWaitInterrupted(signal_number, step=0)

    try:
        listener.bind(_check_address(mine))
        listener.listen(len(peers) + 1)
        with signals.handled(stop):
            told = False
            while peers:
                peers = [address for address in peers if not _answers(address)]
                if peers and not told:
                    print(
                        f"waiting up to {timeout:g} s for the workers at {', '.join(peers)}",
                        flush=True,
                    )
                    told = True
                if peers and time.monotonic() > deadline:
                    raise UserError(
                        f"the cluster did not form within cluster_timeout={timeout:g} seconds: "
                        f"no answer from {', '.join(peers)}; start every worker with the same "
                        "worker list, or give a larger cluster_timeout=SECONDS"
                    )
                time.sleep(0.2 if peers else 0)
    finally:
        listener.close()


def _multi_worker(resolver, timeout):
    """A MultiWorkerMirroredStrategy, created once every other worker answers (a bounded,
    interruptible wait: `_await_peers`), that leaves this process's SIGTERM handling as
    it was.

    Creating one installs TensorFlow's own C++ SIGTERM handler (a preemption notice
    that nothing here reads), which swallows SIGTERM silently: a worker signalled
    before training starts would then train to the end and exit 0. Setting the
    Python-level handler again puts the process's own handling back at the C level.
    """
    if threading.current_thread() is not threading.main_thread():  # no signals to honour
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    _await_peers(resolver, timeout)
    handler = signal.getsignal(signal.SIGTERM)
    try:
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    finally:
        signal.signal(signal.SIGTERM, handler if handler is not None else signal.SIG_DFL)


def get_strategy(
    name="default",
    *,
    cpu_devices=2,
    num_gpus=None,
    worker_hosts=None,
    task_index=None,
    cluster_timeout=CLUSTER_TIMEOUT,
):
    """Returns the `tf.distribute.Strategy` called `name`.

    Args:
        name: `"default"` (no distribution), `"one_device"` (the first GPU, else
            the CPU), `"mirrored"` (synchronous data parallelism over the local
            GPUs, or over `cpu_devices` logical CPU devices when there is none)
            or `"multi_worker_mirrored"` (the same across machines, with
            collective all-reduce; see `cluster_resolver`).
        cpu_devices: Logical CPU devices for `"mirrored"` without GPUs. Defaults to `2`.
        num_gpus: How many local GPUs to use; `None` means all. Defaults to `None`.
        worker_hosts, task_index: The cluster when TF_CONFIG is not set.
        cluster_timeout: Seconds to wait for every worker of a cluster to answer; past
            them (or on SIGINT/SIGTERM meanwhile) the process prints one line and ends.
            Defaults to `CLUSTER_TIMEOUT`.

    Raises:
        UserError: for an unknown name, impossible device counts or a bad cluster.
    """
    check_accepted("strategy", name, STRATEGIES)
    gpus = tf.config.list_physical_devices("GPU")
    if num_gpus is not None and not 0 <= num_gpus <= len(gpus):
        raise UserError(f"num_gpus={num_gpus} but this machine has {len(gpus)} GPU(s)")
    gpu_names = [f"/gpu:{i}" for i in range(len(gpus) if num_gpus is None else num_gpus)]
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpu_names[0] if gpu_names else "/cpu:0")
    if name == "multi_worker_mirrored":
        return _multi_worker(cluster_resolver(worker_hosts, task_index, num_gpus), cluster_timeout)
    check_positive_int("cpu_devices", cpu_devices)
    return _mirrored(tuple(gpu_names or _logical_cpus(cpu_devices)))


@functools.cache
def _mirrored(devices):
    """One MirroredStrategy per device set and process. Each new one would number its
    all-reduces from the same keys, and TensorFlow's process-wide collective executor
    would then take a second model's gradients for the first's ("Shape mismatch in the
    collective instance 100"): runs one after another in a process (a search, a
    notebook) share the strategy instead."""
    return tf.distribute.MirroredStrategy(list(devices))


def is_chief(strategy):
    """Whether this process writes the run's outputs: always on one machine, and
    only the chief (worker 0) in a multi-worker cluster."""
    return strategy.extended.should_checkpoint


def summed_on_read(shape=(), dtype=tf.float32):
    """Numbers each replica updates locally; reading them sums over replicas and
    workers (a collective: every worker must read them at the same points,
    docs/design.md, "Multi-worker collectives"). Create it inside the strategy's scope."""
    return tf.Variable(
        tf.zeros(shape, dtype),
        trainable=False,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.SUM,
    )


def is_cluster(strategy):
    """Whether `strategy` spans several worker processes."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def _worker_rank(strategy):
    """This worker's position among the cluster's workers (the chief first), and their number."""
    resolver = strategy.cluster_resolver
    spec = resolver.cluster_spec().as_dict()
    tasks = [(kind, i) for kind in ("chief", "worker") for i in range(len(spec.get(kind, ())))]
    return tasks.index((resolver.task_type, resolver.task_id)), len(tasks)


def from_every_worker(strategy, value):
    """Every worker's `value` (an integer), in worker order, the chief's first: a
    collective that every worker of a cluster must call at the same point. On one
    machine, `[value]`."""
    if not is_cluster(strategy):
        return [value]
    rank, count = _worker_rank(strategy)
    mine = np.zeros(count)
    mine[rank] = value  # every other worker adds zeros in this worker's slot
    with strategy.scope():
        slots = summed_on_read((count,), tf.float64)
    # Assigned outside a replica, a summed variable takes value / replicas on each of
    # them: read back, that is the mean over the workers, so scale it back.
    slots.assign(mine)
    return [round(v * count) for v in slots.read_value().numpy().tolist()]
