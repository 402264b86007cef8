"""Exercise 5: a joint search over learning rate, epochs, depth and width, and
beyond the chapter: dropout, weight decay and the learning-rate schedule.

Optuna's TPE sampler proposes configurations and its Hyperband pruner stops
the unpromising ones early from their per-epoch validation accuracy. Every
trial is an ordinary run in its own process (`trial-NNN/`, with TensorBoard logs
and an HParams session); selection uses a validation split held out from the
training set. The best configuration is then retrained on the whole training
set (`best/`) and its test accuracy measured once.

    keras-mlp-search --flagfile=configs/search.flags --data_dir=../shared/data/fashion-mnist

Every training flag sets the base configuration; the search's own flags are
listed first in --help. Rerunning with the same --search_dir continues the study
(the sweep's rules: keras_mlp.experiment): finished trials are kept, a stopped
one resumes from its checkpoint, a failed one is reported or, with
--retry_failed, run again; a larger --trials adds trials.
"""

import dataclasses
import json
import sys
from pathlib import Path

import optuna
from absl import flags
from tensorboard.plugins.hparams import summary_v2 as hp

from keras_mlp import cli, experiment, hparams, plots, process
from keras_mlp.errors import UserError
from keras_mlp.names import LR_SCHEDULES
from keras_mlp.reporting import print_table, write_csv, write_json
from keras_mlp.run_dir import DATA_KEY

