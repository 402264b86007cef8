"""`train(config)`: one run from config to artifacts; `main`: its command line."""

import os

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, logging  # noqa: E402

from keras_mlp import flags as flags_lib  # noqa: E402
from keras_mlp import run_dir  # noqa: E402
from keras_mlp.data import load_dataset  # noqa: E402
from keras_mlp.distribute import get_strategy, is_chief  # noqa: E402
from keras_mlp.errors import UserError  # noqa: E402
from keras_mlp.models import build_model  # noqa: E402
from keras_mlp.training import Trainer, TrainingInterrupted  # noqa: E402


def default_model_dir(config):
    return config.model_dir or f"runs/{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def _make_deterministic():
    """Same seed, same machine, same strategy: bitwise the same run (DESIGN.md fact 16)."""
    tf.config.experimental.enable_op_determinism()
    try:  # thread counts change the order of float sums, so they are pinned
        tf.config.threading.set_inter_op_parallelism_threads(1)
        tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)
    except RuntimeError:
        pass  # TensorFlow already started in this process: its thread pools stay as they are


def train(config, verbose=True, on_epoch_end=None):
    """Runs the training described by `config`; returns `(model, history, model_dir)`.

    `on_epoch_end(epoch, history)`, if given, is called after every epoch.

    Everything that can be checked is checked before the model_dir is touched,
    so a bad request leaves no trace there.
    """
    tf.get_logger().setLevel("WARNING")  # per-step INFO chatter from tf.distribute
    # tf.distribute reads dataset options in graph mode; the warning is about TF internals.
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
    if config.deterministic:
        _make_deterministic()
    # First: mirrored-on-CPUs must split the CPU before TensorFlow runs any op.
    strategy = get_strategy(
        config.strategy, config.cpu_devices, config.num_gpus, config.worker_hosts, config.task_index
    )
    data = load_dataset(
        config.dataset, config.data_dir, config.validation_split, config.seed, config.download
    )
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(config.dtype)
    with strategy.scope():
        model = build_model(
            config.model,
            data.input_shape,
            data.num_classes,
            config.hidden_units,
            config.activation,
            config.sigma,
            config.initializer,
        )
    model_dir = default_model_dir(config)
    state = run_dir.NEW if config.overwrite else run_dir.inspect(model_dir, config)
    if state == run_dir.COMPLETE:
        history = json.loads((Path(model_dir) / "metrics.json").read_text())["history"]
        if verbose:
            print(f"the run in {model_dir} is already complete; pass --overwrite to train it again")
        return None, history, model_dir
    trainer = Trainer(
        max_epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        optimizer=config.optimizer,
        strategy=strategy,
        model_dir=model_dir,
        seed=config.seed,
        steps_per_execution=config.steps_per_execution,
        checkpoint_every_steps=config.checkpoint_every_steps,
        keep_checkpoints=config.keep_checkpoints,
        log_every_steps=config.log_every_steps,
        histogram_freq=config.histogram_freq,
        profile_steps=config.profile_steps or None,
        image_summaries=config.image_summaries,
        on_epoch_end=on_epoch_end,
        run_config=config.to_dict(),
        verbose=verbose,
    )
    trainer.check(model, data)
    if is_chief(strategy):  # other workers of a cluster write nothing there
        run_dir.prepare(model_dir, config)
    if verbose:
        print(
            f"{config.model} MLP {'x'.join(map(str, data.input_shape))} -> "
            f"{' -> '.join(map(str, config.hidden_units))} -> {data.num_classes} on {data.name} "
            f"({len(data.train_images)} train, {len(data.val_images)} {data.validation} examples), "
            f"{strategy.num_replicas_in_sync} replica(s); outputs in {model_dir}",
            flush=True,
        )
    history = trainer.fit(model, data)
    return model, history, model_dir


def _main(argv):
    logging.set_verbosity(logging.WARNING)  # TensorFlow logs every checkpoint write at INFO
    try:
        if len(argv) > 1:
            raise UserError(
                f"unexpected arguments {' '.join(argv[1:])!r}; all settings are --flags"
            )
        _, history, model_dir = train(flags_lib.config_from_flags())
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FloatingPointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted as e:
        print(f"error: {e}", file=sys.stderr)
        return 128 + e.signal_number
    except KeyboardInterrupt:  # outside the training loop, which stops cleanly by itself
        print("error: interrupted; every file in the model_dir is complete", file=sys.stderr)
        return 130
    print(f"final val_accuracy {history['val_accuracy'][-1]:.4f}; outputs in {model_dir}")
    return 0


def main():
    """Entry point of `scripts/train.py` and the `keras-mlp-train` console script."""
    flags_lib.define_flags()
    app.run(_main, flags_parser=flags_lib.parse_flags)


if __name__ == "__main__":
    main()
