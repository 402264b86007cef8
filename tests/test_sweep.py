"""Grid sweeps and the joint search, on the experiment engine.

Fast: grid parsing, bad input through `main` in-process (exit 2, nothing
written), and whole sweeps and searches through `main` with a real Optuna study
in SQLite and real trial processes that stand in for training (a few lines of
Python without TensorFlow, `_FakeTrials`): grid values, results columns,
reruns, failures, timeouts, Ctrl-C. Slow: real trials training on synthetic
data, a real Ctrl-C and resume, a real search with pruning.
"""

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from cli_util import error_lines, run_main, start_tool
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata

from keras_mlp import cli, experiment, plots, search, sweep
from keras_mlp.errors import UserError
from keras_mlp.sweep import parse_grid
from keras_mlp.trial import OptunaPruning

QUICK = ("--dataset=synthetic", "--epochs=1", "--batch_size=64")


def _hparams_experiment(path):
    accumulator = event_accumulator.EventAccumulator(str(path), size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator.PluginTagToContent("hparams")


def _read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _listing(directory):
    """Every file under `directory` (relative paths), temporary files included; not the
    TensorBoard event files (each run writes the HParams experiment anew)."""
    return sorted(
        str(p.relative_to(directory))
        for p in Path(directory).rglob("*")
        if not p.name.startswith("events.out.tfevents.")
    )


# --- grid parsing and trial names -------------------------------------------------------


def test_grid_values_split_on_commas_or_semicolons():
    assert parse_grid(["hidden_units=32,64", "learning_rate=0.1"]) == {
        "hidden_units": ["32", "64"],
        "learning_rate": ["0.1"],
    }
    # `;` separates values that hold commas: one and two hidden layers.
    assert parse_grid(["hidden_units=256;256,256"]) == {"hidden_units": ["256", "256,256"]}
    assert parse_grid(["flagfile=a.flags,b.flags"]) == {"flagfile": ["a.flags", "b.flags"]}


@pytest.mark.parametrize(
    "specs, message",
    [
        ([], "at least one --grid"),
        (["sigma=1,1"], "names a value twice"),
        (["hidden_units"], "name=value1,value2"),
        (["hidden_units="], "name=value1,value2"),
        (["Hidden=1,2"], "name=value1,value2"),
        (["sigma=1", "sigma=2"], "names sigma twice"),
        (["model_dir=x,y"], "cannot sweep --model_dir"),
        (["overwrite=true,false"], "cannot sweep --overwrite"),
        (["hiden_units=8,16"], "names hiden_units, which is not a training flag"),
    ],
)
def test_grid_rejects(specs, message):
    with pytest.raises(UserError, match=message):
        parse_grid(specs)


# --- bad input: exit 2, one error line, nothing written ------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--grid=hidden_units=8"], "--sweep_dir is required"),
        (["--sweep_dir={d}"], "give at least one --grid"),
        (["--sweep_dir={d}", "--grid=hidden_units=8", "--parallel=0"], "--parallel=0 must be"),
        (["--sweep_dir={d}", "--grid=hidden_units=8", "--trial_timeout=-1"], "--trial_timeout=-1"),
        (["--sweep_dir={d}", "--grid=hidden_units=8", "--trial_timeout=0"], "--trial_timeout=0"),
        (["--sweep_dir={d}", "--grid=hidden_units"], "--grid expects name=value1,value2"),
        (["--sweep_dir={d}", "--grid=model_dir=a,b"], "cannot sweep --model_dir"),
        (
            ["--sweep_dir={d}", "--grid=hiden_units=8"],
            "names hiden_units, which is not a training flag",
        ),
        (["--sweep_dir={d}", "--grid=hidden_units=8", "--parallel=two"], "flag --parallel=two:"),
        (
            ["--sweep_dir={d}", "--grid=hidden_units=8", "--no_such_flag=1"],
            "Unknown command line flag 'no_such_flag'",
        ),
        # Every training flag, and every grid point's, is checked before the first trial.
        (["--sweep_dir={d}", "--grid=hidden_units=8", "--", "--seed=x"], "the training flags:"),
        (["--sweep_dir={d}", "--grid=hidden_units=8", "--", "--epoch=3"], "the training flags:"),
        (
            ["--sweep_dir={d}", "--grid=hidden_units=8,0", "--", *QUICK],
            "--grid point --hidden_units=0: --hidden_units=0 must be a positive integer",
        ),
        (
            ["--sweep_dir={d}", "--grid=learning_rate=0.1,abc"],
            "--grid point --learning_rate=abc: flag --learning_rate=abc",
        ),
        (
            ["--sweep_dir={d}", "--grid=learning_rate=0.001,1e-3"],
            "--grid points --learning_rate=0.001 and --learning_rate=1e-3 are the same run",
        ),
        (["--sweep_dir={d}", "--grid=seed=1,2", "--repeats=2"], "--repeats chooses the seeds"),
        (["--sweep_dir={d}", "--grid=hidden_units=8", "--repeats=0"], "--repeats=0 must be"),
    ],
)
def test_sweep_bad_input_is_one_error_line_and_exit_2(tmp_path, args, message):
    sweep_dir = tmp_path / "sweep"
    result = run_main(sweep.main, *(a.format(d=sweep_dir) for a in args))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert len(error_lines(result)) == 1, result.stderr
    assert message in error_lines(result)[0]
    assert not sweep_dir.exists()  # rejected before anything was written


