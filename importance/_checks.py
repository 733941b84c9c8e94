"""Argument checks shared across the library; errors name the bad value."""

from __future__ import annotations

from typing import Any

import numpy as np


def _is_int(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_seed(seed: Any) -> int:
    """``seed`` as an int.

    Raises:
        ValueError: Unless ``seed`` is a non-negative integer.
    """
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer. Received: {seed!r}")
    return int(seed)


def check_positive_int(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    """``value`` as an int (or None when ``allow_none``).

    Raises:
        ValueError: Unless ``value`` is a positive integer (or None when allowed), naming ``name``.
    """
    if allow_none and value is None:
        return None
    if not _is_int(value) or value < 1:
        suffix = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a positive integer{suffix}. Received: {value!r}")
    return int(value)
