"""Grid sweeps and the joint search.

Fast: grid parsing, trial names, bad input through `main` in-process (exit 2),
results rows and atomic writes from trials that are already finished, and the
search's pruning and reporting with a stand-in for `train` (real Optuna study,
real Hyperband pruner, real `OptunaPruning` callback). Slow: a real parallel sweep
and a real search on synthetic data.
"""

import csv
import json
import statistics
import subprocess
import threading
from pathlib import Path

import optuna
import pytest
from cli_util import error_lines, run_main
from tensorboard.backend.event_processing import event_accumulator

from keras_mlp import reporting, run_dir, search, sweep
from keras_mlp.config import RunConfig
from keras_mlp.errors import UserError
from keras_mlp.run import RunResult
from keras_mlp.search import OptunaPruning, run_search
from keras_mlp.sweep import parse_grid, run_sweep, trial_name

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


def test_trial_names_are_folder_names_distinct_per_combination():
    assert (
        trial_name({"hidden_units": "256,256", "sigma": "0.1"}) == "hidden_units=256_256-sigma=0.1"
    )
    assert trial_name({"hidden_units": "256"}) == "hidden_units=256"
    assert trial_name({"flagfile": "configs/a b.flags"}) == "flagfile=configs_a_b.flags"
    names = {
        trial_name({"hidden_units": h, "learning_rate": lr})
        for h in ("8", "16", "8,8")
        for lr in ("0.1", "0.5")
    }
    assert len(names) == 6
    assert not any("/" in name for name in names)


# --- bad input: exit 2, one error line, nothing written ------------------------------------


