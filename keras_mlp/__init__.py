"""keras_mlp: the d2l.ai chapter "Implementation of Multilayer Perceptrons" as
TensorFlow/Keras software.

Modules, smallest first: layers (hand-written ReLU, ScratchDense), models
(MLPScratch, concise_mlp), data (IDX files, pipelines), distribute (strategies),
training (the Trainer loop), summaries (TensorBoard), reporting (run files,
export), run_dir (resume rules), config / flags / main (the command line),
launch (local clusters), predict, benchmark, sweep, search.
"""

import os

# The package runs its own loop on TensorFlow (GradientTape, tf.distribute).
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__version__ = "0.1.0"
