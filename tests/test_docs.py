"""Documentation that runs: every fenced `python` and `bash` block of README.md and
docs/*.md, run as a user would run it, in a fresh folder laid out as a user's.

The user's folder (one per block, fresh):
- `<tmp>/work/keras_mlp/`: the checkout's tracked files (symlinks), the working
  directory of every block; `runs/` and other outputs land there;
- `<tmp>/work/shared/data/fashion-mnist`: the real Fashion-MNIST (a symlink to
  $KERAS_MLP_FASHION_MNIST_DIR), so the `../shared/data/fashion-mnist` the text names
  resolves; without the variable every block is skipped;
- a keras cache (`$KERAS_HOME`) holding Fashion-MNIST, as "Data: where it comes from"
  tells an offline user to fill it: commands without `--data_dir` find the data there
  (the tests have no network); an empty `$TFDS_DATA_DIR`;
- `shirt.png` and `photo.jpg`: a user's own images, which the predict example names;
- this interpreter's folder first on PATH (`python`, `pip`, `keras-mlp-*`,
  `tensorboard`), and this checkout on PYTHONPATH: the package is installed.

A block runs verbatim (`bash -e -o pipefail`, or `python block.py`), except for the
substitutions in `BASH_RULES` and `PYTHON_RULES` below, each with its reason; a
bash line continued with a backslash is joined first, as bash joins it. A block marked
`<!-- docs-test: skip (reason) -->` is skipped with that reason (see docs_blocks.py).
Running a block is the slow tier; the fast tier checks the blocks, the marks and the
substitution table without running anything.
"""

import json
import os
import re
import shlex
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
from docs_blocks import REPO, all_blocks, extract
from PIL import Image

from keras_mlp.launch import free_ports

BLOCKS = all_blocks()
DATA = os.environ.get("KERAS_MLP_FASHION_MNIST_DIR")
FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
BLOCK_TIMEOUT = 420  # seconds; the longest block (the benchmark) takes about a minute


class Rule(NamedTuple):
    """A substitution: where `pattern` matches a command, `append` goes at the end of
    the command (which must end its line), or `replace` replaces the match."""

    pattern: str
    reason: str
    append: str | None = None
    replace: str | None = None


BASH_RULES = {
    "pip install": Rule(
        r'pip install -e (?:"[^"]*"|\S+)',
        "the package is installed already (this checkout, on PYTHONPATH); reinstalling "
        "needs the network and a minute",
        replace="true",
    ),
    "pytest": Rule(
        r"\bpython -m pytest\b",
        "running the test suite inside a test runs this test again and takes minutes: "
        "collecting checks the command and that every test module imports",
        append="--collect-only -q",
    ),
    "one epoch": Rule(
        r"(scripts/train\.py|keras-mlp-train|-m keras_mlp\.train|scripts/launch_local\.py)\b",
        "10-30 epochs take minutes; one runs the same code and writes every output "
        "(later flags win; the launcher passes it to every worker)",
        append="--epochs=1",
    ),
    "sweep": Rule(
        r"(scripts/sweep\.py)",
        "a sweep is 5-45 trials of 10-20 epochs: --dry_run checks every trial's flags "
        "(the flagfiles, the grid) and prints its command; tests/test_sweep.py trains sweeps",
        replace=r"\1 --dry_run",
    ),
    "search": Rule(
        r"scripts/search\.py",
        "40 trials take 20 minutes: two of one epoch, narrow, then the retraining of the "
        "best, run the same code (a continued study continues to 2 trials)",
        append="--trials=2 --max_epochs=1 --widths=128",
    ),
    "benchmark train": Rule(
        r"scripts/benchmark\.py train\b",
        "one round of one measured epoch: ours (concise) and the bare loop",
        append="--epochs=1 --rounds=1 --models=concise --contenders=ours,tf_loop",
    ),
    "benchmark scaling": Rule(
        r"scripts/benchmark\.py scaling\b",
        "one width, one depth, two steps",
        append="--widths=64 --depths=1 --steps=2",
    ),
    "benchmark matmul": Rule(
        r"scripts/benchmark\.py matmul\b",
        "one small matmul and a 1 MiB copy",
        append="--sizes=64 --bandwidth_mb=1",
    ),
}
# A server does not end: the test starts it for the block's duration on a free port
# (not 6006, which another one may hold), then checks that it serves every run of
# its --logdir that the block wrote, and stops it.
SERVER = re.compile(r"^tensorboard\s")

