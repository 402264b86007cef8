"""The benchmark tool runs each command on tiny sizes and writes its table, JSON and plot.
(Speed itself is never asserted: these machines are shared and noisy.)"""

import json
from pathlib import Path

import tensorflow as tf
from cli_util import REPO, error_lines, run_train

from keras_mlp.benchmark import mlp_epoch_flops

BENCHMARK = REPO / "scripts" / "benchmark.py"
PNG = b"\x89PNG\r\n\x1a\n"


class BenchmarkTest(tf.test.TestCase):
    def setUp(self):
        super().setUp()
        self.out = Path(self.get_temp_dir()) / "results"

    def run_command(self, *args):
        result = run_train(*args, f"--output_dir={self.out}", script=BENCHMARK, timeout=300)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result

    def test_train_compares_ours_with_keras_fit(self):
        result = self.run_command(
            "train", "--dataset=synthetic", "--epochs=1", "--models=concise", "--noend_to_end"
        )
        self.assertIn("x keras_fit", result.stdout)
        report = json.loads((self.out / "train.json").read_text())
        implementations = {r["implementation"]: r for r in report["results"]}
        self.assertEqual(set(implementations), {"ours", "keras_fit"})
        self.assertEqual(implementations["keras_fit"]["ratio_to_keras_fit"], 1.0)
        for r in report["results"]:
            self.assertLen(r["epoch_seconds"], 2)  # the warm-up epoch and one measured
            self.assertGreater(r["peak_rss_mib"], 0)
            self.assertGreater(r["efficiency"], 0)
        self.assertGreater(report["matmul_limit_gflops"]["tensorflow"], 0)
        self.assertEqual((self.out / "train.png").read_bytes()[:8], PNG)

    def test_scaling_compares_scratch_with_concise(self):
        result = self.run_command("scaling", "--widths=8,16", "--depths=1,2", "--steps=2")
        self.assertIn("scratch/concise", result.stdout)
        records = json.loads((self.out / "scaling.json").read_text())["results"]
        self.assertEqual(
            [(r["kind"], r["value"]) for r in records],
            [("width", 8), ("width", 16), ("depth", 1), ("depth", 2)],
        )
        self.assertEqual(records[3]["hidden_units"], [256, 256])
        self.assertEqual((self.out / "scaling.png").read_bytes()[:8], PNG)

    def test_matmul_measures_each_size_and_bandwidth(self):
        result = self.run_command("matmul", "--sizes=64,65", "--bandwidth_mb=4")
        self.assertIn("memory bandwidth", result.stdout)
        report = json.loads((self.out / "matmul.json").read_text())
        self.assertEqual([r["n"] for r in report["results"]], [64, 65])
        self.assertGreater(report["copy_gbps"], 0)
        self.assertEqual((self.out / "matmul.png").read_bytes()[:8], PNG)

    def test_bad_commands_are_one_line_errors(self):
        for args, message in [
            (["fly"], "give one command: train, scaling, matmul"),
            (["matmul", "--sizes=0"], "--sizes expects comma-separated positive integers"),
        ]:
            result = run_train(*args, f"--output_dir={self.out}", script=BENCHMARK)
            self.assertEqual(result.returncode, 2)
            self.assertNotIn("Traceback", result.stderr)
            self.assertRegex(error_lines(result)[0], message)

    def test_flop_count_of_the_seed_mlp(self):
        # Forward 2*784*256 + 2*256*10 per example; backward: weight grads of both
        # layers plus the input gradient of the second; 234 full batches of 256.
        per_example = 2 * (784 * 256 + 256 * 10)
        expected = 59904 * (2 * per_example + 2 * 256 * 10) + 10000 * per_example
        self.assertEqual(mlp_epoch_flops(784, (256,), 10, 60000, 10000, 256), expected)


if __name__ == "__main__":
    tf.test.main()
