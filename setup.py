from setuptools import find_packages, setup

setup(
    name="keras_mlp",
    version="0.2.0",
    description="Multilayer perceptrons in TensorFlow/Keras, from scratch and concise, on any tf.distribute strategy.",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["keras_mlp", "keras_mlp.*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16",
        "keras>=3.10",
        "tensorflow-datasets",
        "importlib_resources",  # tensorflow-datasets imports it without declaring it (tensorflow/datasets#11212)
        "tensorboard",
        "absl-py",
        "tqdm",
        "matplotlib",
        "optuna",  # the joint hyperparameter search (keras_mlp.search)
        "pillow",  # images for keras_mlp.predict
    ],
    extras_require={
        "test": ["pytest", "pytest-xdist", "ruff"],  # xdist: both tiers run on 2 processes
        # TensorBoard's Profile tab (the --profile_steps traces are invisible without it).
        "profile": ["tensorboard-plugin-profile"],
        # keras-mlp-benchmark train's PyTorch column (timed in a process without TensorFlow).
        "torch": ["torch"],
    },
    entry_points={
        "console_scripts": [
            f"keras-mlp-{tool}=keras_mlp.cli:{tool}_main"
            for tool in ("train", "launch", "predict", "sweep", "search", "benchmark")
        ]
    },
)
