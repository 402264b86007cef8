"""Speed measurements: our Trainer against plain Keras `fit` and the machine's
matmul limit, scratch vs concise across sizes, and matmul alignment.

    keras-mlp-benchmark train --data_dir=../shared/data/fashion-mnist
    keras-mlp-benchmark scaling      # exercise 6: scratch vs concise by width and depth
    keras-mlp-benchmark matmul       # exercise 7: n x n matmuls around 1024, memory bandwidth

Figures are ratios against baselines measured in the same run; the machines
this runs on are shared and noisy, so nothing here is a pass/fail test. Every
figure is printed as a table and saved as JSON and PNG in --output_dir.
"""

import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from absl import flags
from matplotlib.figure import Figure

from keras_mlp import cli
from keras_mlp import data as data_lib
from keras_mlp.checks import check_positive_int
from keras_mlp.errors import UserError
from keras_mlp.models import build_model
from keras_mlp.names import MODELS
from keras_mlp.reporting import print_table, save_figure, write_json
from keras_mlp.training import Trainer


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


def mlp_epoch_flops(input_dim, hidden_units, num_classes, num_train, num_val, batch_size):
    """Matmul FLOPs of one epoch: forward, weight gradients and (past the first
    layer) input gradients for each trained example, plus the validation forward pass."""
    widths = (input_dim, *hidden_units, num_classes)
    layer_macs = [i * o for i, o in zip(widths[:-1], widths[1:], strict=True)]
    trained = (num_train // batch_size) * batch_size
    forward = 2 * sum(layer_macs)
    backward = 2 * sum(layer_macs) + 2 * sum(layer_macs[1:])
    return trained * (forward + backward) + num_val * forward


def time_trainer(model_name, data, epochs, batch_size=256, hidden_units=(256,), **trainer_kwargs):
    """Per-epoch seconds of our Trainer (train + validation), first epoch included."""
    trainer = Trainer(max_epochs=epochs, batch_size=batch_size, verbose=False, **trainer_kwargs)
    with trainer.strategy.scope():
        model = build_model(
            model_name, data.input_shape, data.num_classes, hidden_units=hidden_units
        )
    history = trainer.fit(model, data)
    return history["epoch_seconds"], history["val_accuracy"][-1]


class _EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def time_keras_fit(model_name, data, epochs, batch_size=256, hidden_units=(256,)):
    """Per-epoch seconds of plain `model.compile()` + `model.fit()` on the same model,
    data, batch size and validation split (train + validation per epoch). Like our
    Trainer, it trains full batches only: the same examples per epoch."""
    model = build_model(model_name, data.input_shape, data.num_classes, hidden_units=hidden_units)
    trained = (len(data.train_images) // batch_size) * batch_size
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    timer = _EpochTimer()
    scale = np.float32(1 / 255)
    history = model.fit(
        data.train_images[:trained].astype(np.float32) * scale,
        data.train_labels[:trained],
        batch_size=batch_size,
        epochs=epochs,
        shuffle=True,
        validation_data=(data.val_images.astype(np.float32) * scale, data.val_labels),
        verbose=0,
        callbacks=[timer],
    )
    return timer.seconds, history.history["val_accuracy"][-1]


def measure(implementation, model_name, data_dir, dataset, epochs):
    """One measurement, meant to run in its own process so that peak memory is its own."""
    data = data_lib.load_dataset(dataset, data_dir=data_dir)
    timer = time_trainer if implementation == "ours" else time_keras_fit
    seconds, val_accuracy = timer(model_name, data, epochs)
    return {
        "implementation": implementation,
        "model": model_name,
        "epoch_seconds": seconds,
        "val_accuracy": val_accuracy,
        "peak_rss_mib": peak_rss_mib(),
        "trained_examples_per_epoch": (len(data.train_images) // 256) * 256,
        "flops_per_epoch": mlp_epoch_flops(
            int(np.prod(data.input_shape)),
            (256,),
            data.num_classes,
            len(data.train_images),
            len(data.val_images),
            256,
        ),
    }


def _run_in_subprocess(args, timeout=900):
    """Runs `python *args`; returns (its stdout, wall seconds), or raises with its last error line."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    wall = time.perf_counter() - start
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"{' '.join(args[:3])} failed: {tail}")
    return result.stdout, wall


def _steady(seconds):
    """Steady-state epoch time: the median of the epochs after the first (warm-up)."""
    return float(np.median(seconds[1:] if len(seconds) > 1 else seconds))


def _save_figure(fig, path):
    fig.tight_layout()
    save_figure(fig, path)


def _measure_each(models, epochs, data_flags):
    """One `measure` process per (model, implementation), so that peak memory is its own."""
    results = []
    for model_name in models:
        for implementation in ("ours", "keras_fit"):
            out, _ = _run_in_subprocess(
                [
                    *("-m", "keras_mlp.benchmark", "measure"),
                    f"--implementation={implementation}",
                    f"--model={model_name}",
                    f"--epochs={epochs + 1}",
                    *data_flags,
                ]
            )
            results.append(json.loads(out.strip().splitlines()[-1]))
    return results


def _add_figures(results, best_limit):
    """Steady seconds, examples/s, efficiency and the ratio to Keras fit, per result."""
    by_key = {}
    for r in results:
        r["steady_epoch_seconds"] = _steady(r["epoch_seconds"])
        r["examples_per_second"] = r["trained_examples_per_epoch"] / r["steady_epoch_seconds"]
        r["efficiency"] = r["flops_per_epoch"] / (r["steady_epoch_seconds"] * best_limit * 1e9)
        by_key[r["model"], r["implementation"]] = r
    for r in results:
        baseline = by_key[r["model"], "keras_fit"]["steady_epoch_seconds"]
        r["ratio_to_keras_fit"] = r["steady_epoch_seconds"] / baseline
    return by_key


def _print_train_report(report, epochs):
    rows = [
        [
            r["model"],
            r["implementation"],
            f"{r['steady_epoch_seconds']:.3f}",
            f"{r['examples_per_second']:,.0f}",
            f"{r['ratio_to_keras_fit']:.2f}",
            f"{100 * r['efficiency']:.0f}%",
            f"{r['peak_rss_mib']:.0f}",
            f"{r['val_accuracy']:.4f}",
        ]
        for r in report["results"]
    ]
    header = ["model", "implementation", "s/epoch", "examples/s", "x keras_fit", "efficiency"]
    print_table(
        f"train: steady-state epoch (train + validation, median of epochs 2..{epochs + 1}), batch 256",
        [*header, "peak MiB", "val_acc"],
        rows,
    )
    limit = report["matmul_limit_gflops"]
    print(
        f"matmul limit (best of n=1024/2048/4096): TensorFlow {limit['tensorflow']:.0f} GFLOP/s, "
        f"NumPy {limit['numpy']:.0f} GFLOP/s; efficiency = epoch FLOPs / (s/epoch x "
        f"{max(limit.values()):.0f} GFLOP/s)"
    )
    if "scratch_over_concise" in report:
        print(f"scratch / concise (ours): {report['scratch_over_concise']:.2f}")
    if "end_to_end_seconds" in report:
        e2e = report["end_to_end_seconds"]
        print(
            f"end to end, 10 epochs incl. start-up: train.py {e2e['train_py']:.1f}s, "
            f"keras fit script {e2e['keras_fit_script']:.1f}s"
        )


def _plot_train(path, results, best_limit, num_models):
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    labels = [f"{r['model']}\n{r['implementation']}" for r in results]
    ax.bar(labels, [r["steady_epoch_seconds"] for r in results], color=["C0", "C1"] * num_models)
    floor = results[0]["flops_per_epoch"] / (best_limit * 1e9)
    ax.axhline(floor, color="k", ls="--", label=f"matmul limit ({floor:.2f}s)")
    ax.set_ylabel("seconds per epoch")
    ax.legend()
    _save_figure(fig, path)


def run_train_benchmark(
    output_dir, data_dir, dataset, epochs, end_to_end, models=("concise", "scratch")
):
    """Ours vs plain Keras fit per model, the matmul limit, efficiency and peak memory."""
    data_flags = [f"--dataset={dataset}"] + ([f"--data_dir={data_dir}"] if data_dir else [])
    results = _measure_each(models, epochs, data_flags)
    limit = {
        lib: max(matmul_gflops(n, lib) for n in (1024, 2048, 4096))
        for lib in ("tensorflow", "numpy")
    }
    best_limit = max(limit.values())
    by_key = _add_figures(results, best_limit)
    report = {"results": results, "matmul_limit_gflops": limit, "machine": _machine()}
    if "concise" in models and "scratch" in models:
        report["scratch_over_concise"] = (
            by_key["scratch", "ours"]["steady_epoch_seconds"]
            / by_key["concise", "ours"]["steady_epoch_seconds"]
        )
    if end_to_end:
        report["end_to_end_seconds"] = _end_to_end(data_flags)
    _print_train_report(report, epochs)
    write_json(Path(output_dir) / "train.json", report)
    _plot_train(Path(output_dir) / "train.png", results, best_limit, len(models))
    return report


def _end_to_end(data_flags):
    """Wall time of the concise seed run through the train tool and through a plain fit script."""
    with tempfile.TemporaryDirectory() as tmp:
        _, ours = _run_in_subprocess(
            ["-m", "keras_mlp.train", "--model=concise", *data_flags, f"--model_dir={tmp}/run"]
        )
    _, baseline = _run_in_subprocess(
        [
            "-m",
            "keras_mlp.benchmark",
            "measure",
            "--implementation=keras_fit",
            "--model=concise",
            "--epochs=10",
            *data_flags,
        ]
    )
    return {"train_py": ours, "keras_fit_script": baseline}


def run_scaling_benchmark(output_dir, widths, depths, steps, batch_size=256):
    """Exercise 6: scratch vs concise time per step across widths and depths."""
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
    rows, records = [], []
    for kind, value, hidden in configs:
        ms = {}
        for model_name in ("concise", "scratch"):
            seconds, _ = time_trainer(
                model_name, data, epochs=3, batch_size=batch_size, hidden_units=hidden
            )
            ms[model_name] = 1000 * _steady(seconds) / steps
        ratio = ms["scratch"] / ms["concise"]
        records.append(
            {
                "kind": kind,
                "value": value,
                "hidden_units": list(hidden),
                "concise_ms_per_step": ms["concise"],
                "scratch_ms_per_step": ms["scratch"],
                "scratch_over_concise": ratio,
            }
        )
        rows.append([kind, value, f"{ms['concise']:.2f}", f"{ms['scratch']:.2f}", f"{ratio:.2f}"])
    print_table(
        f"scaling: ms per training step (batch {batch_size}; depth uses width 256)",
        ["varied", "value", "concise", "scratch", "scratch/concise"],
        rows,
    )
    write_json(Path(output_dir) / "scaling.json", {"results": records, "machine": _machine()})
    _plot_scaling(Path(output_dir) / "scaling.png", records)
    return records


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
        axes[1, column].plot(x, [r["scratch_over_concise"] for r in part], "o-", color="C2")
        axes[1, column].axhline(1.0, color="k", lw=0.8)
        axes[1, column].set_xlabel(f"hidden {kind}")
        if kind == "width":
            axes[0, column].set_xscale("log", base=2)
        else:
            axes[1, column].set_xticks(x)
    axes[0, 0].set_ylabel("ms per step")
    axes[1, 0].set_ylabel("scratch / concise")
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
            "machine": _machine(),
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


def _machine():
    return {
        "cpus": os.cpu_count(),
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }


COMMANDS = ("train", "scaling", "matmul")


def define_flags(flag_values):
    kw = {"flag_values": flag_values}
    flags.DEFINE_string("output_dir", "benchmark_results", "Where the JSON and PNG files go.", **kw)
    flags.DEFINE_enum(
        "dataset", "fashion_mnist", ["fashion_mnist", "synthetic"], "train: the data.", **kw
    )
    flags.DEFINE_string("data_dir", None, "train: the Fashion-MNIST IDX files.", **kw)
    flags.DEFINE_integer("epochs", 5, "train: measured epochs, after one warm-up epoch.", **kw)
    flags.DEFINE_boolean(
        "end_to_end", True, "train: also time the 10-epoch concise run end to end.", **kw
    )
    flags.DEFINE_list("models", ["concise", "scratch"], "train: the models to measure.", **kw)
    flags.DEFINE_list(
        "widths",
        ["64", "128", "256", "512", "1024", "2048", "4096"],
        "scaling: hidden widths.",
        **kw,
    )
    flags.DEFINE_list(
        "depths", ["1", "2", "3", "4"], "scaling: numbers of hidden layers (width 256).", **kw
    )
    flags.DEFINE_integer("steps", 40, "scaling: training steps per timed epoch.", **kw)
    flags.DEFINE_list(
        "sizes", ["1024", "1025", "1026", "1028", "1032"], "matmul: the n of n x n matmuls.", **kw
    )
    flags.DEFINE_integer(
        "bandwidth_mb", 256, "matmul: MiB copied to measure memory bandwidth.", **kw
    )
    flags.DEFINE_enum(
        "implementation", "ours", ["ours", "keras_fit"], "measure (internal): what to time.", **kw
    )
    flags.DEFINE_string("model", "concise", "measure (internal): the model.", **kw)


def _check_fits(what, needed):
    """Refuses a measurement whose arrays (`needed` bytes) cannot fit in this machine's
    memory, measured as `run.check_memory` measures it, before anything is allocated."""
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > available:
        raise UserError(
            f"{what} needs about {needed / 2**30:,.1f} GiB, and this machine has "
            f"{available / 2**30:,.1f} GiB"
        )


def _check_matmul_memory(sizes, bandwidth_mb):
    """`matmul_gflops(n, "tensorflow")` holds five n x n float32 arrays at once (the two
    NumPy operands, their TensorFlow copies, the product); `copy_gbps` two buffers."""
    for n in sizes:
        _check_fits(f"--sizes={n}: a {n} x {n} float32 matmul (five such arrays)", 5 * 4 * n * n)
    _check_fits(
        f"--bandwidth_mb={bandwidth_mb}: the copy (two such buffers)", 2 * bandwidth_mb * 2**20
    )


def _checked_lists(fv, args):
    """Checks the command and every setting before anything is measured or written;
    returns the integer lists."""
    # "measure" is the internal command each timed run uses in its own process.
    if len(args) != 1 or args[0] not in (*COMMANDS, "measure"):
        raise UserError(f"give one command: {', '.join(COMMANDS)}. Received: {args}")
    for name in ("epochs", "steps", "bandwidth_mb"):
        check_positive_int(f"--{name}", fv[name].value)
    for model_name in fv.models:
        if model_name not in MODELS:
            raise UserError(f"--models: {model_name!r} is not known; accepted: {', '.join(MODELS)}")
    lists = {
        name: cli.positive_int_list(f"--{name}", fv[name].value)
        for name in ("widths", "depths", "sizes")
    }
    if args[0] == "matmul":
        _check_matmul_memory(lists["sizes"], fv.bandwidth_mb)
    return lists


def _benchmark(fv, args):
    lists = _checked_lists(fv, args)
    cli.quiet_tensorflow()
    tf.get_logger().setLevel("ERROR")  # each timed fit traces anew: expected, not news
    command = args[0]
    if command == "measure":
        print(json.dumps(measure(fv.implementation, fv.model, fv.data_dir, fv.dataset, fv.epochs)))
        return 0
    os.makedirs(fv.output_dir, exist_ok=True)
    if command == "train":
        run_train_benchmark(
            fv.output_dir, fv.data_dir, fv.dataset, fv.epochs, fv.end_to_end, tuple(fv.models)
        )
    elif command == "scaling":
        run_scaling_benchmark(fv.output_dir, lists["widths"], lists["depths"], fv.steps)
    else:
        run_matmul_benchmark(fv.output_dir, lists["sizes"], fv.bandwidth_mb)
    print(f"\nresults in {fv.output_dir}/{command}.json and {command}.png")
    return 0


def main(argv=None):
    """The `keras-mlp-benchmark` command; returns its exit status."""
    return cli.run_tool(_benchmark, define_flags, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
