"""The benchmark tool: its FLOP count against an independent count, the arithmetic
of every rate, its baselines doing the same work, bad input, and (slow) each command
on tiny sizes with its table and JSON agreeing.

Speed itself is never asserted: these machines are shared and noisy.
"""

import dataclasses
import json
import math
import os
import re
import statistics
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from cli_util import error_lines, run_main

from keras_mlp import benchmark, contenders, process, speed
from keras_mlp import data as data_lib
from keras_mlp.benchmark import mlp_epoch_flops
from keras_mlp.models import build_model

PNG = b"\x89PNG\r\n\x1a\n"
# Synthetic data: 2000 training and 500 test images of 12x12 in 5 classes. Batches of
# 256: 7 full batches an epoch, 1792 examples (the Trainer drops the partial batch).
SYNTHETIC_TRAINED = 7 * 256


# --- FLOPs --------------------------------------------------------------------------------


def test_seed_mlp_epoch_flops_by_hand():
    # 784 -> 256 -> 10; per example forward 2*(784*256 + 256*10) = 406,528 FLOPs; backward
    # the weight gradients (406,528) and the second layer's input gradient 2*256*10 =
    # 5,120 (the first layer's is not needed); 234 full batches of 256 = 59,904 trained
    # examples; 10,000 validated.
    assert mlp_epoch_flops(784, (256,), 10, 60000, 10000, 256) == (
        59904 * (406528 + 406528 + 5120) + 10000 * 406528
    )
    assert mlp_epoch_flops(784, (256,), 10, 60000, 10000, 256) == 53_077_295_104


def _matmul_flops(function, *specs):
    """2*m*k*n summed over the MatMul ops TensorFlow traces for `function`."""
    graph = tf.function(function).get_concrete_function(*specs).graph
    kinds = {op.type for op in graph.get_operations()}
    assert not kinds & {"BatchMatMulV2", "BatchMatMulV3", "Einsum"}, kinds  # all are MatMul
    total = 0
    for op in graph.get_operations():
        if op.type == "MatMul":
            a, b = (tuple(t.shape) for t in op.inputs)
            m, k = (a[1], a[0]) if op.get_attr("transpose_a") else a
            n = b[0] if op.get_attr("transpose_b") else b[1]
            total += 2 * m * k * n
    return total


@pytest.mark.parametrize(
    "model_name, input_shape, hidden_units, num_classes",
    [
        ("concise", (28, 28), (256,), 10),
        ("scratch", (28, 28), (256,), 10),
        ("concise", (12, 12), (32, 16), 5),
        ("scratch", (9, 7), (64, 32, 16), 3),
    ],
)
def test_epoch_flops_equal_the_matmuls_tensorflow_runs(
    model_name, input_shape, hidden_units, num_classes
):
    """The formula against what TensorFlow actually multiplies: the MatMuls of a traced
    training step (forward and the gradients the tape needs) and of a forward pass."""
    model = build_model(model_name, input_shape, num_classes, hidden_units=hidden_units)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    batch = 8
    images = tf.TensorSpec((batch, *input_shape), tf.float32)
    labels = tf.TensorSpec((batch,), tf.int32)

    def train_step(x, y):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        return tape.gradient(value, model.trainable_variables)

    train_per_example = _matmul_flops(train_step, images, labels) / batch
    forward_per_example = _matmul_flops(lambda x: model(x, training=False), images) / batch
    # The forward pass is also 2 FLOPs per kernel weight (the model's own kernels).
    kernels = [w for w in model.trainable_weights if len(w.shape) == 2]
    assert len(kernels) == len(hidden_units) + 1
    assert forward_per_example == sum(2 * math.prod(k.shape) for k in kernels)

    num_train, num_val, batch_size = 1000, 300, 64
    trained = 15 * 64  # 15 full batches of 64 in 1000 examples
    assert mlp_epoch_flops(
        math.prod(input_shape), hidden_units, num_classes, num_train, num_val, batch_size
    ) == (trained * train_per_example + num_val * forward_per_example)


# --- the rates' arithmetic ------------------------------------------------------------------


