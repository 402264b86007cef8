"""The process-wide setting a run may make for TensorFlow, and the record of it.

TensorFlow reads `TF_ENABLE_ONEDNN_OPTS` once, when it starts: oneDNN's CPU kernels
(on by default on x86 Linux) or Eigen's. Neither wins everywhere (README,
"Performance"): Eigen's are faster for the chapter's 784 -> 256 -> 10, oneDNN's for
1024-wide layers. So the tools leave TensorFlow's default unless told:
`--onednn=on|off`, or `TF_ENABLE_ONEDNN_OPTS` in the environment. The setting is printed
in a run's first line and kept in its `metrics.json`. No TensorFlow import here: the
tools call `choose` before TensorFlow starts.
"""

import os
import sys

ONEDNN = "TF_ENABLE_ONEDNN_OPTS"


def choose(onednn, environ=None):
    """Sets `TF_ENABLE_ONEDNN_OPTS` in `environ` (default `os.environ`) for the
    `--onednn` setting `onednn`: "on" or "off" set it; "auto" leaves the environment's
    own value, or none (TensorFlow's default, on). Returns the value (`None`: unset).
    Call it before TensorFlow starts; afterwards the variable no longer matters to this
    process (its children still read it)."""
    environ = os.environ if environ is None else environ
    if onednn != "auto":
        environ[ONEDNN] = "1" if onednn == "on" else "0"
    return environ.get(ONEDNN)


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
        return "oneDNN on (TensorFlow's default; --onednn=off to change)"
    state = "off" if value == "0" else "on"
    return f"oneDNN {state} ({ONEDNN}={value}; --onednn=on|off to change)"
