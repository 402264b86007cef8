"""`keras-mlp-benchmark`: how fast the chapter's epoch runs here, against Keras `fit`,
the fastest bare TensorFlow loop and PyTorch; and the speed exercises.

    keras-mlp-benchmark train --data_dir=../shared/data/fashion-mnist
    keras-mlp-benchmark scaling      # exercise 6: scratch vs concise by width and depth
    keras-mlp-benchmark matmul       # exercise 7: n x n matmuls around 1024, memory bandwidth

`train` times every contender of `keras_mlp.contenders` (and `keras_mlp.torch_loop`)
in a process of its own, round after round in turn, so that a slow spell of this
shared machine falls on all of them alike; it reports each one's median over the rounds
with its spread, and ratios measured in the same run. Nothing here is a pass/fail
test. Every figure is printed as a table and saved as JSON and PNG in --output_dir.
"""

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import flags
from matplotlib.figure import Figure

from keras_mlp import cli, contenders, process, speed
from keras_mlp import data as data_lib
from keras_mlp.checks import check_positive_int
from keras_mlp.errors import UserError
from keras_mlp.names import MODELS, ONEDNN_SETTINGS
from keras_mlp.reporting import print_table, save_figure, write_json

# The column every other is divided by, when it was measured.
BASELINES = ("torch", "tf_loop", "keras_fit")
# The job timing ours and the bare loop in one process (`contenders.time_ours_beside_tf_loop`).
PAIRED = "ours_beside_tf_loop"


