"""Argument checks shared by the library and the tasks; errors name the argument and the value.

Every check returns the value converted (``int(...)``) or raises ``ValueError`` with a message of
the form ``"seed must be a non-negative integer. Received: -1"``. Plugin measures are welcome to
use them, so that their errors read like the built-ins'.

Seeds are non-negative integers everywhere: NumPy's generators (``np.random.default_rng``, which
every seeded choice here goes through) refuse negative seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "check_choice",
    "check_int",
    "check_number",
    "check_positive_int",
    "check_seed",
    "is_integer",
    "is_number",
]


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of the string ``choices``.

    Raises:
        ValueError: ``"<name> must be one of (...). Received: <value>"``.
    """
    choices = tuple(choices)
    if not (isinstance(value, str) and value in choices):
        raise ValueError(f"{name} must be one of {choices}. Received: {value!r}")
    return value


def is_integer(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy integer (``bool`` is not)."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_int(name: str, value: Any, *, minimum: int | None = None) -> int:
    """``value`` as an int.

    Raises:
        ValueError: Unless ``value`` is an integer (``>= minimum`` when given), naming ``name``.
    """
    if not is_integer(value) or (minimum is not None and value < minimum):
        bound = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {bound}. Received: {value!r}")
    return int(value)


def check_seed(seed: Any) -> int:
    """``seed`` as an int.

    Raises:
        ValueError: Unless ``seed`` is a non-negative integer.
    """
    if not is_integer(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer. Received: {seed!r}")
    return int(seed)


def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    """``value`` as an int (or None when ``allow_none``).

    Raises:
        ValueError: Unless ``value`` is a positive integer (or None when allowed), naming ``name``.
    """
    if allow_none and value is None:
        return None
    if not is_integer(value) or value < 1:
        suffix = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a positive integer{suffix}. Received: {value!r}")
    return int(value)


def is_number(value: Any) -> bool:
    """Whether ``value`` is a Python or NumPy real number (``bool`` is not)."""
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def check_number(
    name: str, value: Any, *, minimum: float | None = None, strict: bool = False
) -> float:
    """``value`` as a float.

    Args:
        name: The argument's name, for the message.
        value: What was received.
        minimum: The lower bound, if any.
        strict: The bound is exclusive (``> minimum``) instead of inclusive (``>= minimum``).

    Raises:
        ValueError: Unless ``value`` is a finite real number within the bound, naming ``name``:
            ``"lam must be a finite number >= 0. Received: -1"``.
    """
    ok = is_number(value) and math.isfinite(float(value))
    if ok and minimum is not None:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        bound = "" if minimum is None else f" {'>' if strict else '>='} {minimum:g}"
        raise ValueError(f"{name} must be a finite number{bound}. Received: {value!r}")
    return float(value)
