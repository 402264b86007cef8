"""Grid sweeps and the joint search, end to end on synthetic data."""

import csv
import json
from pathlib import Path

import tensorflow as tf
from absl.testing import parameterized
from cli_util import REPO, run_train
from test_summaries import _accumulator

from keras_mlp.errors import UserError
from keras_mlp.sweep import parse_grid, trial_name

SWEEP = REPO / "scripts" / "sweep.py"
SEARCH = REPO / "scripts" / "search.py"
QUICK = ("--dataset=synthetic", "--epochs=1", "--batch_size=64", "--hidden_units=8")


class ParseGridTest(tf.test.TestCase, parameterized.TestCase):
    def test_commas_or_semicolons(self):
        self.assertEqual(
            parse_grid(["hidden_units=32,64", "learning_rate=0.1"]),
            {"hidden_units": ["32", "64"], "learning_rate": ["0.1"]},
        )
        self.assertEqual(
            parse_grid(["hidden_units=256;256,256"]), {"hidden_units": ["256", "256,256"]}
        )
        self.assertEqual(
            trial_name({"hidden_units": "256,256", "sigma": "0.1"}),
            "hidden_units=256_256-sigma=0.1",
        )

    @parameterized.parameters(
        ([], "at least one --grid"),
        (["hidden_units"], "name=value1,value2"),
        (["a=1", "a=2"], "names a twice"),
        (["model_dir=x,y"], "cannot sweep --model_dir"),
    )
    def test_rejects(self, specs, message):
        with self.assertRaisesRegex(UserError, message):
            parse_grid(specs)


class SweepTest(tf.test.TestCase):
    def test_grid_sweep_resumes_and_records_failures(self):
        sweep_dir = Path(self.get_temp_dir()) / "sweep"
        args = [
            f"--sweep_dir={sweep_dir}",
            "--grid=hidden_units=8,16,0",
            "--grid=learning_rate=0.1,0.5",
            "--",
            *QUICK[:3],
        ]
        first = run_train(*args, script=SWEEP, timeout=600)
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertIn("sweep results, best first", first.stdout)
        with open(sweep_dir / "results.csv") as f:
            rows = list(csv.DictReader(f))
        self.assertLen(rows, 6)  # the 2x2 grid of valid values, and 0 units twice
        done = [r for r in rows if r["status"] == "done"]
        failed = [r for r in rows if r["status"] == "failed"]
        self.assertEqual(
            sorted(r["trial"] for r in done),
            [f"hidden_units={h}-learning_rate={lr}" for h in (16, 8) for lr in (0.1, 0.5)],
        )
        accuracies = [float(r["val_accuracy"]) for r in done]
        self.assertEqual(accuracies, sorted(accuracies, reverse=True))  # best first
        self.assertLen(failed, 2)
        self.assertIn("--hidden_units must be a positive integer", failed[0]["error"])
        for r in done:
            self.assertTrue((sweep_dir / r["trial"] / "logs" / "validation").is_dir())
        self.assertEqual((sweep_dir / "results.png").read_bytes()[:4], b"\x89PNG")
        experiment = _accumulator(sweep_dir).PluginTagToContent("hparams")
        self.assertIn("_hparams_/experiment", experiment)

        logs = {p: p.stat().st_mtime_ns for p in sweep_dir.glob("hidden_units=[18]*.log")}
        self.assertLen(logs, 4)
        again = run_train(*args, script=SWEEP, timeout=600)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual({p: p.stat().st_mtime_ns for p in logs}, logs)  # finished trials not rerun


class SearchTest(tf.test.TestCase):
    def test_search_prunes_selects_on_holdout_and_tests_once(self):
        search_dir = Path(self.get_temp_dir()) / "search"

        def search(trials):
            return run_train(
                f"--search_dir={search_dir}",
                f"--trials={trials}",
                "--max_epochs=2",
                "--widths=8,16",
                "--validation_split=0.2",
                *QUICK[:3],
                script=SEARCH,
                timeout=600,
            )

        result = search(trials=4)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("retrained on the whole training set: test accuracy", result.stdout)
        report = json.loads((search_dir / "best.json").read_text())
        self.assertLen(report["trials"], 4)
        self.assertTrue({r["status"] for r in report["trials"]} <= {"done", "pruned"})
        self.assertEqual(report["best_config"]["validation_split"], 0.0)
        trial_config = json.loads((search_dir / "trial-000" / "run_config.json").read_text())
        self.assertEqual(trial_config["validation_split"], 0.2)
        best = json.loads((search_dir / "best" / "metrics.json").read_text())
        self.assertEqual(best["final"]["validation"], "test")
        self.assertEqual(best["final"]["val_accuracy"], report["test_accuracy"])
        self.assertIn(
            "_hparams_/experiment", _accumulator(search_dir).PluginTagToContent("hparams")
        )
        self.assertEqual((search_dir / "results.png").read_bytes()[:4], b"\x89PNG")
        with open(search_dir / "results.csv") as f:
            self.assertLen(list(csv.DictReader(f)), 4)
        # Continuing the study with a larger --trials adds only the missing trials.
        more = search(trials=5)
        self.assertEqual(more.returncode, 0, more.stderr)
        self.assertLen(json.loads((search_dir / "best.json").read_text())["trials"], 5)


if __name__ == "__main__":
    tf.test.main()
