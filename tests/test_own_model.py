"""The README's "Your own model" example, run as written (its code block, read from the
README) on tensorflow-datasets' mock data: under the default strategy, mirrored on 2
logical CPUs, and on a 2-worker cluster on 127.0.0.1 (slow tier), each with a resume."""

import json
import os
import subprocess
import sys

import keras
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from docs_blocks import REPO, extract

from keras_mlp.distribute import get_strategy
from keras_mlp.launch import free_ports, tf_config

EXAMPLES = 600  # per split: 2 training steps of 256 per epoch, 3 validation batches


def example_code():
    """The README's block that defines `train_own_model`."""
    blocks = extract((REPO / "README.md").read_text(), "README.md")
    (block,) = [b for b in blocks if "def train_own_model" in b.text]
    return block.text


def load_example():
    namespace = {"__name__": "own_model"}  # not __main__: the functions only
    exec(compile(example_code(), "README.md", "exec"), namespace)
    return namespace["train_own_model"]


class OwnModelTest(tf.test.TestCase):
    def _run(self, strategy, model_dir, epochs):
        keras.utils.set_random_seed(0)
        with tfds.testing.mock_data(num_examples=EXAMPLES):
            return load_example()(strategy, model_dir, epochs=epochs)

    def test_the_example_trains_and_resumes_under_default_and_mirrored(self):
        results = {}
        for name in ("default", "mirrored"):
            model_dir = os.path.join(self.get_temp_dir(), name)
            _, first = self._run(get_strategy(name, num_gpus=0), model_dir, epochs=1)
            self.assertEqual(first["steps"], [2])
            with self.captureWritesToStream(sys.stdout) as captured:
                model, history = self._run(get_strategy(name, num_gpus=0), model_dir, epochs=2)
            self.assertIn("resuming from", captured.contents())
            self.assertEqual(history["steps"], [2, 2])
            self.assertEqual(history["loss"][0], first["loss"][0])  # restored, not retrained
            self.assertEqual(int(model.optimizer.iterations.numpy()), 4)
            results[name] = model.get_weights()
        # The same global batches on one device and two replicas.
        for a, b in zip(results["default"], results["mirrored"], strict=True):
            self.assertAllClose(a, b, atol=1e-5)


WORKER = """
import json, sys
import tensorflow as tf
import tensorflow_datasets as tfds
sys.path.insert(0, {tests!r})
from test_own_model import load_example
from keras_mlp.training import weights_fingerprint
with tfds.testing.mock_data(num_examples={examples}):
    model, history = load_example()(
        tf.distribute.MultiWorkerMirroredStrategy(), sys.argv[1], epochs=int(sys.argv[2])
    )
print("RESULT " + json.dumps({{"steps": history["steps"], "fingerprint": weights_fingerprint(model)}}))
"""


@pytest.mark.slow
class OwnModelClusterTest(tf.test.TestCase):
    def _cluster(self, script, model_dir, epochs):
        hosts = [f"127.0.0.1:{port}" for port in free_ports(2)]
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
        workers = [
            subprocess.Popen(
                [sys.executable, script, model_dir, str(epochs)],
                env={**env, "TF_CONFIG": tf_config(hosts, i)},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for i in range(2)
        ]
        outputs = []
        try:
            for worker in workers:
                outputs.append(worker.communicate(timeout=240)[0])
        finally:
            for worker in workers:
                worker.kill()
                worker.wait()
        for worker, output in zip(workers, outputs, strict=True):
            self.assertEqual(worker.returncode, 0, output[-3000:])
        results = [
            json.loads(line.removeprefix("RESULT "))
            for output in outputs
            for line in output.splitlines()
            if line.startswith("RESULT ")
        ]
        return results, outputs

    def test_the_example_on_two_workers_resumes(self):
        script = os.path.join(self.get_temp_dir(), "worker.py")
        with open(script, "w") as f:
            f.write(WORKER.format(tests=str(REPO / "tests"), examples=EXAMPLES))
        model_dir = os.path.join(self.get_temp_dir(), "own")
        first, _ = self._cluster(script, model_dir, epochs=1)
        self.assertEqual([r["steps"] for r in first], [[2], [2]])
        second, outputs = self._cluster(script, model_dir, epochs=2)
        self.assertEqual([r["steps"] for r in second], [[2, 2], [2, 2]])
        self.assertEqual(second[0]["fingerprint"], second[1]["fingerprint"])  # one model
        self.assertNotEqual(second[0]["fingerprint"], first[0]["fingerprint"])
        for output in outputs:
            self.assertIn("resuming from", output)
        checkpoints = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
        self.assertTrue(checkpoints.endswith("ckpt-4"))


if __name__ == "__main__":
    tf.test.main()
