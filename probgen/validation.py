"""Validation of scalar arguments at the public boundary: one message for each kind of value.

Every check names the argument, what was expected and what was given, and raises before any work
starts: ``ValueError`` for a value out of range (and, unless ``type_error`` says otherwise, for a
value of the wrong type, as the options of a fit have always been refused).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = [
    "MAX_INFERRED_CODE",
    "MAX_SEED",
    "check_inferred_code",
    "check_seed",
    "non_negative_int",
    "positive_float",
    "positive_int",
]

#: The largest seed torch's generators take (a signed 64-bit integer).
MAX_SEED = 2**63 - 1


def _int(value: Any, argname: str, low: int, words: str, allow_none: bool, type_error: bool) -> int | None:
    if value is None and allow_none:
        return None
    also = " or None" if allow_none else ""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        exc = TypeError if type_error else ValueError
        got = type(value).__name__ if type_error else repr(value)
        raise exc(f"{argname} must be a {words} int{also}; got {got}.")
    if int(value) < low:
        raise ValueError(f"{argname} must be a {words} int{also}; got {value!r}.")
    return int(value)


def positive_int(value: Any, argname: str, *, allow_none: bool = False, type_error: bool = False) -> Any:
    """``value`` as an int >= 1 (None passes when ``allow_none``)."""
    return _int(value, argname, 1, "positive", allow_none, type_error)


def non_negative_int(value: Any, argname: str, *, allow_none: bool = False, type_error: bool = False) -> Any:
    """``value`` as an int >= 0 (None passes when ``allow_none``)."""
    return _int(value, argname, 0, "non-negative", allow_none, type_error)


def positive_float(value: Any, argname: str, *, allow_zero: bool = False, allow_none: bool = False) -> Any:
    """``value`` as a finite float > 0 (>= 0 with ``allow_zero``; None passes when ``allow_none``)."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))
    if not ok or not (float(value) >= 0 if allow_zero else float(value) > 0):
        words = "a non-negative number" if allow_zero else "a positive number"
        raise ValueError(f"{argname} must be {words}{' or None' if allow_none else ''}; got {value!r}.")
    return float(value)


def check_seed(value: Any, argname: str = "seed", *, allow_none: bool = False) -> Any:
    """``value`` as a seed: an int in ``[0, 2**63 - 1]`` (what torch's generators take)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{argname} must be an int; got {type(value).__name__}.")
    if not 0 <= int(value) <= MAX_SEED:
        raise ValueError(f"{argname} must be an int in [0, 2**63 - 1]; got {value!r}.")
    return int(value)


#: The largest category code read as "codes 0 .. C-1" when the number of categories is not given:
#: a larger one is far more likely an identifier than a category, and would allocate C of each.
MAX_INFERRED_CODE = 9_999


def check_inferred_code(top: float, argname: str, option: str) -> None:
    """Refuse a largest category code too large to infer the number of categories from."""
    if top > MAX_INFERRED_CODE:
        shown = f"{top:.4g}" if top >= 1e15 else f"{int(top):,}"
        raise ValueError(
            f"{argname} holds category code {shown}; with no {option} given, codes are read as 0..C-1, which "
            f"would mean {shown} + 1 categories. Recode the values to 0..C-1 (e.g. numpy.unique(x, "
            f"return_inverse=True)), or pass {option} explicitly (codes above {MAX_INFERRED_CODE:,} are not "
            "inferred)."
        )


#: Counts above this are not whole numbers in float64 (its 53-bit significand).
MAX_EXACT_COUNT = 2**53


def check_counts_exact(t: Any, argname: str) -> None:
    """Refuse counts too large to be exact whole numbers in float64."""
    top = float(t.max()) if t.numel() else 0.0
    if top > MAX_EXACT_COUNT:
        raise ValueError(
            f"{argname} holds a count of {top:.4g}; counts above 2**53 (about 9.0e15) are not exact whole "
            "numbers in float64. Rescale them, or model them as continuous values."
        )