PYTHON_RULES = {
    "RunConfig epochs": Rule(
        r"RunConfig\(",
        "10 epochs on the real data take a minute on a busy machine; one runs the same code",
        replace="RunConfig(epochs=1, ",
    ),
    "Trainer epochs": Rule(
        r"(Trainer\(\s*)epochs=\d+",
        "up to 30 epochs; one runs the same code (early stopping included)",
        replace=r"\1epochs=1",
    ),
}


def _split_comment(line):
    """`(code, comment)`: a trailing `# ...` outside quotes, with its leading spaces."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            start = len(line[:i].rstrip())
            return line[:start], line[start:]
    return line, ""


def _apply(rules, code, used):
    for name, rule in rules.items():
        match = re.search(rule.pattern, code)
        if not match:
            continue
        used.add(name)
        if rule.replace is not None:
            code = re.sub(rule.pattern, rule.replace, code)
        else:
            rest = code[match.end() :]
            if re.search(r"&&|\|\||[;|&]", rest):
                raise ValueError(f"substitution {name!r} needs its command last: {code!r}")
            code = f"{code.rstrip()} {rule.append}"
    return code


def bash_script(text, used=None):
    """`(script, servers)`: the block with the substitutions made, and the commands
    of the servers the test starts beside it (each with a free `--port`)."""
    used = set() if used is None else used
    lines, servers = [], []
    for line in text.replace("\\\n", " ").splitlines():
        code, comment = _split_comment(line)
        if SERVER.match(code):
            used.add("tensorboard")
            servers.append([*shlex.split(code), f"--port={free_ports(1)[0]}"])
            lines.append(f": started by the test: {code}")
            continue
        lines.append(_apply(BASH_RULES, code, used) + comment)
    return "\n".join(lines) + "\n", servers


def python_script(text, used=None):
    return _apply(PYTHON_RULES, text, set() if used is None else used)


# --- the fast tier: blocks, marks and substitutions, nothing run ------------------------


def test_every_markdown_file_has_blocks_and_few_are_marked_not_to_run():
    files = {b.path for b in BLOCKS}
    assert {"README.md", "docs/exercises.md"} <= files, files
    skipped = [b for b in BLOCKS if b.skip]
    print(f"{len(BLOCKS)} blocks, {len(skipped)} marked not to run")
    assert len(skipped) <= 2, [b.id for b in skipped]  # a mark is rare
    assert all(len(b.skip) > 10 for b in skipped)  # and says why


def test_runnable_blocks_name_real_paths_not_placeholders():
    for block in BLOCKS:
        if not block.skip:
            assert not re.search(r"\bDIR\b|=\.\.\.", block.text), block.id


def test_every_substitution_is_used_by_some_block():
    used = set()
    for block in BLOCKS:
        if block.skip:
            continue
        if block.language == "bash":
            bash_script(block.text, used)
        else:
            python_script(block.text, used)
    assert used == {*BASH_RULES, *PYTHON_RULES, "tensorboard"}, used


def test_substitutions_keep_comments_and_refuse_a_command_that_is_not_last():
    script, servers = bash_script(
        "# train\n"
        "python scripts/train.py --flagfile=configs/concise.flags \\\n"
        "  --epochs=20   # later flags win\n"
        "tensorboard --logdir runs --host 127.0.0.1   # then open it\n"
        'pip install -e ".[test]" && python -m pytest\n'
    )
    lines = script.splitlines()
    assert lines[0] == "# train"
    assert lines[1].endswith("--epochs=20 --epochs=1   # later flags win")
    assert lines[2].startswith(": started by the test: tensorboard")
    assert lines[3] == "true && python -m pytest --collect-only -q"
    assert servers[0][:3] == ["tensorboard", "--logdir", "runs"]
    assert servers[0][-1].startswith("--port=")
    with pytest.raises(ValueError, match="needs its command last"):
        bash_script("python scripts/train.py --epochs=3 && echo done\n")


def test_marks_are_checked():
    text = "<!-- docs-test: skip (needs two hosts) -->\n\n```bash\nls\n```\n```python\nx = 1\n```\n"
    blocks = extract(text)
    assert [(b.line, b.language, b.skip) for b in blocks] == [
        (3, "bash", "needs two hosts"),
        (6, "python", None),
    ]
    for bad in (
        "<!-- docs-test: skip -->\n```bash\nls\n```\n",  # no reason
        "<!-- docs-test: skip (x) -->\nsome text\n```bash\nls\n```\n",  # not before
        "<!-- docs-test: skip (x) -->\n```\noutput\n```\n",  # not a run block
        "```bash\nls\n",  # unclosed
    ):
        with pytest.raises(ValueError):
            extract(bad)


# --- the slow tier: every block, run ------------------------------------------------------


def _tracked_names():
    """The checkout's top-level entries that a clone of it has."""
    try:
        listed = subprocess.run(
            ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.split()
        return sorted({path.split("/")[0] for path in listed})
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        return sorted(p.name for p in REPO.iterdir() if p.name not in ("runs", ".git"))


@pytest.fixture
def user_folder(tmp_path):
    """`(folder, env)`: a user's checkout with the data beside it (see the module doc)."""
    if not DATA:
        pytest.skip("needs the real Fashion-MNIST: set KERAS_MLP_FASHION_MNIST_DIR")
    folder = tmp_path / "work" / "keras_mlp"
    folder.mkdir(parents=True)
    for name in _tracked_names():
        (folder / name).symlink_to(REPO / name)
    data = tmp_path / "work" / "shared" / "data" / "fashion-mnist"
    data.parent.mkdir(parents=True)
    data.symlink_to(Path(DATA).resolve())
    cache = tmp_path / "keras_home" / "datasets" / "fashion-mnist"
    cache.mkdir(parents=True)
    for name in FASHION_FILES:
        (cache / name).symlink_to(Path(DATA).resolve() / name)
    (tmp_path / "tfds").mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(folder / "shirt.png")
    Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(folder / "photo.jpg")
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("KERAS_MLP_FASHION_MNIST_DIR", "PYTHONPATH", "TF_CONFIG")
    }
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=str(REPO),
        KERAS_HOME=str(tmp_path / "keras_home"),
        TFDS_DATA_DIR=str(tmp_path / "tfds"),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    return folder, env