def test_rates_are_the_work_over_the_timed_seconds(monkeypatch):
    timed = []

    def best_seconds(run, min_seconds=0.2, repeats=3):
        timed.append(run())
        return 0.25

    monkeypatch.setattr(speed, "_best_seconds", best_seconds)
    assert speed.matmul_gflops(50, "numpy") == 2 * 50**3 / 0.25 / 1e9
    assert speed.matmul_gflops(60, "tensorflow") == 2 * 60**3 / 0.25 / 1e9
    assert speed.copy_gbps(2) == 2 * (2 * 2**20) / 0.25 / 1e9  # bytes read + written
    # What was timed: a 50x50 product in NumPy, a 60x60 one in TensorFlow (summed, so
    # that reading the result waits for it).
    assert np.shape(timed[0]) == (50, 50)
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((60, 60), dtype=np.float32) for _ in range(2))
    assert float(timed[1]) == pytest.approx(float(np.sum(a @ b)), rel=1e-4)


def test_best_seconds_is_the_fastest_repeat_per_call_without_the_warm_up(monkeypatch):
    clock = types.SimpleNamespace(now=0.0)
    # The warm-up call, then 3 repeats (binary fractions: exact sums).
    costs = iter([4.0, 0.125, 0.125, 0.5, *[0.0625] * 4, 99.0])

    def run():
        clock.now += next(costs)

    monkeypatch.setattr(speed, "time", types.SimpleNamespace(perf_counter=lambda: clock.now))
    # Each repeat calls until 0.25 s have passed: 2 calls of 0.125 s, 1 call of 0.5 s,
    # 4 calls of 0.0625 s -> the best is 0.0625 s per call; the warm-up's 4 s is not timed.
    assert speed._best_seconds(run, min_seconds=0.25, repeats=3) == 0.0625
    assert next(costs) == 99.0  # no call more than that


def test_steady_epoch_is_the_median_after_the_warm_up_epoch():
    assert speed.steady([9.0, 1.0, 3.0, 2.0]) == 2.0
    assert speed.steady([9.0, 1.0, 2.0]) == 1.5
    assert speed.steady([4.0]) == 4.0


# --- the baselines do the same work ---------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_arrays(tmp_path_factory):
    """The synthetic set as the file every contender's process reads."""
    path = tmp_path_factory.mktemp("arrays") / "arrays.npz"
    benchmark.save_arrays(path, data_lib.load_dataset("synthetic"))
    return path


def test_every_tensorflow_contender_trains_the_same_examples_and_learns(
    monkeypatch, synthetic_arrays
):
    fits = []
    real_fit = keras.Model.fit

    def recording_fit(self, x=None, y=None, **kwargs):
        fits.append((len(x), len(y), kwargs["batch_size"], len(kwargs["validation_data"][0])))
        return real_fit(self, x, y, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", recording_fit)
    data = benchmark.load_arrays(synthetic_arrays)
    assert data.input_shape == (12, 12) and data.num_classes == 5
    for contender in contenders.CONTENDERS:
        if contender == "torch":
            continue
        record = benchmark.measure(contender, "concise", synthetic_arrays, 2)
        assert len(record["epoch_seconds"]) == 2
        assert record["val_accuracy"] > 0.5, (contender, record)  # chance is 0.2: it trained
        assert record["settings"] == process.settings()  # this process's: TensorFlow's own
    # Plain fit gets exactly the examples our Trainer trains per epoch (full batches).
    assert fits == [(SYNTHETIC_TRAINED, SYNTHETIC_TRAINED, 256, 500)] * len(contenders.KERAS_FIT)


def test_the_bare_loop_takes_the_chapters_sgd_step():
    """One epoch of one batch: the bare loop's weights move as plain SGD moves them,
    checked against the same step written with Keras."""
    data = data_lib.load_dataset("synthetic")
    data = dataclasses.replace(
        data, train_images=data.train_images[:256], train_labels=data.train_labels[:256]
    )
    seconds, accuracy = contenders.time_tf_loop(data, 1)
    assert len(seconds) == 1 and 0 <= accuracy <= 1
    # The same epoch again, with the weights read out through the captured variables.
    seen = {}
    real = tf.Variable

    def recording_variable(*args, **kwargs):
        variable = real(*args, **kwargs)
        seen.setdefault("weights", []).append(variable)
        return variable

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tf, "Variable", recording_variable)
        contenders.time_tf_loop(data, 1)
    w1, b1, w2, b2 = seen["weights"]
    rng = np.random.default_rng(0)
    start = [contenders._glorot(rng, 144, 256), np.zeros(256), contenders._glorot(rng, 256, 5)]
    x = data.train_images.reshape(256, -1).astype(np.float32) / 255
    order = tf.random.experimental.stateless_shuffle(tf.range(256), tf.constant([0, 0], tf.int64))
    x, y = tf.gather(x, order), tf.gather(data.train_labels, order)
    weights = [tf.Variable(v, dtype=tf.float32) for v in (*start, np.zeros(5))]
    with tf.GradientTape() as tape:
        hidden = tf.nn.relu(x @ weights[0] + weights[1])
        loss = tf.reduce_mean(
            keras.losses.sparse_categorical_crossentropy(y, hidden @ weights[2] + weights[3], True)
        )
    for weight, gradient in zip(weights, tape.gradient(loss, weights), strict=True):
        weight.assign_sub(0.1 * gradient)
    for mine, expected in zip((w1, b1, w2, b2), weights, strict=True):
        np.testing.assert_allclose(mine.numpy(), expected.numpy(), atol=1e-5)


