"""Contract suite: every registered measure (built-ins and plugins) passes the same checks.

Like scikit-learn's ``parametrize_with_checks``: the measures are collected from the registry when
the tests are collected, so a newly registered measure or an installed plugin is checked without
editing this file. For each measure and each tiny model (Dense, Conv2D):

* one float64 array per trainable weight, with that weight's shape;
* finite values;
* the same scores twice under the same seed (measures without a ``seed`` option: twice as is);
* the model's weights (trainable or not) bitwise unchanged.

Online measures run on a trajectory recorded with ``importance.track(model)`` during ``model.fit``.
"""

from __future__ import annotations

import inspect
import warnings

import keras
import numpy as np
import pytest

import importance as imp
from importance import registry

with warnings.catch_warnings():
    # A broken plugin must not break collection; test_every_plugin_loads reports it.
    warnings.simplefilter("ignore", imp.PluginWarning)
    MEASURES = imp.available_measures()
    ONLINE = imp.available_measures(online=True)
    FAILED_PLUGINS = registry.failed_plugins()

MODELS = ["dense", "conv"]
SEED = 1  # not the default, so a measure that ignores its seed option is still deterministic


def _build(kind: str) -> keras.Model:
    keras.utils.set_random_seed(11)
    if kind == "dense":
        layers = [keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
    else:
        layers = [
            keras.Input((6, 6, 2)),
            keras.layers.Conv2D(3, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    return keras.Sequential(layers)


def _data(kind: str, n: int = 32) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(12)
    shape = (6,) if kind == "dense" else (6, 6, 2)
    x = rng.normal(size=(n, *shape)).astype(np.float32)
    y = (x.reshape(n, -1)[:, :3].argmax(axis=1)).astype(np.int32)  # learnable labels
    return x, y


@pytest.fixture(scope="module", params=MODELS)
def trained(request):
    """A tiny model trained briefly with ``model.fit`` while recording its trajectory."""
    model = _build(request.param)
    data = _data(request.param)
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    recorder = imp.track(model)
    model.fit(*data, epochs=2, batch_size=8, verbose=0, shuffle=False)
    recorder.stop()
    return {"kind": request.param, "model": model, "data": data, "recorder": recorder, "runs": {}}


def _snapshot(model: keras.Model) -> list[bytes]:
    return [np.asarray(w.numpy()).tobytes() for w in model.weights]


def _run(trained: dict, name: str) -> dict:
    """Compute ``name`` twice on the trained model (cached per module and model)."""
    if name not in trained["runs"]:
        model, data = trained["model"], trained["data"]
        parameters = inspect.signature(imp.get_measure(name).fn).parameters
        options = {"seed": SEED} if "seed" in parameters else {}
        before = _snapshot(model)
        first = imp.compute_importance(name, model, data, **options)
        second = imp.compute_importance(name, model, data, **options)
        trained["runs"][name] = {"before": before, "after": _snapshot(model), "scores": [first, second]}
    return trained["runs"][name]


@pytest.mark.parametrize("name", MEASURES)
def test_one_float64_array_per_trainable_weight(trained, name):
    scores = _run(trained, name)["scores"][0]
    weights = trained["model"].trainable_weights
    assert isinstance(scores, list) and len(scores) == len(weights)
    for score, weight in zip(scores, weights, strict=True):
        assert isinstance(score, np.ndarray) and score.dtype == np.float64
        assert score.shape == tuple(weight.shape), weight.path


@pytest.mark.parametrize("name", MEASURES)
def test_scores_are_finite(trained, name):
    for score in _run(trained, name)["scores"][0]:
        assert np.all(np.isfinite(score))


@pytest.mark.parametrize("name", MEASURES)
def test_same_seed_same_scores(trained, name):
    first, second = _run(trained, name)["scores"]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", MEASURES)
def test_model_weights_bitwise_unchanged(trained, name):
    run = _run(trained, name)
    assert run["after"] == run["before"], f"{name} changed the model's weights"


def test_scores_are_not_all_identical_across_measures(trained):
    """Sanity of the fixture: data-dependent measures see a model that actually trained."""
    assert trained["recorder"].num_steps == 2 * 32 // 8
    if {"magnitude", "fisher"} <= set(MEASURES):
        magnitude = _run(trained, "magnitude")["scores"][0]
        fisher = _run(trained, "fisher")["scores"][0]
        assert not np.allclose(magnitude[0], fisher[0])


@pytest.mark.parametrize(
    "name",
    ONLINE or [pytest.param(None, marks=pytest.mark.skip(reason="no online measure is registered"))],
)
def test_online_measure_without_recording_says_how_to_record(name):
    model = _build("dense")
    with pytest.raises(RuntimeError, match=r"importance\.track\(model\)"):
        imp.compute_importance(name, model, _data("dense"))


def test_every_plugin_loads():
    assert not FAILED_PLUGINS, f"plugins of group {registry.ENTRY_POINT_GROUP!r} failed: {FAILED_PLUGINS}"
