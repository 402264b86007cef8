"""Command-line flags (absl). The library never reads FLAGS; this module turns
them into a `RunConfig` and absl stops here."""

import dataclasses
import sys

from absl import flags

from keras_mlp.config import DTYPES, RunConfig
from keras_mlp.data import DATASETS
from keras_mlp.distribute import STRATEGIES
from keras_mlp.errors import UserError
from keras_mlp.layers import ACTIVATIONS
from keras_mlp.models import INITIALIZERS, MODELS
from keras_mlp.training import OPTIMIZERS

FLAGS = flags.FLAGS
_DEFAULTS = RunConfig()


def define_flags():
    """Defines the training flags, each defaulting to the chapter's seed run."""
    d = _DEFAULTS
    flags.DEFINE_enum(
        "model",
        d.model,
        MODELS,
        "scratch: explicit W1, b1, W2, b2 and a hand-written ReLU; concise: keras.Sequential.",
    )
    flags.DEFINE_list(
        "hidden_units",
        [str(u) for u in d.hidden_units],
        "Comma-separated widths of the hidden layers, input side first, e.g. 256 or 512,256.",
    )
    flags.DEFINE_enum(
        "activation",
        d.activation,
        ACTIVATIONS,
        "Hidden-layer activation (relu is hand-written in the scratch model).",
    )
    flags.DEFINE_enum(
        "initializer",
        d.initializer,
        INITIALIZERS,
        "Kernel initialisation; default: N(0, sigma^2) for scratch, Glorot uniform for concise.",
    )
    flags.DEFINE_float(
        "sigma", d.sigma, "Std. dev. of the scratch model's normal weight initialisation."
    )
    flags.DEFINE_enum("optimizer", d.optimizer, OPTIMIZERS, "Keras optimizer.")
    flags.DEFINE_float(
        "learning_rate", d.learning_rate, "Learning rate (a positive finite number)."
    )
    flags.DEFINE_integer(
        "batch_size", d.batch_size, "Global batch size, split across all replicas."
    )
    flags.DEFINE_integer("epochs", d.epochs, "Number of training epochs.")
    flags.DEFINE_enum(
        "dataset",
        d.dataset,
        DATASETS,
        "fashion_mnist (or any IDX image set given with --data_dir), or synthetic (small, for smoke runs).",
    )
    flags.DEFINE_string(
        "data_dir",
        d.data_dir,
        "Directory holding the four IDX .gz files. Default: the keras cache "
        "($KERAS_HOME/datasets/fashion-mnist), then tensorflow-datasets.",
    )
    flags.DEFINE_boolean(
        "download",
        d.download,
        "Let tensorflow-datasets download Fashion-MNIST when no local copy is found (needs the internet).",
    )
    flags.DEFINE_float(
        "validation_split",
        d.validation_split,
        "Fraction of the training set held out for validation; 0 validates on the test split.",
    )
    flags.DEFINE_string(
        "model_dir",
        d.model_dir,
        "Output directory (logs/, metrics.json, progress.png, model.keras). Default: runs/<model>-<time>.",
    )
    flags.DEFINE_enum(
        "strategy",
        d.strategy,
        STRATEGIES,
        "tf.distribute strategy: default, one_device, mirrored (all local GPUs, else --cpu_devices CPUs), "
        "or multi_worker_mirrored (a cluster from TF_CONFIG or --worker_hosts/--task_index).",
    )
    flags.DEFINE_integer(
        "cpu_devices", d.cpu_devices, "Logical CPU devices for --strategy=mirrored without GPUs."
    )
    flags.DEFINE_integer("num_gpus", d.num_gpus, "Local GPUs to use (default: all).")
    flags.DEFINE_list(
        "worker_hosts",
        list(d.worker_hosts),
        "multi_worker_mirrored without TF_CONFIG: comma-separated host:port of every worker, "
        "the same list on each.",
    )
    flags.DEFINE_integer(
        "task_index",
        d.task_index,
        "multi_worker_mirrored: this worker's index in --worker_hosts; 0 is the chief.",
    )
    flags.DEFINE_integer(
        "seed", d.seed, "Seed for weights, data order and the validation hold-out."
    )
    flags.DEFINE_integer(
        "steps_per_execution",
        d.steps_per_execution,
        "Training steps per tf.function call (fewer Python round trips).",
    )
    flags.DEFINE_enum(
        "dtype",
        d.dtype,
        DTYPES,
        "Keras dtype policy; the mixed ones keep float32 weights and compute in 16 bits "
        "(for GPUs; mixed_float16 adds loss scaling).",
    )
    flags.DEFINE_integer(
        "checkpoint_every_steps",
        d.checkpoint_every_steps,
        "Checkpoint every N training steps as well as at every epoch end (0: epoch ends only).",
    )
    flags.DEFINE_integer("keep_checkpoints", d.keep_checkpoints, "How many checkpoints to keep.")
    flags.DEFINE_boolean(
        "overwrite",
        d.overwrite,
        "Replace the run in --model_dir; without it a finished run is reported, an unfinished "
        "one resumed, and one with other settings refused.",
    )
    flags.DEFINE_boolean(
        "deterministic",
        d.deterministic,
        "Enable TensorFlow op determinism and pin thread counts: same command, same machine, "
        "bitwise the same weights.",
    )
    flags.DEFINE_integer(
        "log_every_steps",
        d.log_every_steps,
        "TensorBoard: log the training loss averaged over every N steps (0: off).",
    )
    flags.DEFINE_integer(
        "histogram_freq",
        d.histogram_freq,
        "TensorBoard: histograms of every weight and its gradient every N epochs (0: off).",
    )
    flags.DEFINE_list(
        "profile_steps",
        list(d.profile_steps),
        "TensorBoard: FIRST,LAST training steps to trace with the profiler (Profile tab).",
    )
    flags.DEFINE_boolean(
        "image_summaries",
        d.image_summaries,
        "TensorBoard: validation predictions and the confusion matrix as images, every epoch.",
    )
    # --help shows the main module's key flags; make ours key for whichever
    # entry point runs (scripts/train.py or the console script).
    for name in _DEFAULTS.to_dict():
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])


def parse_flags(argv):
    """absl's parser, but a bad flag or flagfile is one line on stderr and exit 2."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        # absl prefixes some messages with its own "ERROR::"; one prefix is enough.
        print(f"error: {str(e).removeprefix('ERROR:: ')}", file=sys.stderr)
        sys.exit(2)


def int_list(name, values):
    """Comma-separated integers from a list flag, or a one-line error."""
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise UserError(
            f"--{name} expects comma-separated positive integers. Received: {','.join(values)!r}"
        ) from None


def config_from_flags():
    """The `RunConfig` that the parsed flags describe (each field has a flag of its name)."""
    values = {field.name: FLAGS[field.name].value for field in dataclasses.fields(RunConfig)}
    values["hidden_units"] = int_list("hidden_units", values["hidden_units"])
    values["worker_hosts"] = tuple(values["worker_hosts"])
    values["profile_steps"] = int_list("profile_steps", values["profile_steps"])
    return RunConfig(**values)