def test_ours_beside_the_bare_loop_alternates_their_epochs_in_one_process(
    monkeypatch, synthetic_arrays
):
    events = []
    real_bare_loop = contenders.bare_loop

    def recording_bare_loop(data):
        run = real_bare_loop(data)

        def recorded(number):
            events.append(("bare loop", number))
            return run(number)

        return recorded

    class Recorder(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            events.append(("ours", epoch))

    real_time_ours = contenders.time_ours

    def time_ours_recorded(*args, callbacks=(), **kwargs):
        return real_time_ours(*args, callbacks=[Recorder(), *callbacks], **kwargs)

    monkeypatch.setattr(contenders, "bare_loop", recording_bare_loop)
    monkeypatch.setattr(contenders, "time_ours", time_ours_recorded)
    record = benchmark.measure(benchmark.PAIRED, "scratch", synthetic_arrays, 3)
    assert events == [(who, epoch) for epoch in range(3) for who in ("ours", "bare loop")]
    assert len(record["epoch_seconds"]) == len(record["tf_loop_seconds"]) == 3
    assert all(s > 0 for s in record["epoch_seconds"] + record["tf_loop_seconds"])
    assert record["settings"] == process.settings()


def test_the_torch_contender_learns_in_a_process_without_tensorflow(synthetic_arrays):
    pytest.importorskip("torch")
    result = subprocess.run(
        [sys.executable, "-m", "keras_mlp.torch_loop", str(synthetic_arrays), "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout.strip().splitlines()[-1])
    assert len(record["epoch_seconds"]) == 2
    assert record["val_accuracy"] > 0.5  # chance is 0.2
    assert record["settings"]["torch_threads"] >= 1
    # Never TensorFlow: the two in one process can crash it.
    probe = "import sys, keras_mlp.torch_loop; print('tensorflow' in sys.modules)"
    imported = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert imported.stdout.strip() == "False", imported.stderr


# --- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "give one command: train, scaling, matmul"),
        (["fly"], "give one command: train, scaling, matmul. Received: ['fly']"),
        (["train", "matmul"], "give one command"),
        (["matmul", "--sizes=0"], "must be comma-separated positive integers"),
        (["matmul", "--sizes=8,x"], "must be comma-separated"),
        (["matmul", "--bandwidth_mb=0"], "--bandwidth_mb=0 must be a positive integer"),
        # Issue 16: a numpy memory error traceback; both over any machine's memory.
        (
            ["matmul", "--sizes=1024,200000"],
            "--sizes=200000: a 200000 x 200000 float32 matmul (five such arrays) needs about "
            "745.1 GiB, and this machine has",
        ),
        (
            ["matmul", "--bandwidth_mb=100000000"],
            "--bandwidth_mb=100000000: the copy (two such buffers) needs about 195,312.5 GiB",
        ),
        (["scaling", "--depths=1,-2"], "must be comma-separated positive integers"),
        (["scaling", "--steps=0"], "--steps=0 must be a positive integer"),
        (["train", "--models=concise,big"], "--models: 'big' is not known"),
        (["train", "--epochs=0"], "--epochs=0 must be a positive integer"),
        (["train", "--rounds=0"], "--rounds=0 must be a positive integer"),
        (["train", "--contenders=ours,jax"], "--contenders: 'jax' is not known; accepted: ours,"),
        (["train", "--dataset=mnist"], "flag --dataset=mnist: value should be one of"),
        (["train", "--epochs=two"], "flag --epochs=two:"),
    ],
)
def test_bad_input_is_one_error_line_exit_2_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "results"
    result = run_main(benchmark.main, *args, f"--output_dir={out}")
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert len(error_lines(result)) == 1, result.stderr
    assert message in error_lines(result)[0]
    assert not out.exists()


# --- the commands, with table and JSON agreeing (slow: real timing runs) ---------------------


def _table(stdout, title, num_rows):
    """The header and the `num_rows` rows (lists of cells) of the table printed under
    the line starting with `title`."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(title))
    assert set(lines[start + 2].replace(" ", "")) == {"-"}  # the rule under the header
    return lines[start + 1].split(), [
        line.split() for line in lines[start + 3 : start + 3 + num_rows]
    ]


def _number(cell):
    return float(cell.replace(",", "").rstrip("%"))


@pytest.mark.slow
def test_train_command_figures_agree_with_each_other(tmp_path):
    out = tmp_path / "results"
    result = run_main(
        benchmark.main,
        "train",
        "--dataset=synthetic",
        "--epochs=2",
        "--rounds=2",
        "--models=concise",
        "--contenders=ours,tf_loop",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "train.json").read_text())
    rows = {r["contender"]: r for r in report["results"]}
    assert list(rows) == ["ours", "tf_loop"]
    assert [r["model"] for r in rows.values()] == ["concise", "bare"]
    limit = report["matmul_limit_gflops"]
    best_limit = max(limit["tensorflow"], limit["numpy"])
    flops = mlp_epoch_flops(144, (256,), 5, 2000, 500, 256)
    assert report["measured"]["flops_per_epoch"] == flops
    assert report["measured"]["trained_examples_per_epoch"] == SYNTHETIC_TRAINED
    for r in rows.values():
        assert len(r["rounds"]) == 2
        median = statistics.median(r["rounds"])
        assert r["median_epoch_seconds"] == median
        assert (r["min_epoch_seconds"], r["max_epoch_seconds"]) == (
            min(r["rounds"]),
            max(r["rounds"]),
        )
        assert r["examples_per_second"] == pytest.approx(SYNTHETIC_TRAINED / median, rel=1e-12)
        assert r["efficiency"] == pytest.approx(flops / (median * best_limit * 1e9), rel=1e-12)
        assert r["x_tf_loop"] == pytest.approx(median / rows["tf_loop"]["median_epoch_seconds"])
        assert "x_torch" not in r and "x_keras_fit" not in r  # not chosen: no column
        assert r["val_accuracy"] > 0.5  # all trained (chance: 0.2)
        assert 100 < r["peak_rss_mib"] < 64 * 1024  # a TensorFlow process, in MiB
    assert report["settings"] == rows["ours"]["settings"]
    assert report["machine"]["cpus"] == os.cpu_count()
    assert report["machine"]["tensorflow"] == tf.__version__

    # The printed table shows the same figures (to its precision).
    header, table = _table(result.stdout, "train: seconds per epoch", 2)
    assert header[:6] == ["contender", "model", "s/epoch", "min-max", "x", "tf_loop"]
    assert [row[:2] for row in table] == [["ours", "concise"], ["tf_loop", "bare"]]
    for row in table:
        r = rows[row[0]]
        low, high = map(float, row[3].split("-"))
        assert _number(row[2]) == pytest.approx(r["median_epoch_seconds"], abs=0.0005)
        assert (low, high) == pytest.approx(
            (r["min_epoch_seconds"], r["max_epoch_seconds"]), abs=0.0005
        )
        assert _number(row[4]) == pytest.approx(r["x_tf_loop"], abs=0.005)
        assert _number(row[-1]) == pytest.approx(r["val_accuracy"], abs=0.00005)
    limits = re.search(r"TensorFlow (\d+) GFLOP/s, NumPy (\d+) GFLOP/s", result.stdout)
    assert float(limits[1]) == pytest.approx(limit["tensorflow"], abs=0.5)
    assert float(limits[2]) == pytest.approx(limit["numpy"], abs=0.5)
    assert (out / "train.png").read_bytes()[:8] == PNG

    # Ours beside the bare loop in one process: every epoch pair after the warm-up.
    assert report["measured"]["paired"] is True
    (beside,) = report["ours_beside_tf_loop"]
    assert beside["model"] == "concise" and len(beside["rounds"]) == 2
    ratios = [ratio for pairs in beside["rounds"] for ratio in pairs]
    assert beside["pairs"] == len(ratios) == 2 * 2  # rounds x measured epochs
    assert beside["median_ratio"] == pytest.approx(statistics.median(ratios))
    low, high = beside["middle_half"]
    assert min(ratios) <= low <= beside["median_ratio"] <= high <= max(ratios)
    line = re.search(
        r"epochs alternating .* of (\d+) epoch pairs\): concise ([\d.]+) \(([\d.]+)-([\d.]+)\)",
        result.stdout,
    )
    assert line, result.stdout
    assert int(line[1]) == 4
    assert float(line[2]) == pytest.approx(beside["median_ratio"], abs=0.005)
    assert (float(line[3]), float(line[4])) == pytest.approx((low, high), abs=0.005)


@pytest.mark.slow
def test_scaling_command_compares_scratch_with_concise(tmp_path):
    out = tmp_path / "results"
    result = run_main(
        benchmark.main,
        "scaling",
        "--widths=8,16",
        "--depths=1,2",
        "--steps=2",
        "--rounds=2",
        f"--output_dir={out}",
    )
    assert result.returncode == 0, result.stderr
    records = json.loads((out / "scaling.json").read_text())["results"]
    for r in records:  # the two models in turn, twice; the medians of those
        for model_name in ("concise", "scratch"):
            measured = r[f"{model_name}_ms_per_round"]
            assert len(measured) == r["rounds"] == 2
            assert r[f"{model_name}_ms_per_step"] == pytest.approx(np.median(measured))
    assert [(r["kind"], r["value"], r["hidden_units"]) for r in records] == [
        ("width", 8, [8]),
        ("width", 16, [16]),
        ("depth", 1, [256]),
        ("depth", 2, [256, 256]),
    ]
    _, table = _table(result.stdout, "scaling: ms per training step", 4)
    assert [row[:2] for row in table] == [
        ["width", "8"],
        ["width", "16"],
        ["depth", "1"],
        ["depth", "2"],
    ]
    for r, row in zip(records, table, strict=True):
        assert r["scratch_over_concise"] == pytest.approx(
            r["scratch_ms_per_step"] / r["concise_ms_per_step"], rel=1e-12
        )
        concise, scratch, ratio = map(float, row[2:5])
        low, high = map(float, row[5].split("-"))
        per_round = np.divide(r["scratch_ms_per_round"], r["concise_ms_per_round"])
        assert (low, high) == pytest.approx((min(per_round), max(per_round)), abs=0.005)
        assert concise == pytest.approx(r["concise_ms_per_step"], abs=0.005)
        assert scratch == pytest.approx(r["scratch_ms_per_step"], abs=0.005)
        assert ratio == pytest.approx(r["scratch_over_concise"], abs=0.005)
    assert (out / "scaling.png").read_bytes()[:8] == PNG


def test_matmul_command_measures_each_size_and_bandwidth(tmp_path):
    out = tmp_path / "results"
    result = run_main(
        benchmark.main, "matmul", "--sizes=64,65", "--bandwidth_mb=4", f"--output_dir={out}"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "matmul.json").read_text())
    assert [r["n"] for r in report["results"]] == [64, 65]
    assert report["tensorflow_device"] == (
        "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    )
    _, table = _table(result.stdout, "matmul: n x n float32", 2)
    assert [row[0] for row in table] == ["64", "65"]
    for r, row in zip(report["results"], table, strict=True):
        assert float(row[1]) == pytest.approx(r["tensorflow_gflops"], abs=0.05)
        assert float(row[2]) == pytest.approx(r["numpy_gflops"], abs=0.05)
    bandwidth = re.search(
        r"memory bandwidth \(NumPy copy of 4 MiB, read \+ write\): ([\d.]+) GB/s", result.stdout
    )
    assert float(bandwidth[1]) == pytest.approx(report["copy_gbps"], abs=0.05)
    assert (out / "matmul.png").read_bytes()[:8] == PNG