def test_error_messages_rewrite_argument_names_not_paths():
    assert cli.as_flags("seed=-1 must be") == "--seed=-1 must be"
    assert (
        cli.as_flags("model_dir=runs/seed=1 is in use; batch_size=3")
        == "--model_dir=runs/seed=1 is in use; --batch_size=3"
    )
    assert cli.as_flags("model_dir=seed=1 holds") == "--model_dir=seed=1 holds"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--validation_split=0.2"], "--search_dir is required"),
        (["--search_dir={d}"], "give --validation_split > 0"),
        (["--search_dir={d}", "--validation_split=0.2", "--trials=0"], "--trials and --max_epochs"),
        (["--search_dir={d}", "--validation_split=0.2", "--max_epochs=0"], "--trials and"),
        (["--search_dir={d}", "--validation_split=0.2", "--optimizers=rmsprop"], "sgd and/or adam"),
        (["--search_dir={d}", "--validation_split=0.2", "--widths=8,x"], "must be comma-separated"),
        (["--search_dir={d}", "--validation_split=0.2", "--widths=8,0"], "must be comma-separated"),
        (["--search_dir={d}", "--validation_split=0.2", "--batch_size=0"], "--batch_size=0"),
        (["--search_dir={d}", "--validation_split=0.2", "--trial_timeout=-1"], "--trial_timeout"),
        (["--search_dir={d}", "--validation_split=0.2", "--parallel=0"], "--parallel=0"),
        (["--search_dir={d}", "--validation_split=0.2", "extra"], "unexpected arguments 'extra'"),
    ],
)
def test_search_bad_input_is_one_error_line_and_exit_2(tmp_path, args, message):
    search_dir = tmp_path / "search"
    result = run_main(search.main, *(a.format(d=search_dir) for a in args))
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr + result.stdout
    assert len(error_lines(result)) == 1, result.stderr
    assert message in error_lines(result)[0]
    assert not search_dir.exists()  # no study was started


# --- whole sweeps with stand-in trial processes (fast) --------------------------------------

