"""TensorBoard output, read back with TensorBoard's own EventAccumulator."""

import re
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from cli_util import run_main
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2
from tensorflow.tsl.profiler.protobuf import xplane_pb2
from test_data import write_idx_set

from keras_mlp import train as train_tool
from keras_mlp.data import load_dataset
from keras_mlp.diagnostics import MAX_CONFUSION_FIGURE_CLASSES, confusion_matrix
from keras_mlp.models import build_model
from keras_mlp.profiling import StepProfiler
from keras_mlp.summaries import StepWindow, TensorBoardLogger
from keras_mlp.training import Trainer


def profiled_steps(xplane_file):
    """The `step_num` of each "train" step marker in a profile (`.xplane.pb`), in order."""
    space = xplane_pb2.XSpace.FromString(Path(xplane_file).read_bytes())
    steps = []
    for plane in space.planes:
        stat_names = {key: stat.name for key, stat in plane.stat_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                if plane.event_metadata[event.metadata_id].name != "train":
                    continue
                stats = {stat_names[s.metadata_id]: s.int64_value for s in event.stats}
                if stats.get("_r") == 1:  # a step marker
                    steps.append((line.timestamp_ns * 1000 + event.offset_ps, stats["step_num"]))
    return [step for _, step in sorted(steps)]


def _accumulator(path):
    accumulator = event_accumulator.EventAccumulator(
        str(path), size_guidance={"tensors": 0, "images": 0, "histograms": 0}
    )
    accumulator.Reload()
    return accumulator


class SummariesTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.model_dir = Path(tf.compat.v1.test.get_temp_dir()) / "tensorboard_run"
        cls.data = data = load_dataset("synthetic")
        cls.steps_per_epoch = len(data.train_images) // 50  # 40: four batch_loss windows of 10
        logger = TensorBoardLogger(
            cls.model_dir / "logs",
            data,
            {
                "model": "scratch",
                "hidden_units": [32],
                "dropout": [0.0],
                "learning_rate": 0.1,
                "seed": 3,
            },
            log_every_steps=10,
            histogram_freq=1,
            image_summaries=True,
            batch_size=50,
        )
        profiler = StepProfiler(cls.model_dir / "logs", (3, 5))
        # Chunks of 7 steps: the logger must still get a chunk end at every 10th step.
        trainer = Trainer(
            epochs=2,
            batch_size=50,
            steps_per_execution=7,
            callbacks=[logger, profiler],
            verbose=False,
        )
        keras.utils.set_random_seed(0)
        cls.model = build_model("scratch", data.input_shape, data.num_classes, hidden_units=(32,))
        cls.history = trainer.fit(cls.model, data)
        cls.model_name = "mlp_scratch"  # the same in every process, however many models it built
        cls.train = _accumulator(cls.model_dir / "logs" / "train")
        cls.validation = _accumulator(cls.model_dir / "logs" / "validation")
        cls.root = _accumulator(cls.model_dir / "logs")

    def test_epoch_scalars_one_value_per_epoch(self):
        tags = self.train.Tags()["tensors"]
        for tag in ("epoch_loss", "epoch_accuracy", "learning_rate", "examples_per_second"):
            self.assertEqual([e.step for e in self.train.Tensors(tag)], [1, 2], tag)
        self.assertAllClose(
            [float(tf.make_ndarray(e.tensor_proto)) for e in self.train.Tensors("learning_rate")],
            [0.1, 0.1],
        )
        self.assertIn("epoch_loss", tags)
        self.assertEqual([e.step for e in self.validation.Tensors("epoch_accuracy")], [1, 2])

    def test_step_losses_and_accuracies_every_n_steps(self):
        for tag, key in (("batch_loss", "loss"), ("batch_accuracy", "accuracy")):
            events = self.train.Tensors(tag)
            self.assertEqual(
                [e.step for e in events], list(range(10, 2 * self.steps_per_epoch + 1, 10)), tag
            )
            # Each value is the mean over its 10 steps: the four windows of an epoch average
            # to the epoch's value, which the trainer sums by another route.
            values = np.array([float(tf.make_ndarray(e.tensor_proto)) for e in events])
            values = values.reshape(2, 4)
            self.assertAllClose(values.mean(axis=1), self.history[key], rtol=1e-5)
            first, last = values[0, 0], values[1, 3]  # and they follow the learning
            self.assertGreater(*((first, last) if key == "loss" else (last, first)), tag)
        # A window's accuracy is its right answers over its 10 x 50 examples.
        accuracy = [float(tf.make_ndarray(e.tensor_proto)) for e in self.train.Tensors(tag)]
        self.assertAllClose(np.multiply(accuracy, 500), np.round(np.multiply(accuracy, 500)))

    def test_step_window_from_running_means(self):
        window = StepWindow(["loss", "accuracy"])
        window.start(2, {"loss": 3.0, "accuracy": 0.5})  # resumed after two steps
        # Steps 3-5 average 1.0 and 0.75: the running means over 5 steps are
        # (2 x 3 + 3 x 1) / 5 and (2 x 0.5 + 3 x 0.75) / 5.
        means = window.close(5, {"loss": 9.0 / 5, "accuracy": 3.25 / 5})
        self.assertAllClose(means, {"loss": 1.0, "accuracy": 0.75})
        means = window.close(6, {"loss": 9.6 / 6, "accuracy": 3.25 / 6})  # step 6: 0.6, 0
        self.assertAllClose(means, {"loss": 0.6, "accuracy": 0.0})

    def test_histograms_of_named_weights_and_gradients(self):
        tags = set(self.train.Tags()["tensors"])
        for layer, name in (
            ("hidden1", "W1"),
            ("hidden1", "b1"),
            ("output", "W2"),
            ("output", "b2"),
        ):
            self.assertIn(f"{self.model_name}/{layer}/{name}", tags)
            self.assertIn(f"{self.model_name}/{layer}/{name}/gradient", tags)
        w1 = self.train.Tensors(f"{self.model_name}/hidden1/W1")
        self.assertEqual([e.step for e in w1], [1, 2])
        # A histogram's bucket counts add up to the number of weights.
        counts = tf.make_ndarray(w1[-1].tensor_proto)[:, 2]
        self.assertEqual(int(counts.sum()), 144 * 32)

    def test_graph_of_the_trainers_step_with_layer_scopes(self):
        names = [node.name for node in self.train.Graph().node]
        scopes = {name.split("/")[0] for name in names}
        self.assertContainsSubset({"loss", "gradients", "update", "totals"}, scopes)
        # Named as the histograms name the weights: mlp_scratch/hidden1/W1, ...
        self.assertContainsSubset(
            {f"{self.model_name}/hidden1/MatMul", f"{self.model_name}/output/MatMul"}, names
        )
        self.assertFalse(any(re.match(rf"{self.model_name}_\d", n) for n in names))
        self.assertFalse(any("while" in n for n in names))  # the step itself, not the chunk loop
        self.assertFalse(any(n.startswith("loss/penalty/") for n in names))  # no weight decay

    def test_prediction_and_confusion_images(self):
        tags = set(self.validation.Tags()["tensors"])
        self.assertIn("predictions", tags)
        self.assertIn("confusion_matrix", tags)
        self.assertEqual([e.step for e in self.validation.Tensors("confusion_matrix")], [1, 2])
        image = self.validation.Tensors("confusion_matrix")[-1]
        width, height, png = tf.make_ndarray(image.tensor_proto)
        self.assertTrue(png.startswith(b"\x89PNG"))
        self.assertGreater(int(width), 50)

    def test_confusion_counts_agree_with_an_independent_count(self):
        data = self.data
        confusion = confusion_matrix(self.model, data.val_images, data.val_labels, data.num_classes)
        logits = self.model.predict(data.val_images.astype("float32") / 255.0, verbose=0)
        predicted = np.argmax(logits, axis=-1)
        for true in range(data.num_classes):
            for guess in range(data.num_classes):
                expected = np.sum((data.val_labels == true) & (predicted == guess))
                self.assertEqual(confusion[true, guess], expected)
        # Its diagonal is the validation accuracy the trainer measured on the devices.
        self.assertAllClose(
            np.trace(confusion) / len(data.val_labels), self.history["val_accuracy"][-1]
        )

    def test_hparams_session_and_config_text(self):
        content = self.root.PluginTagToContent("hparams")
        self.assertIn("_hparams_/session_start_info", content)
        data = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        hparams = data.session_start_info.hparams
        self.assertEqual(hparams["model"].string_value, "scratch")
        # Typed for comparing: the hidden layers as numbers, the seed not a hyperparameter
        # (repeats over seeds group together), and the run's end recorded.
        self.assertEqual((hparams["depth"].number_value, hparams["width"].number_value), (1, 32))
        self.assertNotIn("hidden_units", hparams)
        self.assertNotIn("seed", hparams)
        self.assertEqual(hparams["dropout"].number_value, 0.0)
        self.assertAllClose(hparams["learning_rate"].number_value, 0.1)
        end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"])
        self.assertEqual(end.session_end_info.status, api_pb2.STATUS_SUCCESS)
        self.assertIn("config", self.root.Tags()["tensors"])

    def test_profile_marks_exactly_the_profiled_steps(self):
        """The Profile tab's overview needs step markers: steps 3, 4 and 5, one training
        step each (chunks of 7 elsewhere), are the steps of the one trace."""
        traces = list((self.model_dir / "logs" / "plugins" / "profile").glob("*/*.xplane.pb"))
        self.assertLen(traces, 1)
        self.assertEqual(profiled_steps(traces[0]), [3, 4, 5])


if __name__ == "__main__":
    tf.test.main()


class ManyClassesTest(tf.test.TestCase):
    def test_confusion_matrix_of_many_classes_is_counts_only(self):
        """Issue 16: on 256 classes the confusion figure took 155 s and 5.4 GB per epoch.
        Past MAX_CONFUSION_FIGURE_CLASSES classes it is logged as text only, and said so."""
        classes = MAX_CONFUSION_FIGURE_CLASSES + 10
        tmp = Path(self.get_temp_dir())
        data_dir = write_idx_set(
            tmp / "many", train=(4 * classes, 4, 4), test=(2 * classes, 4, 4), num_classes=classes
        )
        result = run_main(
            train_tool.main,
            f"--data_dir={data_dir}",
            "--epochs=2",
            "--batch_size=40",
            "--image_summaries",
            f"--model_dir={tmp / 'run'}",
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        note = (
            f"note: {classes} classes: the confusion matrix is logged as counts only "
            f"(TensorBoard's Text tab), no figure past {MAX_CONFUSION_FIGURE_CLASSES} classes"
        )
        self.assertEqual(result.stdout.splitlines().count(note), 1, result.stdout)
        validation = _accumulator(tmp / "run" / "logs" / "validation")
        tags = set(validation.Tags()["tensors"])
        self.assertContainsSubset({"predictions", "confusion_matrix_counts"}, tags)
        self.assertNotIn("confusion_matrix", tags)
        counts = validation.Tensors("confusion_matrix_counts")
        self.assertEqual([e.step for e in counts], [1, 2])
        table = tf.make_ndarray(counts[-1].tensor_proto).item().decode()
        self.assertLen(table.splitlines(), classes + 2)  # header, rule, a row per class
