"""The "from scratch" building blocks: a hand-written ReLU, a dense layer, dropout
and the L2 weight-decay penalty.

Keras 3 does not track raw `tf.Variable` attributes, so every weight here is
created with `add_weight` in `build`; otherwise training would silently update
nothing.
"""

import keras
from keras import ops

from keras_mlp.checks import (
    check_accepted,
    check_fraction,
    check_non_negative_finite,
    check_positive_finite,
    check_positive_int,
)
from keras_mlp.names import ACTIVATIONS


@keras.saving.register_keras_serializable(package="keras_mlp")
def relu(x):
    """Rectified linear unit written by hand: `max(x, 0)` elementwise, and its
    derivative written out too: 1 where `x > 0`, else 0 (0 at exactly 0, as in
    `tf.nn.relu`; differentiating `ops.maximum` would pass the gradient on the tie).

    Why the derivative is given rather than derived: automatic differentiation of
    `maximum` (or of `where`) builds a select and a tensor of zeros per call, which made
    the scratch model's epoch measurably slower than the concise model's (README,
    "Performance"). The written-out step is `sign(max(x, 0))`: one vectorized op,
    where the comparison `x > 0` and its cast cost several times as much
    (docs/design.md, "The scratch model's step"). It differs from `tf.nn.relu`'s
    gradient at a NaN input only: NaN there, not 0 (the loss is NaN then anyway).

    Args:
        x: A tensor.

    Returns:
        A tensor of the same shape and dtype as `x`.
    """
    return _relu_with_derivative(x)


@ops.custom_gradient
def _relu_with_derivative(x):
    def derivative(*args, upstream=None):
        if upstream is None:  # the TensorFlow and JAX backends pass it positionally
            (upstream,) = args
        return upstream * ops.sign(y)  # 1 where x > 0, else 0

    y = ops.maximum(x, 0.0)
    return y, derivative


@keras.saving.register_keras_serializable(package="keras_mlp")
class ReLU(keras.layers.Layer):
    """Layer form of the hand-written `relu`: `output = max(input, 0)`.

    Input shape:
        Any.

    Output shape:
        Same as the input.

    Example:
        >>> ReLU()(np.array([-1.0, 2.0]))  # [0.0, 2.0]
    """

    def call(self, inputs):
        return relu(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


def get_activation(activation):
    """Returns the activation callable for a name, a serialized form, a callable or `None`.

    `"relu"` maps to the hand-written `relu` so that the scratch parts stay
    from scratch; other names come from `keras.activations`.
    """
    if activation is None:
        return keras.activations.linear
    if callable(activation):
        return activation
    if isinstance(activation, dict):  # a serialized callable from get_config
        return keras.activations.deserialize(activation)
    check_accepted("activation", activation, ACTIVATIONS)
    return relu if activation == "relu" else keras.activations.get(activation)


def activation_layer(activation, **kwargs):
    """The layer applying `activation`: the hand-written `ReLU` for `"relu"`, else
    `keras.layers.Activation`; `kwargs` go to the layer (name, dtype)."""
    function = get_activation(activation)
    return ReLU(**kwargs) if function is relu else keras.layers.Activation(function, **kwargs)


def serialize_activation(activation):
    """The one serialized form of an activation, for every `get_config` here."""
    return keras.activations.serialize(get_activation(activation))


@keras.saving.register_keras_serializable(package="keras_mlp")
class ScratchDense(keras.layers.Layer):
    """Fully connected layer with explicit weights, as in the chapter.

    `output = activation(dot(input, kernel) + bias)`, with the kernel drawn from
    N(0, sigma^2) (or `kernel_initializer`) and the bias starting at zero.

    Args:
        units: Positive integer, the size of the output.
        sigma: Positive float, standard deviation of the kernel's normal
            initialisation. Defaults to `0.01`.
        activation: Activation name or callable; `"relu"` means the hand-written
            `relu`. Defaults to `None` (linear).
        kernel_initializer: A Keras initializer (or its name) that replaces
            N(0, sigma^2). Defaults to `None`.
        kernel_name, bias_name: The weights' names; `MLPScratch` names them
            `W1`, `b1`, ... as the chapter does. Default to `"kernel"`, `"bias"`.
        kernel_regularizer: A penalty on the kernel (e.g. `L2Penalty`) that
            Keras collects in `model.losses`. Defaults to `None`.

    Input shape:
        `(batch_size, input_dim)`.

    Output shape:
        `(batch_size, units)`.

    Example:
        >>> layer = ScratchDense(256, activation="relu")
        >>> layer(np.zeros((2, 784), "float32")).shape  # (2, 256)
    """

    def __init__(
        self,
        units,
        sigma=0.01,
        activation=None,
        kernel_initializer=None,
        kernel_name="kernel",
        bias_name="bias",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int("units", units)
        self.units = units
        self.sigma = check_positive_finite("sigma", sigma)
        self.activation = get_activation(activation)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or keras.initializers.RandomNormal(stddev=self.sigma)
        )
        self.kernel_name, self.bias_name = kernel_name, bias_name
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name=self.kernel_name,
            shape=(input_shape[-1], self.units),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = self.add_weight(name=self.bias_name, shape=(self.units,), initializer="zeros")

    def call(self, inputs):
        # `ops.add`, not `+`: TensorFlow's Keras backend makes a bias add of it, whose
        # gradient is one dedicated kernel instead of a broadcast sum over the batch
        # (docs/design.md, "The scratch model's step").
        return self.activation(ops.add(ops.matmul(inputs, self.kernel), self.bias))

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "sigma": self.sigma,
            "activation": serialize_activation(self.activation),
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "kernel_name": self.kernel_name,
            "bias_name": self.bias_name,
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
        }


