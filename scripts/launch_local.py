"""Run a multi-worker training cluster on this machine.

    python scripts/launch_local.py --workers=2 -- --flagfile=configs/concise.flags

Flags before `--` are the launcher's; those after it go to every worker's train.py.
Each worker gets its own TF_CONFIG on a free 127.0.0.1 port; its output lines are
prefixed with `[worker i]`. If a worker fails, the others are stopped.
"""

from keras_mlp.launch import main

if __name__ == "__main__":
    main()
