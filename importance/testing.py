"""Contract checks for measures, usable by plugin authors (scikit-learn's ``parametrize_with_checks``).

Every registered measure should pass the same checks, on tiny Dense and Conv2D classifiers
trained briefly with ``model.fit`` while :func:`importance.track` records their trajectory:

* :func:`check_one_array_per_weight`: one float64 array per trainable weight, same shape;
* :func:`check_finite`: finite values;
* :func:`check_deterministic`: the same scores twice (with the same ``seed`` when it takes one);
* :func:`check_model_unchanged`: the model's weights, trainable or not, bitwise unchanged.

In a plugin's own test suite::

    from importance.testing import parametrize_with_checks

    @parametrize_with_checks(["my_measure"])
    def test_my_measure_contract(name, check):
        check(name)

or ``check_measure("my_measure")`` to run them all at once. Saliency methods have their own:
``check_saliency("my_map")`` (shapes, finiteness, determinism, model unchanged; see
:data:`SALIENCY_CHECKS`). The project's own contract suite
(``tests/measures/test_contract.py``) runs them on every registered measure. :func:`relative_error` is the
comparison the project's reference tests use (a measure against an independent slow loop).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np

from importance.measures import available_measures, compute_importance, get_measure, track

__all__ = [
    "CHECKS",
    "MODELS",
    "check_deterministic",
    "check_finite",
    "check_measure",
    "check_model_unchanged",
    "check_one_array_per_weight",
    "check_saliency",
    "parametrize_with_checks",
    "relative_error",
    "SALIENCY_CHECKS",
    "assert_weights_unchanged",
    "tiny_classifier",
    "tiny_image_classifier",
    "weights_snapshot",
]

MODELS = ("dense", "conv")
SEED = 1  # not the default, so a measure that ignores its seed is still caught being random


def relative_error(got: Iterable[Any], reference: Iterable[Any]) -> float:
    """``||got - reference|| / ||reference||`` over all arrays of two lists (one per weight),
    in float64."""
    got_flat = np.concatenate([np.ravel(np.asarray(g, np.float64)) for g in got])
    ref_flat = np.concatenate([np.ravel(np.asarray(r, np.float64)) for r in reference])
    return float(np.linalg.norm(got_flat - ref_flat) / np.linalg.norm(ref_flat))


@functools.cache
def tiny_classifier(kind: str) -> dict[str, Any]:
    """A tiny classifier (``"dense"`` or ``"conv"``) trained 2 epochs with ``model.fit`` under
    :func:`importance.track`; built and trained once per process.

    Returns:
        ``{"model", "data", "recorder"}``.
    """
    import keras

    if kind not in MODELS:
        raise ValueError(f"kind must be one of {MODELS}. Received: {kind!r}")
    keras.utils.set_random_seed(11)
    shape = (6,) if kind == "dense" else (6, 6, 2)
    hidden = [keras.layers.Dense(8, activation="relu")] if kind == "dense" else [
        keras.layers.Conv2D(3, 3, activation="relu"), keras.layers.Flatten()]
    model = keras.Sequential([keras.Input(shape), *hidden, keras.layers.Dense(3)])
    rng = np.random.default_rng(12)
    x = rng.normal(size=(32, *shape)).astype(np.float32)
    y = x.reshape(32, -1)[:, :3].argmax(axis=1).astype(np.int32)  # learnable labels
    model.compile(
        optimizer=keras.optimizers.SGD(learning_rate=0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    recorder = track(model)
    model.fit(x, y, epochs=2, batch_size=8, verbose=0, shuffle=False)
    recorder.stop()
    return {"model": model, "data": (x, y), "recorder": recorder}


@functools.cache
def _computed(name: str, kind: str) -> dict[str, Any]:
    """``name`` computed twice on the tiny ``kind`` classifier, with the weights around it."""
    subject = tiny_classifier(kind)
    model, data = subject["model"], subject["data"]
    options = {"seed": SEED} if get_measure(name).takes_seed else {}
    before = _weights(model)
    first = compute_importance(name, model, data, **options)
    second = compute_importance(name, model, data, **options)
    return {"before": before, "after": _weights(model), "scores": (first, second), "model": model}


def _weights(model: Any) -> list[bytes]:
    return [np.asarray(w.numpy()).tobytes() for w in model.weights]


def weights_snapshot(model: Any) -> list[np.ndarray]:
    """Copies of every weight of ``model`` (trainable or not), for :func:`assert_weights_unchanged`."""
    return [np.array(w.numpy(), copy=True) for w in model.weights]


def assert_weights_unchanged(model: Any, before: list[np.ndarray]) -> None:
    """Assert ``model``'s weights are bitwise those of ``before`` (:func:`weights_snapshot`):
    same count, dtypes and values (NaN equal to NaN).

    Raises:
        AssertionError: A weight was added, removed, retyped or changed.
    """
    after = weights_snapshot(model)
    assert len(after) == len(before), f"{len(before)} weights before, {len(after)} after"
    for i, (a, b) in enumerate(zip(after, before, strict=True)):
        assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), (
            f"weight {i} ({model.weights[i].path}) changed"
        )


def check_one_array_per_weight(name: str, *, model: str = "dense") -> None:
    """One float64 NumPy array per trainable weight, with that weight's shape."""
    run = _computed(name, model)
    scores, weights = run["scores"][0], run["model"].trainable_weights
    assert isinstance(scores, list) and len(scores) == len(weights), (
        f"{name}: {len(scores)} arrays for {len(weights)} trainable weights")
    for score, weight in zip(scores, weights, strict=True):
        assert isinstance(score, np.ndarray) and score.dtype == np.float64, f"{name}: {weight.path}"
        assert score.shape == tuple(weight.shape), f"{name}: {weight.path} {score.shape}"


