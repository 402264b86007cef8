"""`RunConfig`: everything that defines a training run, validated in one place."""

import dataclasses
import math

from keras_mlp.data import DATASETS
from keras_mlp.distribute import STRATEGIES
from keras_mlp.errors import UserError
from keras_mlp.layers import ACTIVATIONS
from keras_mlp.models import INITIALIZERS, MODELS
from keras_mlp.training import OPTIMIZERS


def _accepted(name, value, accepted):
    if value not in accepted:
        raise UserError(f"--{name}={value!r} is not known; accepted: {', '.join(accepted)}")


def _positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise UserError(f"--{name} must be a positive integer. Received: {value!r}")


def _positive_finite(name, value):
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise UserError(f"--{name} must be a positive finite number. Received: {value!r}")


# Keras dtype policies: float32, or mixed precision (float32 weights, 16-bit math) for GPUs.
DTYPES = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One training run. Defaults are the chapter's seed: 784 -> 256 -> 10 on
    Fashion-MNIST, sigma 0.01, SGD with learning rate 0.1, batch 256, 10 epochs."""

    model: str = "scratch"
    hidden_units: tuple = (256,)
    activation: str = "relu"
    sigma: float = 0.01
    initializer: str = "default"
    optimizer: str = "sgd"
    learning_rate: float = 0.1
    batch_size: int = 256
    epochs: int = 10
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    download: bool = False
    validation_split: float = 0.0
    model_dir: str | None = None
    strategy: str = "default"
    cpu_devices: int = 2
    num_gpus: int | None = None
    worker_hosts: tuple = ()
    task_index: int | None = None
    seed: int = 0
    steps_per_execution: int = 50
    dtype: str = "float32"
    checkpoint_every_steps: int = 0
    keep_checkpoints: int = 3
    overwrite: bool = False
    deterministic: bool = False
    log_every_steps: int = 0
    histogram_freq: int = 0
    profile_steps: tuple = ()
    image_summaries: bool = False

    def __post_init__(self):
        object.__setattr__(self, "hidden_units", tuple(self.hidden_units))
        object.__setattr__(self, "worker_hosts", tuple(self.worker_hosts))
        object.__setattr__(self, "profile_steps", tuple(self.profile_steps))
        _accepted("model", self.model, MODELS)
        _accepted("activation", self.activation, ACTIVATIONS)
        _accepted("initializer", self.initializer, INITIALIZERS)
        _accepted("optimizer", self.optimizer, OPTIMIZERS)
        _accepted("dataset", self.dataset, DATASETS)
        _accepted("strategy", self.strategy, STRATEGIES)
        _accepted("dtype", self.dtype, DTYPES)
        if not self.hidden_units:
            raise UserError("--hidden_units needs at least one width")
        for width in self.hidden_units:
            _positive_int("hidden_units", width)
        for name in (
            "batch_size",
            "epochs",
            "cpu_devices",
            "steps_per_execution",
            "keep_checkpoints",
        ):
            _positive_int(name, getattr(self, name))
        for name in ("checkpoint_every_steps", "log_every_steps", "histogram_freq"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise UserError(
                    f"--{name} must be 0 (off) or a positive integer. Received: {value!r}"
                )
        if self.profile_steps and not (
            len(self.profile_steps) == 2 and 1 <= self.profile_steps[0] <= self.profile_steps[1]
        ):
            raise UserError(
                f"--profile_steps must be FIRST,LAST with 1 <= FIRST <= LAST. "
                f"Received: {','.join(map(str, self.profile_steps))}"
            )
        _positive_finite("sigma", self.sigma)
        _positive_finite("learning_rate", self.learning_rate)
        if self.num_gpus is not None and self.num_gpus < 0:
            raise UserError(f"--num_gpus must be >= 0. Received: {self.num_gpus}")

    def to_dict(self):
        return {
            **dataclasses.asdict(self),
            "hidden_units": list(self.hidden_units),
            "worker_hosts": list(self.worker_hosts),
            "profile_steps": list(self.profile_steps),
        }
