"""Learning-rate schedules over training steps, built on `keras.optimizers.schedules`
(no schedule math written here): constant, cosine, exponential and step decay, each
with an optional linear warm-up. The optimizer counts the steps (`iterations`, the
updates applied, not the run's global step: docs/design.md, "Step counts"), and
checkpoints keep that count, so a resumed run continues its schedule exactly.
"""

import keras

from keras_mlp.checks import check_accepted
from keras_mlp.names import LR_SCHEDULES

# The schedules' shapes (see names.LR_SCHEDULES), as fractions of the steps after warm-up.
EXPONENTIAL_FINAL_FRACTION = 0.01  # exponential: the last step's rate over the first's
STEP_BOUNDARIES = (0.5, 0.75)  # step: where the rate is divided by STEP_FACTOR
STEP_FACTOR = 10.0


@keras.saving.register_keras_serializable(package="keras_mlp")
class Warmup(keras.optimizers.schedules.LearningRateSchedule):
    """A linear warm-up from 0 to `learning_rate` over `warmup_steps`, then `after`
    counted from the warm-up's end (`None`: `learning_rate` from then on).

    The ramp is Keras' `PolynomialDecay` from 0 up to `learning_rate` (power 1,
    flat after its last step); this class only switches from it to `after`.

    Args:
        learning_rate: The rate at the warm-up's end (and `after`'s start).
        warmup_steps: Positive integer, the warm-up's length in training steps.
        after: A `LearningRateSchedule` for the steps after the warm-up, or `None`.
    """

    def __init__(self, learning_rate, warmup_steps, after=None):
        self.learning_rate = learning_rate
        self.warmup_steps = warmup_steps
        self.after = after
        self.ramp = keras.optimizers.schedules.PolynomialDecay(
            0.0, warmup_steps, end_learning_rate=learning_rate, power=1.0
        )

    def __call__(self, step):
        if self.after is None:
            return self.ramp(step)
        step = keras.ops.convert_to_tensor(step)
        after = self.after(keras.ops.maximum(step - self.warmup_steps, 0))
        return keras.ops.where(step < self.warmup_steps, self.ramp(step), after)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "warmup_steps": self.warmup_steps,
            "after": keras.optimizers.schedules.serialize(self.after) if self.after else None,
        }

    @classmethod
    def from_config(cls, config):
        after = config["after"] and keras.optimizers.schedules.deserialize(config["after"])
        return cls(config["learning_rate"], config["warmup_steps"], after)


def learning_rate_schedule(name, learning_rate, *, steps_per_epoch, epochs, warmup_epochs=0):
    """The optimizer's learning rate for schedule `name` (see `names.LR_SCHEDULES`),
    counted in training steps (the optimizer's `iterations`, which checkpoints keep).

    `constant` without warm-up is the number itself. The others are
    `keras.optimizers.schedules` over the steps after the warm-up: `cosine` decays to
    0 at the last step, `exponential` to `EXPONENTIAL_FINAL_FRACTION` of the rate,
    `step` divides it by `STEP_FACTOR` at each of `STEP_BOUNDARIES`. With
    `warmup_epochs`, a linear ramp from 0 comes first (`Warmup`).
    """
    check_accepted("lr_schedule", name, LR_SCHEDULES)
    schedules = keras.optimizers.schedules
    warmup_steps = warmup_epochs * steps_per_epoch
    steps = max(epochs * steps_per_epoch - warmup_steps, 1)  # after the warm-up
    if name == "constant":
        after = None
    elif name == "cosine":
        after = schedules.CosineDecay(learning_rate, steps)
    elif name == "exponential":
        after = schedules.ExponentialDecay(learning_rate, steps, EXPONENTIAL_FINAL_FRACTION)
    else:
        boundaries = [max(round(f * steps), 1) for f in STEP_BOUNDARIES]
        values = [learning_rate / STEP_FACTOR**i for i in range(len(boundaries) + 1)]
        after = schedules.PiecewiseConstantDecay(boundaries, values)
    if warmup_steps:
        return Warmup(learning_rate, warmup_steps, after)
    return learning_rate if after is None else after
