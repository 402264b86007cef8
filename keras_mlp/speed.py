"""The machine's limits and the chapter's speed exercises: float32 matmul and memory
copy rates (the ceiling any epoch is measured against), scratch vs concise across widths
and depths (exercise 6) and matmuls around a power of two (exercise 7). Driven by
`keras-mlp-benchmark scaling` and `matmul`.
"""

import math
import os
import resource
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from matplotlib.figure import Figure

from keras_mlp import data as data_lib
from keras_mlp.contenders import time_ours
from keras_mlp.reporting import print_table, save_figure, write_json


def peak_rss_mib():
    """This process's peak resident memory (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _best_seconds(run, min_seconds=0.2, repeats=3):
    """Best time of one `run()` call: each repeat loops until `min_seconds` have passed."""
    run()  # warm-up: tracing, allocation
    best = math.inf
    for _ in range(repeats):
        calls, start = 0, time.perf_counter()
        while True:
            run()
            calls += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        best = min(best, elapsed / calls)
    return best


def matmul_gflops(n, library):
    """GFLOP/s of an n x n float32 matmul in `library` ("tensorflow" or "numpy")."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    if library == "numpy":
        seconds = _best_seconds(lambda: a @ b)
    else:
        ta, tb = tf.constant(a), tf.constant(b)
        product = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
        seconds = _best_seconds(lambda: product(ta, tb).numpy())  # .numpy() waits for the result
    return 2 * n**3 / seconds / 1e9


