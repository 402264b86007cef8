"""A real TensorBoard server on 127.0.0.1 over a finished run and a tiny sweep, read
through its HTTP data API: the tabs a user opens show what the README promises."""

import importlib.util
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import tensorflow as tf
from cli_util import run_main

from keras_mlp import sweep, train
from keras_mlp.launch import free_ports

pytestmark = pytest.mark.slow

TENSORBOARD = Path(sys.executable).parent / "tensorboard"


class Server:
    """`tensorboard --logdir DIR` on a free 127.0.0.1 port, stopped on exit."""

    def __init__(self, logdir):
        (self.port,) = free_ports(1)
        self.process = subprocess.Popen(
            [str(TENSORBOARD), f"--logdir={logdir}", "--host=127.0.0.1", f"--port={self.port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def __enter__(self):
        end = time.monotonic() + 90
        while True:
            try:
                self.get("/data/plugins_listing")
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > end:
                    self.__exit__()
                    raise AssertionError("tensorboard did not start within 90 s") from None
                time.sleep(0.5)

    def __exit__(self, *exc):
        self.process.kill()
        self.process.wait(timeout=30)

    def get(self, path, body=None):
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read().decode()


class TensorBoardServerTest(tf.test.TestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.tmp = Path(tf.compat.v1.test.get_temp_dir()) / "tensorboard_server"
        cls.run_dir = cls.tmp / "run"
        result = run_main(
            train.main,
            "--dataset=synthetic",
            "--epochs=2",
            "--batch_size=64",
            "--hidden_units=16",
            "--histogram_freq=1",
            "--image_summaries",
            "--profile_steps=2,3",
            f"--model_dir={cls.run_dir}",
        )
        assert result.returncode == 0, result.stderr
        cls.sweep_dir = cls.tmp / "sweep"
        result = run_main(
            sweep.main,
            f"--sweep_dir={cls.sweep_dir}",
            "--grid=hidden_units=8,16",
            "--repeats=2",
            "--",
            "--dataset=synthetic",
            "--epochs=1",
            "--batch_size=64",
        )
        assert result.returncode == 0, result.stderr

    def test_a_runs_tabs(self):
        with Server(self.run_dir) as server:
            plugins = json.loads(server.get("/data/plugins_listing"))
            active = {name for name, info in plugins.items() if info["enabled"]}
            expected = {"scalars", "histograms", "images", "graphs", "hparams", "text"}
            if importlib.util.find_spec("tensorboard_plugin_profile"):
                expected.add("profile")
            self.assertContainsSubset(expected, active)
            scalars = json.loads(
                server.get("/data/plugin/scalars/scalars?run=logs/train&tag=epoch_loss")
            )
            self.assertEqual([step for _, step, _ in scalars], [1, 2])  # one point per epoch
            graph = server.get("/data/plugin/graphs/graph?run=logs/train&conceptual=false")
            for scope in ("hidden1", "output", "loss/", "update/"):
                self.assertIn(scope, graph)
            experiment = json.loads(
                server.get("/data/plugin/hparams/experiment", {"experimentName": ""})
            )
            columns = {info["name"] for info in experiment["hparamInfos"]}
            self.assertContainsSubset({"model", "depth", "width", "learning_rate"}, columns)
            self.assertNotIn("model_dir", columns)
            self.assertNotIn("seed", columns)  # repeats over seeds group together
            metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
            self.assertEqual(metrics, {"epoch_accuracy", "epoch_loss", "epoch_seconds"})

    def test_a_sweeps_hparams_tab_compares_settings(self):
        with Server(self.sweep_dir) as server:
            experiment = json.loads(
                server.get("/data/plugin/hparams/experiment", {"experimentName": ""})
            )
            infos = experiment["hparamInfos"]
            # The swept column first (the tab shows the first ones), as numbers.
            self.assertEqual(infos[0]["name"], "width")
            self.assertTrue(infos[0]["differs"])
            self.assertEqual(infos[0]["domainDiscrete"], [8, 16])
            self.assertFalse(any(info["differs"] for info in infos[1:]))
            self.assertNotIn("seed", {info["name"] for info in infos})
            groups = json.loads(
                server.get(
                    "/data/plugin/hparams/session_groups",
                    {
                        "experimentName": "",
                        "startIndex": 0,
                        "sliceSize": 10,
                        "allowedStatuses": [
                            "STATUS_UNKNOWN",
                            "STATUS_SUCCESS",
                            "STATUS_FAILURE",
                            "STATUS_RUNNING",
                        ],
                        "aggregationType": "AGGREGATION_AVG",
                    },
                )
            )["sessionGroups"]
            # One group per grid point, named by it, holding its two seeds' sessions
            # (named by their trial folders), each with a status.
            self.assertEqual(
                sorted(g["name"] for g in groups), ["hidden_units=16", "hidden_units=8"]
            )
            for group in groups:
                self.assertEqual(group["hparams"]["depth"], 1)
                self.assertIsInstance(group["hparams"]["width"], (int, float))
                self.assertLen(group["sessions"], 2)
                for session in group["sessions"]:
                    self.assertRegex(session["name"], r"^trial-00[0-3]/logs$")
                    self.assertEqual(session["status"], "STATUS_SUCCESS")
                accuracy = [
                    m["value"]
                    for m in group["metricValues"]
                    if m["name"] == {"group": "validation", "tag": "epoch_accuracy"}
                ]
                self.assertLen(accuracy, 1)  # the mean over the group's sessions


if __name__ == "__main__":
    tf.test.main()
