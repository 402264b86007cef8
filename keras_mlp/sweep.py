r"""Grid sweeps over training flags: every trial an ordinary training run in its
own folder of the sweep, so each has its TensorBoard logs and HParams session.

    keras-mlp-sweep --sweep_dir=runs/width --grid=hidden_units=32,64,128 \
        -- --flagfile=configs/scratch.flags --data_dir=../shared/data/fashion-mnist
    keras-mlp-sweep --flagfile=configs/sweeps/width.flags -- --data_dir=...

Flags after `--` go to every trial; `;` separates values that hold commas
(`--grid=hidden_units=256;256,256`).

`--repeats=N` trains every grid point N times, with seeds seed..seed+N-1 (the
trials' own --seed, default 0), so that differences can be told from noise.

`--dry_run` checks every trial's training flags and prints its command,
training nothing. Rerunning a sweep skips the trials that finished; a failed trial is recorded
as failed and the sweep goes on. Results: `results.csv` (every run),
`summary.csv` (each grid point's mean and standard deviation over its seeds), a
summary printed best first, `results.png` (error bars: one standard deviation),
and the HParams experiment at the sweep's root.
"""

import dataclasses
import itertools
import json
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from absl import flags
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from keras_mlp import cli
from keras_mlp.config import HYPERPARAMETERS, RunConfig
from keras_mlp.errors import UserError
from keras_mlp.reporting import print_table, save_figure, write_csv
from keras_mlp.summaries import write_hparams_experiment

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


def trial_command(sweep_dir, params, train_args):
    """The training command of one trial (a `keras_mlp.train` process)."""
    return [
        sys.executable,
        "-m",
        "keras_mlp.train",
        *train_args,
        *(f"--{k}={v}" for k, v in params.items()),
        f"--model_dir={Path(sweep_dir) / trial_name(params)}",
    ]


def trial_list(grid, seeds=None):
    """Every combination of `grid`'s values, once per seed in `seeds` when given."""
    points = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    return [{**p, "seed": str(seed)} for p in points for seed in seeds] if seeds else points


def _run_trial(sweep_dir, params, train_args, timeout):
    """Runs one trial (or finds it finished); returns its results row."""
    name = trial_name(params)
    model_dir = Path(sweep_dir) / name
    row = {"trial": name, **params}
    if not (model_dir / "metrics.json").exists():
        command = trial_command(sweep_dir, params, train_args)
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