@keras.saving.register_keras_serializable(package="keras_mlp")
class Dropout(keras.layers.Layer):
    """Dropout written by hand, as in the chapter.

    In training, each unit is zeroed with probability `rate` and the survivors
    are scaled by `1 / (1 - rate)`, so that the expectation of every unit is
    unchanged: `output = mask * input / (1 - rate)` with `mask ~ Bernoulli(1 - rate)`
    drawn afresh at every call. At inference (`training` false) it is the identity.

    The masks come from the layer's `keras.random.SeedGenerator`, whose state is a
    variable (in `layer.variables`, not `layer.weights`): stateless random ops drawn
    from it are the same on every run with the same seed, and a checkpoint that holds
    the state (the `Trainer`'s does) resumes the same mask sequence. A layer with
    `rate=0` creates no generator and draws nothing. Under a multi-replica strategy
    every replica draws the same mask sequence for its own part of the batch, as
    `keras.layers.Dropout` does.

    Args:
        rate: Float in [0, 1), the probability of zeroing a unit.
        seed: Integer seed of the masks; `None` draws one from Python's `random`
            (which `keras.utils.set_random_seed` seeds). Defaults to `None`.

    Input shape:
        Any.

    Output shape:
        Same as the input.

    Example:
        >>> layer = Dropout(0.5, seed=1)
        >>> layer(np.ones((2, 4), "float32"), training=True)  # each entry 0.0 or 2.0
    """

    def __init__(self, rate, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.rate = check_fraction("rate", rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed) if self.rate else None
        self.supports_masking = True
        self.built = True

    def call(self, inputs, training=False):
        if not training or not self.rate:
            return inputs
        draws = keras.random.uniform(ops.shape(inputs), seed=self.seed_generator)
        keep = draws >= self.rate  # True with probability 1 - rate
        return ops.where(keep, inputs / (1 - self.rate), ops.zeros_like(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


def l2_penalty(weights):
    """`sum(||w||^2) / 2` over `weights`, written out as in the chapter."""
    return sum(ops.sum(ops.square(w)) for w in weights) / 2


@keras.saving.register_keras_serializable(package="keras_mlp")
class L2Penalty(keras.regularizers.Regularizer):
    """The chapter's weight decay as a penalty in the loss: `weight_decay / 2 * ||W||^2`.

    Its gradient is `weight_decay * W`, so plain SGD on `loss + penalty` shrinks each
    weight by `learning_rate * weight_decay * W` per step. Keras collects it in
    `model.losses` (the `Trainer` and `fit` add those to the training loss).

    Args:
        weight_decay: Non-negative finite float, the decay coefficient.

    Example:
        >>> L2Penalty(0.1)(np.array([3.0, 4.0]))  # 0.1 / 2 * 25 = 1.25
    """

    def __init__(self, weight_decay):
        self.weight_decay = check_non_negative_finite("weight_decay", weight_decay)

    def __call__(self, x):
        return self.weight_decay * l2_penalty([x])

    def get_config(self):
        return {"weight_decay": self.weight_decay}
