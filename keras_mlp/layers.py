"""The "from scratch" building blocks: a hand-written ReLU and a dense layer.

Keras 3 does not track raw `tf.Variable` attributes, so every weight here is
created with `add_weight` in `build`; otherwise training would silently update
nothing.
"""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_mlp")
def relu(x):
    """Rectified linear unit written by hand: `max(x, 0)` elementwise.

    Args:
        x: A tensor.

    Returns:
        A tensor of the same shape and dtype as `x`.
    """
    return ops.maximum(x, ops.zeros_like(x))


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


@keras.saving.register_keras_serializable(package="keras_mlp")
class ScratchDense(keras.layers.Layer):
    """Fully connected layer with explicit weights, as in the chapter.

    `output = activation(dot(input, kernel) + bias)`, with the kernel drawn from
    N(0, sigma^2) and the bias starting at zero.

    Args:
        units: Positive integer, the size of the output.
        sigma: Positive float, standard deviation of the kernel's normal
            initialisation. Defaults to `0.01`.
        activation: Activation name or callable; `"relu"` means the hand-written
            `relu`. Defaults to `None` (linear).

    Input shape:
        `(batch_size, input_dim)`.

    Output shape:
        `(batch_size, units)`.

    Example:
        >>> layer = ScratchDense(256, activation="relu")
        >>> layer(np.zeros((2, 784), "float32")).shape  # (2, 256)
    """

    def __init__(self, units, sigma=0.01, activation=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, int) or isinstance(units, bool) or units <= 0:
            raise ValueError(
                f"ScratchDense expected a positive integer for `units`. Received: units={units}"
            )
        if not sigma > 0:
            raise ValueError(f"ScratchDense expected a positive `sigma`. Received: sigma={sigma}")
        self.units = units
        self.sigma = float(sigma)
        self.activation = get_activation(activation)

    def build(self, input_shape):
        input_dim = input_shape[-1]
        self.kernel = self.add_weight(
            name="kernel",
            shape=(input_dim, self.units),
            initializer=keras.initializers.RandomNormal(stddev=self.sigma),
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    def call(self, inputs):
        return self.activation(ops.matmul(inputs, self.kernel) + self.bias)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "sigma": self.sigma,
            "activation": keras.activations.serialize(self.activation),
        }


# Activation names accepted everywhere in the package (flags, models, layers).
ACTIVATIONS = (
    "relu",
    "sigmoid",
    "tanh",
    "gelu",
    "leaky_relu",
    "elu",
    "selu",
    "silu",
    "softplus",
    "linear",
)


def get_activation(activation):
    """Returns the activation callable for a name, a callable or `None`.

    `"relu"` maps to the hand-written `relu` so that the scratch parts stay
    from scratch; other names come from `keras.activations`.
    """
    if activation is None:
        return keras.activations.linear
    if callable(activation):
        return activation
    if activation == "relu":
        return relu
    if isinstance(activation, dict):  # a serialized callable from get_config
        return keras.activations.deserialize(activation)
    if activation not in ACTIVATIONS:
        raise ValueError(f"Unknown activation {activation!r}; accepted: {', '.join(ACTIVATIONS)}.")
    return keras.activations.get(activation)
