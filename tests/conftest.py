"""Test-session set-up that must happen before TensorFlow runs any op, and the tiers.

`python -m pytest` runs the fast tier; `python -m pytest -m slow` the slow one
(real clusters, kill/resume, real-data seed runs, sweeps, the search, the wheel).
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Two logical CPU devices for every test: MirroredStrategy needs them split before
# the runtime starts, which can happen only once per process (docs/design.md, "Logical CPU devices").
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * 2
)

sys.path.insert(0, os.path.dirname(__file__))

# Tests run subprocesses from other folders: make the real-data path absolute.
if os.environ.get("KERAS_MLP_FASHION_MNIST_DIR"):
    os.environ["KERAS_MLP_FASHION_MNIST_DIR"] = os.path.abspath(
        os.environ["KERAS_MLP_FASHION_MNIST_DIR"]
    )


def pytest_collection_modifyitems(config, items):
    # tf.test.TestCase's deprecated `test_session` context manager is not a test.
    items[:] = [item for item in items if item.name != "test_session"]


def pytest_terminal_summary(terminalreporter):
    """How many documentation blocks ran and how many were skipped (tests/test_docs.py)."""
    outcomes = {}
    for outcome in ("passed", "failed", "skipped"):
        for report in terminalreporter.stats.get(outcome, ()):
            if "test_docs.py::test_block[" in report.nodeid:
                outcomes.setdefault(outcome, set()).add(report.nodeid)
    if outcomes:
        run = len(outcomes.get("passed", ())) + len(outcomes.get("failed", ()))
        terminalreporter.write_line(
            f"documentation blocks: {run} run ({len(outcomes.get('failed', ()))} failed), "
            f"{len(outcomes.get('skipped', ()))} skipped"
        )
