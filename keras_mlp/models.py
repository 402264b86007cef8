"""The chapter's two multilayer perceptrons.

`MLPScratch` keeps the chapter's explicit form (parameters W1, b1, W2, b2 and a
hand-written ReLU), built from the package's own `ScratchDense` and `ReLU`
layers; `concise_mlp` is the same network from stock Keras layers. Both return
logits and take their input size and class count from the data.
"""

import math
import re

import keras
from keras import ops

from keras_mlp.layers import ScratchDense, activation_layer, get_activation, serialize_activation
from keras_mlp.names import INITIALIZERS, MODELS


def kernel_initializer(name, sigma, model):
    """The Keras initializer called `name` (see `INITIALIZERS`) for `model`'s kernels."""
    if name not in INITIALIZERS:
        raise ValueError(
            f"Unknown initializer; accepted: {', '.join(INITIALIZERS)}. Received: initializer={name!r}"
        )
    if name == "normal" or (name == "default" and model == "scratch"):
        return keras.initializers.RandomNormal(stddev=sigma)
    return keras.initializers.get("glorot_uniform" if name == "default" else name)


def _check_sizes(num_outputs, hidden_units):
    hidden_units = tuple(hidden_units)
    for name, value in [("num_outputs", num_outputs), *(("hidden_units", h) for h in hidden_units)]:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"Expected a positive integer. Received: {name}={value!r}")
    return hidden_units


def _check_sigma(sigma):
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"Expected a positive sigma. Received: sigma={sigma!r}")
    return float(sigma)


@keras.saving.register_keras_serializable(package="keras_mlp")
class MLPScratch(keras.Model):
    """MLP with explicit weight variables, as written from scratch in the chapter.

    `H = activation(X W1 + b1)`, ..., `logits = H Wn + bn`, where `X` is the
    input flattened to `(batch, num_inputs)`. Each `X W + b` is a `ScratchDense`
    layer and the activation a `ReLU` layer (the hand-written one) or
    `keras.layers.Activation`. The weights are named `W1`, `b1`, `W2`, `b2`,
    ... and are reachable as attributes of the same names once built.

    Args:
        num_outputs: Number of classes. Defaults to `10`.
        hidden_units: Width of each hidden layer, input side first.
            Defaults to `(256,)`.
        activation: Hidden activation name; `"relu"` is the hand-written one.
            Defaults to `"relu"`.
        sigma: Standard deviation of the kernels' normal initialisation.
            Defaults to `0.01`.
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
        *,
        hidden_units=(256,),
        activation="relu",
        sigma=0.01,
        initializer="default",
        **kwargs,
    ):
        # An explicit name: Keras would number a default one (mlp_scratch_5) per model built
        # in a process, and the weights' TensorBoard tags with it.
        super().__init__(**{"name": "mlp_scratch", **kwargs})
        self.hidden_units = _check_sizes(num_outputs, hidden_units)
        self.num_outputs = num_outputs
        self.sigma = _check_sigma(sigma)
        self.activation = get_activation(activation)
        self.initializer = initializer
        kernel_initializer(initializer, self.sigma, "scratch")  # the name, checked up front
        # hidden1 (W1, b1) -> activation -> ... -> output (Wn, bn); each kernel gets its own
        # initializer, and so its own seed.
        widths = (*self.hidden_units, num_outputs)
        self.dense_layers = [
            ScratchDense(
                units,
                sigma=self.sigma,
                kernel_initializer=kernel_initializer(initializer, self.sigma, "scratch"),
                kernel_name=f"W{i}",
                bias_name=f"b{i}",
                name="output" if i == len(widths) else f"hidden{i}",
                dtype=self.dtype_policy,  # a reloaded mixed-precision model computes in 16 bits
            )
            for i, units in enumerate(widths, start=1)
        ]
        self.activation_layers = [
            activation_layer(self.activation, dtype=self.dtype_policy) for _ in self.hidden_units
        ]

    def build(self, input_shape):
        self.num_inputs = math.prod(input_shape[1:])
        width = self.num_inputs
        for layer in self.dense_layers:
            layer.build((None, width))
            width = layer.units

    def __getattr__(self, name):
        """`W1`, `b1`, `W2`, ...: the chapter's names for the layers' weights."""
        match = re.fullmatch(r"([Wb])([1-9][0-9]*)", name)
        layers = self.__dict__.get("dense_layers") if match else None
        if layers and int(match[2]) <= len(layers) and layers[int(match[2]) - 1].built:
            layer = layers[int(match[2]) - 1]
            return layer.kernel if match[1] == "W" else layer.bias
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    def _trackable_children(self, save_type="checkpoint", **kwargs):
        # tf.train.Checkpoint does not follow Keras' layer lists; name the weights W1, b1,
        # ... directly, so a checkpoint of this model holds them by the chapter's names.
        children = super()._trackable_children(save_type, **kwargs)
        if self.built:
            for i, layer in enumerate(self.dense_layers, start=1):
                children.update({f"W{i}": layer.kernel, f"b{i}": layer.bias})
        return children

    def call(self, X):
        H = ops.reshape(X, (-1, self.num_inputs))  # (batch, num_inputs)
        for dense, activation in zip(self.dense_layers, self.activation_layers, strict=False):
            H = activation(dense(H))  # (batch, hidden)
        return self.dense_layers[-1](H)  # (batch, num_outputs)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_outputs)

    def get_config(self):
        return {
            **super().get_config(),
            "num_outputs": self.num_outputs,
            "hidden_units": list(self.hidden_units),
            "activation": serialize_activation(self.activation),
            "sigma": self.sigma,
            "initializer": self.initializer,
        }


def concise_mlp(
    input_shape,
    num_outputs=10,
    *,
    hidden_units=(256,),
    activation="relu",
    sigma=0.01,
    initializer="default",
):
    """The concise MLP: `Sequential([Flatten, Dense(h, activation)..., Dense(num_outputs)])`.

    Uses Keras' own layers and initialisers, as the chapter's concise version does.

    Args:
        input_shape: Shape of one example, without the batch axis, e.g. `(28, 28)`.
        num_outputs: Number of classes. Defaults to `10`.
        hidden_units: Width of each hidden layer. Defaults to `(256,)`.
        activation: Hidden activation name. Defaults to `"relu"` (Keras' relu).
        sigma: Standard deviation for `initializer="normal"`. Defaults to `0.01`.
        initializer: Kernel initialiser name from `INITIALIZERS`. Defaults to
            `"default"`: Keras' Glorot uniform.

    Returns:
        A built `keras.Sequential` returning logits.
    """
    hidden_units = _check_sizes(num_outputs, hidden_units)
    get_activation(activation)  # validates the name with the package's message
    init = kernel_initializer(initializer, _check_sigma(sigma), "concise")
    layers = [keras.Input(shape=tuple(input_shape)), keras.layers.Flatten()]
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
    *,
    hidden_units=(256,),
    activation="relu",
    sigma=0.01,
    initializer="default",
):
    """Builds the model called `name` (one of `MODELS`) for examples of `input_shape`."""
    settings = dict(
        hidden_units=hidden_units, activation=activation, sigma=sigma, initializer=initializer
    )
    if name == "scratch":
        model = MLPScratch(num_outputs, **settings)
        model.build((None, *input_shape))
        return model
    if name == "concise":
        return concise_mlp(input_shape, num_outputs, **settings)
    raise ValueError(f"Unknown model; accepted: {', '.join(MODELS)}. Received: name={name!r}")