def run_sweep(sweep_dir, grid, train_args, parallel=1, timeout=3600, verbose=True, seeds=None):
    """Runs every combination of `grid` (once per seed in `seeds`, when given); returns
    the summary rows (one per grid point, best mean first)."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    write_hparams_experiment(sweep_dir, HYPERPARAMETERS)
    trials = trial_list(grid, seeds)
    rows = []
    with (
        ThreadPoolExecutor(max_workers=parallel) as pool,
        tqdm(
            total=len(trials), desc="trials", unit="trial", disable=None if verbose else True
        ) as bar,
    ):
        futures = [pool.submit(_run_trial, sweep_dir, t, train_args, timeout) for t in trials]
        for future in futures:
            rows.append(future.result())
            bar.update(1)
    rows.sort(key=lambda r: (r["status"] != "done", -float(r.get("val_accuracy") or 0)))
    keys = list(grid)
    summary = summarize(rows, keys)
    write_csv(sweep_dir / "results.csv", rows, ["trial", *trials[0], *RESULT_COLUMNS])
    write_csv(sweep_dir / "summary.csv", summary, [*keys, *SUMMARY_COLUMNS])
    plot_results(sweep_dir / "results.png", summary, keys)
    if verbose:
        print_summary(summary, keys, rows)
    return summary


SUMMARY_COLUMNS = (
    "runs",
    "done",
    "val_accuracy_mean",
    "val_accuracy_std",
    "val_loss_mean",
    "val_loss_std",
)


def summarize(rows, keys):
    """One row per grid point: how many runs, how many finished, and the mean and
    (sample) standard deviation of their validation accuracy and loss; best mean first."""
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    summary = []
    for point, runs in groups.items():
        done = [r for r in runs if r["status"] == "done"]
        entry = {**dict(zip(keys, point, strict=True)), "runs": len(runs), "done": len(done)}
        for metric in ("val_accuracy", "val_loss"):
            values = np.array([r[metric] for r in done], dtype=float)
            entry[f"{metric}_mean"] = float(values.mean()) if len(values) else None
            entry[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        summary.append(entry)
    summary.sort(key=lambda e: -(e["val_accuracy_mean"] if e["done"] else -1.0))
    return summary


def _mean_std(entry, metric):
    if not entry["done"]:
        return "-"
    mean, std = entry[f"{metric}_mean"], entry[f"{metric}_std"]
    return f"{mean:.4f} ± {std:.4f}" if entry["runs"] > 1 else f"{mean:.4f}"


def print_summary(summary, keys, rows):
    table = [
        [
            *(e[k] for k in keys),
            f"{e['done']}/{e['runs']}",
            _mean_std(e, "val_accuracy"),
            _mean_std(e, "val_loss"),
        ]
        for e in summary
    ]
    print_table(
        "sweep results, best first (mean ± standard deviation over seeds):",
        [*keys, "done", "val_acc", "val_loss"],
        table,
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


def plot_results(path, summary, keys):
    """Mean validation accuracy against the swept value with one-std error bars (one
    key), a heatmap annotated mean ± std (two keys), or a bar per grid point (more)."""
    done = [e for e in summary if e["done"]]
    if not done:
        return
    if len(keys) == 1:
        fig = _line_plot(done, keys[0])
    elif len(keys) == 2:
        fig = _heatmap(done, keys)
    else:
        fig = Figure(figsize=(6, 0.3 * len(done) + 1.5))
        ax = fig.subplots()
        labels = [", ".join(f"{k}={e[k]}" for k in keys) for e in done][::-1]
        means = [e["val_accuracy_mean"] for e in done][::-1]
        ax.barh(labels, means, xerr=[e["val_accuracy_std"] for e in done][::-1])
        ax.set_xlabel("validation accuracy")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


def _line_plot(done, key):
    xs = _axis_values([e[key] for e in done])
    by_value = {e[key]: e for e in done}
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.errorbar(
        range(len(xs)),
        [by_value[x]["val_accuracy_mean"] for x in xs],
        yerr=[by_value[x]["val_accuracy_std"] for x in xs],
        fmt="o-",
        capsize=4,
    )
    ax.set_xticks(range(len(xs)), xs, rotation=30)
    ax.set_xlabel(key)
    ax.set_ylabel("validation accuracy")
    ax.grid(True, alpha=0.3)
    return fig


def _heatmap(done, keys):
    rows_axis, cols_axis = (_axis_values([e[k] for e in done]) for k in keys)
    means = np.full((len(rows_axis), len(cols_axis)), np.nan)
    labels = {}
    for e in done:
        at = rows_axis.index(e[keys[0]]), cols_axis.index(e[keys[1]])
        means[at] = e["val_accuracy_mean"]
        labels[at] = f"{e['val_accuracy_mean']:.3f}" + (
            f"\n±{e['val_accuracy_std']:.3f}" if e["runs"] > 1 else ""
        )
    fig = Figure(figsize=(1.3 * len(cols_axis) + 2.5, 0.7 * len(rows_axis) + 2))
    ax = fig.subplots()
    image = ax.imshow(means, cmap="viridis", aspect="auto")
    middle = np.nanmin(means) + (np.nanmax(means) - np.nanmin(means)) / 2
    for (i, j), text in labels.items():  # dark text on the bright (viridis: high) cells
        color = "black" if means[i, j] > middle else "white"
        ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    ax.set_xticks(range(len(cols_axis)), cols_axis, rotation=30)
    ax.set_yticks(range(len(rows_axis)), rows_axis)
    ax.set_xlabel(keys[1])
    ax.set_ylabel(keys[0])
    fig.colorbar(image, label="validation accuracy (mean)")
    return fig


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
        flags.DEFINE_integer,
        "repeats",
        1,
        "Runs per grid point, with seeds seed..seed+N-1 (seed: the trials' --seed, default 0).",
    )
    define(
        flags.DEFINE_boolean,
        "dry_run",
        False,
        "Check every trial's training flags and print its command; train nothing, write nothing.",
    )
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
    if flag_values.repeats < 1:
        raise UserError(f"--repeats={flag_values.repeats} must be a positive integer")
    grid = parse_grid(flag_values.grid)
    base = [f"--flagfile={flag_values.base_flagfile}"] if flag_values.base_flagfile else []
    train_args = [*base, *train_args]
    seeds = None
    if flag_values.repeats > 1:
        if "seed" in grid:
            raise UserError("--repeats chooses the seeds: do not sweep --seed as well")
        first = base_config(train_args).seed
        seeds = range(first, first + flag_values.repeats)
    if flag_values.dry_run:
        return dry_run(flag_values.sweep_dir, grid, train_args, seeds)
    summary = run_sweep(
        flag_values.sweep_dir,
        grid,
        train_args,
        flag_values.parallel,
        flag_values.trial_timeout,
        seeds=seeds,
    )
    written = "results.csv, summary.csv" + (
        " and results.png" if any(e["done"] for e in summary) else ""
    )
    print(
        f"\n{written} in {flag_values.sweep_dir}; "
        f"tensorboard --logdir {flag_values.sweep_dir} --host 127.0.0.1"
    )
    return 0 if any(e["done"] for e in summary) else 1


def dry_run(sweep_dir, grid, train_args, seeds=None):
    """Checks each trial's training flags (as a trial would, before TensorFlow runs)
    and prints its command; trains and writes nothing. Returns 0."""
    trials = trial_list(grid, seeds)
    for params in trials:
        command = trial_command(sweep_dir, params, train_args)
        base_config(command[3:])
        print(shlex.join(command))
    print(f"{len(trials)} trials in {sweep_dir}; --dry_run: nothing trained")
    return 0


def base_config(train_args):
    """The `RunConfig` that the trials' common flags describe (checked before any trial)."""
    flag_values = flags.FlagValues()
    cli.define_run_flags(flag_values)
    try:
        flag_values(["train", *train_args])
    except flags.Error as e:
        raise UserError(f"the training flags: {str(e).removeprefix('ERROR:: ')}") from None
    return cli.config_from_flags(flag_values)


def main(argv=None):
    """The `keras-mlp-sweep` command; returns its exit status (1 when no trial finished)."""
    return cli.run_tool(_sweep, define_flags, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
