r"""Grid sweeps over training flags: every trial an ordinary training run in its
own folder of the sweep, so each has its TensorBoard logs and HParams session.

    keras-mlp-sweep --sweep_dir=runs/width --grid=hidden_units=32,64,128 \
        -- --flagfile=configs/scratch.flags --data_dir=../shared/data/fashion-mnist
    keras-mlp-sweep --flagfile=configs/sweeps/width.flags -- --data_dir=...

Flags after `--` go to every trial; `;` separates values that hold commas
(`--grid=hidden_units=256;256,256`).

Rerunning a sweep skips the trials that finished; a failed trial is recorded
as failed and the sweep goes on. Results: `results.csv`, a summary printed best
first, PNG plots, and the HParams experiment at the sweep's root.
"""

import dataclasses
import itertools
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import tensorflow as tf
from absl import flags
from matplotlib.figure import Figure
from tensorboard.plugins.hparams import api as hp
from tqdm.auto import tqdm

from keras_mlp import cli
from keras_mlp.config import RunConfig
from keras_mlp.errors import UserError
from keras_mlp.reporting import print_table, save_figure, write_csv
from keras_mlp.summaries import HPARAMS_METRICS

RESULT_COLUMNS = (
    "status",
    "val_accuracy",
    "val_loss",
    "loss",
    "accuracy",
    "epochs",
    "seconds",
    "error",
)

# What a grid may sweep: every training flag (and whole flagfiles).
TRAINING_FLAGS = {field.name for field in dataclasses.fields(RunConfig)} | {"flagfile"}


def parse_grid(specs):
    """`["name=v1,v2", "other=a;b,c"]` -> `{"name": ["v1", "v2"], "other": ["a", "b,c"]}`.

    Values are separated by commas, or by semicolons when a value itself holds
    commas (`hidden_units=256;256,256` is one and two hidden layers).
    """
    grid = {}
    for spec in specs:
        name, sep, values = spec.partition("=")
        if not sep or not re.fullmatch(r"[a-z_]+", name) or not values:
            raise UserError(f"--grid expects name=value1,value2,... Received: {spec!r}")
        if name in grid:
            raise UserError(f"--grid names {name} twice")
        if name in ("model_dir", "overwrite"):
            raise UserError(f"--grid cannot sweep --{name}: the sweep sets it for each trial")
        if name not in TRAINING_FLAGS:
            raise UserError(f"--grid names {name}, which is not a training flag")
        grid[name] = [v for v in values.split(";" if ";" in values else ",") if v]
    if not grid:
        raise UserError("give at least one --grid=name=value1,value2")
    return grid


def trial_name(params):
    """A folder name for a trial: `hidden_units=256_256-learning_rate=0.1`."""
    return "-".join(f"{k}={re.sub(r'[^A-Za-z0-9.]+', '_', v)}" for k, v in params.items())


