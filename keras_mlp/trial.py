"""One trial of a sweep or search, in a process of its own (started by
keras_mlp.experiment, never by hand):

    python -m keras_mlp.trial STUDY_DB NUMBER          # trial NUMBER's run
    python -m keras_mlp.trial STUDY_DB NUMBER best     # its config retrained on the
                                                        # whole training set, in best/

The run's settings come from the study (the trial's `config`), never from a folder
name. With a pruner in the study's spec, each epoch's validation accuracy is
reported to the study, and the trial stops when the pruner says so.

Exit status: 0 done, 2 bad input, 3 pruned, 4 diverged, 130/143 stopped by a
signal (checkpoint saved: the rerun resumes it); anything else failed.
"""

import dataclasses
import sys
from pathlib import Path

import keras
import optuna

from keras_mlp import cli, experiment, run_dir
from keras_mlp.config import RunConfig
from keras_mlp.errors import TrainingDiverged, UserError


class OptunaPruning(keras.callbacks.Callback):
    """Reports each epoch's validation accuracy to an Optuna trial and stops the
    run with `optuna.TrialPruned` when the pruner says so."""

    def __init__(self, trial):
        super().__init__()
        self.trial = trial

    def on_epoch_end(self, epoch, logs=None):
        # Reported as epoch N, counted from 1 (docs/design.md, "Epoch numbers").
        self.trial.report(logs["val_accuracy"], epoch + 1)
        if self.trial.should_prune():
            raise optuna.TrialPruned()


def best_config(config, folder):
    """`config` retrained on the whole training set in `folder/best`, replacing the
    retrain of an earlier best configuration (a continued study can find a new one)."""
    config = dataclasses.replace(
        config, validation_split=0.0, model_dir=str(Path(folder) / experiment.BEST), overwrite=False
    )
    try:
        run_dir.inspect(config.model_dir, config)
    except UserError:
        return dataclasses.replace(config, overwrite=True)
    return config


def _trial(flag_values, args):
    if len(args) not in (2, 3) or not args[1].isdigit() or args[2:] not in ([], [experiment.BEST]):
        raise UserError("usage: python -m keras_mlp.trial STUDY_DB NUMBER [best]")
    database, number = Path(args[0]), int(args[1])
    study = optuna.load_study(study_name="keras_mlp", storage=experiment.storage(database.parent))
    study.pruner = experiment.pruner(study.user_attrs["spec"])
    trial = study.trials[number]
    config = RunConfig(**trial.user_attrs["config"])
    group = trial.user_attrs.get("group", experiment.trial_folder(number))
    callbacks = []
    if args[2:]:
        config, group = best_config(config, database.parent), "best, retrained (test split)"
    elif not isinstance(study.pruner, optuna.pruners.NopPruner):
        callbacks.append(OptunaPruning(experiment.handle(study, trial)))
    cli.quiet_tensorflow()
    from keras_mlp.run import train  # TensorFlow starts here

    try:
        result = train(config, callbacks=callbacks, session_group=group)
    except optuna.TrialPruned:
        print(f"pruned after epoch {max(study.trials[number].intermediate_values)}")
        return experiment.EXIT_PRUNED
    except TrainingDiverged as e:
        print(f"error: {cli.as_flags(str(e))}", file=sys.stderr)
        return experiment.EXIT_DIVERGED
    print(f"final val_accuracy {result.history['val_accuracy'][-1]:.4f}")
    return 0


def main(argv=None):
    return cli.run_tool(_trial, lambda flag_values: None, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
