"""Per-example gradient moments: the kinds, the objective type and the moment function.

Shared by the dispatcher (:mod:`importance.per_example`) and the engines behind it
(:mod:`importance._factorized`, :mod:`importance._conv_moments`), so each is defined once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from importance.checks import check_choice

Objective = Callable[[tf.Tensor], tf.Tensor]
MOMENTS = ("square", "abs")


def check_moment(moment: Any) -> str:
    """``moment`` if it is one of :data:`MOMENTS`.

    Raises:
        ValueError: Naming the bad value and the choices.
    """
    return check_choice("moment", moment, MOMENTS)


def apply_moment(t: tf.Tensor, moment: str) -> tf.Tensor:
    """The moment of ``t``: ``t**2`` for ``"square"``, ``|t|`` for ``"abs"``."""
    return tf.square(t) if moment == "square" else tf.abs(t)
