"""The chapter's two multilayer perceptrons.

`MLPScratch` keeps the chapter's explicit form (parameters W1, b1, W2, b2 and a
hand-written ReLU); `concise_mlp` is the same network from stock Keras layers.
Both return logits and take their input size and class count from the data.
"""

import math

import keras
from keras import ops

from keras_mlp.layers import get_activation

MODELS = ("scratch", "concise")

# Kernel initialisers: "default" is the chapter's choice for each model, N(0, sigma^2)
# for the scratch model and Keras' Glorot uniform for the concise one.
INITIALIZERS = (
    "default",
    "normal",
    "glorot_uniform",
    "glorot_normal",
    "he_normal",
    "he_uniform",
    "lecun_normal",
)


def kernel_initializer(name, sigma, model):
    """The Keras initializer called `name` (see `INITIALIZERS`) for `model`'s kernels."""
    if name not in INITIALIZERS:
        raise ValueError(f"Unknown initializer {name!r}; accepted: {', '.join(INITIALIZERS)}.")
    if name == "normal" or (name == "default" and model == "scratch"):
        return keras.initializers.RandomNormal(stddev=sigma)
    return keras.initializers.get("glorot_uniform" if name == "default" else name)


def _check_sizes(num_outputs, hidden_units):
    hidden_units = tuple(hidden_units)
    for name, value in [("num_outputs", num_outputs), *(("hidden_units", h) for h in hidden_units)]:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(
                f"Expected positive integers for `num_outputs` and `hidden_units`. "
                f"Received: {name}={value!r}"
            )
    return hidden_units


@keras.saving.register_keras_serializable(package="keras_mlp")
class MLPScratch(keras.Model):
    """MLP with explicit weight variables, as written from scratch in the chapter.

    `H = activation(X W1 + b1)`, ..., `logits = H Wn + bn`, where `X` is the
    input flattened to `(batch, num_inputs)`. Kernels are drawn from
    N(0, sigma^2) and biases start at zero. The weights are named `W1`, `b1`,
    `W2`, `b2`, ... and are reachable as attributes of the same names.

    Args:
        num_outputs: Number of classes. Defaults to `10`.
        hidden_units: Width of each hidden layer, input side first.
            Defaults to `(256,)`.
        sigma: Standard deviation of the kernels' normal initialisation.
            Defaults to `0.01`.
        activation: Hidden activation name; `"relu"` is the hand-written one.
            Defaults to `"relu"`.
        initializer: Kernel initialiser name from `INITIALIZERS`. Defaults to
            `"default"`: N(0, sigma^2), as in the chapter.

    Input shape:
        `(batch_size, ...)`; everything after the batch axis is flattened.

    Output shape:
        `(batch_size, num_outputs)` logits.

    Example:
        >>> model = MLPScratch(num_outputs=10, hidden_units=(256,))
        >>> model(np.zeros((2, 28, 28), "float32")).shape  # (2, 10)
    """

    def __init__(
        self,
        num_outputs=10,
        hidden_units=(256,),
        sigma=0.01,
        activation="relu",
        initializer="default",
        **kwargs,
    ):
        super().__init__(**kwargs)
        kernel_initializer(initializer, 0.01, "scratch")  # validates the name
        self.hidden_units = _check_sizes(num_outputs, hidden_units)
        if not sigma > 0:
            raise ValueError(f"MLPScratch expected a positive `sigma`. Received: sigma={sigma}")
        self.num_outputs = num_outputs
        self.sigma = float(sigma)
        self.activation_name = activation
        self.activation = get_activation(activation)
        self.initializer = initializer

    def build(self, input_shape):
        self.num_inputs = math.prod(input_shape[1:])
        widths = (self.num_inputs, *self.hidden_units, self.num_outputs)
        self.kernels, self.biases = [], []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True), start=1):
            kernel = self.add_weight(
                name=f"W{i}",
                shape=(fan_in, fan_out),
                initializer=kernel_initializer(self.initializer, self.sigma, "scratch"),
            )
            bias = self.add_weight(name=f"b{i}", shape=(fan_out,), initializer="zeros")
            # W1, b1, W2, b2, ... as in the chapter; the lists keep call() depth-agnostic.
            setattr(self, f"W{i}", kernel)
            setattr(self, f"b{i}", bias)
            self.kernels.append(kernel)
            self.biases.append(bias)

    def call(self, X):
        H = ops.reshape(X, (-1, self.num_inputs))  # (batch, num_inputs)
        for W, b in zip(self.kernels[:-1], self.biases[:-1], strict=True):
            H = self.activation(ops.matmul(H, W) + b)  # (batch, hidden)
        return ops.matmul(H, self.kernels[-1]) + self.biases[-1]  # (batch, num_outputs)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_outputs)

    def get_config(self):
        return {
            **super().get_config(),
            "num_outputs": self.num_outputs,
            "hidden_units": list(self.hidden_units),
            "sigma": self.sigma,
            "activation": self.activation_name,
            "initializer": self.initializer,
        }


def concise_mlp(
    input_shape,
    num_outputs=10,
    hidden_units=(256,),
    activation="relu",
    initializer="default",
    sigma=0.01,
):
    """The concise MLP: `Sequential([Flatten, Dense(h, activation)..., Dense(num_outputs)])`.

    Uses Keras' own layers and initialisers, as the chapter's concise version does.

    Args:
        input_shape: Shape of one example, without the batch axis, e.g. `(28, 28)`.
        num_outputs: Number of classes. Defaults to `10`.
        hidden_units: Width of each hidden layer. Defaults to `(256,)`.
        activation: Hidden activation name. Defaults to `"relu"` (Keras' relu).
        initializer: Kernel initialiser name from `INITIALIZERS`. Defaults to
            `"default"`: Keras' Glorot uniform.
        sigma: Standard deviation for `initializer="normal"`. Defaults to `0.01`.

    Returns:
        A built `keras.Sequential` returning logits.
    """
    hidden_units = _check_sizes(num_outputs, hidden_units)
    get_activation(activation)  # validates the name with the package's message
    layers = [keras.Input(shape=tuple(input_shape)), keras.layers.Flatten()]
    init = kernel_initializer(initializer, sigma, "concise")
    layers += [
        keras.layers.Dense(units, activation=activation, kernel_initializer=init)
        for units in hidden_units
    ]
    layers.append(keras.layers.Dense(num_outputs, kernel_initializer=init))
    return keras.Sequential(layers, name="concise_mlp")


def build_model(
    name,
    input_shape,
    num_outputs,
    hidden_units=(256,),
    activation="relu",
    sigma=0.01,
    initializer="default",
):
    """Builds the model called `name` (one of `MODELS`) for examples of `input_shape`."""
    if name == "scratch":
        model = MLPScratch(num_outputs, hidden_units, sigma, activation, initializer)
        model.build((None, *input_shape))
        return model
    if name == "concise":
        return concise_mlp(input_shape, num_outputs, hidden_units, activation, initializer, sigma)
    raise ValueError(f"Unknown model {name!r}; accepted: {', '.join(MODELS)}.")
