"""`RunConfig`: every setting of a training run, declared once.

Each field carries its help text and how the command line reads it, so the
flags are derived from this class (`keras_mlp.cli`) and never listed twice.
Building a config imports no TensorFlow. Each value is checked when the config is
built, with the functions of `keras_mlp.checks` that the layers, models and
pipelines taking it call too. Errors name Python arguments (`batch_size=33`); the
command line shows them as flags.
"""

import dataclasses

from keras_mlp.checks import (
    check_accepted,
    check_fraction,
    check_non_negative_finite,
    check_positive_finite,
    check_positive_int,
    check_profile_steps,
    dropout_rates,
)
from keras_mlp.errors import UserError
from keras_mlp.names import (
    ACTIVATIONS,
    CLUSTER_TIMEOUT,
    DATASETS,
    DTYPES,
    INITIALIZERS,
    LR_SCHEDULES,
    MODELS,
    ONEDNN_SETTINGS,
    OPTIMIZERS,
    STEPS_PER_EXECUTION,
    STRATEGIES,
)


def setting(default, help, *, choices=None, type=None, compared=True):
    """A config field with its flag's help text.

    Args:
        default: The value when nothing is given (the chapter's seed run).
        help: The flag's help text.
        choices: The accepted names, for a name-valued setting.
        type: The value (or, for a tuple, item) type when `default` does not show it.
        compared: Whether a resumed run must have the same value (settings of
            where or how fast a run goes may change between resumes).
    """
    metadata = {"help": help, "choices": choices, "type": type, "compared": compared}
    return dataclasses.field(default=default, metadata=metadata)


