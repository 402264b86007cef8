"""Test-session set-up that must happen before TensorFlow runs any op."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

# Two logical CPU devices for every test: MirroredStrategy needs them split before
# the runtime starts, which can happen only once per process (DESIGN.md fact 12).
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

# absl-using code under pytest expects parsed flags (DESIGN.md fact 5).
flags.FLAGS.mark_as_parsed()

sys.path.insert(0, os.path.dirname(__file__))

# Tests run subprocesses from other folders: make the real-data path absolute.
if os.environ.get("KERAS_MLP_FASHION_MNIST_DIR"):
    os.environ["KERAS_MLP_FASHION_MNIST_DIR"] = os.path.abspath(
        os.environ["KERAS_MLP_FASHION_MNIST_DIR"]
    )
