"""The rules of a model_dir: one run per directory, resumed or reported, never
silently replaced.

A run writes `run_config.json` when it starts and `metrics.json` when it ends.
Rerunning the same command on its model_dir resumes an unfinished run and
reports a finished one; another config there is refused; `overwrite` is the
only way to replace a run's outputs.
"""

import json
import os
import shutil
from pathlib import Path

from keras_mlp.errors import UserError
from keras_mlp.reporting import write_json

RUN_CONFIG = "run_config.json"
# Everything a run may leave behind, removed by --overwrite.
RUN_OUTPUTS = (
    RUN_CONFIG,
    "metrics.json",
    "model.keras",
    "progress.png",
    "logs",
    "checkpoints",
    "export",
)
NEW, RESUME, COMPLETE = "new", "resume", "complete"


def inspect(model_dir, config):
    """What `config` means for `model_dir`: `NEW`, `RESUME` or `COMPLETE`. Reads only.

    Raises:
        UserError: when the directory holds a run with other settings, or
            outputs that no run_config.json explains.
    """
    model_dir = Path(model_dir)
    saved = model_dir / RUN_CONFIG
    if not saved.exists():
        leftovers = [name for name in RUN_OUTPUTS if (model_dir / name).exists()]
        if leftovers:
            raise UserError(
                f"model_dir={model_dir} holds {', '.join(leftovers)} but no {RUN_CONFIG}; "
                "choose another model_dir or set overwrite=True"
            )
        return NEW
    try:
        old = json.loads(saved.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{saved} is unreadable ({e}); set overwrite=True to start over") from None
    differences = config.differences(old)
    if differences:
        raise UserError(
            f"model_dir={model_dir} holds a run with other settings ({'; '.join(differences)}); "
            "choose another model_dir or set overwrite=True"
        )
    return COMPLETE if (model_dir / "metrics.json").exists() else RESUME


def prepare(model_dir, config):
    """Makes `model_dir` ready to write (removing an old run under `--overwrite`)
    and records the run's config."""
    model_dir = Path(model_dir)
    try:
        if config.overwrite:
            for name in RUN_OUTPUTS:
                path = model_dir / name
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
        model_dir.mkdir(parents=True, exist_ok=True)
        probe = model_dir / f".write_test.{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(f"model_dir={model_dir} is not writable ({e.strerror or e})") from None
    if not (model_dir / RUN_CONFIG).exists():
        write_json(model_dir / RUN_CONFIG, config.to_dict())
