"""`train(config)`: one run from a `RunConfig` to its artifacts in `model_dir`.

The library's entry point (no flags): decides new / resume / complete / refuse
before loading data or building a model, then builds strategy, data and model,
trains with the run's callbacks and writes the outputs.
"""

import contextlib
import dataclasses
import math
import os
import time
from pathlib import Path

import keras
import tensorflow as tf

from keras_mlp import process, reporting, run_dir, signals
from keras_mlp.augment import Augmentation
from keras_mlp.data import load_dataset
from keras_mlp.distribute import from_every_worker, get_strategy, is_chief
from keras_mlp.errors import TrainingInterrupted, UserError
from keras_mlp.inputs import dataset_inputs
from keras_mlp.models import build_model
from keras_mlp.optimizers import build_optimizer
from keras_mlp.profiling import StepProfiler
from keras_mlp.summaries import TensorBoardLogger
from keras_mlp.training import Trainer, weights_fingerprint


@dataclasses.dataclass
class RunResult:
    """What `train` returns.

    Attributes:
        model_dir: Where the outputs are.
        history: Per-epoch lists of the run's metrics (`train_state.HISTORY_KEYS`).
        model: The trained model; `None` when the run was already complete.
        stopped_early: Whether a callback (early stopping, ...) ended it before its epochs.
    """

    model_dir: str
    history: dict
    model: keras.Model | None = None
    stopped_early: bool = False


def default_model_dir(config):
    return config.model_dir or f"runs/{config.model}-{time.strftime('%Y%m%d-%H%M%S')}"


def configure_process(config):
    """Everything a run changes process-wide, in one place, before TensorFlow starts:

    - with `deterministic`: TensorFlow op determinism and pinned thread counts
      (thread counts change the order of float sums; docs/design.md, "Determinism");
    - the Python, NumPy, TensorFlow and Keras seeds (`keras.utils.set_random_seed`);
    - the Keras dtype policy (`float32` or mixed precision).
    """
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
        try:
            tf.config.threading.set_inter_op_parallelism_threads(1)
            tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count() or 1)
        except RuntimeError:
            pass  # TensorFlow already started in this process: its thread pools stay as they are
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy(config.dtype)


def _completed(model_dir, verbose, chief=True):
    if not chief:  # the chief reads and reports the finished run
        if verbose:
            print(f"the run in {model_dir} is already complete (the chief's decision)")
        return RunResult(model_dir, {})
    metrics, _ = run_dir.finished_record(model_dir)  # run_dir.inspect found it intact
    if verbose:
        how = (
            f"stopped early after epoch {metrics['final']['epochs']}"
            if metrics["final"].get("stopped_early")
            else "finished"
        )
        print(
            f"the run in {model_dir} is already complete ({how}); overwrite=True "
            "(--overwrite) trains it again"
        )
    return RunResult(
        model_dir, metrics["history"], stopped_early=bool(metrics["final"].get("stopped_early"))
    )


def run_callbacks(config, data, model_dir, chief, session_group=None):
    """The callbacks a config asks for: TensorBoard always and the profiler on request
    (both written by the chief; every worker takes the same chunks), early stopping,
    and reducing the learning rate on a plateau of the validation loss."""
    log_dir = Path(model_dir) / "logs" if chief else None
    callbacks = [
        TensorBoardLogger(
            log_dir,
            data,
            config.to_dict(),
            hparams=config.hyperparameters(),
            session_group=session_group,
            log_every_steps=config.log_every_steps,
            histogram_freq=config.histogram_freq,
            image_summaries=config.image_summaries,
            batch_size=config.batch_size,
        )
    ]
    if config.profile_steps:
        callbacks.append(StepProfiler(log_dir, config.profile_steps))
    if config.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=config.early_stopping_patience
            )
        )
    if config.reduce_lr_on_plateau:  # the config refuses it with a schedule or a warm-up
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", patience=config.reduce_lr_on_plateau
            )
        )
    return callbacks


def make_strategy(config):
    """The strategy `config` names (TensorFlow starts here). Mirrored-on-CPUs splits the
    CPU, which TensorFlow allows only before it runs any op; a cluster's worker waits at
    most `cluster_timeout` seconds for the others."""
    return get_strategy(
        config.strategy,
        cpu_devices=config.cpu_devices,
        num_gpus=config.num_gpus,
        worker_hosts=config.worker_hosts,
        task_index=config.task_index,
        cluster_timeout=config.cluster_timeout,
    )


