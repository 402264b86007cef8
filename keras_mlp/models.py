"""The chapter's two multilayer perceptrons.

`MLPScratch` keeps the chapter's explicit form (parameters W1, b1, W2, b2 and a
hand-written ReLU), built from the package's own `ScratchDense` and `ReLU`
layers; `concise_mlp` is the same network from stock Keras layers. Both return
logits and take their input size and class count from the data.

Regularisation comes in the same two styles. Dropout: the scratch model uses the
hand-written `layers.Dropout`, the concise one `keras.layers.Dropout`, after each
hidden activation. Weight decay: the scratch model writes the chapter's L2 penalty
`weight_decay / 2 * sum ||W||^2` (kernels, not biases) into its loss (`model.losses`); the
concise model leaves decay to its optimizer (`optimizers.build_optimizer(weight_decay=...)`: Keras'
decoupled weight decay, as in AdamW). With plain SGD the two are the same update;
with an adaptive optimizer (Adam, RMSprop, ...) they are not: the penalty's gradient
`weight_decay * W` is divided by the running gradient scale like any other gradient, so
weights with large gradients decay less, while decoupled decay shrinks every kernel
by `learning_rate * weight_decay * W` per step whatever its gradients (Loshchilov and
Hutter, "Decoupled Weight Decay Regularization", 2019).
"""

import math
import re

import keras
from keras import ops

from keras_mlp.checks import (
    check_accepted,
    check_non_negative_finite,
    check_positive_finite,
    check_positive_int,
    dropout_rates,
)
from keras_mlp.errors import UserError
from keras_mlp.layers import (
    Dropout,
    L2Penalty,
    ScratchDense,
    activation_layer,
    get_activation,
    serialize_activation,
)
from keras_mlp.names import INITIALIZERS, MODELS


def kernel_initializer(name, sigma, model):
    """The Keras initializer called `name` (see `INITIALIZERS`) for `model`'s kernels."""
    check_accepted("initializer", name, INITIALIZERS)
    if name == "normal" or (name == "default" and model == "scratch"):
        return keras.initializers.RandomNormal(stddev=sigma)
    return keras.initializers.get("glorot_uniform" if name == "default" else name)


def _check_sizes(num_classes, hidden_units):
    hidden_units = tuple(hidden_units)
    check_positive_int("num_classes", num_classes)
    for width in hidden_units:
        check_positive_int("hidden_units", width)
    return hidden_units


