"""The train benchmark's contenders: the chapter's epoch (784 -> 256 -> 10, SGD 0.1,
batch 256, a fresh shuffle each epoch, full batches only, then accuracy on the whole
validation split) written each contender's way, and timed per epoch.

- `ours`: this package's `Trainer`, as `keras-mlp-train` runs it (arrays: each
  compiled chunk gathers its batches itself, `keras_mlp.feeds`).
- `ours_tf_data`: the same `Trainer` fed the same examples as a user's `tf.data.Dataset`
  (`from_tensor_slices`, reshuffled each pass): a `tf.data` iterator per step.
- `keras_fit`: `model.compile()` + `model.fit()` with Keras' defaults
  (`steps_per_execution=1`, `jit_compile="auto"`).
- `keras_fit_spe`, `keras_fit_xla`: `fit` at its best on a CPU: as many steps per
  call as ours, XLA off and on.
- `tf_loop`: the floor: the fastest bare TensorFlow loop we know for the same step
  (one `tf.function` call per epoch, batches gathered from a pre-scaled float32
  constant, the update written out, no Keras).
- `ours` beside `tf_loop` (`time_ours_beside_tf_loop`): both in one process, epochs
  alternating, for their ratio without the spread between processes.
- `torch`: PyTorch eager, the same model, data and step (when `torch` is importable:
  `pip install 'keras_mlp[torch]'`).

Each contender runs in a process of its own (`benchmark measure`), so the settings it
makes and the memory it holds are its own.
"""

import time

import keras
import numpy as np
import tensorflow as tf

from keras_mlp.models import build_model
from keras_mlp.names import STEPS_PER_EXECUTION
from keras_mlp.torch_loop import BATCH_SIZE, HIDDEN, LEARNING_RATE  # once, TensorFlow-free
from keras_mlp.training import Trainer

KERAS_FIT = {
    "keras_fit": {},
    "keras_fit_spe": {"steps_per_execution": STEPS_PER_EXECUTION, "jit_compile": False},
    "keras_fit_xla": {"steps_per_execution": STEPS_PER_EXECUTION, "jit_compile": True},
}
CONTENDERS = ("ours", "ours_tf_data", *KERAS_FIT, "tf_loop", "torch")
# Contenders whose step does not depend on the package's model (they write the MLP out).
MODEL_FREE = ("tf_loop", "torch")


def _scaled(images):
    return images.reshape(len(images), -1).astype(np.float32) / np.float32(255)