def _flag_value(command, flag):
    """The value of `flag` in `command`, given as `flag=value` or `flag value`."""
    for i, arg in enumerate(command):
        if arg == flag:
            return command[i + 1]
        if arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    raise ValueError(f"{shlex.join(command)} has no {flag}")


class _Server:
    """A server command of a block, run beside it."""

    def __init__(self, command, folder, env):
        self.command, self.folder = command, folder
        self.port = int(command[-1].removeprefix("--port="))
        self.logdir = folder / _flag_value(command, "--logdir")
        self.process = subprocess.Popen(  # bounded even if this test process dies
            ["timeout", str(BLOCK_TIMEOUT + 180), *command],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def runs(self):
        url = f"http://127.0.0.1:{self.port}/data/runs"
        with urllib.request.urlopen(url, timeout=30) as response:
            return set(json.loads(response.read()))

    def check_serves_what_was_written(self):
        written = {
            str(p.parent.relative_to(self.logdir))
            for p in self.logdir.rglob("events.out.tfevents.*")
        }
        end, listed = time.monotonic() + 120, None
        while time.monotonic() < end:
            try:
                listed = self.runs()
                if written <= listed:
                    return
            except OSError:
                assert self.process.poll() is None, f"{self.command} exited"
            time.sleep(1)
        raise AssertionError(f"{shlex.join(self.command)} serves {listed}, not all of {written}")

    def stop(self):
        self.process.terminate()  # `timeout` passes it on to the server
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def _run(block, folder, env):
    if block.language == "python":
        (folder / "block.py").write_text(python_script(block.text))
        command, servers = [sys.executable, "block.py"], []
    else:
        script, servers = bash_script(block.text)
        (folder / "block.sh").write_text(script)
        command = ["bash", "-e", "-o", "pipefail", "block.sh"]
    started = [_Server(s, folder, env) for s in servers]
    try:
        result = subprocess.run(
            command,
            cwd=folder,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=BLOCK_TIMEOUT,
        )
        assert result.returncode == 0, (
            f"{block.id} exited {result.returncode}; ran:\n"
            f"{(folder / command[-1]).read_text()}\noutput (end):\n{result.stdout[-4000:]}"
        )
        for server in started:
            server.check_serves_what_was_written()
    finally:
        for server in started:
            server.stop()
    return result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_block(block, request):
    if block.skip:
        pytest.skip(f"marked in the text: {block.skip}")
    folder, env = request.getfixturevalue("user_folder")
    _run(block, folder, env)
