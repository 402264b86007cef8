"""The checks of argument values, each written once; no heavy imports.

The layer, model, optimizer, pipeline or tool that takes a setting calls its check
here when it gets the value; `RunConfig` calls the same functions when it is built,
so that a bad config is refused before any data is loaded or model built
(docs/design.md, "Checked once"). Every check raises `UserError` (a `ValueError`)
whose message names the argument and echoes the value it received
(`sigma=0.0 must be a positive finite number`); the command line shows the name as
a flag.
"""

import math

from keras_mlp.errors import UserError


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_accepted(name, value, accepted):
    """`value` is one of the names in `accepted`."""
    if value not in accepted:
        raise UserError(f"{name}={value!r} is not known; accepted: {', '.join(accepted)}")


def check_positive_int(name, value, zero_allowed=False):
    """`value` is a positive integer (or 0, with `zero_allowed`: 0 means off)."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or value < (0 if zero_allowed else 1):
        wanted = "0 (off) or a positive integer" if zero_allowed else "a positive integer"
        raise UserError(f"{name}={value!r} must be {wanted}")


def check_positive_finite(name, value):
    """`value` is a positive finite number; returns it as a float."""
    if not (_is_number(value) and math.isfinite(value) and value > 0):
        raise UserError(f"{name}={value!r} must be a positive finite number")
    return float(value)


def check_non_negative_finite(name, value):
    """`value` is 0 (off) or a positive finite number; returns it as a float."""
    if not (_is_number(value) and math.isfinite(value) and value >= 0):
        raise UserError(f"{name}={value!r} must be 0 (off) or a positive finite number")
    return float(value)


def check_fraction(name, value):
    """`value` is a number in [0, 1); returns it as a float."""
    if not (_is_number(value) and 0.0 <= value < 1.0):
        raise UserError(f"{name}={value!r} must be in [0, 1)")
    return float(value)


def check_seconds(name, value):
    """`value` is a positive finite number of seconds."""
    if not (_is_number(value) and math.isfinite(value) and value > 0):
        shown = f"{value:g}" if _is_number(value) else repr(value)
        raise UserError(f"{name}={shown} must be a positive number of seconds")


def check_profile_steps(name, value):
    """`value` is `(first, last)`: global training steps, counted from 1, first <= last."""
    steps = tuple(value) if isinstance(value, (list, tuple)) else (value,)
    whole = all(isinstance(step, int) and not isinstance(step, bool) for step in steps)
    if not (len(steps) == 2 and whole and 1 <= steps[0] <= steps[1]):
        shown = ",".join(map(str, steps))
        raise UserError(f"{name}={shown} must be FIRST,LAST with 1 <= FIRST <= LAST")


def dropout_rates(dropout, hidden_units):
    """One dropout rate per hidden layer from `dropout`: a number for all of them, or
    a sequence of one rate or one per hidden layer; each in [0, 1)."""
    rates = tuple(dropout) if isinstance(dropout, (list, tuple)) else (dropout,)
    shown = ",".join(map(str, rates))
    if len(rates) not in (1, len(hidden_units)):
        raise UserError(
            f"dropout={shown} gives {len(rates)} rates for {len(hidden_units)} hidden "
            f"layer{'s' if len(hidden_units) > 1 else ''}; "
            "give one rate for all, or one per hidden layer"
        )
    for rate in rates:
        if not (_is_number(rate) and 0.0 <= rate < 1.0):
            raise UserError(
                f"dropout={shown} must be in [0, 1)" + (" each" if len(rates) > 1 else "")
            )
    return tuple(float(rate) for rate in rates) * (len(hidden_units) // len(rates))