def trained_examples(count):
    """Examples in the full batches of an epoch of `count` examples."""
    return (count // BATCH_SIZE) * BATCH_SIZE


def time_ours(model_name, data, epochs, hidden_units=(HIDDEN,), batch_size=BATCH_SIZE, **kwargs):
    """Per-epoch seconds (train + validation) of our `Trainer`, and the last
    validation accuracy."""
    return _time_trainer(model_name, data, epochs, (data,), hidden_units, batch_size, **kwargs)


def _examples(images, labels):
    shape = images.shape[1:]
    return tf.data.Dataset.from_tensor_slices((_scaled(images).reshape(-1, *shape), labels))


def time_ours_tf_data(model_name, data, epochs):
    """`time_ours` with the data given as `tf.data.Dataset`s of examples, the training
    one reshuffled each pass (from a seed, as a cluster needs)."""
    train = _examples(data.train_images, data.train_labels)
    train = train.shuffle(len(data.train_images), seed=0, reshuffle_each_iteration=True)
    validation = _examples(data.val_images, data.val_labels)
    return _time_trainer(model_name, data, epochs, (train, validation))


def _time_trainer(
    model_name, data, epochs, fit_data, hidden_units=(HIDDEN,), batch_size=BATCH_SIZE, **kwargs
):
    trainer = Trainer(epochs=epochs, batch_size=batch_size, verbose=False, **kwargs)
    with trainer.strategy.scope():
        model = build_model(
            model_name, data.input_shape, data.num_classes, hidden_units=hidden_units
        )
    history = trainer.fit(model, *fit_data)
    return history["epoch_seconds"], history["val_accuracy"][-1]


class _EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


def time_keras_fit(model_name, data, epochs, **compile_kwargs):
    """`fit` on the same model, data and validation split; `compile_kwargs` are those
    of a `KERAS_FIT` variant."""
    model = build_model(model_name, data.input_shape, data.num_classes)
    model.compile(
        optimizer=keras.optimizers.SGD(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        **compile_kwargs,
    )
    trained = trained_examples(len(data.train_images))
    timer = _EpochTimer()
    history = model.fit(
        _scaled(data.train_images[:trained]).reshape(trained, *data.input_shape),
        data.train_labels[:trained],
        batch_size=BATCH_SIZE,
        epochs=epochs,
        shuffle=True,
        validation_data=(_scaled(data.val_images).reshape(-1, *data.input_shape), data.val_labels),
        verbose=0,
        callbacks=[timer],
    )
    return timer.seconds, history.history["val_accuracy"][-1]


def _glorot(rng, fan_in, fan_out):
    limit = np.sqrt(6 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)


def _correct(scores, labels):
    return tf.reduce_sum(
        tf.cast(tf.argmax(scores, axis=-1, output_type=tf.int32) == labels, tf.int32)
    )


def bare_loop(data):
    """The bare TensorFlow loop, built: `run(number)` trains epoch `number` (its steps,
    then the validation) in one call and returns the validation accuracy."""
    x, y = tf.constant(_scaled(data.train_images)), tf.constant(data.train_labels, tf.int32)
    x_val, y_val = tf.constant(_scaled(data.val_images)), tf.constant(data.val_labels, tf.int32)
    rng = np.random.default_rng(0)
    inputs, outputs = x.shape[1], data.num_classes
    weights = [
        tf.Variable(_glorot(rng, inputs, HIDDEN)),
        tf.Variable(tf.zeros(HIDDEN)),
        tf.Variable(_glorot(rng, HIDDEN, outputs)),
        tf.Variable(tf.zeros(outputs)),
    ]
    steps = len(data.train_images) // BATCH_SIZE

    def logits(images):
        w1, b1, w2, b2 = weights
        return tf.matmul(tf.nn.relu(tf.matmul(images, w1) + b1), w2) + b2

    @tf.function
    def epoch(seed):
        order = tf.random.experimental.stateless_shuffle(tf.range(len(data.train_images)), seed)
        order = tf.reshape(order[: steps * BATCH_SIZE], (steps, BATCH_SIZE))
        loss_sum, correct = tf.constant(0.0), tf.constant(0)
        for step in tf.range(steps):
            labels = tf.gather(y, order[step])
            with tf.GradientTape() as tape:
                scores = logits(tf.gather(x, order[step]))
                per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels, scores)
                loss = tf.reduce_mean(per_example)
            for weight, gradient in zip(weights, tape.gradient(loss, weights), strict=True):
                weight.assign_sub(LEARNING_RATE * gradient)
            # The epoch's training loss and accuracy, as every contender reports them.
            loss_sum += tf.reduce_sum(per_example)
            correct += _correct(scores, labels)
        return loss_sum, correct, _correct(logits(x_val), y_val)

    def run(number):
        _, _, correct = epoch(tf.constant([0, number], tf.int64))
        return int(correct) / len(data.val_images)

    return run


def time_tf_loop(data, epochs):
    """The bare TensorFlow loop: an epoch (its steps and the validation) per call."""
    run = bare_loop(data)
    seconds = []
    for number in range(epochs):
        start = time.perf_counter()
        accuracy = run(number)
        seconds.append(time.perf_counter() - start)
    return seconds, accuracy


class _BareLoopEpochs(keras.callbacks.Callback):
    """Times one epoch of the bare loop after each of the Trainer's epochs (which the
    Trainer times before its callbacks' `on_epoch_end`)."""

    def __init__(self, run):
        super().__init__()
        self.run, self.seconds = run, []

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        self.run(epoch)
        self.seconds.append(time.perf_counter() - start)


def time_ours_beside_tf_loop(model_name, data, epochs):
    """Our `Trainer` and the bare loop in one process, epochs alternating: per-epoch
    seconds of each, `(ours, bare loop)`. Both see the same moments of the machine, so
    their ratio is free of the spread between processes."""
    loop_epochs = _BareLoopEpochs(bare_loop(data))
    seconds, _ = time_ours(model_name, data, epochs, callbacks=[loop_epochs])
    return seconds, loop_epochs.seconds


def time_contender(contender, model_name, data, epochs):
    """`(per-epoch seconds, last validation accuracy)` of `contender` on `model_name`."""
    if contender == "ours":
        return time_ours(model_name, data, epochs)
    if contender == "ours_tf_data":
        return time_ours_tf_data(model_name, data, epochs)
    if contender in KERAS_FIT:
        return time_keras_fit(model_name, data, epochs, **KERAS_FIT[contender])
    return time_tf_loop(data, epochs)