# A trial process without TensorFlow: ends as its outcome says, as a real one would.
FAKE_TRIAL = r"""
import json, pathlib, sys, time
model_dir, (kind, *args) = pathlib.Path(sys.argv[1]), json.loads(sys.argv[2])
if kind == "done":
    accuracy, epochs = args
    (model_dir / "run_config.json").write_text(sys.argv[3])
    (model_dir / "metrics.json").write_text(json.dumps({
        "final": {"val_accuracy": accuracy, "val_loss": 1 - accuracy, "loss": 0.5,
                  "accuracy": 0.75},
        "history": {"loss": [1.0] * epochs, "epoch_seconds": [0.25] * epochs},
    }))
elif kind == "sleep":
    time.sleep(args[0])
else:
    print(f"error: {args[0]}", file=sys.stderr)
    sys.exit(4 if kind == "diverged" else 2)
"""


class _FakeTrials:
    """Replaces `experiment.launch`: starts a real process (`FAKE_TRIAL`) for each trial,
    whose end `outcome(config)` decides: `("done", val_accuracy, epochs_run)`,
    `("failed", message)`, `("diverged", message)` or `("sleep", seconds)`."""

    def __init__(self, outcome):
        self.outcome, self.launched = outcome, []

    def __call__(self, folder, number, model_dir, extra=()):
        study = optuna.load_study(study_name="keras_mlp", storage=experiment.storage(folder))
        config = dict(study.trials[number].user_attrs["config"])
        if extra:  # the search's retrain of its best trial
            config.update(validation_split=0.0, model_dir=str(model_dir))
        self.launched.append((number, Path(model_dir).name, config))
        Path(model_dir).mkdir(parents=True, exist_ok=True)
        with open(Path(model_dir) / experiment.LOG, "a") as log:
            return subprocess.Popen(
                [sys.executable, "-c", FAKE_TRIAL, str(model_dir)]
                + [json.dumps(self.outcome(config)), json.dumps(config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def _fake(monkeypatch, outcome):
    fake = _FakeTrials(outcome)
    monkeypatch.setattr(experiment, "launch", fake)
    return fake


def test_grid_values_that_share_a_folder_name_are_separate_trials(tmp_path, monkeypatch):
    # 1e-3 and 1e+3 were one folder (learning_rate=1e_3): 1e+3 never ran and was
    # reported with 1e-3's accuracy.
    fake = _fake(monkeypatch, lambda c: ("done", 0.8 if c["learning_rate"] < 1 else 0.1, 1))
    sweep_dir = tmp_path / "sweep"
    result = run_main(
        sweep.main, f"--sweep_dir={sweep_dir}", "--grid=learning_rate=1e-3,1e+3", "--", *QUICK
    )
    assert result.returncode == 0, result
    assert sorted(c["learning_rate"] for _, _, c in fake.launched) == [0.001, 1000.0]
    rows = {r["learning_rate"]: r for r in _read_csv(sweep_dir / "results.csv")}
    assert (rows["1e-3"]["val_accuracy"], rows["1e+3"]["val_accuracy"]) == ("0.8", "0.1")
    assert rows["1e-3"]["trial"] != rows["1e+3"]["trial"]
    for row in rows.values():  # the folder's recorded settings are the row's
        saved = json.loads((sweep_dir / row["trial"] / "run_config.json").read_text())
        assert saved["learning_rate"] == float(row["learning_rate"])


def test_grid_values_and_results_are_separate_columns(tmp_path, monkeypatch):
    # epochs=7,30 with early stopping after 2 epochs: the grid value stays the grid value.
    _fake(monkeypatch, lambda c: ("done", 0.5 + c["epochs"] / 100, 2))
    sweep_dir = tmp_path / "sweep"
    args = ["--grid=epochs=7,30", "--repeats=2", "--", *QUICK, "--early_stopping_patience=1"]
    result = run_main(sweep.main, f"--sweep_dir={sweep_dir}", *args)
    assert result.returncode == 0, result
    with open(sweep_dir / "results.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["trial", "epochs", "seed", *sweep.RESULT_COLUMNS]
    runs = _read_csv(sweep_dir / "results.csv")
    assert sorted((r["epochs"], r["seed"], r["epochs_run"]) for r in runs) == [
        ("30", "0", "2"),
        ("30", "1", "2"),
        ("7", "0", "2"),
        ("7", "1", "2"),
    ]
    summary = _read_csv(sweep_dir / "summary.csv")
    assert [(r["epochs"], r["n"], r["runs"]) for r in summary] == [
        ("7", "2", "2"),
        ("30", "2", "2"),
    ]
    assert [float(r["val_accuracy_mean"]) for r in summary] == pytest.approx([0.57, 0.8])
    assert "0.8000 ± 0.0000" in result.stdout


def test_dry_run_checks_and_lists_every_trial_and_writes_nothing(tmp_path):
    sweep_dir = tmp_path / "dry"
    grid = ("--grid=hidden_units=8,16", "--grid=learning_rate=0.1,0.3", "--repeats=2")
    result = run_main(
        sweep.main, f"--sweep_dir={sweep_dir}", *grid, "--dry_run", "--", "--dataset=synthetic"
    )
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if line.startswith("keras-mlp-train")]
    assert len(commands) == 8  # 2 x 2 points, 2 seeds each
    assert commands[-1] == (
        "keras-mlp-train --dataset=synthetic --hidden_units=16 --learning_rate=0.3 --seed=1"
    )
    assert "8 trials (4 grid points x 2 seeds); none run" in result.stdout
    assert not sweep_dir.exists()
    # A value no trial would accept is refused before any trial, dry or not.
    result = run_main(
        sweep.main, f"--sweep_dir={sweep_dir}", "--grid=learning_rate=0.1,-1", "--dry_run"
    )
    assert result.returncode == 2, result
    assert "--learning_rate=-1.0 must be a positive finite number" in error_lines(result)[0]


def test_rerun_keeps_finished_trials_even_with_a_damaged_metrics_file(tmp_path, monkeypatch):
    fake = _fake(monkeypatch, lambda c: ("done", c["hidden_units"][0] / 100, 1))
    sweep_dir = tmp_path / "sweep"
    args = [f"--sweep_dir={sweep_dir}", "--grid=hidden_units=8,16", "--repeats=2", "--", *QUICK]
    assert run_main(sweep.main, *args).returncode == 0
    before = _read_csv(sweep_dir / "results.csv")
    (sweep_dir / "trial-000" / "metrics.json").write_text('{"final": {"val_acc')
    fake.launched.clear()
    again = run_main(sweep.main, *args)
    assert again.returncode == 0, again
    assert fake.launched == []  # results come from the study, not from trial folders
    assert _read_csv(sweep_dir / "results.csv") == before


def test_rerun_with_other_settings_is_refused(tmp_path, monkeypatch):
    _fake(monkeypatch, lambda c: ("done", 0.5, 1))
    sweep_dir = tmp_path / "sweep"
    assert (
        run_main(sweep.main, f"--sweep_dir={sweep_dir}", "--grid=sigma=0.1", "--", *QUICK)[0] == 0
    )
    files = _listing(sweep_dir)
    result = run_main(sweep.main, f"--sweep_dir={sweep_dir}", "--grid=sigma=0.2", "--", *QUICK)
    assert result.returncode == 2
    assert "holds an experiment with other settings (grid" in error_lines(result)[0]
    assert _listing(sweep_dir) == files


def test_failed_trials_are_reported_and_retried_on_request(tmp_path, monkeypatch):
    outcome = {0.5: ("failed", "no space left"), 0.1: ("done", 0.7, 1)}
    fake = _fake(monkeypatch, lambda c: outcome[c["learning_rate"]])
    sweep_dir = tmp_path / "sweep"
    args = [f"--sweep_dir={sweep_dir}", "--grid=learning_rate=0.1,0.5", "--", *QUICK]
    first = run_main(sweep.main, *args)
    assert first.returncode == 0
    assert (
        "failed: trial-00" in first.stdout and "(learning_rate=0.5): no space left" in first.stdout
    )
    # A plain rerun reports the failure again and runs nothing.
    fake.launched.clear()
    assert "no space left" in run_main(sweep.main, *args).stdout
    assert fake.launched == []
    # --retry_failed runs it again as a new trial; its result replaces the failure.
    outcome[0.5] = ("done", 0.6, 1)
    retry = run_main(sweep.main, "--retry_failed", *args)
    assert retry.returncode == 0, retry
    assert [(n, c["learning_rate"]) for n, _, c in fake.launched] == [(2, 0.5)]
    runs = _read_csv(sweep_dir / "results.csv")
    assert [(r["trial"], r["status"]) for r in runs][-1] == ("trial-002", "done")
    summary = {r["learning_rate"]: r for r in _read_csv(sweep_dir / "summary.csv")}
    assert (summary["0.5"]["n"], summary["0.5"]["runs"], summary["0.5"]["val_accuracy_mean"]) == (
        "1",
        "1",
        "0.6",
    )


def test_a_trial_over_its_time_is_stopped_and_recorded_as_failed(tmp_path, monkeypatch):
    _fake(monkeypatch, lambda c: ("sleep", 60) if c["sigma"] == 0.2 else ("done", 0.5, 1))
    sweep_dir = tmp_path / "sweep"
    start = time.monotonic()
    result = run_main(
        sweep.main,
        f"--sweep_dir={sweep_dir}",
        "--grid=sigma=0.1,0.2",
        "--trial_timeout=1",
        "--",
        *QUICK,
    )
    assert time.monotonic() - start < 30
    assert result.returncode == 0, result
    errors = {r["sigma"]: (r["status"], r["error"]) for r in _read_csv(sweep_dir / "results.csv")}
    assert errors == {"0.1": ("done", ""), "0.2": ("failed", "timed out after 1s")}


def test_diverged_trials_are_a_result_not_a_failure(tmp_path, monkeypatch):
    _fake(monkeypatch, lambda c: ("diverged", "the loss became nan at step 3"))
    sweep_dir = tmp_path / "sweep"
    args = [f"--sweep_dir={sweep_dir}", "--grid=learning_rate=10,20", "--", *QUICK]
    result = run_main(sweep.main, *args)
    assert result.returncode == 1  # no trial finished
    assert {r["status"] for r in _read_csv(sweep_dir / "results.csv")} == {"diverged"}
    fake = _fake(monkeypatch, lambda c: ("done", 0.5, 1))
    run_main(sweep.main, "--retry_failed", *args)
    assert fake.launched == []  # retrying would diverge again


def _interrupt_after(seconds, signal_number=signal.SIGINT):
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal_number))
    timer.start()
    return timer


def test_ctrl_c_stops_the_whole_sweep_and_the_rerun_resumes(tmp_path, monkeypatch):
    fake = _fake(monkeypatch, lambda c: ("sleep", 60))
    sweep_dir = tmp_path / "sweep"
    args = [f"--sweep_dir={sweep_dir}", "--grid=hidden_units=8,16,32", "--parallel=2"]
    _interrupt_after(1.5)
    start = time.monotonic()
    result = run_main(sweep.main, *args, "--", *QUICK)
    assert time.monotonic() - start < 30  # not the 60 s a trial would sleep
    assert result.returncode == 130, result
    assert "stopped by SIGINT; 2 running trial(s)" in error_lines(result)[0]
    assert len(fake.launched) == 2  # nothing started after the signal
    assert [r["status"] for r in _read_csv(sweep_dir / "results.csv")] == ["stopped"] * 2

    # The rerun resumes the stopped trials in their folders, then runs the last one.
    fake = _fake(monkeypatch, lambda c: ("done", 0.5, 1))
    again = run_main(sweep.main, *args, "--", *QUICK)
    assert again.returncode == 0, again
    assert [(n, name) for n, name, _ in fake.launched] == [
        (0, "trial-000"),
        (1, "trial-001"),
        (2, "trial-002"),
    ]
    assert [r["status"] for r in _read_csv(sweep_dir / "results.csv")] == ["done"] * 3


def test_sigterm_stops_the_sweep_with_143(tmp_path, monkeypatch):
    _fake(monkeypatch, lambda c: ("sleep", 60))
    _interrupt_after(2, signal.SIGTERM)
    result = run_main(sweep.main, f"--sweep_dir={tmp_path / 's'}", "--grid=sigma=0.1,0.2")
    assert result.returncode == 143, result


def test_a_sweeps_hparams_experiment_shows_the_swept_columns_first_typed(tmp_path, monkeypatch):
    _fake(monkeypatch, lambda c: ("done", 0.5, 1))
    sweep_dir = tmp_path / "sweep"
    args = ["--grid=hidden_units=8,16", "--repeats=2", "--", *QUICK, "--dropout=0.2"]
    assert run_main(sweep.main, f"--sweep_dir={sweep_dir}", *args).returncode == 0
    content = _hparams_experiment(sweep_dir)["_hparams_/experiment"]
    infos = {i.name: i for i in metadata.parse_experiment_plugin_data(content).hparam_infos}
    assert {name for name, info in infos.items() if info.differs} == {"width"}
    assert "seed" not in infos and "hidden_units" not in infos

    def values(name):
        return [v.number_value for v in infos[name].domain_discrete.values]

    assert values("width") == [8, 16]  # numbers, not JSON text
    assert values("dropout") == [0.2]
    assert values("depth") == [1]


def test_plots_put_values_where_they_are_and_mark_outliers(tmp_path):
    assert plots.log_scale([1e-4, 1e-3, 1e-2]) == "log"
    assert plots.log_scale([0, 1e-4, 1e-3, 1e-2]) == "symlog"
    assert plots.log_scale([1, 16, 64]) is None  # under two decades: linear, true positions
    assert plots.numbers(["256", "256,256"]) is None  # depth: categories in grid order
    assert plots.outliers([0.405, 0.845, 0.854, 0.858, 0.862], [0.034, 0.005]) == [0]
    assert plots.outliers([0.84, 0.845, 0.854, 0.858, 0.862]) == []
    summary = [
        {"hidden_units": h, "n": 3, "val_accuracy_mean": m, "val_accuracy_std": 0.004}
        for h, m in (("1", 0.405), ("16", 0.845), ("64", 0.854), ("1024", 0.862))
    ]
    plots.plot_sweep(tmp_path / "width.png", summary, ["hidden_units"])
    assert (tmp_path / "width.png").read_bytes()[:4] == b"\x89PNG"
    figure = plots._line([e for e in summary], "hidden_units")
    (axes,) = figure.axes
    assert axes.get_xscale() == "log"
    assert axes.get_ylim()[0] > 0.8  # the others keep their differences visible
    assert "n = 3" in axes.get_title() and "std" in axes.get_title()


# --- the search (fast, stand-in trial processes) --------------------------------------------


def test_optuna_pruning_reports_each_epoch_and_prunes_when_the_pruner_says_so():
    study = optuna.create_study(
        direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5)
    )
    seen = []

    def objective(trial):
        callback = OptunaPruning(trial)
        for epoch, accuracy in enumerate([0.8, 0.6, 0.3, 0.9]):
            callback.on_epoch_end(epoch, {"val_accuracy": accuracy, "loss": 1.0})
            seen.append(epoch)
        return 0.9

    study.optimize(objective, n_trials=1)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert seen == [0, 1]  # the third epoch's report raised
    assert trial.intermediate_values == {1: 0.8, 2: 0.6, 3: 0.3}  # steps are epochs, from 1


