"""The experiment engine of sweeps and searches: an Optuna study kept in the
experiment's folder (`study.db`, SQLite), each trial an ordinary training run in a
process and a folder of its own (`trial-NNN/`, its settings in the study and in its
`run_config.json`, its output in `trial-NNN/output.log`).

The tool (sweep.py, search.py) brings the sampler (a grid, or TPE), the pruner and
a `Plan`: which settings a new trial gets. The engine runs the trials, `--parallel`
at a time, and records each one's end in the study: `done` (its results), `pruned`,
`diverged` or `failed` (its error).

Rerunning the same command continues the study: finished trials are kept; a trial
that was running when the experiment stopped (Ctrl-C, SIGTERM, a kill) resumes from
its checkpoint, in its folder; a failed one is reported, or with `retry_failed`
run again as a new trial. One process at a time works on an experiment (a lock in
its folder), so a trial still marked running in the study is one whose process is
gone.

Ctrl-C or SIGTERM stops the whole experiment: the running trials get SIGTERM,
checkpoint and stop; nothing new starts; the tool then exits 130 or 143.
"""

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from absl import flags

from keras_mlp import hparams, run_dir, signals
from keras_mlp.checks import check_positive_int, check_seconds
from keras_mlp.errors import TrainingInterrupted, UserError

STUDY = "study.db"
BEST = "best"  # a search's best configuration, retrained on the whole training set
LOG = "output.log"
# The trial process's own exit statuses (keras_mlp.trial), beside 0 (done), 2 (bad
# input) and 128 + N (stopped by signal N).
EXIT_PRUNED, EXIT_DIVERGED = 3, 4
# How long a trial may take to checkpoint and exit after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 120
TrialState = optuna.trial.TrialState


class ExperimentStopped(TrainingInterrupted):
    """SIGINT/SIGTERM stopped the experiment: exit status 128 + the signal."""

    def __init__(self, signal_number, stopped):
        super().__init__(signal_number, step=0)
        self.stopped = stopped

    def __str__(self):
        name = signal.Signals(self.signal_number).name
        return (
            f"stopped by {name}; {self.stopped} running trial(s) saved a checkpoint; "
            "rerun the same command to resume them and continue"
        )


def define_flags(flag_values):
    """The flags of every experiment (sweeps and searches)."""
    kw = {"flag_values": flag_values}
    flags.DEFINE_integer("parallel", 1, "Trials run at once (each its own process).", **kw)
    flags.DEFINE_float(
        "trial_timeout",
        3600,
        "Seconds a trial may run before it is stopped and recorded as failed (> 0).",
        **kw,
    )
    flags.DEFINE_boolean(
        "retry_failed",
        False,
        "Run the failed trials (errors, timeouts; not diverged ones) again, as new trials; "
        "without it a rerun reports them.",
        **kw,
    )


def check_flags(flag_values, directory_flag):
    """The experiment's own flags, checked before anything starts."""
    if not flag_values[directory_flag].value:
        raise UserError(f"--{directory_flag} is required")
    check_positive_int("--parallel", flag_values.parallel)
    check_seconds("--trial_timeout", flag_values.trial_timeout)


def trial_folder(number):
    return f"trial-{number:03d}"


def storage(folder):
    """The study's storage: SQLite in the folder, waiting (not failing) while a trial
    process writes its per-epoch reports."""
    return optuna.storages.RDBStorage(
        f"sqlite:///{Path(folder) / STUDY}", engine_kwargs={"connect_args": {"timeout": 60}}
    )


@contextlib.contextmanager
def locked(folder):
    """Holds the experiment's folder for this process (created if needed)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = run_dir.RunLock(folder)
        lock.acquire()
    except OSError as e:
        raise UserError(f"{folder} is not writable ({e.strerror or e})") from None
    except UserError:
        holder = (folder / run_dir.LOCK).read_text().strip() or "unknown"
        raise UserError(
            f"{folder} is in use by another sweep or search (pid {holder}); wait for it "
            "to end or choose another folder"
        ) from None
    try:
        yield
    finally:
        lock.release()


def open_study(folder, spec, sampler=None, pruner=None):
    """The study in `folder` (new, or continued when its `spec` is the same), with
    `sampler` and `pruner` (which a study does not store)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="keras_mlp",
        storage=storage(folder),
        load_if_exists=True,
        direction="maximize",
        sampler=sampler,
        pruner=pruner,
    )
    spec = json.loads(json.dumps(spec))  # as the study stores it: lists, not tuples
    saved = study.user_attrs.get("spec")
    if saved is None:
        study.set_user_attr("spec", spec)
    elif saved != spec:
        differences = [
            f"{key} {saved.get(key)!r} there, {spec.get(key)!r} now"
            for key in sorted(set(saved) | set(spec))
            if saved.get(key) != spec.get(key)
        ]
        raise UserError(
            f"{folder} holds an experiment with other settings ({'; '.join(differences)}); "
            "rerun it with its settings, or choose another folder"
        )
    return study


