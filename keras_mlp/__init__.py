"""keras_mlp: the d2l.ai chapter "Implementation of Multilayer Perceptrons" as
TensorFlow/Keras software. Modules: layers, models, data, distribute, training,
reporting, config, flags, main."""

import os

# The package runs its own loop on TensorFlow (GradientTape, tf.distribute).
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"
