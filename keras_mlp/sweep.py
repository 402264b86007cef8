r"""Grid sweeps over training flags: an Optuna study whose GridSampler walks the grid
times the seeds, every trial an ordinary training run in its own folder
(`trial-NNN/`; its values in the study, results.csv and its run_config.json).

    keras-mlp-sweep --sweep_dir=runs/width --grid=hidden_units=32,64,128 \
        -- --flagfile=configs/scratch.flags --data_dir=../shared/data/fashion-mnist
    keras-mlp-sweep --flagfile=configs/sweeps/width.flags -- --data_dir=...

Flags after `--` go to every trial; `;` separates values that hold commas
(`--grid=hidden_units=256;256,256`). `--repeats=N` trains every grid point N
times, with seeds seed..seed+N-1 (the trials' own --seed, default 0). Every grid
point's training flags are checked before the first trial starts.

`--dry_run` checks every trial's settings and prints its training command,
running and writing nothing. Rerunning the same command continues: finished
trials are kept, a trial that
was stopped resumes from its checkpoint, a failed one is reported (with
--retry_failed, run again). Ctrl-C or SIGTERM stops the sweep after the running
trials have saved a checkpoint (exit 130 or 143). Results: `results.csv` (one row
per trial: grid values, seed, status, results), `summary.csv` (each grid point's
mean, standard deviation and number of finished seeds), `results.png`,
`study.db`, and the HParams experiment at the sweep's root.
"""

import dataclasses
import itertools
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import optuna
from absl import flags

from keras_mlp import cli, experiment, hparams, plots, process
from keras_mlp.checks import check_positive_int
from keras_mlp.config import RunConfig
from keras_mlp.errors import UserError
from keras_mlp.reporting import print_table, write_csv

