"""The process-wide setting the tools choose for TensorFlow, and the record of it.

TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` once, when it starts: oneDNN's CPU kernels
(on by default on x86 Linux) or Eigen's. For the chapter's small matmuls (batch 256
through 784 -> 256 -> 10) Eigen's are faster on the CPUs measured (README,
"Performance"), so the tools start TensorFlow with oneDNN off unless told otherwise:
`--onednn=on|off`, or `TF_ENABLE_ONEDNN_OPTS` set in the environment. The choice is
printed in a run's first line and kept in its `metrics.json`. No TensorFlow import
here: the tools call `choose` before TensorFlow starts.
"""

import os
import sys

ONEDNN = "TF_ENABLE_ONEDNN_OPTS"
# The tools' choice when neither --onednn nor the environment says: off.
CHOSEN = "0"


def choose(onednn, environ=None):
    """Sets `TF_ENABLE_ONEDNN_OPTS` in `environ` (default `os.environ`) for the
    `--onednn` setting `onednn` ("auto", "on" or "off"): an explicit setting wins, then
    the environment's own value, then the tools' choice (`CHOSEN`). Call it before
    TensorFlow starts; afterwards the variable no longer matters to this process (its
    children still read it)."""
    environ = os.environ if environ is None else environ
    if onednn != "auto":
        environ[ONEDNN] = "1" if onednn == "on" else "0"
    else:
        environ.setdefault(ONEDNN, CHOSEN)
    return environ[ONEDNN]


def settings():
    """The oneDNN setting of this process, for metrics.json: the variable (`"unset"`:
    TensorFlow's default, on) and, once TensorFlow has started, whether it did use
    oneDNN (its own answer)."""
    record = {ONEDNN: os.environ.get(ONEDNN, "unset")}
    if "tensorflow" in sys.modules:
        try:  # a private module: its absence in a later TensorFlow costs only this field
            from tensorflow.python.util import _pywrap_util_port

            record["onednn_enabled"] = bool(_pywrap_util_port.IsMklEnabled())
        except (ImportError, AttributeError):
            pass
    return record


def describe():
    """The setting in words, for a run's first line."""
    value = os.environ.get(ONEDNN)
    if value is None:
        return f"oneDNN on (TensorFlow's default; {ONEDNN} unset)"
    state = "off" if value == "0" else "on"
    return f"oneDNN {state} ({ONEDNN}={value}; --onednn=on|off to change)"
