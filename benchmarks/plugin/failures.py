"""The failure every axis's study raises when a measure fails on its subject."""

from __future__ import annotations


class MeasureFailed(RuntimeError):
    """A measure raised (or returned invalid scores) on a task, a scenario or a model.

    A study records the failure once (a ``failure`` or a failed result record) and raises this
    again for every case that needs the measure; the case fails, the session goes on.
    """