def copy_gbps(megabytes=256):
    """Memory bandwidth of a large NumPy copy, counting bytes read plus bytes written."""
    source = np.ones(megabytes * 2**20 // 4, np.float32)
    target = np.empty_like(source)
    seconds = _best_seconds(lambda: np.copyto(target, source))
    return 2 * source.nbytes / seconds / 1e9


def steady(seconds):
    """Steady-state epoch time: the median of the epochs after the first (warm-up)."""
    return float(np.median(seconds[1:] if len(seconds) > 1 else seconds))


def _save_figure(fig, path):
    fig.tight_layout()
    save_figure(fig, path)


def run_scaling_benchmark(output_dir, widths, depths, steps, rounds=5, batch_size=256):
    """Exercise 6: scratch vs concise time per step across widths and depths, each
    point measured `rounds` times, the two models in turn; medians over the rounds."""
    images, labels, val_images, val_labels = data_lib.synthetic_arrays(
        num_train=steps * batch_size, num_test=batch_size, image_shape=(28, 28), num_classes=10
    )
    data = data_lib.Dataset(
        "random",
        images,
        labels.astype(np.int32),
        val_images,
        val_labels.astype(np.int32),
        "test",
        tuple("0123456789"),
        "synthetic",
    )
    configs = [("width", w, (w,)) for w in widths] + [("depth", d, (256,) * d) for d in depths]
    records = [
        {"kind": kind, "value": value, "hidden_units": list(hidden)}
        | _scaling_point(data, hidden, steps, rounds, batch_size)
        for kind, value, hidden in configs
    ]
    rows = [
        [
            r["kind"],
            r["value"],
            f"{r['concise_ms_per_step']:.2f}",
            f"{r['scratch_ms_per_step']:.2f}",
            f"{r['scratch_over_concise']:.2f}",
            "{:.2f}-{:.2f}".format(*_ratio_range(r)),
        ]
        for r in records
    ]
    print_table(
        f"scaling: ms per training step (batch {batch_size}; depth uses width 256), the median "
        f"over {rounds} rounds; scratch/concise of the medians, and its min-max over the rounds",
        ["varied", "value", "concise", "scratch", "scratch/concise", "min-max"],
        rows,
    )
    write_json(Path(output_dir) / "scaling.json", {"results": records, "machine": machine()})
    _plot_scaling(Path(output_dir) / "scaling.png", records)
    return records


def _scaling_point(data, hidden_units, steps, rounds, batch_size):
    """Both models' ms per step at one net size, `rounds` times in turn (so that both see
    the same machine), and their medians."""
    measured = {"concise": [], "scratch": []}
    for _ in range(rounds):
        for model_name, ms in measured.items():
            seconds, _ = time_ours(
                model_name, data, epochs=3, batch_size=batch_size, hidden_units=hidden_units
            )
            ms.append(1000 * steady(seconds) / steps)
    concise, scratch = (float(np.median(measured[name])) for name in ("concise", "scratch"))
    return {
        "rounds": rounds,
        "concise_ms_per_round": measured["concise"],
        "scratch_ms_per_round": measured["scratch"],
        "concise_ms_per_step": concise,
        "scratch_ms_per_step": scratch,
        "scratch_over_concise": scratch / concise,
    }


def _ratio_range(record):
    """The min and max over the rounds of scratch / concise."""
    ratios = np.divide(record["scratch_ms_per_round"], record["concise_ms_per_round"])
    return float(ratios.min()), float(ratios.max())


def _plot_scaling(path, records):
    """Time per step (top) and scratch / concise (bottom), by width (left) and depth (right)."""
    fig = Figure(figsize=(9, 6))
    axes = fig.subplots(2, 2, sharex="col")
    for column, kind in enumerate(("width", "depth")):
        part = [r for r in records if r["kind"] == kind]
        x = [r["value"] for r in part]
        for model_name in ("concise", "scratch"):
            axes[0, column].plot(
                x, [r[f"{model_name}_ms_per_step"] for r in part], "o-", label=model_name
            )
        ratios = np.array([r["scratch_over_concise"] for r in part])
        low, high = np.array([_ratio_range(r) for r in part]).T.reshape(2, -1)
        axes[1, column].errorbar(
            # The ratio of the medians may fall outside the rounds' own ratios: no negative bar.
            x,
            ratios,
            yerr=np.clip([ratios - low, high - ratios], 0, None),
            fmt="o-",
            color="C2",
            capsize=3,
        )
        axes[1, column].axhline(1.0, color="k", lw=0.8)
        axes[1, column].set_xlabel(f"hidden {kind}")
        if kind == "width":
            axes[0, column].set_xscale("log", base=2)
        else:
            axes[1, column].set_xticks(x)
    axes[0, 0].set_ylabel("ms per step")
    axes[1, 0].set_ylabel("scratch / concise\n(median; bars: min-max of the rounds)")
    axes[0, 0].legend()
    _save_figure(fig, path)


def run_matmul_benchmark(output_dir, sizes, bandwidth_mb):
    """Exercise 7: n x n float32 matmul throughput around a power of two, and copy bandwidth."""
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    records = [
        {
            "n": n,
            "tensorflow_gflops": matmul_gflops(n, "tensorflow"),
            "numpy_gflops": matmul_gflops(n, "numpy"),
        }
        for n in sizes
    ]
    bandwidth = copy_gbps(bandwidth_mb)
    print_table(
        f"matmul: n x n float32, GFLOP/s (TensorFlow on {device}, NumPy on CPU)",
        ["n", "tensorflow", "numpy"],
        [[r["n"], f"{r['tensorflow_gflops']:.1f}", f"{r['numpy_gflops']:.1f}"] for r in records],
    )
    print(
        f"memory bandwidth (NumPy copy of {bandwidth_mb} MiB, read + write): {bandwidth:.1f} GB/s"
    )
    write_json(
        Path(output_dir) / "matmul.json",
        {
            "results": records,
            "tensorflow_device": device,
            "copy_gbps": bandwidth,
            "machine": machine(),
        },
    )
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    x = np.arange(len(records))
    ax.bar(x - 0.2, [r["tensorflow_gflops"] for r in records], 0.4, label=f"TensorFlow ({device})")
    ax.bar(x + 0.2, [r["numpy_gflops"] for r in records], 0.4, label="NumPy")
    ax.set_xticks(x, [str(r["n"]) for r in records])
    ax.set_xlabel("n")
    ax.set_ylabel("GFLOP/s")
    ax.legend()
    _save_figure(fig, Path(output_dir) / "matmul.png")
    return records


def machine():
    """The machine and libraries a figure was measured with."""
    return {
        "cpus": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
