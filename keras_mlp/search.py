"""Exercise 5: a joint search over learning rate, epochs, depth and width.

Optuna's TPE sampler proposes configurations and its Hyperband pruner stops
the unpromising ones early from their per-epoch validation accuracy. Every
trial is an ordinary run (`trial-NNN/`, with TensorBoard logs and an HParams
session); selection uses a validation split held out from the training set.
The best configuration is then retrained on the whole training set and its
test accuracy measured once.
"""

import dataclasses
from pathlib import Path

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402

from keras_mlp.config import RunConfig  # noqa: E402
from keras_mlp.errors import UserError  # noqa: E402
from keras_mlp.main import train  # noqa: E402
from keras_mlp.reporting import print_table, write_csv, write_json  # noqa: E402
from keras_mlp.sweep import write_hparams_experiment  # noqa: E402

# Learning-rate ranges per optimizer: SGD and Adam live at different scales.
LEARNING_RATES = {"sgd": (0.01, 0.5), "adam": (1e-4, 3e-3)}
SEARCHED = ("optimizer", "learning_rate", "epochs", "depth", "width")


def suggest_config(trial, base, max_epochs, widths, optimizers):
    """The RunConfig that `trial` proposes, starting from `base`."""
    optimizer = trial.suggest_categorical("optimizer", optimizers)
    low, high = LEARNING_RATES[optimizer]
    learning_rate = trial.suggest_float(f"{optimizer}_learning_rate", low, high, log=True)
    epochs = trial.suggest_int("epochs", min(5, max_epochs), max_epochs, step=min(5, max_epochs))
    depth = trial.suggest_int("depth", 1, 3)
    width = trial.suggest_categorical("width", widths)
    return dataclasses.replace(
        base,
        optimizer=optimizer,
        learning_rate=learning_rate,
        epochs=epochs,
        hidden_units=(width,) * depth,
    )


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
        "val_accuracy": _last_value(trial),
        "epochs_run": len(trial.intermediate_values),
    }


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
    if base.validation_split <= 0:
        raise UserError(
            "a search selects on a held-out part of the training set: give --validation_split > 0"
        )
    search_dir = Path(search_dir)
    search_dir.mkdir(parents=True, exist_ok=True)
    write_hparams_experiment(search_dir, SEARCHED)
    study = optuna.create_study(
        study_name="keras_mlp",
        storage=f"sqlite:///{search_dir / 'study.db'}",
        load_if_exists=True,
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=max_epochs, reduction_factor=3
        ),
    )

    def objective(trial):
        config = suggest_config(trial, base, max_epochs, list(widths), list(optimizers))
        config = dataclasses.replace(
            config, model_dir=str(search_dir / f"trial-{trial.number:03d}")
        )
        trial.set_user_attr("config", config.to_dict())

        def report(epoch, history):
            trial.report(history["val_accuracy"][-1], epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        keras.backend.clear_session()
        _, history, _ = train(config, verbose=False, on_epoch_end=report)
        return history["val_accuracy"][-1]

    finished = sum(t.state.is_finished() for t in study.trials)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=max(num_trials - finished, 0), show_progress_bar=verbose)
    configs = {t.number: t.user_attrs.get("config") for t in study.trials}
    rows = sorted(
        (_row(t, configs[t.number]) for t in study.trials if configs.get(t.number)),
        key=lambda r: -r["val_accuracy"],
    )
    best = study.best_trial
    best_config = dataclasses.replace(
        RunConfig(**configs[best.number]), validation_split=0.0, model_dir=str(search_dir / "best")
    )
    keras.backend.clear_session()
    _, history, _ = train(best_config, verbose=False)
    report = {
        "best_trial": best.number,
        "best_validation_accuracy": best.value,
        "best_config": best_config.to_dict(),
        "test_accuracy": history["val_accuracy"][-1],
        "trials": rows,
    }
    write_json(search_dir / "best.json", report)
    write_csv(search_dir / "results.csv", rows, list(rows[0]))
    _plot(search_dir / "results.png", rows)
    if verbose:
        columns = (
            "trial",
            "status",
            "optimizer",
            "learning_rate",
            "epochs",
            "epochs_run",
            "depth",
            "width",
        )
        print_table(
            "search trials, best first (val_accuracy on the held-out split, at the last epoch run):",
            [*columns, "val_accuracy"],
            [[*(r[c] for c in columns), f"{r['val_accuracy']:.4f}"] for r in rows],
        )
        print(
            f"\nbest: trial-{best.number:03d} {best.params}, validation accuracy {best.value:.4f}"
        )
        print(f"retrained on the whole training set: test accuracy {report['test_accuracy']:.4f}")
    return report


def _plot(path, rows):
    fig, ax = plt.subplots(figsize=(6, 3.5))
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
