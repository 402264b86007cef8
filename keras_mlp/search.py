"""Exercise 5: a joint search over learning rate, epochs, depth and width, and
beyond the chapter: dropout, weight decay and the learning-rate schedule.

Optuna's TPE sampler proposes configurations and its Hyperband pruner stops
the unpromising ones early from their per-epoch validation accuracy. Every
trial is an ordinary run (`trial-NNN/`, with TensorBoard logs and an HParams
session); selection uses a validation split held out from the training set.
The best configuration is then retrained on the whole training set and its
test accuracy measured once.

    keras-mlp-search --flagfile=configs/search.flags --data_dir=../shared/data/fashion-mnist

Every training flag sets the base configuration; the search's own flags are
listed first in --help. Rerunning with the same --search_dir continues the study.
"""

import dataclasses
import sys
from pathlib import Path

import keras
import optuna
from absl import flags
from matplotlib.figure import Figure

from keras_mlp import cli, run_dir
from keras_mlp.config import HYPERPARAMETERS, RunConfig
from keras_mlp.errors import UserError
from keras_mlp.names import LR_SCHEDULES
from keras_mlp.reporting import print_table, save_figure, write_csv, write_json
from keras_mlp.run import train
from keras_mlp.summaries import write_hparams_experiment

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


class OptunaPruning(keras.callbacks.Callback):
    """Reports each epoch's validation accuracy to an Optuna trial and stops the
    run with `optuna.TrialPruned` when the pruner says so."""

    def __init__(self, trial):
        super().__init__()
        self.trial = trial

    def on_epoch_end(self, epoch, logs=None):
        self.trial.report(logs["val_accuracy"], epoch + 1)
        if self.trial.should_prune():
            raise optuna.TrialPruned()


def _last_value(trial):
    """The final value of a finished trial, or the last epoch reported by a pruned one."""
    if trial.value is not None:
        return trial.value
    values = trial.intermediate_values
    return values[max(values)] if values else 0.0


def _row(trial, config):
    return {
        "trial": f"trial-{trial.number:03d}",
        "status": {
            optuna.trial.TrialState.COMPLETE: "done",
            optuna.trial.TrialState.PRUNED: "pruned",
        }.get(trial.state, trial.state.name.lower()),
        "optimizer": config["optimizer"],
        "learning_rate": f"{config['learning_rate']:.4g}",
        "epochs": config["epochs"],
        "depth": len(config["hidden_units"]),
        "width": config["hidden_units"][0],
        # Trials of a study begun before these were searched have no such settings.
        "dropout": config.get("dropout", [0.0])[0],
        "weight_decay": config.get("weight_decay", 0.0),
        "lr_schedule": config.get("lr_schedule", "constant"),
        "val_accuracy": _last_value(trial),
        "epochs_run": len(trial.intermediate_values),
    }


def _replacing_another_best(config):
    """`config`, set to overwrite the retrain of an earlier best configuration (a
    continued study can find a new best) that its model_dir holds."""
    try:
        run_dir.inspect(config.model_dir, config)
    except UserError:
        return dataclasses.replace(config, overwrite=True)
    return config


def _open_study(search_dir, max_epochs, seed):
    """The stored study in `search_dir` (new or continued): TPE sampling, Hyperband pruning."""
    study = optuna.create_study(
        study_name="keras_mlp",
        storage=f"sqlite:///{search_dir / 'study.db'}",
        load_if_exists=True,
        direction="maximize",
        pruner=optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_epochs, reduction_factor=3
        ),
    )
    # A continued study draws on from where it stopped, not the first proposals again.
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    return study


def _retrain_best(study, search_dir):
    """The best trial's config retrained on the whole training set: `(config, test accuracy)`."""
    saved = study.best_trial.user_attrs["config"]
    config = dataclasses.replace(
        RunConfig(**saved), validation_split=0.0, model_dir=str(search_dir / "best")
    )
    keras.backend.clear_session()
    history = train(_replacing_another_best(config), verbose=False).history
    return config, history["val_accuracy"][-1]


