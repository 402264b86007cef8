"""The names the package accepts, in a module with no heavy imports.

Configs, flags and help text read them without importing TensorFlow; the
modules that act on a name (layers, models, data, distribute, training) use
the same tuples, so a name is defined once.
"""

MODELS = ("scratch", "concise")

# Hidden-layer activations; "relu" is the hand-written one in the scratch model.
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

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "adadelta", "adamax", "nadam", "lion")

# Learning-rate schedules over the training steps (keras.optimizers.schedules): constant;
# cosine decay to 0; exponential decay to 1% of the rate; step: divided by 10 at half and
# again at three quarters of training. Each may start with a linear warm-up.
LR_SCHEDULES = ("constant", "cosine", "exponential", "step")

# Image-classification sets by name: through keras.datasets where it has them (fashion_mnist,
# mnist, cifar10), through tensorflow-datasets otherwise (kmnist, emnist/letters); cifar10 is
# colour (32, 32, 3). "synthetic" is a small generated set for smoke runs.
DATASETS = ("fashion_mnist", "mnist", "kmnist", "emnist/letters", "cifar10", "synthetic")

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored")

# Keras dtype policies: float32, or mixed precision (float32 weights, 16-bit math) for GPUs.
ONEDNN_SETTINGS = ("auto", "on", "off")
DTYPES = ("float32", "mixed_float16", "mixed_bfloat16")

# Training steps per compiled call (--steps_per_execution): the chapter's epoch (234 steps)
# in one call. Each call costs about 2 ms of host round trip and bookkeeping; a chunk is
# also the granularity of the progress bar and of Ctrl-C (5 s for 3 x 1024 units at batch
# 256 on 2 CPU cores). README, "Performance".
STEPS_PER_EXECUTION = 250

# Seconds a worker of a cluster waits for the others before it gives up (--cluster_timeout).
CLUSTER_TIMEOUT = 180