def build(config, strategy):
    """The data and model that `config` describes, the model made in `strategy`'s scope."""
    data = load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        validation_split=config.validation_split,
        seed=config.seed,
        download=config.download,
    )
    check_memory(config, math.prod(data.input_shape), data.num_classes)
    with strategy.scope():
        model = build_model(
            config.model,
            data.input_shape,
            data.num_classes,
            hidden_units=config.hidden_units,
            activation=config.activation,
            sigma=config.sigma,
            initializer=config.initializer,
            dropout=config.dropout,
            # The scratch model writes weight decay into its loss; the concise model's is
            # in its optimizer (make_optimizer).
            weight_decay=config.weight_decay if config.model == "scratch" else 0.0,
        )
    return data, model


# float32 copies of the weights a training step holds at once: the weights, their
# gradients, and the optimizer's slots (SGD none, momentum-free; Adam-like two).
_COPIES = {"sgd": 2, "adagrad": 3, "rmsprop": 3, "adadelta": 4, "lion": 3}


def check_memory(config, num_inputs, num_classes):
    """Refuses a model whose training state cannot fit in this machine's memory (a
    `UserError` naming the sizes) instead of failing deep inside TensorFlow."""
    widths = (num_inputs, *config.hidden_units, num_classes)
    parameters = sum(i * o + o for i, o in zip(widths[:-1], widths[1:], strict=False))
    needed = 4 * parameters * _COPIES.get(config.optimizer, 4)
    available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if needed > available:
        raise UserError(
            f"hidden_units={','.join(map(str, config.hidden_units))} makes {parameters:,} "
            f"parameters: training them with {config.optimizer} needs about "
            f"{needed / 2**30:,.1f} GiB, and this machine has {available / 2**30:,.1f} GiB"
        )


def make_optimizer(config, model, steps_per_epoch, strategy):
    """The optimizer `config` asks for (`optimizers.build_optimizer`): its learning-rate
    schedule and warm-up over the run's steps, and, for the concise model, decoupled
    weight decay (the scratch model's is the L2 penalty in its loss: `build`)."""
    return build_optimizer(
        model,
        config.optimizer,
        config.learning_rate,
        steps_per_epoch=steps_per_epoch,
        epochs=config.epochs,
        lr_schedule=config.lr_schedule,
        warmup_epochs=config.warmup_epochs,
        weight_decay=config.weight_decay if config.model == "concise" else 0.0,
        strategy=strategy,
    )


def make_trainer(config, strategy, model_dir, optimizer, callbacks=(), verbose=True):
    """The `Trainer` with `config`'s loop and checkpoint settings and `optimizer`."""
    return Trainer(
        epochs=config.epochs,
        batch_size=config.batch_size,
        optimizer=optimizer,
        strategy=strategy,
        model_dir=model_dir,
        seed=config.seed,
        steps_per_execution=config.steps_per_execution,
        checkpoint_every_steps=config.checkpoint_every_steps,
        keep_checkpoints=config.keep_checkpoints,
        divergence_factor=config.divergence_factor,
        callbacks=callbacks,
        verbose=verbose,
    )


def _describe(config, data, model, strategy, model_dir):
    return (
        f"{config.model} MLP {'x'.join(map(str, data.input_shape))} -> "
        f"{' -> '.join(map(str, config.hidden_units))} -> {data.num_classes} on {data.name} "
        f"({len(data.train_images)} train, {len(data.val_images)} {data.validation} examples), "
        f"{model.count_params():,} parameters, {strategy.num_replicas_in_sync} replica(s), "
        f"{process.describe()}; outputs in {model_dir}"
    )


