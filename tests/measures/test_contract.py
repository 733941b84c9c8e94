"""Contract suite: every registered measure (built-ins and plugins) passes the same checks.

The checks are library code, :mod:`importance.testing` (like scikit-learn's
``parametrize_with_checks``), so a plugin author runs the same ones. The measures are collected
from the registry when the tests are collected, so a newly registered measure or an installed
plugin is checked without editing this file.
"""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

import importance as imp
from importance.measures import registry
from importance.testing import (
    check_deterministic,
    check_model_unchanged,
    parametrize_with_checks,
    tiny_classifier,
)

with warnings.catch_warnings():
    # A broken plugin must not break collection; test_every_plugin_loads reports it.
    warnings.simplefilter("ignore", imp.PluginWarning)
    MEASURES = imp.available_measures()
    ONLINE = imp.available_measures(online=True)
    FAILED_PLUGINS = registry.failed_plugins()


@parametrize_with_checks(MEASURES)
def test_measure_contract(name, check):
    check(name)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_scores_are_not_all_identical_across_measures(kind):
    """Sanity of the fixture: data-dependent measures see a model that actually trained."""
    subject = tiny_classifier(kind)
    assert subject["recorder"].num_steps == 2 * 32 // 8
    if {"magnitude", "fisher"} <= set(MEASURES):
        model, data = subject["model"], subject["data"]
        magnitude = imp.compute_importance("magnitude", model, data)
        fisher = imp.compute_importance("fisher", model, data)
        assert not np.allclose(magnitude[0], fisher[0])


def test_the_checks_catch_a_measure_that_breaks_the_contract():
    """A measure that is random without a seed and edits the model fails those two checks.

    (Wrong shapes, dtypes and non-finite values are stopped earlier, by ``compute_importance``.)
    """
    name = "test_contract_breaker"
    model = tiny_classifier("dense")["model"]
    saved = model.get_weights()

    def breaker(model, data=None):
        model.trainable_weights[0].assign_add(np.ones(model.trainable_weights[0].shape, np.float32))
        return [np.random.default_rng().random(tuple(w.shape)) for w in model.trainable_weights]

    imp.register_measure(name)(breaker)
    try:
        for check in (check_deterministic, check_model_unchanged):
            with pytest.raises(AssertionError, match=name):
                check(name, model="dense")
    finally:
        imp.unregister_measure(name)
        model.set_weights(saved)  # the tiny classifier is shared by the other checks


@pytest.mark.parametrize(
    "name",
    ONLINE or [pytest.param(None, marks=pytest.mark.skip(reason="no online measure is registered"))],
)
def test_online_measure_without_recording_says_how_to_record(name):
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    x = np.zeros((4, 6), np.float32)
    with pytest.raises(RuntimeError, match=r"importance\.track\(model\)"):
        imp.compute_importance(name, model, (x, np.zeros(4, np.int32)))


def test_every_plugin_loads():
    assert not FAILED_PLUGINS, f"plugins of group {registry.ENTRY_POINT_GROUP!r} failed: {FAILED_PLUGINS}"