def pruner(spec):
    """The study's pruner (a study does not store it): Hyperband over the epochs when
    the spec names `max_epochs` (a search), else none."""
    if not spec.get("max_epochs"):
        return optuna.pruners.NopPruner()
    return optuna.pruners.HyperbandPruner(
        min_resource=1, max_resource=spec["max_epochs"], reduction_factor=3
    )


def handle(study, trial):
    """A `optuna.Trial` for a trial of `study` (a `FrozenTrial`), to suggest or record."""
    return optuna.trial.Trial(study, trial._trial_id)


class Plan:
    """What a tool tells the engine: override `configure` (the settings of a trial:
    suggests its parameters, stores its `config` and `group` user attributes) and
    `wanted` (whether the study needs another new trial)."""

    def configure(self, trial):
        raise NotImplementedError

    def wanted(self, study):
        raise NotImplementedError


def set_config(trial, config, group):
    """Records a trial's run: its `RunConfig` (model_dir: the trial's folder) and the
    HParams session group it belongs to."""
    trial.set_user_attr("config", config.to_dict())
    trial.set_user_attr("group", group)


@dataclasses.dataclass
class _Process:
    number: int
    process: subprocess.Popen
    deadline: float
    timed_out: bool = False
    kill_at: float | None = None


def launch(folder, number, model_dir, extra=()):
    """Starts the process of trial `number` (a new session: Ctrl-C in the terminal
    reaches the experiment, which stops its trials itself)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    for old in (model_dir / "logs").glob(f"*{hparams.STATUS_SUFFIX}"):
        old.unlink()  # a stopped trial resumes: its end is still to come
    with open(model_dir / LOG, "a") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "keras_mlp.trial", str(Path(folder) / STUDY), str(number)]
            + list(extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def last_error(model_dir, returncode):
    """The last `error:` line of a trial's output, or its exit status."""
    try:
        lines = (Path(model_dir) / LOG).read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error:")]
    if errors:
        return errors[-1]
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit status {returncode}"


def status_of(returncode, timed_out):
    if timed_out:
        return "failed"
    if returncode == 0:
        return "done"
    if returncode == EXIT_PRUNED:
        return "pruned"
    if returncode == EXIT_DIVERGED:
        return "diverged"
    if returncode in (128 + signal.SIGINT, 128 + signal.SIGTERM, -signal.SIGTERM):
        return "stopped"
    return "failed"


def read_results(model_dir):
    """A finished run's results, from its metrics.json."""
    metrics = json.loads((Path(model_dir) / "metrics.json").read_text())
    final, history = metrics["final"], metrics["history"]
    return {
        **{key: final[key] for key in ("val_accuracy", "val_loss", "loss", "accuracy")},
        "epochs_run": len(history["loss"]),
        "seconds": round(sum(history.get("epoch_seconds", [])), 2),
    }


def _record(study, number, returncode, timed_out, timeout):
    """Records how trial `number` ended; returns its status."""
    trial = study.trials[number]
    model_dir = trial.user_attrs["config"]["model_dir"]
    status, error, results = status_of(returncode, timed_out), "", {}
    if status == "stopped":  # still running, as far as the study knows: the rerun resumes it
        end_session(model_dir, status)  # (and removes this status when it does: `launch`)
        return status
    if timed_out:
        error = f"timed out after {timeout:g}s"
    elif status in ("failed", "diverged"):
        error = last_error(model_dir, returncode)
    elif status == "done":
        try:
            results = read_results(model_dir)
        except (OSError, ValueError, KeyError, TypeError) as e:
            status, error = "failed", f"{model_dir}/metrics.json is unreadable ({e})"
    elif trial.intermediate_values:  # pruned: its last epoch's accuracy
        # Reported by number, from 1: the last is the epochs run (docs/design.md, "Epoch numbers").
        epoch = max(trial.intermediate_values)
        results = {"val_accuracy": trial.intermediate_values[epoch], "epochs_run": epoch}
    handle(study, trial).set_user_attr("status", status)
    handle(study, trial).set_user_attr("error", error)
    handle(study, trial).set_user_attr("results", results)
    if status == "done":
        study.tell(number, results["val_accuracy"])
    else:
        study.tell(number, state=TrialState.PRUNED if status == "pruned" else TrialState.FAIL)
    end_session(model_dir, status)
    return status