def train(config, *, callbacks=(), verbose=True, session_group=None):
    """Runs the training described by `config`; returns a `RunResult`.

    `callbacks` (Keras callbacks) run after the run's own. `session_group` makes the
    run a trial of a sweep or search (`summaries.TensorBoardLogger`). Everything that can
    be checked is checked before the model_dir is touched, so a bad request
    leaves no trace there; while the run writes, it owns the model_dir (see
    `run_dir.claim`). In a cluster only the chief decides what happens to the
    model_dir, and every worker ends the way it decided (`_Start`).
    """
    model_dir = default_model_dir(config)
    if config.strategy != "multi_worker_mirrored":
        # One process: a finished run is reported, a refused one named, before TensorFlow starts.
        status = run_dir.NEW if config.overwrite else run_dir.inspect(model_dir, config)
        if status == run_dir.COMPLETE:
            return _completed(model_dir, verbose)
    configure_process(config)
    start = _Start(config, make_strategy(config), model_dir, callbacks, verbose, session_group)
    with start:
        if start.status == run_dir.COMPLETE:  # finished before, or by another run meanwhile
            return _completed(model_dir, verbose, start.chief)
        strategy, data, model, trainer = start.strategy, start.data, start.model, start.trainer
        if verbose:
            print(_describe(config, data, model, strategy, model_dir), flush=True)
        history = trainer.fit(model, *start.inputs)
        if start.chief:
            _save_outputs(model_dir, model, history, data, config, trainer.stopped_early)
    if verbose and start.chief and config.profile_steps:
        print(
            f"profile of steps {config.profile_steps[0]}-{config.profile_steps[1]} in "
            f"{model_dir}/logs: the Profile tab of `tensorboard --logdir {model_dir}` "
            "(needs pip install 'keras_mlp[profile]')"
        )
    if verbose:
        if trainer.stopped_early:
            print(f"stopped early after epoch {len(history['loss'])} of {config.epochs}")
        # Equal on every worker of a cluster: a quick check that they agree.
        print(f"weights fingerprint {weights_fingerprint(model)}", flush=True)
    return RunResult(model_dir, history, model, trainer.stopped_early)


def fit_inputs(config, data):
    """`(data, validation_data)` for `Trainer.fit`: the `Dataset` as it is, or its training
    split augmented as `config` asks (`--random_flip`, `--random_shift`, `--random_erase`)."""
    augment = Augmentation(config.random_flip, config.random_shift, config.random_erase)
    if not augment:
        return data, None
    augment.check(data.input_shape)
    return dataset_inputs(data, augment)


class _Start(contextlib.AbstractContextManager):
    """Data, model and trainer built, and the model_dir claimed by the chief (its lock
    held until the block ends), with the chief's decision as `status`.

    In a cluster the workers then agree before any of them trains: each tells the
    others whether it could start (a collective, `from_every_worker`), so a refusal or
    bad data on one worker is an error on every worker, and a run the chief finds
    complete is complete for all; none is left waiting for a peer that has gone.
    """

    _READY, _COMPLETE, _FAILED = 0, 1, 2

    def __init__(self, config, strategy, model_dir, callbacks, verbose, session_group=None):
        self.strategy, self.chief = strategy, is_chief(strategy)
        self.status = None
        self._stack = contextlib.ExitStack()
        failure = None
        try:
            self.data, self.model = build(config, strategy)
            own = run_callbacks(config, self.data, model_dir, self.chief, session_group)
            every_callback = [*own, *callbacks]
            steps_per_epoch = len(self.data.train_images) // config.batch_size
            optimizer = make_optimizer(config, self.model, steps_per_epoch, strategy)
            self.trainer = make_trainer(
                config, strategy, model_dir, optimizer, every_callback, verbose
            )
            self.inputs = fit_inputs(config, self.data)
            self.trainer.check(self.model, *self.inputs)
            if self.chief:
                claim = run_dir.claim(model_dir, config, self.data.identity())
                self.status = self._stack.enter_context(claim)
        except UserError as e:
            failure = e
        self._agree(failure)

    def _agree(self, failure):
        mine = (
            self._FAILED
            if failure
            else self._COMPLETE
            if self.status == run_dir.COMPLETE
            else self._READY
        )
        outcomes = from_every_worker(self.strategy, mine)
        if failure:
            self._stack.close()
            raise failure
        failed = [i for i, outcome in enumerate(outcomes) if outcome == self._FAILED]
        if failed:
            self._stack.close()
            raise UserError(
                f"worker {failed[0]} of the cluster could not start (its own output says why); "
                "every worker stops"
            )
        if outcomes[0] == self._COMPLETE:
            self.status = run_dir.COMPLETE

    def __exit__(self, *exc_info):
        return self._stack.__exit__(*exc_info)


def _save_outputs(model_dir, model, history, data, config, stopped_early):
    """The final save, with SIGINT/SIGTERM held back until it is done: a signal in the
    middle of a SavedModel export would leave it half-made. A signal that came is
    reported afterwards (the run is complete by then)."""
    received = []
    with signals.handled(lambda number, frame: received.append(number)):
        reporting.save_run(model_dir, model, history, data, config.to_dict(), stopped_early)
    if received:
        raise TrainingInterrupted(received[0], len(history["loss"]), complete_in=model_dir)