# numpy's and Keras' seeds are unsigned 32-bit integers.
MAX_SEED = 2**32 - 1


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """One training run. Defaults are the chapter's seed: 784 -> 256 -> 10 on
    Fashion-MNIST, sigma 0.01, SGD with learning rate 0.1, batch 256, 10 epochs."""

    # The model.
    model: str = setting(
        "scratch",
        "scratch: explicit W1, b1, W2, b2 and a hand-written ReLU; concise: keras.Sequential.",
        choices=MODELS,
    )
    hidden_units: tuple = setting(
        (256,),
        "Comma-separated widths of the hidden layers, input side first, e.g. 256 or 512,256.",
        type=int,
    )
    activation: str = setting(
        "relu",
        "Hidden-layer activation (relu is hand-written in the scratch model).",
        choices=ACTIVATIONS,
    )
    sigma: float = setting(0.01, "Std. dev. of the scratch model's normal weight initialisation.")
    initializer: str = setting(
        "default",
        "Kernel initialisation; default: N(0, sigma^2) for scratch, Glorot uniform for concise.",
        choices=INITIALIZERS,
    )
    dropout: tuple = setting(
        (0.0,),
        "Dropout rate after each hidden activation (scratch: hand-written; concise: "
        "keras.layers.Dropout): one rate for all hidden layers or one per hidden layer, "
        "e.g. 0.2 or 0.2,0.5; each in [0, 1); 0: none.",
        type=float,
    )
    # The optimisation.
    optimizer: str = setting("sgd", "Keras optimizer.", choices=OPTIMIZERS)
    learning_rate: float = setting(0.1, "Learning rate (a positive finite number).")
    weight_decay: float = setting(
        0.0,
        "Weight decay (>= 0; 0: off) of the kernels, not the biases. scratch: the L2 penalty "
        "weight_decay/2 * sum ||W||^2 added to the training loss; concise: decoupled decay "
        "in the optimizer (as AdamW). The same for SGD, not for adaptive optimizers. The "
        "reported loss is the cross-entropy alone.",
    )
    lr_schedule: str = setting(
        "constant",
        "Learning rate per training step: constant; cosine (to 0 at the last step); "
        "exponential (to 1% of it); step (divided by 10 at 1/2 and again at 3/4 of training).",
        choices=LR_SCHEDULES,
    )
    warmup_epochs: int = setting(
        0,
        "Epochs of linear warm-up from 0 to the learning rate before the schedule (0: none).",
    )
    reduce_lr_on_plateau: int = setting(
        0,
        "Divide the learning rate by 10 when the validation loss has not improved for N "
        "epochs (keras.callbacks.ReduceLROnPlateau; 0: off). Needs --lr_schedule=constant "
        "and no warm-up.",
    )
    batch_size: int = setting(256, "Global batch size, split across all replicas.")
    epochs: int = setting(10, "Number of training epochs.")
    early_stopping_patience: int = setting(
        0,
        "Stop when the validation loss has not improved for N epochs (0: off); "
        "a run that stops early is complete.",
    )
    divergence_factor: float = setting(
        100.0,
        "Stop (exit 1) when the running training loss exceeds this multiple of the first "
        "step's loss; 0: stop on non-finite loss or weights only.",
        compared=False,
    )
    seed: int = setting(0, "Seed for weights, data order and the validation hold-out.")
    dtype: str = setting(
        "float32",
        "Keras dtype policy; the mixed ones keep float32 weights and compute in 16 bits "
        "(for GPUs; mixed_float16 adds loss scaling).",
        choices=DTYPES,
    )
    # The data.
    dataset: str = setting(
        "fashion_mnist",
        "fashion_mnist, mnist, cifar10 (colour 32x32x3): keras.datasets' files, downloaded once "
        "into the keras cache and verified; kmnist, emnist/letters: tensorflow-datasets "
        "(a prepared copy, or --download); synthetic: small, for smoke runs.",
        choices=DATASETS,
    )
    data_dir: str | None = setting(
        None,
        "Directory holding four IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, "
        "t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz): any image set, used as it is. "
        "Default: the keras cache ($KERAS_HOME/datasets), then a prepared tensorflow-datasets "
        "copy ($TFDS_DATA_DIR), then a download.",
        type=str,
        compared=False,
    )
    download: bool = setting(
        False,
        "Let tensorflow-datasets download and prepare kmnist or emnist/letters when no prepared "
        "copy is found (needs the internet). fashion_mnist, mnist and cifar10 download through "
        "keras.datasets without it.",
        compared=False,
    )
    validation_split: float = setting(
        0.0,
        "Fraction of the training set held out for validation; 0 validates on the test split.",
    )
    random_flip: bool = setting(
        False,
        "Augment the training images: mirror each left-right with probability 1/2, drawn "
        "anew every epoch (label-preserving for clothing and objects, not digits or letters).",
    )
    random_shift: int = setting(
        0,
        "Augment the training images: shift each by up to N pixels along each axis, drawn "
        "anew every epoch, the uncovered border zero (0: off).",
    )
    random_erase: int = setting(
        0,
        "Augment the training images: with probability 1/2, zero a rectangle of 1..N by 1..N "
        "pixels at a random place in each, drawn anew every epoch (random erasing; 0: off).",
    )
    # Where and how the run goes.
    model_dir: str | None = setting(
        None,
        "Output directory (logs/, metrics.json, progress.png, model.keras). "
        "Default: runs/<model>-<time>.",
        type=str,
        compared=False,
    )
    strategy: str = setting(
        "default",
        "tf.distribute strategy: default, one_device, mirrored (all local GPUs, else "
        "--cpu_devices CPUs), or multi_worker_mirrored (a cluster from TF_CONFIG or "
        "--worker_hosts/--task_index).",
        choices=STRATEGIES,
        compared=False,
    )
    cpu_devices: int = setting(
        2, "Logical CPU devices for --strategy=mirrored without GPUs.", compared=False
    )
    num_gpus: int | None = setting(
        None, "Local GPUs to use (default: all).", type=int, compared=False
    )
    worker_hosts: tuple = setting(
        (),
        "multi_worker_mirrored without TF_CONFIG: comma-separated host:port of every worker, "
        "the same list on each.",
        type=str,
        compared=False,
    )
    task_index: int | None = setting(
        None,
        "multi_worker_mirrored: this worker's index in --worker_hosts; 0 is the chief.",
        type=int,
        compared=False,
    )
    cluster_timeout: int = setting(
        CLUSTER_TIMEOUT,
        "multi_worker_mirrored: seconds to wait for every worker of the cluster to answer; "
        "then (or on Ctrl-C/SIGTERM meanwhile) the worker stops with one error line.",
        compared=False,
    )
    steps_per_execution: int = setting(
        STEPS_PER_EXECUTION,
        "Training steps per tf.function call (fewer Python round trips; a chunk of steps is "
        "also how often the progress bar moves and Ctrl-C is answered).",
        compared=False,
    )
    checkpoint_every_steps: int = setting(
        0,
        "Checkpoint every N training steps as well as at every epoch end (0: epoch ends only).",
        compared=False,
    )
    keep_checkpoints: int = setting(3, "How many checkpoints to keep.", compared=False)
    overwrite: bool = setting(
        False,
        "Replace the run in --model_dir; without it a finished run is reported, an unfinished "
        "one resumed, and one with other settings refused.",
        compared=False,
    )
    onednn: str = setting(
        "auto",
        "TensorFlow's oneDNN CPU kernels (TF_ENABLE_ONEDNN_OPTS, read when TensorFlow "
        "starts): on, off, or auto: the environment's TF_ENABLE_ONEDNN_OPTS, else "
        "TensorFlow's default (on). Off is faster for the chapter's 784-256-10, on for "
        "1024-wide layers (README, Performance).",
        choices=ONEDNN_SETTINGS,
        compared=False,
    )
    deterministic: bool = setting(
        False,
        "Enable TensorFlow op determinism and pin thread counts: same command, same machine, "
        "bitwise the same weights.",
        compared=False,
    )
    # TensorBoard extras.
    log_every_steps: int = setting(
        0,
        "TensorBoard: log the training loss and accuracy averaged over every N steps (0: off).",
        compared=False,
    )
    histogram_freq: int = setting(
        0,
        "TensorBoard: histograms of every weight and its gradient every N epochs (0: off).",
        compared=False,
    )
    profile_steps: tuple = setting(
        (),
        "TensorBoard: FIRST,LAST training steps to trace with the profiler (Profile tab).",
        type=int,
        compared=False,
    )
    image_summaries: bool = setting(
        False,
        "TensorBoard: validation predictions and the confusion matrix as images, every epoch.",
        compared=False,
    )

    def __post_init__(self):
        self._make_tuples()
        for field in dataclasses.fields(self):
            if field.metadata["choices"]:
                check_accepted(field.name, getattr(self, field.name), field.metadata["choices"])
        if not self.hidden_units:
            raise UserError("hidden_units=() needs at least one width")
        for width in self.hidden_units:
            check_positive_int("hidden_units", width)
        for name in (
            "batch_size",
            "epochs",
            "cpu_devices",
            "steps_per_execution",
            "cluster_timeout",
        ):
            check_positive_int(name, getattr(self, name))
        check_positive_int("keep_checkpoints", self.keep_checkpoints)
        for name in (
            "checkpoint_every_steps",
            "log_every_steps",
            "histogram_freq",
            "early_stopping_patience",
            "warmup_epochs",
            "reduce_lr_on_plateau",
            "random_shift",
            "random_erase",
        ):
            check_positive_int(name, getattr(self, name), zero_allowed=True)
        if not (isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED):
            raise UserError(f"seed={self.seed!r} must be an integer in 0..{MAX_SEED}")
        if self.profile_steps:
            check_profile_steps("profile_steps", self.profile_steps)
        check_non_negative_finite("divergence_factor", self.divergence_factor)
        check_positive_finite("sigma", self.sigma)
        check_positive_finite("learning_rate", self.learning_rate)
        check_fraction("validation_split", self.validation_split)
        if self.num_gpus is not None:
            check_positive_int("num_gpus", self.num_gpus, zero_allowed=True)
        self._check_regularisation_and_schedule()

    def _make_tuples(self):
        if not isinstance(self.dropout, (list, tuple)):  # one number for every hidden layer
            object.__setattr__(self, "dropout", (self.dropout,))
        for name in ("hidden_units", "worker_hosts", "profile_steps", "dropout"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    def _check_regularisation_and_schedule(self):
        dropout_rates(self.dropout, self.hidden_units)
        check_non_negative_finite("weight_decay", self.weight_decay)
        if self.warmup_epochs and self.warmup_epochs >= self.epochs:
            raise UserError(
                f"warmup_epochs={self.warmup_epochs} must be smaller than epochs={self.epochs}"
            )
        if self.reduce_lr_on_plateau and self.lr_schedule != "constant":
            raise UserError(
                f"reduce_lr_on_plateau={self.reduce_lr_on_plateau} cannot be combined with "
                f"lr_schedule={self.lr_schedule!r}: the schedule sets the learning rate"
            )
        if self.reduce_lr_on_plateau and self.warmup_epochs:
            raise UserError(
                f"reduce_lr_on_plateau={self.reduce_lr_on_plateau} cannot be combined with "
                f"warmup_epochs={self.warmup_epochs}: the warm-up sets the learning rate"
            )

    def to_dict(self):
        """The config as JSON-ready values (tuples as lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in dataclasses.asdict(self).items()
        }

    def hyperparameters(self):
        """The settings that decide what a run computes (the HParams dashboard's columns):
        those a resumed run must keep; not where or how fast it runs."""
        mine = self.to_dict()
        return {f.name: mine[f.name] for f in dataclasses.fields(self) if f.metadata["compared"]}

    def differences(self, saved):
        """`"name old there, new now"` for each compared setting that differs from `saved`
        (a `to_dict()` of an earlier run)."""
        mine = self.to_dict()
        return [
            f"{field.name} {saved.get(field.name)!r} there, {mine[field.name]!r} now"
            for field in dataclasses.fields(self)
            if field.metadata["compared"]
            and saved.get(field.name, _default(field)) != mine[field.name]
        ]


def _default(field):
    """A field's default as `to_dict` writes it: settings added later compare as unset."""
    return list(field.default) if isinstance(field.default, tuple) else field.default


# The hyperparameters' names: the HParams dashboard's columns for every run, sweep and search.
HYPERPARAMETERS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.metadata["compared"])