def end_session(model_dir, status):
    """The trial's HParams session ends with `status` (when the run got as far as its logs)."""
    logs = Path(model_dir) / "logs"
    if logs.is_dir():
        hparams.write_summary(logs, hparams.session_end_summary(status), hparams.STATUS_SUFFIX)


def status(trial):
    """A trial's status: done, pruned, diverged, failed, stopped (to be resumed) or waiting."""
    if trial.state == TrialState.RUNNING:
        return "stopped"
    if trial.state == TrialState.WAITING:
        return "waiting"
    return trial.user_attrs.get("status") or {
        TrialState.COMPLETE: "done",
        TrialState.PRUNED: "pruned",
    }.get(trial.state, "failed")


def retried(study):
    """The numbers of the trials that a later trial retried."""
    return {t.user_attrs["retry_of"] for t in study.trials if "retry_of" in t.user_attrs}


def enqueue_retries(study):
    """A new trial with the same parameters for each failed trial not yet retried."""
    done = retried(study)
    for trial in study.trials:
        if status(trial) == "failed" and trial.number not in done and trial.params:
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def run_process(folder, number, model_dir, extra=()):
    """Runs one trial process to its end; returns its exit status. Ctrl-C or SIGTERM
    stops it (it saves a checkpoint) and raises `ExperimentStopped`."""
    process = launch(folder, number, model_dir, extra)
    received = []

    def on_signal(signal_number, frame):
        received.append(signal_number)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)

    with signals.handled(on_signal):
        returncode = process.wait()
    if received or status_of(returncode, False) == "stopped":
        raise ExperimentStopped(received[0] if received else signal.SIGTERM, 1)
    return returncode


class Runner:
    """Runs trials of `study` as `plan` says, `parallel` at a time."""

    def __init__(self, folder, study, plan, parallel=1, timeout=3600.0, report=print):
        self.folder, self.study, self.plan = Path(folder), study, plan
        self.parallel, self.timeout, self.report = parallel, timeout, report
        self.running, self.stop, self.stopped = {}, None, 0

    def _next(self, resumable):
        if resumable:
            trial = resumable.pop(0)
            if "config" not in trial.user_attrs:  # stopped between its creation and its settings
                self.plan.configure(handle(self.study, trial))
            return trial.number
        if not self.plan.wanted(self.study):
            return None
        trial = self.study.ask()
        self.plan.configure(trial)
        return trial.number

    def _start(self, number):
        config = self.study.trials[number].user_attrs["config"]
        process = launch(self.folder, number, config["model_dir"])
        self.running[number] = _Process(number, process, time.monotonic() + self.timeout)

    def _on_signal(self, number, frame):
        if not self.stop:
            self.stop, self.stopped = number, len(self.running)
        for p in list(self.running.values()):
            self._terminate(p, time.monotonic())

    def _terminate(self, p, now):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.process.pid, signal.SIGTERM)  # SIGTERM: it stops, also while starting
        p.kill_at = p.kill_at or now + STOP_GRACE_SECONDS

    def _poll(self):
        """Records the trials that ended; times out and kills the overdue ones."""
        now = time.monotonic()
        for number, p in list(self.running.items()):
            if now > p.deadline and not p.timed_out:
                p.timed_out = True
                self._terminate(p, now)
            if p.kill_at and now > p.kill_at:
                p.process.kill()
            returncode = p.process.poll()
            if returncode is None:
                continue
            del self.running[number]
            status = _record(self.study, number, returncode, p.timed_out, self.timeout)
            if status == "stopped" and not self.stop:  # the trial alone got the signal
                self._on_signal(signal.SIGTERM if returncode != 130 else signal.SIGINT, None)
            self.report(self.study.trials[number])

    def run(self):
        """Runs the trials; raises `ExperimentStopped` after a stop signal."""
        resumable = [t for t in self.study.trials if t.state == TrialState.RUNNING]
        with signals.handled(self._on_signal):
            while True:
                while not self.stop and len(self.running) < self.parallel:
                    number = self._next(resumable)
                    if number is None:
                        break
                    self._start(number)
                if not self.running:
                    break
                time.sleep(0.2)
                self._poll()
        if self.stop:
            raise ExperimentStopped(self.stop, self.stopped)