def mlp_epoch_flops(input_dim, hidden_units, num_classes, num_train, num_val, batch_size):
    """Matmul FLOPs of one epoch: forward, weight gradients and (past the first
    layer) input gradients for each trained example, plus the validation forward pass."""
    widths = (input_dim, *hidden_units, num_classes)
    layer_macs = [i * o for i, o in zip(widths[:-1], widths[1:], strict=True)]
    trained = (num_train // batch_size) * batch_size
    forward = 2 * sum(layer_macs)
    backward = 2 * sum(layer_macs) + 2 * sum(layer_macs[1:])
    return trained * (forward + backward) + num_val * forward


_KEYS = ("train_images", "train_labels", "val_images", "val_labels")


def save_arrays(path, data):
    """The arrays every contender's process reads (`measure`, `torch_loop`)."""
    np.savez(path, **{key: getattr(data, key) for key in _KEYS})


def load_arrays(path):
    """The `Dataset` of `save_arrays`' file, validated on its second split."""
    with np.load(path) as arrays:
        parts = [arrays[key] for key in _KEYS]
    num_classes = int(max(parts[1].max(), parts[3].max())) + 1
    return data_lib.Dataset(
        "benchmark", *parts, "test", tuple(map(str, range(num_classes))), str(path)
    )


def measure(contender, model_name, arrays_path, epochs):
    """One contender's epochs, in this process: the record `train` collects."""
    data = load_arrays(arrays_path)
    if contender == PAIRED:
        ours, loop = contenders.time_ours_beside_tf_loop(model_name, data, epochs)
        record = {"epoch_seconds": ours, "tf_loop_seconds": loop}
    else:
        seconds, val_accuracy = contenders.time_contender(contender, model_name, data, epochs)
        record = {"epoch_seconds": seconds, "val_accuracy": val_accuracy}
    return {**record, "peak_rss_mib": speed.peak_rss_mib(), "settings": process.settings()}


def _run_in_subprocess(args, timeout=900):
    """Runs `python *args`; returns its stdout, or raises with its last error line."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=timeout, env=env
    )
    if result.returncode != 0:
        tail = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"{' '.join(args[:3])} failed: {tail}")
    return result.stdout


def _jobs(models, chosen, torch_available, paired):
    """`(contender, model)` in the order each round runs them: each of `chosen` on each
    of `models`, the contenders that write the MLP out once (`"bare"`), then (`paired`,
    with ours and tf_loop chosen) ours beside the bare loop on each model."""
    jobs = [(c, m) for m in models for c in chosen if c not in contenders.MODEL_FREE]
    jobs += [(c, "bare") for c in chosen if c in contenders.MODEL_FREE]
    if paired and {"ours", "tf_loop"} <= set(chosen):
        jobs += [(PAIRED, m) for m in models]
    return [job for job in jobs if job[0] != "torch" or torch_available]


def _run_job(contender, model_name, arrays_path, epochs):
    if contender == "torch":
        args = ["-m", "keras_mlp.torch_loop", str(arrays_path), str(epochs)]
    else:
        args = [
            *("-m", "keras_mlp.benchmark", "measure"),
            f"--contender={contender}",
            f"--model={model_name}",
            f"--arrays={arrays_path}",
            f"--epochs={epochs}",
        ]
    out = _run_in_subprocess(args)
    return json.loads(out.strip().splitlines()[-1])


def _measure_rounds(jobs, arrays_path, epochs, rounds):
    """Every job once per round, rounds in turn; a record per job with every round's
    steady epoch seconds (the paired job: every epoch pair's ratio after the warm-up)."""
    records = {job: {"contender": job[0], "model": job[1], "rounds": []} for job in jobs}
    for number in range(rounds):
        for job in jobs:
            print(f"round {number + 1}/{rounds}: {job[0]} {job[1]}", file=sys.stderr, flush=True)
            result = _run_job(*job, arrays_path, epochs + 1)
            record = records[job]
            if job[0] == PAIRED:
                pairs = zip(result["epoch_seconds"][1:], result["tf_loop_seconds"][1:], strict=True)
                record["rounds"].append([ours / loop for ours, loop in pairs])
                continue
            record["rounds"].append(speed.steady(result["epoch_seconds"]))
            record["val_accuracy"] = result["val_accuracy"]
            record["peak_rss_mib"] = max(
                record.get("peak_rss_mib", 0), result.get("peak_rss_mib", 0)
            )
            record["settings"] = result["settings"]
    return list(records.values())


def _paired_figures(record):
    """The paired job's median ratio and its middle half, over every epoch pair."""
    ratios = [ratio for round_ratios in record["rounds"] for ratio in round_ratios]
    record["pairs"] = len(ratios)
    record["median_ratio"] = float(np.median(ratios))
    record["middle_half"] = [float(q) for q in np.quantile(ratios, [0.25, 0.75])]
    return record


def _add_figures(records, trained, flops, limit):
    """Median, spread, examples/s, efficiency and the ratio to each baseline."""
    for r in records:
        r["median_epoch_seconds"] = float(np.median(r["rounds"]))
        r["min_epoch_seconds"], r["max_epoch_seconds"] = min(r["rounds"]), max(r["rounds"])
        r["examples_per_second"] = trained / r["median_epoch_seconds"]
        r["efficiency"] = flops / (r["median_epoch_seconds"] * limit * 1e9)
    for r in records:
        for baseline in BASELINES:
            same = [
                b
                for b in records
                if b["contender"] == baseline and b["model"] in ("bare", r["model"])
            ]
            if same:
                r[f"x_{baseline}"] = r["median_epoch_seconds"] / same[0]["median_epoch_seconds"]


def _print_train_report(report):
    records, measured = report["results"], report["measured"]
    baselines = [b for b in BASELINES if any(f"x_{b}" in r for r in records)]
    rows = [
        [
            r["contender"],
            r["model"],
            f"{r['median_epoch_seconds']:.3f}",
            f"{r['min_epoch_seconds']:.3f}-{r['max_epoch_seconds']:.3f}",
            *(f"{r[f'x_{b}']:.2f}" if f"x_{b}" in r else "" for b in baselines),
            f"{r['examples_per_second']:,.0f}",
            f"{100 * r['efficiency']:.0f}%",
            f"{r['peak_rss_mib']:.0f}",
            f"{r['val_accuracy']:.4f}",
        ]
        for r in records
    ]
    print_table(
        f"train: seconds per epoch (train + validation), the median over {measured['rounds']} "
        f"rounds of each process's median of epochs 2..{measured['epochs'] + 1}; batch 256",
        [
            "contender",
            "model",
            "s/epoch",
            "min-max",
            *(f"x {b}" for b in baselines),
            "examples/s",
            "efficiency",
            "peak MiB",
            "val_acc",
        ],
        rows,
    )
    limit = report["matmul_limit_gflops"]
    print(
        f"matmul limit (best of n=1024/2048/4096): TensorFlow {limit['tensorflow']:.0f} GFLOP/s, "
        f"NumPy {limit['numpy']:.0f} GFLOP/s; efficiency = epoch FLOPs / (s/epoch x "
        f"{max(limit.values()):.0f} GFLOP/s)"
    )
    print(f"settings: {json.dumps(report['settings'])}")
    if report["torch"] is None and "torch" in report["measured"]["contenders"]:
        print("torch: not importable, its column is missing (pip install 'keras_mlp[torch]')")
    if "scratch_over_concise" in report:
        print(f"scratch / concise (ours): {report['scratch_over_concise']:.2f}")
    if report["ours_beside_tf_loop"]:
        each = ", ".join(
            f"{r['model']} {r['median_ratio']:.2f} ({r['middle_half'][0]:.2f}-"
            f"{r['middle_half'][1]:.2f})"
            for r in report["ours_beside_tf_loop"]
        )
        print(
            "ours / tf_loop in one process, epochs alternating (median and middle half of "
            f"{report['ours_beside_tf_loop'][0]['pairs']} epoch pairs): {each}"
        )


def _plot_train(path, records, flops, limit, rounds):
    """Each contender's median seconds per epoch, its min-max over the rounds, and the
    epoch's matmul time at the machine's best rate."""
    fig = Figure(figsize=(9, 4.2))
    ax = fig.subplots()
    medians = np.array([r["median_epoch_seconds"] for r in records])
    spread = np.array(
        [
            [m - r["min_epoch_seconds"], r["max_epoch_seconds"] - m]
            for m, r in zip(medians, records, strict=True)
        ]
    ).T
    labels = [f"{r['contender']}\n{r['model']}" for r in records]
    ax.bar(
        labels,
        medians,
        yerr=spread,
        capsize=3,
        color=[f"C{contenders.CONTENDERS.index(r['contender'])}" for r in records],
    )
    floor = flops / (limit * 1e9)
    ax.axhline(floor, color="k", ls="--", label=f"matmul limit ({floor:.2f}s)")
    ax.set_ylabel("seconds per epoch")
    ax.set_title(
        f"The chapter's epoch (train + validation): median and min-max over {rounds} rounds",
        fontsize=10,
    )
    ax.tick_params(axis="x", labelsize=7, labelrotation=30)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


def run_train_benchmark(
    output_dir,
    data_dir,
    dataset,
    epochs,
    rounds,
    models=("concise", "scratch"),
    chosen=contenders.CONTENDERS,
    paired=True,
):
    """Every contender on the chapter's epoch, `rounds` rounds in turn (`paired`: and ours
    beside the bare loop in one process); the table, train.json and train.png in
    `output_dir`."""
    data = data_lib.load_dataset(dataset, data_dir=data_dir)
    torch_available = importlib.util.find_spec("torch") is not None
    with tempfile.TemporaryDirectory() as tmp:
        arrays = Path(tmp) / "arrays.npz"
        save_arrays(arrays, data)
        jobs = _jobs(models, chosen, torch_available, paired)
        measured = _measure_rounds(jobs, arrays, epochs, rounds)
    records = [r for r in measured if r["contender"] != PAIRED]
    beside = [_paired_figures(r) for r in measured if r["contender"] == PAIRED]
    limit = {
        lib: max(speed.matmul_gflops(n, lib) for n in (1024, 2048, 4096))
        for lib in ("tensorflow", "numpy")
    }
    trained = contenders.trained_examples(len(data.train_images))
    flops = mlp_epoch_flops(
        int(np.prod(data.input_shape)),
        (contenders.HIDDEN,),
        data.num_classes,
        len(data.train_images),
        len(data.val_images),
        contenders.BATCH_SIZE,
    )
    _add_figures(records, trained, flops, max(limit.values()))
    torch_record = next((r for r in records if r["contender"] == "torch"), None)
    report = {
        "results": records,
        "measured": {
            "contenders": list(chosen),
            "paired": bool(beside),
            "rounds": rounds,
            "epochs": epochs,
            "trained_examples_per_epoch": trained,
            "flops_per_epoch": flops,
        },
        "matmul_limit_gflops": limit,
        "settings": records[0]["settings"],
        "torch": torch_record["settings"]["torch"] if torch_record else None,
        "machine": speed.machine(),
        "ours_beside_tf_loop": beside,
    }
    ours = {r["model"]: r["median_epoch_seconds"] for r in records if r["contender"] == "ours"}
    if {"concise", "scratch"} <= set(ours):
        report["scratch_over_concise"] = ours["scratch"] / ours["concise"]
    _print_train_report(report)
    write_json(Path(output_dir) / "train.json", report)
    _plot_train(Path(output_dir) / "train.png", records, flops, max(limit.values()), rounds)
    return report


COMMANDS = ("train", "scaling", "matmul")


def define_flags(flag_values):
    kw = {"flag_values": flag_values}
    flags.DEFINE_string("output_dir", "benchmark_results", "Where the JSON and PNG files go.", **kw)
    flags.DEFINE_enum(
        "dataset", "fashion_mnist", ["fashion_mnist", "synthetic"], "train: the data.", **kw
    )
    flags.DEFINE_string("data_dir", None, "train: the Fashion-MNIST IDX files.", **kw)
    flags.DEFINE_integer(
        "epochs",
        8,
        "train: measured epochs per process, after one warm-up epoch; the process reports "
        "their median (robust to a burst of load shorter than half of them).",
        **kw,
    )
    flags.DEFINE_integer(
        "rounds",
        5,
        "train, scaling: rounds; each runs every contender (scaling: both models at each "
        "point) once, in turn. The figures are medians over the rounds.",
        **kw,
    )
    flags.DEFINE_list(
        "models", ["concise", "scratch"], "train: the package's models to measure.", **kw
    )
    flags.DEFINE_boolean(
        "paired",
        True,
        "train, with ours and tf_loop among the contenders: also time both in one process, "
        "epochs alternating (one more process per model and round), for their ratio without "
        "the spread between processes.",
        **kw,
    )
    flags.DEFINE_list(
        "contenders",
        list(contenders.CONTENDERS),
        f"train: what to time ({', '.join(contenders.CONTENDERS)}; see keras_mlp.contenders).",
        **kw,
    )
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
        "onednn",
        "auto",
        ONEDNN_SETTINGS,
        "train: oneDNN in the contenders' processes, as keras-mlp-train --onednn.",
        **kw,
    )
    # The internal command each timed TensorFlow contender runs in its own process.
    flags.DEFINE_enum(
        "contender",
        "ours",
        [*contenders.CONTENDERS, PAIRED],
        "measure (internal): what to time.",
        **kw,
    )
    flags.DEFINE_string("model", "concise", "measure (internal): the model.", **kw)
    flags.DEFINE_string("arrays", None, "measure (internal): the .npz of the data.", **kw)


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
    if len(args) != 1 or args[0] not in (*COMMANDS, "measure"):
        raise UserError(f"give one command: {', '.join(COMMANDS)}. Received: {args}")
    for name in ("epochs", "rounds", "steps", "bandwidth_mb"):
        check_positive_int(f"--{name}", fv[name].value)
    for model_name in fv.models:
        if model_name not in MODELS:
            raise UserError(f"--models: {model_name!r} is not known; accepted: {', '.join(MODELS)}")
    for contender in fv.contenders:
        if contender not in contenders.CONTENDERS:
            raise UserError(
                f"--contenders: {contender!r} is not known; accepted: "
                f"{', '.join(contenders.CONTENDERS)}"
            )
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
        print(json.dumps(measure(fv.contender, fv.model, fv.arrays, fv.epochs)))
        return 0
    os.makedirs(fv.output_dir, exist_ok=True)
    process.choose(fv.onednn)  # each contender's process starts TensorFlow with it
    if command == "train":
        run_train_benchmark(
            fv.output_dir,
            fv.data_dir,
            fv.dataset,
            fv.epochs,
            fv.rounds,
            tuple(fv.models),
            tuple(fv.contenders),
            fv.paired,
        )
    elif command == "scaling":
        speed.run_scaling_benchmark(
            fv.output_dir, lists["widths"], lists["depths"], fv.steps, fv.rounds
        )
    else:
        speed.run_matmul_benchmark(fv.output_dir, lists["sizes"], fv.bandwidth_mb)
    print(f"\nresults in {fv.output_dir}/{command}.json and {command}.png")
    return 0


def main(argv=None):
    """The `keras-mlp-benchmark` command; returns its exit status."""
    return cli.run_tool(_benchmark, define_flags, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
