"""Importing keras_mlp changes no global state (checked in a fresh process), and a
config is built without TensorFlow."""

import subprocess
import sys

import tensorflow as tf

MODULES = [
    "keras_mlp",
    "keras_mlp.names",
    "keras_mlp.errors",
    "keras_mlp.checks",
    "keras_mlp.config",
    "keras_mlp.cli",
    "keras_mlp.layers",
    "keras_mlp.models",
    "keras_mlp.idx",
    "keras_mlp.sources",
    "keras_mlp.sources.place",
    "keras_mlp.sources.readers",
    "keras_mlp.sources.published",
    "keras_mlp.sources.network",
    "keras_mlp.sources.keras_cache",
    "keras_mlp.sources.download",
    "keras_mlp.sources.tfds_copy",
    "keras_mlp.sources.find",
    "keras_mlp.data",
    "keras_mlp.distribute",
    "keras_mlp.signals",
    "keras_mlp.callbacks",
    "keras_mlp.schedules",
    "keras_mlp.training",
    "keras_mlp.figures",
    "keras_mlp.diagnostics",
    "keras_mlp.summaries",
    "keras_mlp.profiling",
    "keras_mlp.step_graph",
    "keras_mlp.reporting",
    "keras_mlp.run_dir",
    "keras_mlp.run",
    "keras_mlp.train",
    "keras_mlp.launch",
    "keras_mlp.predict",
    "keras_mlp.hparams",
    "keras_mlp.experiment",
    "keras_mlp.trial",
    "keras_mlp.plots",
    "keras_mlp.sweep",
    "keras_mlp.search",
    "keras_mlp.benchmark",
]

# The heavy libraries are imported first, so that only keras_mlp's own effects count.
CHECK = f"""
import importlib, json, os, signal
import matplotlib, tensorflow, keras, optuna, PIL, tensorboard
from absl import flags, logging
state = lambda: dict(
    env=dict(os.environ),
    backend=matplotlib.rcParams._get_backend_or_none(),
    flags=sorted(flags.FLAGS),
    policy=keras.mixed_precision.global_policy().name,
    verbosity=logging.get_verbosity(),
    tf_log_level=tensorflow.get_logger().level,
    sigterm=str(signal.getsignal(signal.SIGTERM)),
)
before = state()
for name in {MODULES!r}:
    importlib.import_module(name)
after = state()
print(json.dumps({{k: [before[k], after[k]] for k in before if before[k] != after[k]}}))
"""


class ImportTest(tf.test.TestCase):
    def test_importing_any_module_changes_no_global_state(self):
        env = {"PATH": "/usr/bin:/bin", "HOME": self.get_temp_dir(), "TF_CPP_MIN_LOG_LEVEL": "2"}
        result = subprocess.run(
            [sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120, env=env
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip().splitlines()[-1], "{}")

    def test_a_config_is_built_and_checked_without_tensorflow(self):
        code = (
            "import sys; from keras_mlp.config import RunConfig; from keras_mlp import cli;"
            "RunConfig(model='concise', hidden_units=(8, 4));"
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))"
        )
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.strip(), "[]")


if __name__ == "__main__":
    tf.test.main()