def check_finite(name: str, *, model: str = "dense") -> None:
    """No NaN or infinite score."""
    for score in _computed(name, model)["scores"][0]:
        assert np.all(np.isfinite(score)), f"{name} returned non-finite scores"


def check_deterministic(name: str, *, model: str = "dense") -> None:
    """The same scores twice (same ``seed`` when the measure takes one)."""
    first, second = _computed(name, model)["scores"]
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b, err_msg=f"{name} is not deterministic")


def check_model_unchanged(name: str, *, model: str = "dense") -> None:
    """Every weight of the model (trainable or not) bitwise unchanged by the measure."""
    run = _computed(name, model)
    assert run["after"] == run["before"], f"{name} changed the model's weights"


CHECKS: tuple[Callable[..., None], ...] = (
    check_one_array_per_weight,
    check_finite,
    check_deterministic,
    check_model_unchanged,
)


def check_measure(name: str, *, models: Iterable[str] = MODELS) -> None:
    """Run every check of :data:`CHECKS` on measure ``name`` and each tiny model.

    Raises:
        AssertionError: The first failed check, naming the measure.
    """
    for kind in models:
        for check in CHECKS:
            check(name, model=kind)


def parametrize_with_checks(names: Iterable[str] | None = None, *, models: Iterable[str] = MODELS) -> Any:
    """A ``pytest.mark.parametrize`` over (measure name, check) pairs; the test calls ``check(name)``.

    Args:
        names: Measure names; every registered measure when None.
        models: Tiny model kinds each check runs on.

    Returns:
        The pytest mark (ids read ``<measure>-<model>-<check>``).
    """
    import pytest

    names = available_measures() if names is None else list(names)
    params = [
        pytest.param(name, functools.partial(check, model=kind), id=f"{name}-{kind}-{check.__name__}")
        for kind in models
        for name in names
        for check in CHECKS
    ]
    return pytest.mark.parametrize(("name", "check"), params)


# --- saliency methods ----------------------------------------------------------------------


@functools.cache
def tiny_image_classifier() -> Any:
    """The model the saliency checks explain: 6 x 6 x 2 images -> Conv2D(3, 3 x 3, ReLU) ->
    Flatten -> Dense(3) logits, seeded initial weights, untrained (a map's contract does not
    need a trained model); built once per process."""
    import keras

    model = keras.Sequential([
        keras.Input((6, 6, 2)),
        keras.layers.Conv2D(3, 3, activation="relu",
                            kernel_initializer=keras.initializers.GlorotUniform(seed=21),
                            bias_initializer=keras.initializers.RandomNormal(seed=22)),
        keras.layers.Flatten(),
        keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(seed=23)),
    ], name="tiny_image_classifier")  # fmt: skip
    return model


def _saliency_fn(method: Any) -> tuple[str, Callable[..., Any]]:
    """``(label, fn)`` of a registered method's name (its defaults applied) or a callable."""
    if callable(method):
        return getattr(method, "__name__", repr(method)), method
    from importance.interpret import get_saliency

    entry = get_saliency(method)
    return method, functools.partial(entry.fn, **entry.defaults)


