"""Importance measures: the registry, :func:`compute_importance`, and the built-in measures.

* :mod:`importance.measures.registry`: ``MEASURES`` (the shared
  :class:`~importance.registry.Registry`), :class:`MeasureSpec`, ``register_measure``,
  ``register_tracker``, ``get_measure``, ``available_measures``.
* :mod:`importance.measures.compute`: ``compute_importance`` and ``track``.
* :mod:`importance.measures.batched`: the data-driven measures' shared batch loop.
* :mod:`importance.measures.builtin`: imports the built-in measure modules (``basic``, ``fisher``,
  ``mas``, ``taylor``, ``data_free``, ``activation``, ``trajectory``, ``controls``), loaded
  lazily the first time the registry is read.
"""

from importance.measures.compute import compute_importance, track
from importance.measures.registry import (
    MEASURES,
    MeasureSpec,
    available_measures,
    failed_plugins,
    get_measure,
    register_measure,
    register_tracker,
    scoped,
    unregister_measure,
)

__all__ = [
    "MEASURES",
    "MeasureSpec",
    "available_measures",
    "compute_importance",
    "failed_plugins",
    "get_measure",
    "register_measure",
    "register_tracker",
    "scoped",
    "track",
    "unregister_measure",
]
