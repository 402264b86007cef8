"""The Graphs tab shows the trainer's own step, read back from the event file: its
penalty and loss-scaling ops when the run has them, its layers named as their weights."""

import re
from pathlib import Path

import keras
import tensorflow as tf
from test_summaries import _accumulator

from keras_mlp.data import load_dataset
from keras_mlp.models import build_model
from keras_mlp.step_graph import keras_name, layer_paths
from keras_mlp.summaries import TensorBoardLogger
from keras_mlp.training import Trainer


def logged_graph(log_dir, model_name, dtype="float32", **model_settings):
    """The node names of the graph a one-epoch run of `model_name` logs, and the model."""
    data = load_dataset("synthetic")
    keras.backend.clear_session()  # layer names from dense, whatever the process built before
    keras.mixed_precision.set_global_policy(dtype)
    try:
        keras.utils.set_random_seed(0)
        model = build_model(model_name, data.input_shape, data.num_classes, **model_settings)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    logger = TensorBoardLogger(log_dir, data)
    Trainer(epochs=1, batch_size=500, callbacks=[logger], verbose=False).fit(model, data)
    graph = _accumulator(Path(log_dir) / "train").Graph()
    return [node.name for node in graph.node], model


class StepGraphTest(tf.test.TestCase):
    def assert_layers_named_as_their_weights(self, names, model):
        """Every weight's layer (`variable.path` less its name: what the histograms
        show) holds ops in the graph, and no scope of the model has a trace's `_N`."""
        for variable in model.trainable_variables:
            layer = variable.path.rsplit("/", 1)[0]
            self.assertTrue(any(n.startswith(f"{layer}/") for n in names), layer)
            self.assertIn(f"{layer}/MatMul", names)
        pattern = re.compile(rf"(^|/){model.name}_\d+/")
        self.assertEqual([n for n in names if pattern.search(n)], [])

    def test_scratch_with_weight_decay_shows_the_penalty(self):
        names, model = logged_graph(
            self.get_temp_dir(), "scratch", hidden_units=(16,), weight_decay=0.01
        )
        self.assert_layers_named_as_their_weights(names, model)
        self.assertContainsSubset(
            {"mlp_scratch/hidden1/MatMul", "mlp_scratch/output/MatMul"}, names
        )
        self.assertTrue(any(n.startswith("mlp_scratch/re_lu/") for n in names))  # no weights
        # The L2 penalty enters the loss and its gradient reaches the weights.
        self.assertTrue(any(n.startswith("loss/penalty/") for n in names))
        self.assertTrue(any(n.startswith("gradient_tape/loss/penalty/") for n in names))
        self.assertFalse(any(n.startswith("loss/scale/") for n in names))  # float32

    def test_concise_float16_shows_loss_scaling(self):
        names, model = logged_graph(
            self.get_temp_dir(), "concise", "mixed_float16", hidden_units=(16, 16)
        )
        self.assertIsInstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        self.assert_layers_named_as_their_weights(names, model)
        # The histograms' dense, dense_1, dense_2 (a trace names them dense_1, dense_1_2, ...).
        for layer in ("dense", "dense_1", "dense_2"):
            self.assertIn(f"concise_mlp/{layer}/MatMul", names)
        self.assertTrue(any(n.startswith("concise_mlp/flatten/") for n in names))
        # The loss is scaled, and the update checks the gradients are finite.
        self.assertTrue(any(n.startswith("loss/scale/") for n in names))
        self.assertTrue(any(re.fullmatch(r"update/IsFinite(_\d+)?", n) for n in names))
        self.assertFalse(any(n.startswith("loss/penalty/") for n in names))  # decay: optimizer's


class KerasNameTest(tf.test.TestCase):
    def test_a_layers_scope_loses_the_trace_suffix_other_names_keep_theirs(self):
        keras.backend.clear_session()  # layer names from dense
        model = build_model("concise", (4,), 3, hidden_units=(8, 8))
        paths = layer_paths(model)
        self.assertContainsSubset(
            {"concise_mlp", "concise_mlp/flatten", "concise_mlp/dense", "concise_mlp/dense_2"},
            paths,
        )
        for traced, expected in (
            ("concise_mlp_1/dense_1/MatMul", "concise_mlp/dense/MatMul"),
            ("concise_mlp_1/dense_1_2/MatMul_1", "concise_mlp/dense_1/MatMul_1"),
            (
                "gradient_tape/concise_mlp_1/dense_2_1/BiasAdd",
                "gradient_tape/concise_mlp/dense_2/BiasAdd",
            ),
            ("replica_1/concise_mlp_1/flatten_1/Reshape", "replica_1/concise_mlp/flatten/Reshape"),
            ("loss/Sum_1", "loss/Sum_1"),
            ("update/dense_1", "update/dense_1"),  # not in the model: left alone
        ):
            self.assertEqual(keras_name(traced, paths), expected)


if __name__ == "__main__":
    tf.test.main()
