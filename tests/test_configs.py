"""Every flagfile under configs/ is read by the tool it belongs to, and its settings
checked, as that tool checks them before it starts: the training runs (scratch, concise,
best, and the sweeps' base files) by keras-mlp-train, the sweeps by keras-mlp-sweep
--dry_run, the searches by keras-mlp-search. Nothing trains: the tools are called in
this process with their work replaced by a recorder (fast tier)."""

import types

import pytest
from cli_util import CONFIGS, REPO, error_lines, run_main

import keras_mlp.run
from keras_mlp import search, sweep, train

FLAGFILES = sorted(CONFIGS.rglob("*.flags"))


def tool_of(path):
    """The tool a flagfile under configs/ is written for."""
    if path.name.startswith("search"):
        return "search"
    if path.parent.name == "sweeps" and not path.name.startswith("base_"):
        return "sweep"
    return "train"  # scratch, concise, best; a sweep's base file holds training flags


@pytest.fixture
def tools(monkeypatch):
    """`check(tool, flagfile)`: runs the tool on the flagfile in the repository root (the
    files name each other by relative path), stopping where its work would start;
    returns the Result and what reached that point."""
    monkeypatch.chdir(REPO)
    reached = []

    def fake_train(config):
        reached.append(config)
        return types.SimpleNamespace(history=None)

    def fake_search(search_dir, base, num_trials, max_epochs, *args, **kwargs):
        search._check_base(base, max_epochs)  # run_search's first step: the base's checks
        reached.append(base)

    monkeypatch.setattr(keras_mlp.run, "train", fake_train)
    monkeypatch.setattr(search, "run_search", fake_search)

    def check(tool, flagfile):
        if tool == "sweep":
            result = run_main(sweep.main, f"--flagfile={flagfile}", "--dry_run")
            if result.returncode == 0:
                reached.append(result.stdout)
        else:
            result = run_main(
                {"train": train, "search": search}[tool].main, f"--flagfile={flagfile}"
            )
        return result, list(reached)

    return check


def test_the_configs_folder_has_each_kind_of_flagfile():
    kinds = {tool_of(path) for path in FLAGFILES}
    assert kinds == {"train", "sweep", "search"}, FLAGFILES
    assert {"scratch.flags", "concise.flags", "best.flags"} <= {p.name for p in FLAGFILES}


@pytest.mark.parametrize(
    "flagfile", FLAGFILES, ids=[str(p.relative_to(CONFIGS)) for p in FLAGFILES]
)
def test_every_flagfile_is_accepted_by_its_tool(tools, flagfile):
    result, reached = tools(tool_of(flagfile), flagfile)
    assert result.returncode == 0, result.stderr
    assert error_lines(result) == []
    assert len(reached) == 1  # the tool got as far as its work
    if tool_of(flagfile) == "sweep":
        assert "; none run" in reached[0]


@pytest.mark.parametrize(
    "tool, lines, message",
    [
        (
            "train",
            ["--model=concise", "--hidden_unit=64"],
            "Unknown command line flag 'hidden_unit'",
        ),
        ("train", ["--model=concise", "--dropout=1.5"], "--dropout=1.5 must be in [0, 1)"),
        ("train", ["--optimizer=sgdd"], "flag --optimizer=sgdd: value should be one of"),
        (
            "search",
            ["--search_dir=runs/s", "--validation_split=0.1", "--optimizers=lion"],
            "--optimizers takes sgd and/or adam",
        ),
        ("search", ["--search_dir=runs/s", "--validation_split=0"], "give --validation_split > 0"),
        (
            "sweep",
            ["--sweep_dir=runs/w", "--grid=learning_rate=0.1,-1"],
            "--learning_rate=-1.0 must be",
        ),
        (
            "sweep",
            ["--sweep_dir=runs/w", "--grid=hidden_units=8", "--base_flagfile={base}"],
            "Unknown command line flag 'bogus'",
        ),
    ],
)
def test_a_flagfile_with_an_unknown_flag_or_a_bad_value_fails_this_check(
    tools, tmp_path, tool, lines, message
):
    """The check above has teeth: the same call refuses a broken flagfile of each kind."""
    base = tmp_path / "base_broken.flags"
    base.write_text("--flagfile=configs/scratch.flags\n--bogus=1\n")
    flagfile = tmp_path / "broken.flags"
    flagfile.write_text("\n".join(line.format(base=base) for line in lines) + "\n")
    result, reached = tools(tool, flagfile)
    assert result.returncode == 2, result
    assert message in error_lines(result)[0]
    assert reached == []