@pytest.mark.parametrize(
    "args, message",
    [
        (["--grid=hidden_units=8"], "--sweep_dir is required"),
        (["--sweep_dir={d}"], "give at least one --grid"),
        (["--sweep_dir={d}", "--grid=hidden_units=8", "--parallel=0"], "--parallel=0 must be"),
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


def test_sweep_with_no_finished_trial_exits_1(tmp_path):
    # Real trial processes that the train tool rejects at once (before TensorFlow loads).
    sweep_dir = tmp_path / "sweep"
    result = run_main(
        sweep.main, f"--sweep_dir={sweep_dir}", "--grid=hidden_units=0,-1", "--", *QUICK
    )
    assert result.returncode == 1
    assert {r["status"] for r in _read_csv(sweep_dir / "results.csv")} == {"failed"}
    assert "failed: hidden_units=_1: --hidden_units=-1 must be a positive integer" in result.stdout


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


# --- results from finished trials, failures, atomic results.csv (no training) ----------------


def _finish_trial(sweep_dir, params, val_accuracy, epoch_seconds):
    """A trial folder as a finished training run leaves it (only what the sweep reads)."""
    n = len(epoch_seconds)
    metrics = {
        "history": {"loss": [1.0] * n, "epoch_seconds": epoch_seconds},
        "final": {
            "val_accuracy": val_accuracy,
            "val_loss": 1 - val_accuracy,
            "loss": 0.5,
            "accuracy": 0.75,
        },
    }
    model_dir = Path(sweep_dir) / trial_name(params)
    model_dir.mkdir(parents=True)
    (model_dir / "metrics.json").write_text(json.dumps(metrics))


class _FakeTrials:
    """Stands in for the trial processes: `hidden_units=0` fails as the train tool
    would, `hidden_units=slow` times out; any other launch is a test failure (those
    trials are finished and must not run again)."""

    def __init__(self):
        self.commands = []

    def __call__(self, command, **kwargs):
        self.commands.append(command)
        if "--hidden_units=0" in command:
            return subprocess.CompletedProcess(
                command, 2, "", "noise\nerror: --hidden_units=0 must be a positive integer\n"
            )
        if "--hidden_units=slow" in command:
            raise subprocess.TimeoutExpired(command, kwargs["timeout"])
        raise AssertionError(f"a finished trial ran again: {command}")


@pytest.fixture
def finished_sweep(tmp_path, monkeypatch):
    """A sweep folder whose 2x2 grid of valid trials already finished, plus a trial
    that fails and one that times out."""
    sweep_dir = tmp_path / "sweep"
    grid = {"hidden_units": ["8", "16", "0", "slow"], "learning_rate": ["0.1", "0.5"]}
    accuracies = {("8", "0.1"): 0.5, ("8", "0.5"): 0.7, ("16", "0.1"): 0.9, ("16", "0.5"): 0.6}
    for (h, lr), accuracy in accuracies.items():
        _finish_trial(
            sweep_dir, {"hidden_units": h, "learning_rate": lr}, accuracy, [1.25, 0.5, 0.25]
        )
    fake = _FakeTrials()
    monkeypatch.setattr(sweep.subprocess, "run", fake)
    return sweep_dir, grid, fake


def test_sweep_rows_best_first_with_failures_recorded(finished_sweep):
    sweep_dir, grid, fake = finished_sweep
    rows = run_sweep(sweep_dir, grid, ["--dataset=synthetic"], parallel=2, timeout=5, verbose=False)
    # Only the unfinished trials were launched, each with the train args and its grid values.
    assert sorted(c[-3:] for c in fake.commands) == sorted(
        [f"--hidden_units={h}", f"--learning_rate={lr}", f"--model_dir={sweep_dir}/{name}"]
        for h in ("0", "slow")
        for lr in ("0.1", "0.5")
        for name in [trial_name({"hidden_units": h, "learning_rate": lr})]
    )
    assert all(c[1:4] == ["-m", "keras_mlp.train", "--dataset=synthetic"] for c in fake.commands)

    table = _read_csv(sweep_dir / "results.csv")
    assert list(table[0]) == ["trial", "hidden_units", "learning_rate", *sweep.RESULT_COLUMNS]
    assert [(r["trial"], r["status"], r["val_accuracy"]) for r in table[:4]] == [
        ("hidden_units=16-learning_rate=0.1", "done", "0.9"),
        ("hidden_units=8-learning_rate=0.5", "done", "0.7"),
        ("hidden_units=16-learning_rate=0.5", "done", "0.6"),
        ("hidden_units=8-learning_rate=0.1", "done", "0.5"),
    ]
    for r in table[:4]:
        assert r["epochs"] == "3"
        assert float(r["seconds"]) == 2.0  # 1.25 + 0.5 + 0.25
        assert float(r["val_loss"]) == pytest.approx(1 - float(r["val_accuracy"]))
    failures = {r["trial"]: r["error"] for r in table[4:]}
    assert {r["status"] for r in table[4:]} == {"failed"}
    assert failures == {
        "hidden_units=0-learning_rate=0.1": "--hidden_units=0 must be a positive integer",
        "hidden_units=0-learning_rate=0.5": "--hidden_units=0 must be a positive integer",
        "hidden_units=slow-learning_rate=0.1": "timed out after 5s",
        "hidden_units=slow-learning_rate=0.5": "timed out after 5s",
    }
    summary = _read_csv(sweep_dir / "summary.csv")
    as_text = [{k: "" if r[k] is None else str(r[k]) for k in summary[0]} for r in rows]
    assert as_text == summary  # run_sweep returns the summary it writes
    assert [(r["hidden_units"], r["learning_rate"], r["done"]) for r in summary[:4]] == [
        ("16", "0.1", "1"),
        ("8", "0.5", "1"),
        ("16", "0.5", "1"),
        ("8", "0.1", "1"),
    ]
    assert (sweep_dir / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "_hparams_/experiment" in _hparams_experiment(sweep_dir)


def test_repeats_run_each_point_with_consecutive_seeds_and_summarize(tmp_path, monkeypatch):
    sweep_dir = tmp_path / "repeats"
    accuracy = {("8", "3"): 0.5, ("8", "4"): 0.7, ("16", "3"): 0.8, ("16", "4"): 0.8}
    for (h, seed), value in accuracy.items():
        _finish_trial(sweep_dir, {"hidden_units": h, "seed": seed}, value, [1.0])
    monkeypatch.setattr(sweep.subprocess, "run", _FakeTrials())
    result = run_main(
        sweep.main,
        f"--sweep_dir={sweep_dir}",
        "--grid=hidden_units=8,16",
        "--repeats=2",
        "--",
        "--dataset=synthetic",
        "--seed=3",
    )
    assert result.returncode == 0, result.stderr
    runs = _read_csv(sweep_dir / "results.csv")
    assert sorted((r["hidden_units"], r["seed"]) for r in runs) == sorted(accuracy)
    summary = {r["hidden_units"]: r for r in _read_csv(sweep_dir / "summary.csv")}
    assert float(summary["8"]["val_accuracy_mean"]) == pytest.approx(0.6)
    assert float(summary["8"]["val_accuracy_std"]) == pytest.approx(0.1414213, rel=1e-5)  # ddof=1
    assert float(summary["16"]["val_accuracy_std"]) == 0.0
    assert list(summary) == ["16", "8"]  # best mean first
    assert "0.6000 ± 0.1414" in result.stdout
    assert (sweep_dir / "results.png").read_bytes()[:4] == b"\x89PNG"


def test_repeats_refuse_a_seed_grid_and_bad_training_flags(tmp_path):
    for args, message in (
        (["--grid=seed=1,2", "--repeats=2"], "--repeats chooses the seeds"),
        (["--grid=hidden_units=8", "--repeats=0"], "--repeats=0 must be a positive integer"),
        (["--grid=hidden_units=8", "--repeats=2", "--", "--seed=x"], "the training flags"),
    ):
        result = run_main(sweep.main, f"--sweep_dir={tmp_path / 's'}", *args)
        assert result.returncode == 2, result
        assert message in error_lines(result)[0]
        assert not (tmp_path / "s").exists()


def test_dry_run_checks_and_lists_every_trial_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep.subprocess, "run", None)  # a trial started would fail here
    sweep_dir = tmp_path / "dry"
    grid = ("--grid=hidden_units=8,16", "--grid=learning_rate=0.1,0.3", "--repeats=2")
    result = run_main(
        sweep.main, f"--sweep_dir={sweep_dir}", *grid, "--dry_run", "--", "--dataset=synthetic"
    )
    assert result.returncode == 0, result.stderr
    commands = [line for line in result.stdout.splitlines() if "keras_mlp.train" in line]
    assert len(commands) == 8  # 2 x 2 points, 2 seeds each
    assert f"--learning_rate=0.3 --seed=1 --model_dir={sweep_dir}/hidden_units=16-" in commands[-1]
    assert "8 trials" in result.stdout
    assert not sweep_dir.exists()
    # A value no trial would accept is refused before any trial, dry or not.
    result = run_main(
        sweep.main, f"--sweep_dir={sweep_dir}", "--grid=learning_rate=0.1,-1", "--dry_run"
    )
    assert result.returncode == 2, result
    assert "--learning_rate=-1.0 must be a positive finite number" in error_lines(result)[0]


class _CsvDiesMidway(csv.DictWriter):
    """A CSV writer that dies (disk full) after the header and one row."""

    def writerows(self, rows):
        self.writerow(rows[0])
        raise OSError(28, "No space left on device")


def _json_dump_dies_midway_for(stem):
    """`json.dump` that dies halfway through writing the file `stem`.* (the writers
    write a temporary `.{stem}.<pid>.tmp.json` first), and writes others normally."""
    real = json.dump

    def dump(obj, f, **kwargs):
        if not Path(f.name).name.startswith(f".{stem}."):
            return real(obj, f, **kwargs)
        text = json.dumps(obj, **kwargs)
        f.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    return dump


def test_results_csv_is_replaced_atomically(finished_sweep, monkeypatch):
    sweep_dir, grid, _ = finished_sweep
    run_sweep(sweep_dir, grid, [], timeout=5, verbose=False)
    before = (sweep_dir / "results.csv").read_bytes()
    files = _listing(sweep_dir)
    # A finished trial's result changes (it is now the best); the writer dies midway.
    changed = sweep_dir / "hidden_units=8-learning_rate=0.1" / "metrics.json"
    metrics = json.loads(changed.read_text())
    metrics["final"]["val_accuracy"] = 0.95
    changed.write_text(json.dumps(metrics))

    real_writer = csv.DictWriter
    monkeypatch.setattr(reporting.csv, "DictWriter", _CsvDiesMidway)
    with pytest.raises(OSError, match="No space left"):
        run_sweep(sweep_dir, grid, [], timeout=5, verbose=False)
    assert (sweep_dir / "results.csv").read_bytes() == before
    assert _listing(sweep_dir) == files  # no temporary file left behind

    # Without the failure the new result is written (so the old file above was kept).
    monkeypatch.setattr(reporting.csv, "DictWriter", real_writer)
    run_sweep(sweep_dir, grid, [], timeout=5, verbose=False)
    assert _read_csv(sweep_dir / "results.csv")[0]["trial"] == "hidden_units=8-learning_rate=0.1"
    assert _listing(sweep_dir) == files


# --- the search: pruning and reporting with a stand-in for train (fast) ----------------------


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


class _StandInTrain:
    """Replaces `keras_mlp.run.train` in the search: no TensorFlow, the model_dir rules
    of the real one (`run_dir.inspect` / `claim`; metrics.json marks a finished run),
    and a validation accuracy per trial from `epoch1` (then +0.01 per epoch), reported to
    the callbacks (the search's OptunaPruning) each epoch as the Trainer does."""

    def __init__(self, epoch1, retrained=0.97):
        self.epoch1, self.retrained, self.calls = epoch1, retrained, []

    def __call__(self, config, *, callbacks=(), verbose=True):
        self.calls.append(config)
        model_dir = Path(config.model_dir)
        status = run_dir.NEW if config.overwrite else run_dir.inspect(model_dir, config)
        if status == run_dir.COMPLETE:
            metrics = json.loads((model_dir / "metrics.json").read_text())
            return RunResult(str(model_dir), metrics["history"])
        with run_dir.claim(model_dir, config):
            if model_dir.name == "best":
                history = {"val_accuracy": [self.retrained] * config.epochs}
            else:
                history = {"val_accuracy": []}
                for epoch in range(config.epochs):
                    accuracy = self.epoch1[int(model_dir.name[6:])] + 0.01 * epoch
                    history["val_accuracy"].append(accuracy)
                    for callback in callbacks:
                        callback.on_epoch_end(epoch, {"val_accuracy": accuracy})
            reporting.write_json(model_dir / "metrics.json", {"history": history})
        return RunResult(str(model_dir), history)


def _search(search_dir, trials, stand_in, monkeypatch):
    monkeypatch.setattr(search, "train", stand_in)
    # The stand-in builds no Keras model: nothing to clear between trials (and clearing
    # this test process's Keras state costs about 0.5 s each time).
    monkeypatch.setattr(search.keras.backend, "clear_session", lambda: None)
    base = RunConfig(dataset="synthetic", validation_split=0.2, batch_size=64)
    return run_search(search_dir, base, trials, max_epochs=2, widths=(8, 16), verbose=False)


def test_search_prunes_worse_trials_and_retrains_the_best(tmp_path, monkeypatch):
    search_dir = tmp_path / "search"
    # Trial 0 leads at epoch 1; 1..3 are clearly worse there, so Hyperband (a single
    # bracket for max_epochs=2, rung at epoch 1, only the best so far promoted) prunes them.
    stand_in = _StandInTrain({0: 0.8, 1: 0.3, 2: 0.3, 3: 0.2})
    report = _search(search_dir, 4, stand_in, monkeypatch)

    statuses = {r["trial"]: (r["status"], r["epochs_run"]) for r in report["trials"]}
    assert statuses == {
        "trial-000": ("done", 2),
        "trial-001": ("pruned", 1),
        "trial-002": ("pruned", 1),
        "trial-003": ("pruned", 1),
    }
    assert [r["val_accuracy"] for r in report["trials"]] == [0.81, 0.3, 0.3, 0.2]  # best first
    assert report["best_trial"] == 0
    assert report["best_validation_accuracy"] == 0.81
    # The best configuration is retrained on the whole training set, once, into best/.
    *trial_configs, retrain = stand_in.calls
    assert [Path(c.model_dir).name for c in trial_configs] == [f"trial-00{i}" for i in range(4)]
    assert {c.validation_split for c in trial_configs} == {0.2}
    assert retrain.validation_split == 0.0
    assert Path(retrain.model_dir) == search_dir / "best"
    assert retrain.to_dict() == {
        **trial_configs[0].to_dict(),
        "validation_split": 0.0,
        "model_dir": str(search_dir / "best"),
    }
    assert report["best_config"] == retrain.to_dict()
    assert report["test_accuracy"] == 0.97
    # The outputs agree with the report.
    assert json.loads((search_dir / "best.json").read_text()) == report
    table = _read_csv(search_dir / "results.csv")
    assert [(r["trial"], r["status"]) for r in table] == [
        (r["trial"], r["status"]) for r in report["trials"]
    ]
    assert (search_dir / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "_hparams_/experiment" in _hparams_experiment(search_dir)


def test_continued_search_adds_new_trials_and_retrains_a_new_best(tmp_path, monkeypatch):
    search_dir = tmp_path / "search"
    _search(search_dir, 2, _StandInTrain({0: 0.8, 1: 0.3}), monkeypatch)
    # Continuing to 4 trials: trial 3 becomes the best; best/ holds the old best's retrain.
    stand_in = _StandInTrain({0: 0.8, 1: 0.3, 2: 0.3, 3: 0.9}, retrained=0.98)
    report = _search(search_dir, 4, stand_in, monkeypatch)
    assert [Path(c.model_dir).name for c in stand_in.calls] == ["trial-002", "trial-003", "best"]
    assert report["best_trial"] == 3
    assert report["test_accuracy"] == 0.98
    assert len(report["trials"]) == 4
    # New trials are new proposals, not the first ones again (learning rates are continuous).
    proposed = [
        (r["optimizer"], r["learning_rate"], r["depth"], r["width"]) for r in report["trials"]
    ]
    assert len(set(proposed)) == 4, proposed
    best = json.loads((search_dir / "best" / "metrics.json").read_text())
    assert best["history"]["val_accuracy"][-1] == 0.98


@pytest.mark.parametrize("failing", ["best.json", "results.csv"])
def test_search_outputs_are_replaced_atomically(tmp_path, monkeypatch, failing):
    search_dir = tmp_path / "search"
    _search(search_dir, 2, _StandInTrain({0: 0.8, 1: 0.3}), monkeypatch)
    before = (search_dir / failing).read_bytes()
    files = _listing(search_dir)

    if failing == "best.json":
        monkeypatch.setattr(reporting.json, "dump", _json_dump_dies_midway_for("best"))
    else:
        monkeypatch.setattr(reporting.csv, "DictWriter", _CsvDiesMidway)
    with pytest.raises(OSError, match="No space left"):
        _search(search_dir, 3, _StandInTrain({0: 0.8, 1: 0.3, 2: 0.2}), monkeypatch)
    assert (search_dir / failing).read_bytes() == before
    new = [p for p in _listing(search_dir) if p not in files]  # no temporary file among them
    assert new and all(p.startswith("trial-002") for p in new), new


# --- real runs (slow) --------------------------------------------------------------------


class _CountingRun:
    """Wraps `subprocess.run` for the sweep: counts trial processes and the most that
    ran at the same time."""

    def __init__(self, run):
        self.run, self.lock = run, threading.Lock()
        self.running = self.most = 0
        self.commands = []

    def __call__(self, command, **kwargs):
        with self.lock:
            self.commands.append(command)
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            return self.run(command, **kwargs)
        finally:
            with self.lock:
                self.running -= 1


@pytest.mark.slow
def test_parallel_sweep_runs_every_trial_records_failures_and_resumes(tmp_path, monkeypatch):
    sweep_dir = tmp_path / "sweep"
    args = [
        f"--sweep_dir={sweep_dir}",
        "--grid=hidden_units=8,16,0",
        "--grid=learning_rate=0.1,0.5",
        "--parallel=2",
        "--",
        *QUICK,
    ]
    counting = _CountingRun(subprocess.run)
    monkeypatch.setattr(sweep.subprocess, "run", counting)
    first = run_main(sweep.main, *args)
    assert first.returncode == 0, first.stderr
    assert "sweep results, best first" in first.stdout
    assert len(counting.commands) == 6
    assert counting.most == 2  # two trials at a time, never more

    rows = _read_csv(sweep_dir / "results.csv")
    assert len(rows) == 6  # the 2x2 grid of valid values, and 0 units twice
    done = [r for r in rows if r["status"] == "done"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert sorted(r["trial"] for r in done) == sorted(
        f"hidden_units={h}-learning_rate={lr}" for h in (8, 16) for lr in (0.1, 0.5)
    )
    accuracies = [float(r["val_accuracy"]) for r in done]
    assert accuracies == sorted(accuracies, reverse=True)  # best first
    assert rows[:4] == done
    assert [r["error"] for r in failed] == ["--hidden_units=0 must be a positive integer"] * 2
    for r in done:
        metrics = json.loads((sweep_dir / r["trial"] / "metrics.json").read_text())
        assert float(r["val_accuracy"]) == metrics["final"]["val_accuracy"]
        assert metrics["config"]["learning_rate"] == float(r["learning_rate"])
        assert metrics["config"]["hidden_units"] == [int(r["hidden_units"])]
        assert metrics["config"]["epochs"] == 1 and r["epochs"] == "1"
        assert (sweep_dir / r["trial"] / "logs" / "validation").is_dir()
        assert (sweep_dir / f"{r['trial']}.log").exists()
    assert (sweep_dir / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert "_hparams_/experiment" in _hparams_experiment(sweep_dir)

    # Rerun: the finished trials are read, not run again; the failed ones are retried.
    counting.commands.clear()
    again = run_main(sweep.main, *args)
    assert again.returncode == 0, again.stderr
    assert sorted(c[-3] for c in counting.commands) == ["--hidden_units=0"] * 2
    assert _read_csv(sweep_dir / "results.csv") == rows


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
    assert result.returncode == 0, result.stderr
    assert "retrained on the whole training set: test accuracy" in result.stdout
    report = json.loads((search_dir / "best.json").read_text())
    rows = report["trials"]
    assert len(rows) == 4
    order = sorted(rows, key=lambda r: r["trial"])
    # The precondition (what the seeded sampler proposes), then the consequence.
    assert order[0]["width"] == 64, order
    narrow = [r for r in order[1:] if r["width"] == 1]
    assert narrow, order
    assert [r["status"] for r in narrow] == ["pruned"] * len(narrow), order
    assert all(r["epochs_run"] == 1 for r in rows if r["status"] == "pruned"), rows
    assert {r["status"] for r in rows} == {"done", "pruned"}
    assert all(r["epochs_run"] == r["epochs"] == 2 for r in rows if r["status"] == "done")
    # Selection on the held-out split: the best trial is the best finished one.
    done = [r for r in rows if r["status"] == "done"]
    best_row = max(done, key=lambda r: r["val_accuracy"])
    assert best_row["trial"] == f"trial-{report['best_trial']:03d}"
    assert report["best_validation_accuracy"] == best_row["val_accuracy"]
    best_trial_dir = search_dir / best_row["trial"]
    trial_metrics = json.loads((best_trial_dir / "metrics.json").read_text())
    assert trial_metrics["final"]["validation"] == "holdout"
    assert trial_metrics["final"]["val_accuracy"] == best_row["val_accuracy"]
    trial_config = json.loads((best_trial_dir / "run_config.json").read_text())
    assert trial_config["validation_split"] == 0.2
    # ... then retrained on the whole training set and tested once.
    assert report["best_config"] == {
        **trial_config,
        "validation_split": 0.0,
        "model_dir": str(search_dir / "best"),
    }
    best = json.loads((search_dir / "best" / "metrics.json").read_text())
    assert best["final"]["validation"] == "test"
    assert best["data"]["num_train_examples"] == 2000
    assert best["final"]["val_accuracy"] == report["test_accuracy"]
    assert "_hparams_/experiment" in _hparams_experiment(search_dir)
    assert (search_dir / "results.png").read_bytes()[:4] == b"\x89PNG"
    assert [r["status"] for r in _read_csv(search_dir / "results.csv")] == [
        r["status"] for r in rows
    ]
    assert statistics.mean(r["val_accuracy"] for r in done) > 0.4  # trials really learned

    # Continuing the study with a larger --trials adds only the missing trial.
    more = search_run(trials=5)
    assert more.returncode == 0, more.stderr
    assert len(json.loads((search_dir / "best.json").read_text())["trials"]) == 5
    assert sorted(p.name for p in search_dir.glob("trial-*")) == [f"trial-00{i}" for i in range(5)]