@keras.saving.register_keras_serializable(package="keras_mlp")
class MLPScratch(keras.Model):
    """MLP with explicit weight variables, as written from scratch in the chapter.

    `H = activation(X W1 + b1)`, ..., `logits = H Wn + bn`, where `X` is the
    input flattened to `(batch, num_inputs)`. Each `X W + b` is a `ScratchDense`
    layer and the activation a `ReLU` layer (the hand-written one) or
    `keras.layers.Activation`. The weights are named `W1`, `b1`, `W2`, `b2`,
    ... and are reachable as attributes of the same names once built.

    Args:
        num_classes: Number of classes, the width of the output (logits) layer.
            Defaults to `10`.
        hidden_units: Width of each hidden layer, input side first.
            Defaults to `(256,)`.
        activation: Hidden activation name; `"relu"` is the hand-written one.
            Defaults to `"relu"`.
        sigma: Standard deviation of the kernels' normal initialisation.
            Defaults to `0.01`.
        initializer: Kernel initialiser name from `INITIALIZERS`. Defaults to
            `"default"`: N(0, sigma^2), as in the chapter.
        dropout: Dropout rate after each hidden activation (the hand-written
            `Dropout`, in training only): one number for every hidden layer or one
            per hidden layer. A rate of 0 adds no layer. Defaults to `0.0`.
        weight_decay: The coefficient of the L2 penalty `weight_decay / 2 * sum ||W||^2` over the
            kernels (not the biases), in `model.losses`: the `Trainer` (and `fit`)
            add it to the training loss; the loss they report is the
            cross-entropy alone. `0` adds no penalty. Defaults to `0.0`.

    Input shape:
        `(batch_size, ...)`; everything after the batch axis is flattened.

    Output shape:
        `(batch_size, num_classes)` logits.

    Example:
        >>> model = MLPScratch(num_classes=10, hidden_units=(256,))
        >>> model(np.zeros((2, 28, 28), "float32")).shape  # (2, 10)
    """

    def __init__(
        self,
        num_classes=10,
        *,
        hidden_units=(256,),
        activation="relu",
        sigma=0.01,
        initializer="default",
        dropout=0.0,
        weight_decay=0.0,
        **kwargs,
    ):
        # An explicit name: Keras would number a default one (mlp_scratch_5) per model built
        # in a process, and the weights' TensorBoard tags with it.
        super().__init__(**{"name": "mlp_scratch", **kwargs})
        self.hidden_units = _check_sizes(num_classes, hidden_units)
        self.num_classes = num_classes
        self.sigma = check_positive_finite("sigma", sigma)
        self.activation = get_activation(activation)
        self.initializer = initializer
        self.dropout = dropout_rates(dropout, self.hidden_units)
        self.weight_decay = check_non_negative_finite("weight_decay", weight_decay)
        kernel_initializer(initializer, self.sigma, "scratch")  # the name, checked up front
        # With weight_decay 0, no penalty at all: the model is exactly the one without.
        penalty = L2Penalty(self.weight_decay) if self.weight_decay else None
        # hidden1 (W1, b1) -> activation -> ... -> output (Wn, bn); each kernel gets its own
        # initializer, and so its own seed.
        widths = (*self.hidden_units, num_classes)
        self.dense_layers = [
            ScratchDense(
                units,
                sigma=self.sigma,
                kernel_initializer=kernel_initializer(initializer, self.sigma, "scratch"),
                kernel_name=f"W{i}",
                bias_name=f"b{i}",
                kernel_regularizer=penalty,
                name="output" if i == len(widths) else f"hidden{i}",
                dtype=self.dtype_policy,  # a reloaded mixed-precision model computes in 16 bits
            )
            for i, units in enumerate(widths, start=1)
        ]
        self.activation_layers = [
            activation_layer(self.activation, dtype=self.dtype_policy) for _ in self.hidden_units
        ]
        # Made last, so that their seeds do not shift the kernels' draws; a rate of 0
        # makes no layer (and draws no random numbers).
        self.dropout_layers = [
            Dropout(rate, name=f"dropout{i}", dtype=self.dtype_policy)
            for i, rate in enumerate(self.dropout, start=1)
            if rate
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

    def call(self, X, training=False):
        H = ops.reshape(X, (-1, self.num_inputs))  # (batch, num_inputs)
        dropouts = iter(self.dropout_layers)  # one per nonzero rate, input side first
        layers = zip(self.dense_layers, self.activation_layers, self.dropout, strict=False)
        for dense, activation, rate in layers:
            H = activation(dense(H))  # (batch, hidden)
            if rate:
                H = next(dropouts)(H, training=training)  # (batch, hidden), zeros in training
        return self.dense_layers[-1](H)  # (batch, num_classes)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.num_classes)

    def get_config(self):
        return {
            **super().get_config(),
            "num_classes": self.num_classes,
            "hidden_units": list(self.hidden_units),
            "activation": serialize_activation(self.activation),
            "sigma": self.sigma,
            "initializer": self.initializer,
            "dropout": list(self.dropout),
            "weight_decay": self.weight_decay,
        }


def concise_mlp(
    input_shape,
    num_classes=10,
    *,
    hidden_units=(256,),
    activation="relu",
    sigma=0.01,
    initializer="default",
    dropout=0.0,
):
    """The concise MLP: `Sequential([Flatten, Dense(h, activation)..., Dense(num_classes)])`,
    with a `keras.layers.Dropout` after each hidden layer whose rate is not 0.

    Uses Keras' own layers and initialisers, as the chapter's concise version does.

    Args:
        input_shape: Shape of one example, without the batch axis, e.g. `(28, 28)`.
        num_classes: Number of classes, the width of the output (logits) layer.
            Defaults to `10`.
        hidden_units: Width of each hidden layer. Defaults to `(256,)`.
        activation: Hidden activation name. Defaults to `"relu"` (Keras' relu).
        sigma: Standard deviation for `initializer="normal"`. Defaults to `0.01`.
        initializer: Kernel initialiser name from `INITIALIZERS`. Defaults to
            `"default"`: Keras' Glorot uniform.
        dropout: Dropout rate after each hidden layer: one number for all or one per
            hidden layer; 0 adds no layer. Defaults to `0.0`. (Weight decay for this
            model is the optimizer's: `optimizers.build_optimizer(weight_decay=...)`.)

    Returns:
        A built `keras.Sequential` returning logits.
    """
    hidden_units = _check_sizes(num_classes, hidden_units)
    get_activation(activation)  # validates the name with the package's message
    rates = dropout_rates(dropout, hidden_units)
    sigma = check_positive_finite("sigma", sigma)
    # A new initializer per layer, as Dense("glorot_uniform") makes: an unseeded Keras
    # initializer fixes its seed when created, so one shared instance would give every
    # layer of equal shape the very same kernel. All are made before any Dropout layer,
    # whose seed would otherwise shift the kernels' draws.
    inits = [kernel_initializer(initializer, sigma, "concise") for _ in (*hidden_units, 0)]
    layers = [keras.Input(shape=tuple(input_shape)), keras.layers.Flatten()]
    for units, rate, init in zip(hidden_units, rates, inits, strict=False):
        layers.append(keras.layers.Dense(units, activation=activation, kernel_initializer=init))
        if rate:  # a rate of 0 makes no layer (and draws no random numbers)
            layers.append(keras.layers.Dropout(rate))
    layers.append(keras.layers.Dense(num_classes, kernel_initializer=inits[-1]))
    return keras.Sequential(layers, name="concise_mlp")


def build_model(
    name,
    input_shape,
    num_classes,
    *,
    hidden_units=(256,),
    activation="relu",
    sigma=0.01,
    initializer="default",
    dropout=0.0,
    weight_decay=0.0,
):
    """Builds the model called `name` (one of `MODELS`) for examples of `input_shape`.

    `weight_decay` is the scratch model's L2 penalty; the concise model takes weight
    decay from its optimizer (`optimizers.build_optimizer(weight_decay=...)`) and refuses it here.
    """
    settings = dict(
        hidden_units=hidden_units,
        activation=activation,
        sigma=sigma,
        initializer=initializer,
        dropout=dropout,
    )
    check_accepted("name", name, MODELS)
    if name == "concise" and weight_decay:
        raise UserError(
            "The concise model decays its weights through the optimizer: give "
            "keras_mlp.optimizers.build_optimizer(weight_decay=...). "
            f"Received: weight_decay={weight_decay!r}"
        )
    if name == "scratch":
        model = MLPScratch(num_classes, weight_decay=weight_decay, **settings)
        model.build((None, *input_shape))
        return model
    return concise_mlp(input_shape, num_classes, **settings)