def _print_report(rows, best, test_accuracy):
    columns = ("trial", "status", "optimizer", "learning_rate", "epochs", "epochs_run", "depth")
    columns += ("width", "dropout", "weight_decay", "lr_schedule")
    print_table(
        "search trials, best first (val_accuracy on the held-out split, at the last epoch run):",
        [*columns, "val_accuracy"],
        [[*(r[c] for c in columns), f"{r['val_accuracy']:.4f}"] for r in rows],
    )
    print(f"\nbest: trial-{best.number:03d} {best.params}, validation accuracy {best.value:.4f}")
    print(f"retrained on the whole training set: test accuracy {test_accuracy:.4f}")


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


def run_search(
    search_dir,
    base,
    num_trials,
    max_epochs=30,
    widths=(128, 256, 512, 1024),
    optimizers=("sgd", "adam"),
    seed=0,
    verbose=True,
):
    """Runs the search (resuming a stored study), retrains the best configuration on the
    whole training set and measures its test accuracy once; returns the report."""
    _check_base(base, max_epochs)
    search_dir = Path(search_dir)
    search_dir.mkdir(parents=True, exist_ok=True)
    write_hparams_experiment(search_dir, HYPERPARAMETERS)
    study = _open_study(search_dir, max_epochs, seed)

    def objective(trial):
        config = suggest_config(trial, base, max_epochs, list(widths), list(optimizers))
        config = dataclasses.replace(
            config, model_dir=str(search_dir / f"trial-{trial.number:03d}")
        )
        trial.set_user_attr("config", config.to_dict())
        keras.backend.clear_session()
        result = train(config, callbacks=[OptunaPruning(trial)], verbose=False)
        return result.history["val_accuracy"][-1]

    finished = sum(t.state.is_finished() for t in study.trials)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=max(num_trials - finished, 0), show_progress_bar=verbose)
    rows = sorted(
        (_row(t, t.user_attrs["config"]) for t in study.trials if t.user_attrs.get("config")),
        key=lambda r: -r["val_accuracy"],
    )
    best_config, test_accuracy = _retrain_best(study, search_dir)
    report = {
        "best_trial": study.best_trial.number,
        "best_validation_accuracy": study.best_trial.value,
        "best_config": best_config.to_dict(),
        "test_accuracy": test_accuracy,
        "trials": rows,
    }
    write_json(search_dir / "best.json", report)
    write_csv(search_dir / "results.csv", rows, list(rows[0]))
    _plot(search_dir / "results.png", rows)
    if verbose:
        _print_report(rows, study.best_trial, test_accuracy)
    return report


def _plot(path, rows):
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    for status, marker in (("done", "o"), ("pruned", "x")):
        part = [r for r in rows if r["status"] == status]
        ax.scatter(
            [int(r["trial"][6:]) for r in part],
            [r["val_accuracy"] for r in part],
            marker=marker,
            label=status,
        )
    ax.set_xlabel("trial")
    ax.set_ylabel("validation accuracy (last epoch run)")
    ax.legend()
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)


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
    cli.define_run_flags(flag_values)


def _search(flag_values, args):
    cli.no_positional(args)
    if not flag_values.search_dir:
        raise UserError("--search_dir is required")
    if flag_values.trials < 1 or flag_values.max_epochs < 1:
        raise UserError("--trials and --max_epochs must be positive integers")
    if not flag_values.optimizers or not set(flag_values.optimizers) <= set(LEARNING_RATES):
        raise UserError(
            f"--optimizers takes sgd and/or adam. Received: {','.join(flag_values.optimizers)}"
        )
    widths = cli.positive_int_list("--widths", flag_values.widths)
    cli.quiet_tensorflow()
    run_search(
        flag_values.search_dir,
        cli.config_from_flags(flag_values),
        flag_values.trials,
        flag_values.max_epochs,
        widths,
        tuple(flag_values.optimizers),
        flag_values.seed,
    )


def main(argv=None):
    """The `keras-mlp-search` command; returns its exit status."""
    return cli.run_tool(_search, define_flags, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