SEARCH = ("--validation_split=0.2", "--max_epochs=2", "--widths=8,16", *QUICK)


def test_search_retrains_the_best_and_a_stopped_search_resumes(tmp_path, monkeypatch):
    def outcome(config):
        if config["validation_split"] == 0.0:
            return ("done", 0.97, 2)  # the retrain: its validation split is the test split
        return ("done", round(config["learning_rate"], 6), 2)

    fake = _fake(monkeypatch, outcome)
    search_dir = tmp_path / "search"
    args = [f"--search_dir={search_dir}", *SEARCH]
    result = run_main(search.main, *args, "--trials=3")
    assert result.returncode == 0, result
    report = json.loads((search_dir / "best.json").read_text())
    best = max(report["trials"], key=lambda r: r["val_accuracy"])
    assert report["best_trial"] == best["number"] and report["test_accuracy"] == 0.97
    assert fake.launched[-1][1] == "best" and fake.launched[-1][0] == best["number"]
    assert "test accuracy 0.9700" in result.stdout

    # Stopped during trial 3: the rerun with the same command resumes trial 3 (not a
    # "Record does not exist" crash, not a failed trial left behind), then adds trial 4.
    fake = _fake(monkeypatch, lambda c: ("sleep", 60))
    _interrupt_after(1.5)
    stopped = run_main(search.main, *args, "--trials=5")
    assert stopped.returncode == 130, stopped
    fake = _fake(monkeypatch, outcome)
    again = run_main(search.main, *args, "--trials=5")
    assert again.returncode == 0, again
    assert [(n, name) for n, name, _ in fake.launched] == [
        (3, "trial-003"),
        (4, "trial-004"),
        (json.loads((search_dir / "best.json").read_text())["best_trial"], "best"),
    ]
    statuses = [r["status"] for r in _read_csv(search_dir / "results.csv")]
    assert statuses == ["done"] * 5
    assert (search_dir / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_a_search_stopped_before_any_trial_finished_reruns_without_a_crash(tmp_path, monkeypatch):
    _fake(monkeypatch, lambda c: ("sleep", 60))
    search_dir = tmp_path / "search"
    _interrupt_after(1.5)
    assert run_main(search.main, f"--search_dir={search_dir}", *SEARCH, "--trials=1")[0] == 130
    _fake(monkeypatch, lambda c: ("done", 0.5, 2))
    result = run_main(search.main, f"--search_dir={search_dir}", *SEARCH, "--trials=1")
    assert result.returncode == 0, result
    assert json.loads((search_dir / "best.json").read_text())["best_trial"] == 0


# --- real runs (slow) --------------------------------------------------------------------


@pytest.mark.slow
def test_real_parallel_sweep_trains_every_grid_value(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [
        f"--sweep_dir={sweep_dir}",
        "--grid=learning_rate=1e-3,1e+3",
        "--parallel=2",
        "--",
        *QUICK,
        "--hidden_units=16",
    ]
    first = run_main(sweep.main, *args)
    assert first.returncode == 0, first
    rows = {r["learning_rate"]: r for r in _read_csv(sweep_dir / "results.csv")}
    assert set(rows) == {"1e-3", "1e+3"}
    for value, row in rows.items():
        saved = json.loads((sweep_dir / row["trial"] / "run_config.json").read_text())
        assert saved["learning_rate"] == float(value)  # 1e+3 really ran, with 1000
        assert (sweep_dir / row["trial"] / experiment.LOG).exists()
    assert rows["1e-3"]["status"] == "done"
    metrics = json.loads((sweep_dir / rows["1e-3"]["trial"] / "metrics.json").read_text())
    assert float(rows["1e-3"]["val_accuracy"]) == metrics["final"]["val_accuracy"]
    assert (sweep_dir / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert (sweep_dir / experiment.STUDY).exists()


@pytest.mark.slow
def test_real_ctrl_c_stops_the_sweep_and_the_rerun_resumes_from_the_checkpoint(tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = [f"--sweep_dir={sweep_dir}", "--grid=hidden_units=16,32", "--"]
    args += ["--dataset=synthetic", "--epochs=400", "--batch_size=64"]
    process = start_tool("sweep", *args)
    first = sweep_dir / "trial-000" / "checkpoints"
    end = time.monotonic() + 120
    while not (first.is_dir() and any(first.glob("ckpt-*.index"))):
        assert time.monotonic() < end and process.poll() is None, process.communicate()
        time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "stopped by SIGINT; 1 running trial(s) saved a checkpoint" in err
    assert not (sweep_dir / "trial-001").exists()  # the rest did not start
    study = optuna.load_study(study_name="keras_mlp", storage=experiment.storage(sweep_dir))
    assert [t.state.name for t in study.trials] == ["RUNNING"]

    # The rerun (fewer epochs would be other settings: the same command) resumes trial 0.
    rerun = start_tool("sweep", *args)
    end = time.monotonic() + 120
    log = sweep_dir / "trial-000" / experiment.LOG
    while "resuming from" not in log.read_text():
        assert time.monotonic() < end and rerun.poll() is None, rerun.communicate()
        time.sleep(0.5)
    rerun.send_signal(signal.SIGTERM)
    _, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 143, err


@pytest.mark.slow
def test_real_search_prunes_selects_on_holdout_and_tests_once(tmp_path):
    search_dir = tmp_path / "search"

    def search_run(trials):
        return run_main(
            search.main,
            f"--search_dir={search_dir}",
            f"--trials={trials}",
            "--max_epochs=2",
            # A width-1 network is at chance on the 5 classes, far below width 64 after an
            # epoch; with max_epochs=2 Hyperband has one bracket whose rung at epoch 1
            # promotes only the best trial so far, so a width-1 trial after a width-64
            # one is pruned. (--seed=0: TPE proposes width 64 first, then width 1.)
            "--widths=1,64",
            "--seed=0",
            "--validation_split=0.2",
            *QUICK,
        )

    result = search_run(trials=4)
    assert result.returncode == 0, result
    assert "retrained on the whole training set: test accuracy" in result.stdout
    report = json.loads((search_dir / "best.json").read_text())
    rows = report["trials"]
    assert len(rows) == 4
    order = sorted(rows, key=lambda r: r["trial"])
    assert order[0]["width"] == 64, order
    narrow = [r for r in order[1:] if r["width"] == 1]
    assert narrow, order
    assert [r["status"] for r in narrow] == ["pruned"] * len(narrow), order
    assert all(r["epochs_run"] == 1 for r in rows if r["status"] == "pruned"), rows
    assert all(r["epochs_run"] == r["epochs"] == 2 for r in rows if r["status"] == "done")
    done = [r for r in rows if r["status"] == "done"]
    best_row = max(done, key=lambda r: r["val_accuracy"])
    assert best_row["trial"] == f"trial-{report['best_trial']:03d}"
    trial_metrics = json.loads((search_dir / best_row["trial"] / "metrics.json").read_text())
    assert trial_metrics["final"]["validation"] == "holdout"
    assert trial_metrics["final"]["val_accuracy"] == best_row["val_accuracy"]
    trial_config = json.loads((search_dir / best_row["trial"] / "run_config.json").read_text())
    trial_data = trial_config.pop("data")
    assert report["best_config"] == {
        **trial_config,
        "validation_split": 0.0,
        "model_dir": str(search_dir / "best"),
    }
    # Retrained on the whole training set: the trial's part plus its hold-out.
    assert report["best_data"]["train_examples"] == (
        trial_data["train_examples"] + trial_data["validation_examples"]
    )
    assert report["best_data"]["validation"] == "test"
    best = json.loads((search_dir / "best" / "metrics.json").read_text())
    assert best["final"]["validation"] == "test"
    assert best["data"]["num_train_examples"] == 2000
    assert best["final"]["val_accuracy"] == report["test_accuracy"]
    assert statistics.mean(r["val_accuracy"] for r in done) > 0.4  # trials really learned

    more = search_run(trials=5)
    assert more.returncode == 0, more
    assert len(json.loads((search_dir / "best.json").read_text())["trials"]) == 5
    assert sorted(p.name for p in search_dir.glob("trial-*")) == [f"trial-00{i}" for i in range(5)]
