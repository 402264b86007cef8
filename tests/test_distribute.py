"""Tests for keras_mlp.distribute.get_strategy (2 logical CPUs, see conftest.py).

num_gpus=0 wherever a test means CPU devices: on a GPU host "mirrored" and
"one_device" would otherwise take the GPUs."""

import tensorflow as tf
from absl.testing import parameterized

from keras_mlp.distribute import get_strategy, is_chief
from keras_mlp.errors import UserError


class GetStrategyTest(tf.test.TestCase, parameterized.TestCase):
    @parameterized.parameters(
        ("default", type(tf.distribute.get_strategy()), 1),
        ("one_device", tf.distribute.OneDeviceStrategy, 1),
        ("mirrored", tf.distribute.MirroredStrategy, 2),
    )
    def test_returns_a_real_strategy(self, name, strategy_type, replicas):
        strategy = get_strategy(name, cpu_devices=2, num_gpus=0)
        self.assertIsInstance(strategy, strategy_type)
        self.assertEqual(strategy.num_replicas_in_sync, replicas)
        self.assertTrue(is_chief(strategy))

    def test_mirrored_runs_one_replica_per_logical_cpu(self):
        strategy = get_strategy("mirrored", cpu_devices=2, num_gpus=0)
        devices = strategy.experimental_local_results(
            strategy.run(lambda: tf.identity(tf.constant(0.0)).device)
        )
        self.assertEqual(
            sorted(d.split("/")[-1] for d in devices), ["device:CPU:0", "device:CPU:1"]
        )
        one = get_strategy("mirrored", cpu_devices=1, num_gpus=0)
        self.assertEqual(one.num_replicas_in_sync, 1)

    def test_rejects_bad_requests_with_clear_errors(self):
        with self.assertRaisesRegex(
            UserError, "strategy='tpu' is not known; accepted: default, one_device, mirrored"
        ):
            get_strategy("tpu")
        gpus = len(tf.config.list_physical_devices("GPU"))
        with self.assertRaisesRegex(
            UserError, f"num_gpus={gpus + 1} but this machine has {gpus} GPU"
        ):
            get_strategy("mirrored", num_gpus=gpus + 1)
        with self.assertRaisesRegex(UserError, "cpu_devices=0 must be a positive integer"):
            get_strategy("mirrored", cpu_devices=0, num_gpus=0)
        # The runtime is already running with 2 logical CPUs: 3 cannot be had any more.
        with self.assertRaisesRegex(UserError, "cannot split the CPU into 3 devices"):
            get_strategy("mirrored", cpu_devices=3, num_gpus=0)


if __name__ == "__main__":
    tf.test.main()
