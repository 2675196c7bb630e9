"""Interpolation between two learning rates, shared by the phased schedules."""

import math

from keras import ops


def clipped_fraction(step, start, length):
    """Progress of `step` through `[start, start + length]`, clipped to [0, 1].

    A zero-length phase counts as already finished, so callers never divide
    by zero for phases that were configured away.
    """
    if length <= 0:
        return ops.cast(step >= start, step.dtype)
    return ops.clip((step - start) / length, 0.0, 1.0)


def interpolate(start_value, end_value, fraction, shape="linear"):
    """Moves from `start_value` to `end_value` as `fraction` goes 0 -> 1.

    `shape="cosine"` follows half a cosine period, so the rate changes slowly
    at both ends of the phase (Loshchilov & Hutter, 2017).
    """
    if shape == "linear":
        weight = fraction
    elif shape == "cosine":
        weight = 0.5 * (1.0 - ops.cos(math.pi * fraction))
    else:
        raise ValueError(
            f"Unknown interpolation shape {shape!r}; expected 'linear' or "
            "'cosine'."
        )
    # A weighted sum rather than `start + (end - start) * weight`: the
    # latter loses the small end value to float32 cancellation at weight 1
    # (0.5 + (5e-5 - 0.5) gives 5.0008e-5).
    return start_value * (1.0 - weight) + end_value * weight


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(
            f"Argument `{name}` must be one of {list(choices)}. "
            f"Received: {name}={value!r}"
        )
