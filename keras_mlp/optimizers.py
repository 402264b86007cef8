"""The package's optimizers: a Keras optimizer by name with the run's learning-rate
schedule and warm-up, decoupled weight decay of the kernels, and loss scaling for
`mixed_float16`. `Trainer` takes any `keras.optimizers.Optimizer`; this is how the
package's own runs make theirs (`run.make_optimizer`).
"""

import keras
import tensorflow as tf

from keras_mlp.checks import check_accepted
from keras_mlp.names import OPTIMIZERS
from keras_mlp.schedules import learning_rate_schedule


def build_optimizer(
    model,
    name="sgd",
    learning_rate=0.1,
    *,
    steps_per_epoch,
    epochs,
    lr_schedule="constant",
    warmup_epochs=0,
    weight_decay=0.0,
    strategy=None,
):
    """A built optimizer for `model`, made inside `strategy.scope()`.

    Args:
        model: The model it will train (for the bias exclusion, the dtype policy and
            the build).
        name: A name from `OPTIMIZERS`. Defaults to `"sgd"`.
        learning_rate: The learning rate (the peak, with a schedule). Defaults to `0.1`.
        steps_per_epoch, epochs: The run's length, which the schedules span.
        lr_schedule: A name from `LR_SCHEDULES` (see `schedules.learning_rate_schedule`),
            stepped by the optimizer's own `iterations`. Defaults to `"constant"`.
        warmup_epochs: Epochs of linear warm-up from 0 before the schedule. Defaults to `0`.
        weight_decay: Decoupled weight decay (Keras' `weight_decay=`: each step every
            kernel shrinks by `learning_rate * weight_decay * W`; biases are excluded).
            `0`: none, also for `adamw` (whose Keras default is 0.004). Defaults to `0.0`.
        strategy: The `tf.distribute.Strategy` the model was made in. Defaults to `None`
            (the current one).

    Returns:
        A `keras.optimizers.Optimizer`; a `LossScaleOptimizer` around it when the model's
        dtype policy is `mixed_float16` (float16 gradients underflow without loss
        scaling; bfloat16 needs none).
    """
    check_accepted("optimizer", name, OPTIMIZERS)
    config = {
        "learning_rate": learning_rate_schedule(
            lr_schedule,
            learning_rate,
            steps_per_epoch=steps_per_epoch,
            epochs=epochs,
            warmup_epochs=warmup_epochs,
        )
    }
    if weight_decay or name == "adamw":  # AdamW's default is 0.004
        config["weight_decay"] = weight_decay
    with (strategy or tf.distribute.get_strategy()).scope():
        optimizer = keras.optimizers.get({"class_name": name, "config": config})
        if weight_decay:  # kernels only, as the scratch model's penalty
            biases = [v for v in model.trainable_variables if len(v.shape) < 2]
            optimizer.exclude_from_weight_decay(var_list=biases)
        if model.dtype_policy.name == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        # Without this, the first apply under a strategy fails (keras-team/keras#19246).
        optimizer.build(model.trainable_variables)
    return optimizer