RESULT_COLUMNS = (
    "status",
    "val_accuracy",
    "val_loss",
    "loss",
    "accuracy",
    "epochs_run",
    "seconds",
    "error",
)
SUMMARY_COLUMNS = (
    "n",
    "runs",
    "val_accuracy_mean",
    "val_accuracy_std",
    "val_loss_mean",
    "val_loss_std",
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
        if len(set(grid[name])) < len(grid[name]):
            raise UserError(f"--grid={spec} names a value twice")
    if not grid:
        raise UserError("give at least one --grid=name=value1,value2")
    return grid


def training_config(train_args, what="the training flags"):
    """The `RunConfig` that training flags describe, or a one-line error."""
    flag_values = flags.FlagValues()
    cli.define_run_flags(flag_values)
    try:
        cli.check_flagfiles(train_args, flag_values)
        rest = flag_values(["train", *train_args])
        cli.no_positional(rest[1:])
        return cli.config_from_flags(flag_values, overwrite=False)
    except (flags.Error, UserError) as e:
        message = cli.as_flags(str(e).removeprefix("ERROR:: "))
        raise UserError(f"{what}: {message}") from None


def label(point):
    """A grid point as the HParams tab names its group: `hidden_units=64 lr=0.1`."""
    return " ".join(f"{k}={v}" for k, v in point.items())


def grid_configs(grid, train_args):
    """Every grid point's `RunConfig` (all checked before any trial starts), in grid order."""
    configs = {}
    for values in itertools.product(*grid.values()):
        point = dict(zip(grid, values, strict=True))
        flag_args = [f"--{k}={v}" for k, v in point.items()]
        config = training_config([*train_args, *flag_args], f"--grid point {' '.join(flag_args)}")
        for other, seen in configs.items():
            if seen == config:
                first = " ".join(f"--{k}={v}" for k, v in zip(grid, other, strict=True))
                raise UserError(
                    f"--grid points {first} and {' '.join(flag_args)} are the same run; "
                    "give each value once"
                )
        configs[values] = config
    return configs


def seeds_of(grid, repeats, base):
    """The seeds every grid point runs with: a swept --seed, or --repeats from --seed."""
    if "seed" not in grid:
        return list(range(base.seed, base.seed + repeats))
    if repeats > 1:
        raise UserError("--repeats chooses the seeds: do not sweep --seed as well")
    seeds = grid.pop("seed")
    if not all(s.isdigit() for s in seeds):
        raise UserError(f"--grid=seed={','.join(seeds)} must be non-negative integers")
    if not grid:
        raise UserError("--grid sweeps only --seed: give a flag to sweep over the seeds")
    return [int(s) for s in seeds]


class _GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler, for a study driven by ask and tell: its `after_trial` calls
    `study.stop()` once the grid is covered, which only `study.optimize` allows (the
    engine stops asking by itself: `GridPlan.wanted`)."""

    def after_trial(self, study, trial, state, values):
        pass


class GridPlan(experiment.Plan):
    """Each new trial: the GridSampler's next grid point and seed."""

    def __init__(self, folder, grid, seeds, configs):
        self.folder, self.grid, self.seeds, self.configs = Path(folder), grid, seeds, configs

    def sampler(self):
        return _GridSampler({**self.grid, "seed": self.seeds}, seed=0)

    def configure(self, trial):
        values = tuple(trial.suggest_categorical(k, v) for k, v in self.grid.items())
        seed = trial.suggest_categorical("seed", self.seeds)
        config = dataclasses.replace(
            self.configs[values],
            seed=seed,
            model_dir=str(self.folder / experiment.trial_folder(trial.number)),
        )
        experiment.set_config(trial, config, label(dict(zip(self.grid, values, strict=True))))

    def wanted(self, study):
        trials = study.get_trials(deepcopy=False)
        if any(t.state == experiment.TrialState.WAITING for t in trials):
            return True  # retries of failed trials
        sampled = {t.system_attrs["grid_id"] for t in trials if "grid_id" in t.system_attrs}
        return len(sampled) < len(self.configs) * len(self.seeds)


def write_experiment(folder, grid, configs, seeds):
    """The HParams experiment at the sweep's root: every column the trials' sessions
    have, typed, the swept ones first."""
    columns, swept = {}, set()
    for config in configs.values():
        for name, value in hparams.session_values(config.hyperparameters()).items():
            columns.setdefault(name, set()).add(value)
    swept = {name for name, values in columns.items() if len(values) > 1}
    for old in Path(folder).glob("events.out.tfevents.*.experiment"):
        old.unlink()
    hparams.write_summary(folder, hparams.experiment_summary(columns, swept), ".experiment")


def rows(study, keys):
    """One row per trial: its number, grid values, seed, status and results."""
    table = []
    for trial in study.trials:
        if trial.state == experiment.TrialState.WAITING:
            continue
        table.append(
            {
                "trial": experiment.trial_folder(trial.number),
                **{k: trial.params.get(k, "") for k in (*keys, "seed")},
                "status": experiment.status(trial),
                **trial.user_attrs.get("results", {}),
                "error": trial.user_attrs.get("error", ""),
            }
        )
    return table


def summarize(table, keys, points):
    """One row per grid point, in grid order: finished seeds `n`, seeds tried `runs`
    (a retried failure counts once), and mean and sample standard deviation of the
    validation accuracy and loss over the finished ones."""
    latest = {}
    for row in table:  # trial order: a retry comes after the trial it retries
        latest[(*(row[k] for k in keys), row["seed"])] = row
    summary = []
    for point in points:
        runs = [r for at, r in latest.items() if at[:-1] == point]
        done = [r for r in runs if r["status"] == "done"]
        entry = {**dict(zip(keys, point, strict=True)), "n": len(done), "runs": len(runs)}
        for metric in ("val_accuracy", "val_loss"):
            values = np.array([r[metric] for r in done], dtype=float)
            entry[f"{metric}_mean"] = float(values.mean()) if len(values) else None
            entry[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
        summary.append(entry)
    return summary


def _mean_std(entry, metric):
    if not entry["n"]:
        return "-"
    mean, std = entry[f"{metric}_mean"], entry[f"{metric}_std"]
    return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"


def print_summary(summary, keys, table):
    best_first = sorted(summary, key=lambda e: -(e["val_accuracy_mean"] or -1.0))
    print_table(
        "sweep results, best first (mean ± sample standard deviation over n seeds):",
        [*keys, "n", "val_acc", "val_loss"],
        [
            [*(e[k] for k in keys), f"{e['n']}/{e['runs']}"]
            + [_mean_std(e, "val_accuracy"), _mean_std(e, "val_loss")]
            for e in best_first
        ],
    )
    for r in table:
        if r["status"] in ("failed", "diverged"):
            print(f"{r['status']}: {r['trial']} ({label({k: r[k] for k in keys})}): {r['error']}")


def report_trial(keys):
    def report(trial):
        results = trial.user_attrs.get("results", {})
        accuracy = results.get("val_accuracy")
        shown = f", val_accuracy {accuracy:.4f}" if accuracy is not None else ""
        error = trial.user_attrs.get("error")
        point = label({k: trial.params.get(k) for k in (*keys, "seed")})
        print(
            f"{experiment.trial_folder(trial.number)} {point}: {experiment.status(trial)}"
            f"{shown}{': ' + error if error else ''}",
            flush=True,
        )

    return report


def run_sweep(sweep_dir, grid, train_args, parallel=1, timeout=3600, verbose=True, **options):
    """Runs (or continues) the sweep of every grid point times its seeds; returns the
    summary (one row per grid point, in grid order). Options: `repeats`, `retry_failed`."""
    grid = {k: list(v) for k, v in grid.items()}
    base = training_config(train_args)
    process.choose(base.onednn)  # the trials' processes inherit it
    seeds = seeds_of(grid, options.get("repeats", 1), base)
    configs = grid_configs(grid, train_args)
    sweep_dir = Path(sweep_dir)
    plan = GridPlan(sweep_dir, grid, seeds, configs)
    spec = {"tool": "sweep", "grid": grid, "seeds": seeds, "base": base.hyperparameters()}
    with experiment.locked(sweep_dir):
        study = experiment.open_study(sweep_dir, spec, plan.sampler())
        write_experiment(sweep_dir, grid, configs, seeds)
        if options.get("retry_failed"):
            experiment.enqueue_retries(study)
        runner = experiment.Runner(
            sweep_dir, study, plan, parallel, timeout, report_trial(grid) if verbose else _quiet
        )
        try:
            runner.run()
        finally:  # a stopped sweep reports what it has
            summary = write_outputs(sweep_dir, study, list(grid), list(configs), verbose)
    return summary


def dry_run(grid, train_args, repeats):
    """Checks every trial's settings as a sweep would and prints each trial's training
    command; runs nothing and writes nothing. Returns the number of trials."""
    grid = {k: list(v) for k, v in grid.items()}
    seeds = seeds_of(grid, repeats, training_config(train_args))
    points = list(grid_configs(grid, train_args))
    for values in points:
        for seed in seeds:
            flag_args = [
                *(f"--{k}={v}" for k, v in zip(grid, values, strict=True)),
                f"--seed={seed}",
            ]
            print(shlex.join(["keras-mlp-train", *train_args, *flag_args]))
    print(
        f"{len(points) * len(seeds)} trials ({len(points)} grid points x {len(seeds)} seeds); none run"
    )
    return len(points) * len(seeds)


def _quiet(trial):
    pass


def write_outputs(sweep_dir, study, keys, points, verbose):
    table = rows(study, keys)
    summary = summarize(table, keys, points)
    write_csv(sweep_dir / "results.csv", table, ["trial", *keys, "seed", *RESULT_COLUMNS])
    write_csv(sweep_dir / "summary.csv", summary, [*keys, *SUMMARY_COLUMNS])
    plots.plot_sweep(sweep_dir / "results.png", summary, keys)
    if verbose:
        print_summary(summary, keys, table)
    return summary


def define_flags(flag_values):
    def define(kind, name, default, help):
        kind(name, default, help, flag_values=flag_values)

    define(
        flags.DEFINE_string,
        "sweep_dir",
        None,
        "Folder of the sweep: trial-NNN/ runs, study.db, results.csv, summary.csv, results.png.",
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
        "Check every trial's settings and print its training command; run and write nothing.",
    )
    experiment.define_flags(flag_values)


def _sweep(flag_values, train_args):
    experiment.check_flags(flag_values, "sweep_dir")
    check_positive_int("--repeats", flag_values.repeats)
    grid = parse_grid(flag_values.grid)
    base = [f"--flagfile={flag_values.base_flagfile}"] if flag_values.base_flagfile else []
    if flag_values.dry_run:
        dry_run(grid, [*base, *train_args], flag_values.repeats)
        return 0
    summary = run_sweep(
        flag_values.sweep_dir,
        grid,
        [*base, *train_args],
        flag_values.parallel,
        flag_values.trial_timeout,
        repeats=flag_values.repeats,
        retry_failed=flag_values.retry_failed,
    )
    print(
        f"\nresults.csv, summary.csv and results.png in {flag_values.sweep_dir}; "
        f"tensorboard --logdir {flag_values.sweep_dir} --host 127.0.0.1"
    )
    return 0 if any(e["n"] for e in summary) else 1


def main(argv=None):
    """The `keras-mlp-sweep` command; returns its exit status (1 when no trial finished)."""
    return cli.run_tool(_sweep, define_flags, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