# Learning-rate ranges per optimizer: SGD and Adam live at different scales.
LEARNING_RATES = {"sgd": (0.01, 0.5), "adam": (1e-4, 3e-3)}
# Weight decay on a log grid with 0 (off): the scratch model's L2 penalty and the concise
# model's decoupled decay (which needs larger values with Adam) both fall inside it.
WEIGHT_DECAYS = (0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
MAX_DROPOUT = 0.5
SEARCHED = (
    "optimizer",
    "learning_rate",
    "epochs",
    "depth",
    "width",
    "dropout",
    "weight_decay",
    "lr_schedule",
)


def min_epochs(max_epochs):
    """The fewest epochs a trial gets (the search's epoch step)."""
    return min(5, max_epochs)


def suggest_config(trial, base, max_epochs, widths, optimizers):
    """The RunConfig that `trial` proposes, starting from `base`: one dropout rate for
    every hidden layer, and `base`'s warm-up before the proposed schedule."""
    optimizer = trial.suggest_categorical("optimizer", optimizers)
    low, high = LEARNING_RATES[optimizer]
    learning_rate = trial.suggest_float(f"{optimizer}_learning_rate", low, high, log=True)
    step = min_epochs(max_epochs)
    epochs = trial.suggest_int("epochs", step, max_epochs, step=step)
    depth = trial.suggest_int("depth", 1, 3)
    width = trial.suggest_categorical("width", widths)
    return dataclasses.replace(
        base,
        optimizer=optimizer,
        learning_rate=learning_rate,
        epochs=epochs,
        hidden_units=(width,) * depth,
        dropout=(round(trial.suggest_float("dropout", 0.0, MAX_DROPOUT, step=0.1), 2),),
        weight_decay=trial.suggest_categorical("weight_decay", WEIGHT_DECAYS),
        lr_schedule=trial.suggest_categorical("lr_schedule", LR_SCHEDULES),
    )


class SearchPlan(experiment.Plan):
    """Each new trial: the sampler's proposal, until the study holds `num_trials`
    (failed trials that were retried count once)."""

    def __init__(self, folder, base, num_trials, max_epochs, widths, optimizers):
        self.folder, self.base, self.num_trials = Path(folder), base, num_trials
        self.max_epochs, self.widths, self.optimizers = max_epochs, list(widths), list(optimizers)

    def configure(self, trial):
        config = suggest_config(trial, self.base, self.max_epochs, self.widths, self.optimizers)
        folder = experiment.trial_folder(trial.number)
        config = dataclasses.replace(config, model_dir=str(self.folder / folder))
        experiment.set_config(trial, config, folder)

    def wanted(self, study):
        trials = study.get_trials(deepcopy=False)
        if any(t.state == experiment.TrialState.WAITING for t in trials):
            return True
        return len(trials) - len(experiment.retried(study)) < self.num_trials


def _last_value(trial):
    if trial.value is not None:
        return trial.value
    values = trial.intermediate_values
    return values[max(values)] if values else None


def _row(trial):
    config, results = trial.user_attrs["config"], trial.user_attrs.get("results", {})
    return {
        "trial": experiment.trial_folder(trial.number),
        "number": trial.number,
        "status": experiment.status(trial),
        "optimizer": config["optimizer"],
        "learning_rate": float(f"{config['learning_rate']:.4g}"),
        "epochs": config["epochs"],
        "depth": len(config["hidden_units"]),
        "width": config["hidden_units"][0],
        # Trials of a study begun before these were searched have no such settings, and
        # no recorded results: their value (or last report) stands in.
        "dropout": config.get("dropout", [0.0])[0],
        "weight_decay": config.get("weight_decay", 0.0),
        "lr_schedule": config.get("lr_schedule", "constant"),
        "val_accuracy": results.get("val_accuracy", _last_value(trial)),
        "epochs_run": results.get("epochs_run", len(trial.intermediate_values)),
        "error": trial.user_attrs.get("error", ""),
    }


def _print_report(rows, best, test_accuracy):
    columns = ("trial", "status", "optimizer", "learning_rate", "epochs", "epochs_run", "depth")
    columns += ("width", "dropout", "weight_decay", "lr_schedule")
    print_table(
        "search trials, best first (val_accuracy on the held-out split, at the last epoch run):",
        [*columns, "val_accuracy"],
        [[*(r[c] for c in columns), _shown(r["val_accuracy"])] for r in rows],
    )
    for r in rows:
        if r["status"] in ("failed", "diverged"):
            print(f"{r['status']}: {r['trial']}: {r['error']}")
    if best:
        print(f"\nbest: {best['trial']}, validation accuracy {best['val_accuracy']:.4f}")
    if test_accuracy is not None:
        print(f"retrained on the whole training set: test accuracy {test_accuracy:.4f}")


def _shown(value):
    return "-" if value is None else f"{value:.4f}"


def _check_base(base, max_epochs):
    """Refuses a base configuration that the proposed trials could not run with."""
    if base.validation_split <= 0:
        raise UserError(
            "a search selects on a held-out part of the training set: give --validation_split > 0"
        )
    if base.reduce_lr_on_plateau:
        raise UserError(
            f"reduce_lr_on_plateau={base.reduce_lr_on_plateau} cannot be combined with the "
            "search, which chooses lr_schedule"
        )
    if base.warmup_epochs >= min_epochs(max_epochs):
        raise UserError(
            f"warmup_epochs={base.warmup_epochs} must be smaller than the shortest trial's "
            f"{min_epochs(max_epochs)} epochs"
        )


def write_experiment(folder, base, max_epochs, widths, optimizers):
    """The HParams experiment at the search's root: the searched columns first, typed."""
    columns = {k: [v] for k, v in hparams.session_values(base.hyperparameters()).items()}
    columns.pop("hidden_units", None)  # every proposal has equally wide layers
    low = min(LEARNING_RATES[o][0] for o in optimizers)
    high = max(LEARNING_RATES[o][1] for o in optimizers)
    searched = {
        "optimizer": list(optimizers),
        "learning_rate": hp.RealInterval(low, high),
        "epochs": hp.IntInterval(min_epochs(max_epochs), max_epochs),
        "depth": hp.IntInterval(1, 3),
        "width": list(widths),
        "dropout": hp.RealInterval(0.0, MAX_DROPOUT),
        "weight_decay": list(WEIGHT_DECAYS),
        "lr_schedule": list(LR_SCHEDULES),
    }
    columns.update(searched)
    for old in Path(folder).glob("events.out.tfevents.*.experiment"):
        old.unlink()
    summary = hparams.experiment_summary(columns, set(searched))
    hparams.write_summary(folder, summary, ".experiment")


def _report_trial(trial):
    results = trial.user_attrs.get("results", {})
    accuracy = results.get("val_accuracy")
    shown = (
        f", val_accuracy {accuracy:.4f} after {results['epochs_run']} epochs" if accuracy else ""
    )
    error = trial.user_attrs.get("error")
    print(
        f"{experiment.trial_folder(trial.number)}: {experiment.status(trial)}{shown}"
        f"{': ' + error if error else ''}",
        flush=True,
    )


def _retrain_best(folder, best):
    """The best trial's config retrained on the whole training set in best/; returns its
    test accuracy."""
    returncode = experiment.run_process(
        folder, best.number, folder / experiment.BEST, [experiment.BEST]
    )
    if returncode != 0:
        error = experiment.last_error(folder / experiment.BEST, returncode)
        raise UserError(
            f"retraining the best configuration in {folder / experiment.BEST} failed: {error}"
        )
    return json.loads((folder / experiment.BEST / "metrics.json").read_text())["final"][
        "val_accuracy"
    ]


def run_search(
    search_dir,
    base,
    num_trials,
    max_epochs=30,
    widths=(128, 256, 512, 1024),
    optimizers=("sgd", "adam"),
    seed=0,
    verbose=True,
    **options,
):
    """Runs the search (continuing a stored study), retrains the best configuration on
    the whole training set and measures its test accuracy once; returns the report.
    Options: `parallel`, `timeout`, `retry_failed`."""
    _check_base(base, max_epochs)
    process.choose(base.onednn)  # the trials' processes inherit it
    search_dir = Path(search_dir)
    spec = {
        "tool": "search",
        "max_epochs": max_epochs,
        "widths": list(widths),
        "optimizers": list(optimizers),
        "seed": seed,
        "base": base.hyperparameters(),
    }
    plan = SearchPlan(search_dir, base, num_trials, max_epochs, widths, optimizers)
    with experiment.locked(search_dir):
        study = experiment.open_study(search_dir, spec, pruner=experiment.pruner(spec))
        # A continued study draws on from where it stopped, not the first proposals again.
        study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
        write_experiment(search_dir, base, max_epochs, widths, optimizers)
        if options.get("retry_failed"):
            experiment.enqueue_retries(study)
        runner = experiment.Runner(
            search_dir,
            study,
            plan,
            options.get("parallel", 1),
            options.get("timeout", 3600.0),
            _report_trial if verbose else lambda t: None,
        )
        try:
            runner.run()
        finally:
            rows = _write_rows(search_dir, study)
        done = [r for r in rows if r["status"] == "done"]
        if not done:
            raise UserError(f"no trial of the search in {search_dir} finished; see results.csv")
        best = max(done, key=lambda r: r["val_accuracy"])
        test_accuracy = _retrain_best(search_dir, study.trials[best["number"]])
    return _write_report(search_dir, rows, best, test_accuracy, verbose)


def _write_report(search_dir, rows, best, test_accuracy, verbose):
    """best.json (the winner's config and the data it was retrained on, apart), the
    search plot, and the printed report; returns the report."""
    best_config = json.loads((search_dir / experiment.BEST / "run_config.json").read_text())
    best_data = best_config.pop(DATA_KEY, None)
    report = {
        "best_trial": best["number"],
        "best_validation_accuracy": best["val_accuracy"],
        "best_config": best_config,
        "best_data": best_data,
        "test_accuracy": test_accuracy,
        "trials": rows,
    }
    write_json(search_dir / "best.json", report)
    plots.plot_search(search_dir / "results.png", rows, best, test_accuracy)
    if verbose:
        _print_report(rows, best, test_accuracy)
    return report


def _write_rows(search_dir, study):
    """results.csv and results.png from the study, best first (also for a stopped search)."""
    rows = sorted(
        (_row(t) for t in study.trials if t.user_attrs.get("config")),
        key=lambda r: -(r["val_accuracy"] if r["val_accuracy"] is not None else -1.0),
    )
    if rows:
        write_csv(search_dir / "results.csv", rows, [k for k in rows[0] if k != "number"])
        plots.plot_search(search_dir / "results.png", rows)
    return rows


def define_flags(flag_values):
    """The search's flags, then every training flag (the base configuration)."""
    kw = {"flag_values": flag_values}
    flags.DEFINE_string(
        "search_dir",
        None,
        "Folder of the search: trial-NNN/ runs, study.db, best.json, plots.",
        **kw,
    )
    flags.DEFINE_integer(
        "trials", 20, "Trials in the study (finished ones count when continuing).", **kw
    )
    flags.DEFINE_integer(
        "max_epochs", 30, "Most epochs a trial may get (Hyperband's maximum resource).", **kw
    )
    flags.DEFINE_list(
        "widths", ["128", "256", "512", "1024"], "Hidden widths to choose from.", **kw
    )
    flags.DEFINE_list("optimizers", ["sgd", "adam"], "Optimizers to choose from (sgd, adam).", **kw)
    experiment.define_flags(flag_values)
    cli.define_run_flags(flag_values)


def _search(flag_values, args):
    cli.no_positional(args)
    experiment.check_flags(flag_values, "search_dir")
    if flag_values.trials < 1 or flag_values.max_epochs < 1:
        raise UserError("--trials and --max_epochs must be positive integers")
    if not flag_values.optimizers or not set(flag_values.optimizers) <= set(LEARNING_RATES):
        raise UserError(
            f"--optimizers takes sgd and/or adam. Received: {','.join(flag_values.optimizers)}"
        )
    widths = cli.positive_int_list("--widths", flag_values.widths)
    run_search(
        flag_values.search_dir,
        cli.config_from_flags(flag_values),
        flag_values.trials,
        flag_values.max_epochs,
        widths,
        tuple(flag_values.optimizers),
        flag_values.seed,
        parallel=flag_values.parallel,
        timeout=flag_values.trial_timeout,
        retry_failed=flag_values.retry_failed,
    )


def main(argv=None):
    """The `keras-mlp-search` command; returns its exit status."""
    return cli.run_tool(_search, define_flags, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
