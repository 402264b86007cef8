"""The oneDNN setting the tools choose before TensorFlow starts: who decides, that
TensorFlow really starts with it, and that a run says and records it."""

import json
import os
import subprocess
import sys

import pytest

from keras_mlp import process


@pytest.mark.parametrize(
    "setting, environment, expected",
    [
        ("auto", None, None),  # TensorFlow's default
        ("auto", "1", "1"),  # the environment's own value stands
        ("on", "0", "1"),  # an explicit setting wins
        ("off", "1", "0"),
        ("on", None, "1"),
    ],
)
def test_an_explicit_setting_then_the_environment_then_the_tools_choice(
    setting, environment, expected
):
    environ = {} if environment is None else {process.ONEDNN: environment}
    assert process.choose(setting, environ) == expected
    assert environ == ({} if expected is None else {process.ONEDNN: expected})


def _train(tmp_path, *flags):
    environ = {k: v for k, v in os.environ.items() if k != process.ONEDNN}
    model_dir = tmp_path / "run"
    result = subprocess.run(
        [sys.executable, "-m", "keras_mlp.train", "--dataset=synthetic", "--epochs=1"]
        + [f"--model_dir={model_dir}", *flags],
        capture_output=True,
        text=True,
        timeout=300,
        env=environ,
    )
    assert result.returncode == 0, result.stderr
    metrics = json.loads((model_dir / "metrics.json").read_text())
    return result.stdout.splitlines()[0], metrics["process"]


@pytest.mark.parametrize(
    "flags, line, record",
    [
        ((), "oneDNN on (TensorFlow's default", {process.ONEDNN: "unset", "onednn_enabled": None}),
        (
            ("--onednn=off",),
            "oneDNN off (TF_ENABLE_ONEDNN_OPTS=0",
            {process.ONEDNN: "0", "onednn_enabled": False},
        ),
    ],
)
def test_a_run_starts_tensorflow_with_the_setting_says_it_and_records_it(
    tmp_path, flags, line, record
):
    first_line, recorded = _train(tmp_path, *flags)
    assert line in first_line
    if record["onednn_enabled"] is None:  # TensorFlow's default, which depends on the CPU
        record = {**record, "onednn_enabled": recorded.get("onednn_enabled")}
        assert isinstance(record["onednn_enabled"], bool)
    assert recorded == record  # onednn_enabled: TensorFlow's own answer
