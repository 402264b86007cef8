"""Train an MLP on Fashion-MNIST (or any IDX image set), resumably.

    keras-mlp-train --flagfile=configs/scratch.flags --data_dir=DIR
    python -m keras_mlp.train --model=concise --hidden_units=512,256 --optimizer=adam

Flags after --flagfile override it. Exit status: 0 done, 1 diverged, 2 bad
input, 3 outputs could not be written (disk full), 130/143 stopped by
Ctrl-C/SIGTERM (after 3, 130 and 143, rerun the same command to resume).
"""

import sys

from keras_mlp import cli, process


def _train(flag_values, args):
    cli.no_positional(args)
    config = cli.config_from_flags(flag_values)  # every setting checked before TensorFlow loads
    process.choose(config.onednn)
    cli.quiet_tensorflow()
    from keras_mlp.run import train  # TensorFlow starts here

    result = train(config)
    if result.history:  # a cluster's other workers learn only that the chief found it complete
        print(
            f"final val_accuracy {result.history['val_accuracy'][-1]:.4f}; "
            f"outputs in {result.model_dir}"
        )


def main(argv=None):
    """The `keras-mlp-train` command; returns its exit status."""
    return cli.run_tool(_train, cli.define_run_flags, __doc__, argv)


if __name__ == "__main__":
    sys.exit(main())