def _saliency_runs(method: Any, kind: str, options: Any = None) -> dict[str, Any]:
    """:func:`_saliency_computed`, once per process for a registered name and options."""
    frozen = tuple(sorted((options or {}).items()))
    if isinstance(method, str):
        return _saliency_cached(method, kind, frozen)
    return _saliency_computed(method, kind, frozen)


@functools.cache
def _saliency_cached(name: str, kind: str, options: tuple[tuple[str, Any], ...]) -> dict[str, Any]:
    return _saliency_computed(name, kind, options)


def _saliency_computed(
    method: Any, kind: str, options: tuple[tuple[str, Any], ...]
) -> dict[str, Any]:
    """The method run twice on the tiny image classifier's 4 images, per-image targets,
    with ``options`` (and ``seed`` when it takes one); the model's weights before and after."""
    import inspect

    label, fn = _saliency_fn(method)
    model = tiny_image_classifier()
    images = np.random.default_rng(24).normal(size=(4, 6, 6, 2)).astype(np.float32)
    target = np.array([0, 1, 2, 1], np.int32)
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        parameters = {}
    options = {**({"seed": SEED} if "seed" in parameters else {}), **dict(options)}
    before = _weights(model)
    first = fn(model, images, target=target, **options)
    second = fn(model, images, target=target, **options)
    return {"label": label, "images": images, "maps": (first, second), "before": before,
            "after": _weights(model)}  # fmt: skip


def check_saliency_shape(
    method: Any, *, model: str = "conv", options: Any = None
) -> None:
    """Maps of shape (N, H, W), one per image, of a real (float or integer) dtype."""
    run = _saliency_runs(method, model, options)
    maps, expected = np.asarray(run["maps"][0]), tuple(run["images"].shape[:3])
    assert maps.shape == expected, f"{run['label']}: maps of shape {maps.shape}, expected {expected}"
    assert np.issubdtype(maps.dtype, np.floating) or np.issubdtype(maps.dtype, np.integer), (
        f"{run['label']}: maps of dtype {maps.dtype}, expected a real number type")


def check_saliency_finite(
    method: Any, *, model: str = "conv", options: Any = None
) -> None:
    """No NaN or infinite value in the maps."""
    run = _saliency_runs(method, model, options)
    assert np.all(np.isfinite(np.asarray(run["maps"][0], np.float64))), (
        f"{run['label']} returned non-finite maps")


def check_saliency_deterministic(
    method: Any, *, model: str = "conv", options: Any = None
) -> None:
    """The same maps twice (same ``seed`` when the method takes one)."""
    run = _saliency_runs(method, model, options)
    np.testing.assert_array_equal(*run["maps"], err_msg=f"{run['label']} is not deterministic")


def check_saliency_model_unchanged(
    method: Any, *, model: str = "conv", options: Any = None
) -> None:
    """Every weight of the model (trainable or not) bitwise unchanged by the method."""
    run = _saliency_runs(method, model, options)
    assert run["after"] == run["before"], f"{run['label']} changed the model's weights"


SALIENCY_CHECKS: tuple[Callable[..., None], ...] = (
    check_saliency_shape,
    check_saliency_finite,
    check_saliency_deterministic,
    check_saliency_model_unchanged,
)


def check_saliency(
    method: Any, *, models: Iterable[str] = ("conv",), options: Mapping[str, Any] | None = None
) -> None:
    """Run every check of :data:`SALIENCY_CHECKS` on a saliency method, like :func:`check_measure`.

    The method, a registered name or ``fn(model, images, *, target, **options)``, explains 4
    seeded random 6 x 6 x 2 images to :func:`tiny_image_classifier` (``models``: only
    ``"conv"``) with one target class per image; it must return (N, H, W) finite
    maps, the same maps twice (given ``seed`` when it takes one), and leave every weight of the
    model bitwise unchanged. ``options`` go to the method (e.g. ``{"window": 3}`` for
    ``occlusion``, whose default window is larger than the tiny images).

    Raises:
        AssertionError: The first failed check, naming the method.
        KeyError: An unknown method name.
    """
    for kind in models:
        if kind != "conv":
            raise ValueError(f"models must hold only 'conv' (image inputs). Received: {kind!r}")
        for check in SALIENCY_CHECKS:
            check(method, model=kind, options=options)