def _run_trial(sweep_dir, params, train_args, timeout):
    """Runs one trial (or finds it finished); returns its results row."""
    name = trial_name(params)
    model_dir = Path(sweep_dir) / name
    row = {"trial": name, **params}
    if not (model_dir / "metrics.json").exists():
        command = [
            sys.executable,
            "-m",
            "keras_mlp.train",
            *train_args,
            *(f"--{k}={v}" for k, v in params.items()),
            f"--model_dir={model_dir}",
        ]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {**row, "status": "failed", "error": f"timed out after {timeout:g}s"}
        (Path(sweep_dir) / f"{name}.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            reason = errors[-1] if errors else f"exit status {result.returncode}"
            return {**row, "status": "failed", "error": reason.removeprefix("error: ")}
    metrics = json.loads((model_dir / "metrics.json").read_text())
    history = metrics["history"]
    return {
        **row,
        "status": "done",
        **{key: metrics["final"][key] for key in ("val_accuracy", "val_loss", "loss", "accuracy")},
        "epochs": len(history["loss"]),
        "seconds": round(sum(history["epoch_seconds"]), 2),
        "error": "",
    }


def write_hparams_experiment(sweep_dir, grid):
    """The experiment config that the HParams dashboard reads at the sweep's root."""
    with tf.summary.create_file_writer(str(sweep_dir)).as_default():
        hp.hparams_config(hparams=[hp.HParam(name) for name in grid], metrics=HPARAMS_METRICS)


def run_sweep(sweep_dir, grid, train_args, parallel=1, timeout=3600, verbose=True):
    """Runs every combination of `grid`; returns the result rows, best first."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_hparams_experiment(sweep_dir, grid)
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    rows = []
    with (
        ThreadPoolExecutor(max_workers=parallel) as pool,
        tqdm(
            total=len(combos), desc="trials", unit="trial", disable=None if verbose else True
        ) as bar,
    ):
        futures = [
            pool.submit(_run_trial, sweep_dir, params, train_args, timeout) for params in combos
        ]
        for future in futures:
            rows.append(future.result())
            bar.update(1)
    rows.sort(key=lambda r: (r["status"] != "done", -float(r.get("val_accuracy") or 0)))
    write_csv(sweep_dir / "results.csv", rows, ["trial", *grid, *RESULT_COLUMNS])
    plot_results(sweep_dir / "results.png", rows, list(grid))
    if verbose:
        print_summary(rows, list(grid))
    return rows


def print_summary(rows, keys):
    extra = [column for column in ("epochs", "seconds") if column not in keys]
    table = [
        [
            *(r[k] for k in keys),
            r["status"],
            f"{r['val_accuracy']:.4f}" if r["status"] == "done" else "-",
            f"{r['val_loss']:.4f}" if r["status"] == "done" else "-",
            *(r.get(column, "-") for column in extra),
        ]
        for r in rows
    ]
    print_table(
        "sweep results, best first:", [*keys, "status", "val_acc", "val_loss", *extra], table
    )
    for r in rows:
        if r["status"] == "failed":
            print(f"failed: {r['trial']}: {r['error']}")


def _axis_values(values):
    """Sorted distinct values, numerically when they all are numbers."""
    distinct = list(dict.fromkeys(values))
    try:
        return sorted(distinct, key=float)
    except ValueError:
        return distinct


def plot_results(path, rows, keys):
    """Validation accuracy against the swept value (one key), a heatmap (two keys),
    or a bar per trial (more)."""
    done = [r for r in rows if r["status"] == "done"]
    if not done:
        return
    if len(keys) == 1:
        xs = _axis_values([r[keys[0]] for r in done])
        accuracy = {r[keys[0]]: r["val_accuracy"] for r in done}
        fig = Figure(figsize=(6, 3.5))
        ax = fig.subplots()
        ax.plot(range(len(xs)), [accuracy[x] for x in xs], "o-")
        ax.set_xticks(range(len(xs)), xs, rotation=30)
        ax.set_xlabel(keys[0])
        ax.set_ylabel("validation accuracy")
        ax.grid(True, alpha=0.3)
    elif len(keys) == 2:
        rows_axis, cols_axis = (_axis_values([r[k] for r in done]) for k in keys)
        grid = np.full((len(rows_axis), len(cols_axis)), np.nan)
        for r in done:
            grid[rows_axis.index(r[keys[0]]), cols_axis.index(r[keys[1]])] = r["val_accuracy"]
        fig = Figure(figsize=(1.2 * len(cols_axis) + 2.5, 0.6 * len(rows_axis) + 2))
        ax = fig.subplots()
        image = ax.imshow(grid, cmap="viridis", aspect="auto")
        middle = np.nanmin(grid) + (np.nanmax(grid) - np.nanmin(grid)) / 2
        for (i, j), value in np.ndenumerate(grid):
            if not np.isnan(value):  # dark text on the bright (viridis: high) cells
                ax.text(
                    j,
                    i,
                    f"{value:.3f}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="black" if value > middle else "white",
                )
        ax.set_xticks(range(len(cols_axis)), cols_axis, rotation=30)
        ax.set_yticks(range(len(rows_axis)), rows_axis)
        ax.set_xlabel(keys[1])
        ax.set_ylabel(keys[0])
        fig.colorbar(image, label="validation accuracy")
    else:
        fig = Figure(figsize=(6, 0.3 * len(done) + 1.5))
        ax = fig.subplots()
        ax.barh([r["trial"] for r in done][::-1], [r["val_accuracy"] for r in done][::-1])
        ax.set_xlabel("validation accuracy")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def define_flags(flag_values):
    def define(kind, name, default, help):
        kind(name, default, help, flag_values=flag_values)

    define(
        flags.DEFINE_string,
        "sweep_dir",
        None,
        "Folder of the sweep: one sub-folder per trial, results.csv, plots.",
    )
    define(
        flags.DEFINE_multi_string,
        "grid",
        [],
        "name=v1,v2,...: a training flag and its values (';' separates values holding commas).",
    )
    define(
        flags.DEFINE_string, "base_flagfile", None, "A training flagfile every trial starts from."
    )
    define(flags.DEFINE_integer, "parallel", 1, "Trials run at once (each its own process).")
    define(
        flags.DEFINE_float,
        "trial_timeout",
        3600,
        "Seconds a trial may run before it is recorded as failed.",
    )


def _sweep(flag_values, train_args):
    if not flag_values.sweep_dir:
        raise UserError("--sweep_dir is required")
    if flag_values.parallel < 1:
        raise UserError(f"--parallel={flag_values.parallel} must be a positive integer")
    grid = parse_grid(flag_values.grid)
    base = [f"--flagfile={flag_values.base_flagfile}"] if flag_values.base_flagfile else []
    rows = run_sweep(
        flag_values.sweep_dir,
        grid,
        [*base, *train_args],
        flag_values.parallel,
        flag_values.trial_timeout,
    )
    print(
        f"\nresults in {flag_values.sweep_dir}/results.csv and results.png; "
        f"tensorboard --logdir {flag_values.sweep_dir} --host 127.0.0.1"
    )
    return 0 if any(r["status"] == "done" for r in rows) else 1


def main(argv=None):
    """The `keras-mlp-sweep` command; returns its exit status (1 when no trial finished)."""
    return cli.run_tool(_sweep, define_flags, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
