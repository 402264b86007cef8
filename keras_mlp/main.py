"""`train(config)`: one run from config to artifacts; `main`: its command line."""

import os

# Quiet TensorFlow's C++ start-up chatter unless the user asked for it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from absl import app  # noqa: E402

from keras_mlp import flags as flags_lib  # noqa: E402
from keras_mlp.errors import UserError  # noqa: E402

# A model_dir holding any of these already has a run that must not be overwritten.
RUN_OUTPUTS = ("metrics.json", "model.keras", "progress.png", "logs", "checkpoints")


def default_model_dir(config):
    return config.model_dir or f"runs/{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def prepare_model_dir(model_dir):
    """Creates the run's directory, refusing one that already holds a run."""
    model_dir = Path(model_dir)
    existing = [name for name in RUN_OUTPUTS if (model_dir / name).exists()]
    if existing:
        raise UserError(
            f"--model_dir={model_dir} already holds a run ({', '.join(existing)}); "
            "choose a new --model_dir or remove the old run"
        )
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        probe = model_dir / f".write_test.{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise UserError(f"--model_dir={model_dir} is not writable ({e.strerror or e})") from None


def train(config, verbose=True):
    """Runs the training described by `config`; returns `(model, history, model_dir)`.

    Everything that can be checked is checked before the model_dir is touched,
    so a bad request leaves no trace there.
    """
    import warnings

    import keras
    import tensorflow as tf

    from keras_mlp.data import load_dataset
    from keras_mlp.distribute import get_strategy, is_chief
    from keras_mlp.models import build_model
    from keras_mlp.training import Trainer

    tf.get_logger().setLevel("WARNING")  # per-step INFO chatter from tf.distribute
    # tf.distribute reads dataset options in graph mode; the warning is about TF internals.
    warnings.filterwarnings("ignore", message="To make it possible to preserve tf.data options")
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
        )
    model_dir = default_model_dir(config)
    trainer = Trainer(
        max_epochs=config.epochs,
        batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        optimizer=config.optimizer,
        strategy=strategy,
        model_dir=model_dir,
        seed=config.seed,
        steps_per_execution=config.steps_per_execution,
        run_config=config.to_dict(),
        verbose=verbose,
    )
    trainer.check(model, data)
    if is_chief(strategy):  # other workers of a cluster write nothing there
        prepare_model_dir(model_dir)
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
    except KeyboardInterrupt:
        print(
            "error: interrupted; the model_dir keeps only files that were complete", file=sys.stderr
        )
        return 130
    print(f"final val_accuracy {history['val_accuracy'][-1]:.4f}; outputs in {model_dir}")
    return 0


def main():
    """Entry point of `scripts/train.py` and the `keras-mlp-train` console script."""
    flags_lib.define_flags()
    app.run(_main, flags_parser=flags_lib.parse_flags)


if __name__ == "__main__":
    main()
