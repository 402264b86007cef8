"""The package as a user installs it: a wheel built from the source tree, installed
(not editable, no dependencies) into a fresh virtual environment, its console
scripts run from a directory outside the repository.

The new environment sees this environment's dependencies (TensorFlow, Keras, ...)
through a `.pth` file, never the repository or its editable install: the test
checks that `keras_mlp` is imported from the new environment.
"""

import csv
import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cli_util import REPO

pytestmark = pytest.mark.slow

# Each console script and a flag its --help must list.
SCRIPTS = {
    "keras-mlp-train": "--batch_size",
    "keras-mlp-launch": "--workers",
    "keras-mlp-predict": "--model_dir",
    "keras-mlp-sweep": "--sweep_dir",
    "keras-mlp-search": "--search_dir",
    "keras-mlp-benchmark": "--output_dir",
}


def _run(command, *, cwd, timeout, env):
    result = subprocess.run(
        [str(c) for c in command],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
        env=env,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def _source_files():
    """The repository's files that git tracks or would add (no virtual environments,
    build folders or runs), or None outside a git checkout."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
            capture_output=True,
            cwd=REPO,
            timeout=60,
        )
    except FileNotFoundError:  # no git
        return None
    if listed.returncode != 0 or not listed.stdout:
        return None
    return [name for name in listed.stdout.decode().split("\0") if (REPO / name).is_file()]


def _source_tree(destination):
    """A copy of the repository's source files, so the build leaves the checkout
    untouched and no stale build/ output gets into the wheel."""
    names = _source_files()
    if names is None:
        shutil.copytree(
            REPO,
            destination,
            ignore=shutil.ignore_patterns(
                ".git", ".venv", ".ci-venv", "build", "dist", "runs", "*.egg-info", "__pycache__"
            ),
        )
        return destination
    for name in names:
        (destination / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, destination / name)
    return destination


def _environment():
    """This process's environment without anything that would put the repository
    (or another site) on the new interpreter's path."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env.pop("VIRTUAL_ENV", None)
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def test_wheel_installs_and_its_console_scripts_run_outside_the_repository(tmp_path):
    env = _environment()
    source = _source_tree(tmp_path / "source")
    wheels = tmp_path / "wheels"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--quiet",
            "--wheel-dir",
            wheels,
            source,
        ],
        cwd=tmp_path,
        timeout=300,
        env=env,
    )
    (wheel,) = wheels.glob("keras_mlp-*.whl")
    # Every module of the package is in the wheel, and nothing else of the repository.
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    modules = sorted(n for n in names if n.endswith(".py"))
    assert modules == sorted(
        p.relative_to(source).as_posix() for p in (source / "keras_mlp").rglob("*.py")
    )
    assert {n.split("/")[0] for n in names} == {
        "keras_mlp",
        wheel.name.split("-py")[0] + ".dist-info",
    }

    # A fresh environment; the wheel installed into it, not editable, no dependencies.
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path, timeout=120, env=env)
    python = venv / "bin" / "python"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            python,
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            wheel,
        ],
        cwd=tmp_path,
        timeout=300,
        env=env,
    )
    # Then this environment's site-packages behind its own (a path .pth line; the .pth
    # files there, such as the editable keras_mlp's finder, are not processed).
    new_site = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        cwd=tmp_path,
        timeout=60,
        env=env,
    ).stdout.strip()
    ours = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()["purelib"]])
    (Path(new_site) / "outer_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))

    work = tmp_path / "work"  # outside the repository
    work.mkdir()
    located = _run(
        [python, "-c", "import keras_mlp, tensorflow, optuna; print(keras_mlp.__file__)"],
        cwd=work,
        timeout=120,
        env=env,
    ).stdout.strip()
    assert Path(located).resolve().is_relative_to(venv.resolve()), located
    assert not Path(located).resolve().is_relative_to(REPO.resolve())

    # Every console script's --help, two at a time.
    def help_of(script):
        return script, subprocess.run(
            [str(venv / "bin" / script), "--help"],
            capture_output=True,
            text=True,
            cwd=work,
            timeout=180,
            env=env,
        )

    with ThreadPoolExecutor(max_workers=2) as pool:
        helps = dict(pool.map(help_of, SCRIPTS))
    for script, flag in SCRIPTS.items():
        result = helps[script]
        assert result.returncode == 0, f"{script} --help:\n{result.stderr}"
        assert f"  {flag}" in result.stdout, f"{script} --help:\n{result.stdout}"
        assert "Traceback" not in result.stderr

    # A 1-epoch synthetic sweep of 2 trials; each trial is `python -m keras_mlp.trial`
    # of the installed package.
    sweep = subprocess.run(
        [
            venv / "bin" / "keras-mlp-sweep",
            "--sweep_dir=sweep",
            "--grid=hidden_units=8,16",
            "--",
            "--dataset=synthetic",
            "--epochs=1",
            "--batch_size=64",
        ],
        capture_output=True,
        text=True,
        cwd=work,
        timeout=600,
        env=env,
    )
    assert sweep.returncode == 0, sweep.stdout + sweep.stderr
    with open(work / "sweep" / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["hidden_units"], r["status"]) for r in rows) == [
        ("16", "done"),
        ("8", "done"),
    ]
    assert sorted(r["trial"] for r in rows) == ["trial-000", "trial-001"]
    for r in rows:
        metrics = json.loads((work / "sweep" / r["trial"] / "metrics.json").read_text())
        assert metrics["final"]["epochs"] == 1
        assert metrics["config"]["hidden_units"] == [int(r["hidden_units"])]
        assert (work / "sweep" / r["trial"] / "export" / "saved_model.pb").exists()
