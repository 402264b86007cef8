"""`get_strategy`: every supported `tf.distribute` strategy from one name."""

import tensorflow as tf

from keras_mlp.errors import UserError

STRATEGIES = ("default", "one_device", "mirrored")


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


def get_strategy(name="default", cpu_devices=2, num_gpus=None):
    """Returns the `tf.distribute.Strategy` called `name`.

    Args:
        name: `"default"` (no distribution), `"one_device"` (the first GPU, else
            the CPU) or `"mirrored"` (synchronous data parallelism over the local
            GPUs, or over `cpu_devices` logical CPU devices when there is none).
        cpu_devices: Logical CPU devices for `"mirrored"` without GPUs. Defaults to `2`.
        num_gpus: How many local GPUs to use; `None` means all. Defaults to `None`.

    Raises:
        UserError: for an unknown name or impossible device counts.
    """
    if name not in STRATEGIES:
        raise UserError(f"unknown strategy {name!r}; accepted: {', '.join(STRATEGIES)}")
    gpus = tf.config.list_physical_devices("GPU")
    if num_gpus is not None and not 0 <= num_gpus <= len(gpus):
        raise UserError(f"--num_gpus={num_gpus} but this machine has {len(gpus)} GPU(s)")
    gpu_names = [f"/gpu:{i}" for i in range(len(gpus) if num_gpus is None else num_gpus)]
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpu_names[0] if gpu_names else "/cpu:0")
    if not isinstance(cpu_devices, int) or cpu_devices < 1:
        raise UserError(f"--cpu_devices must be a positive integer. Received: {cpu_devices}")
    devices = gpu_names or _logical_cpus(cpu_devices)
    return tf.distribute.MirroredStrategy(devices)


def is_chief(strategy):
    """Whether this process writes the run's outputs (always true on one machine)."""
    resolver = strategy.cluster_resolver
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker"
        and resolver.task_id == 0
        and "chief" not in resolver.cluster_spec().as_dict()
    )
