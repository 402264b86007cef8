"""Tests for keras_mlp.distribute.get_strategy (2 logical CPUs, see conftest.py)."""

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
        strategy = get_strategy(name, cpu_devices=2)
        self.assertIsInstance(strategy, strategy_type)
        self.assertEqual(strategy.num_replicas_in_sync, replicas)
        self.assertTrue(is_chief(strategy))

    def test_mirrored_runs_one_replica_per_logical_cpu(self):
        strategy = get_strategy("mirrored", cpu_devices=2)
        devices = strategy.experimental_local_results(
            strategy.run(lambda: tf.identity(tf.constant(0.0)).device)
        )
        self.assertEqual(
            sorted(d.split("/")[-1] for d in devices), ["device:CPU:0", "device:CPU:1"]
        )
        one = get_strategy("mirrored", cpu_devices=1)
        self.assertEqual(one.num_replicas_in_sync, 1)

    def test_rejects_bad_requests_with_clear_errors(self):
        with self.assertRaisesRegex(
            UserError, "unknown strategy 'tpu'; accepted: default, one_device, mirrored"
        ):
            get_strategy("tpu")
        with self.assertRaisesRegex(UserError, "--num_gpus=1 but this machine has 0 GPU"):
            get_strategy("mirrored", num_gpus=1)
        with self.assertRaisesRegex(UserError, "cpu_devices must be a positive integer"):
            get_strategy("mirrored", cpu_devices=0)
        # The runtime is already running with 2 logical CPUs: 3 cannot be had any more.
        with self.assertRaisesRegex(UserError, "cannot split the CPU into 3 devices"):
            get_strategy("mirrored", cpu_devices=3)


if __name__ == "__main__":
    tf.test.main()
