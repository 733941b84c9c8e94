"""The measure registry: one dict of name -> measure, plugins through entry points.

A *measure* is a callable ``fn(model, data, **options)`` returning one array per entry of
``model.trainable_weights``, each with that weight's shape. :func:`register_measure` records it
under a name (bare or with a name), :func:`get_measure` finds it, :func:`compute_importance` calls
it and checks what it returned.

Third-party packages register measures by exposing a module in the entry-point group
``importance.measures``; importing that module applies the decorator. Plugins are loaded lazily,
the first time the registry is read. A plugin that fails to import is reported by name with a
warning and the rest of the registry keeps working.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from importance.validation import check_data, check_model, check_scores_array, labels_for

ENTRY_POINT_GROUP = "importance.measures"


@dataclasses.dataclass(frozen=True)
class MeasureSpec:
    """What the registry knows about one measure.

    Attributes:
        name: Registry name, e.g. ``"fisher"``.
        fn: The measure callable ``fn(model, data, **options)``.
        online: True when the measure needs a recorded training trajectory
            (see :mod:`importance.online`); its ``fn`` then receives the recording
            as the keyword ``trajectory``.
        defaults: Default keyword options, merged under the caller's options.
        description: First line of the callable's docstring.
    """

    name: str
    fn: Callable[..., Any]
    online: bool = False
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""


_MEASURES: dict[str, MeasureSpec] = {}
_PLUGINS_LOADED = False
_BUILTINS_LOADED = False
_FAILED_PLUGINS: dict[str, str] = {}


class ImportanceError(ValueError):
    """A measure returned something that is not a valid importance for the model."""


def register_measure(
    name: str | Callable[..., Any] | None = None,
    *,
    online: bool = False,
    **defaults: Any,
) -> Any:
    """Register an importance measure under a name.

    Usable bare (``@register_measure``, the function's name is used), with a name
    (``@register_measure("my_measure")``) or with default options
    (``@register_measure("fisher_sampled", labels="sampled")``). The decorator returns the
    function unchanged, so one function may be registered several times under different names
    and defaults.

    Args:
        name: Registry name, or the function itself when used bare.
        online: Whether the measure needs a recorded training trajectory.
        **defaults: Default keyword options passed to the measure.

    Returns:
        The decorator, or the function itself when used bare.

    Raises:
        ValueError: If the name is already registered or is not a valid string.
        TypeError: If what is registered is not callable.
    """
    if callable(name):
        return register_measure(None, online=online, **defaults)(name)

    def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
        if not callable(fn):
            raise TypeError(
                f"register_measure({name!r}) needs a callable fn(model, data, **options). "
                f"Received: {fn!r} of type {type(fn).__name__}"
            )
        measure_name = fn.__name__ if name is None else name
        if not isinstance(measure_name, str) or not measure_name.strip():
            raise ValueError(f"A measure name must be a non-empty string. Received: {measure_name!r}")
        if measure_name in _MEASURES:
            raise ValueError(
                f"A measure named {measure_name!r} is already registered "
                f"(by {_MEASURES[measure_name].fn.__module__}). Choose another name."
            )
        doc = (fn.__doc__ or "").strip().splitlines()
        _MEASURES[measure_name] = MeasureSpec(
            name=measure_name,
            fn=fn,
            online=online,
            defaults=dict(defaults),
            description=doc[0] if doc else "",
        )
        return fn

    return decorator


def unregister_measure(name: str) -> None:
    """Remove a measure from the registry (for tests and interactive sessions).

    Raises:
        KeyError: If no measure has that name.
    """
    _ensure_loaded()
    if name not in _MEASURES:
        raise KeyError(_unknown_message(name))
    del _MEASURES[name]


def available_measures(*, online: bool | None = None) -> list[str]:
    """Sorted names of all registered measures, built-ins and plugins.

    Args:
        online: If given, only the online (True) or post-hoc (False) measures.
    """
    _ensure_loaded()
    return sorted(n for n, s in _MEASURES.items() if online is None or s.online == online)


def get_measure(name: str) -> MeasureSpec:
    """Look up a measure by name.

    Raises:
        KeyError: If the name is unknown; the message lists the available measures.
    """
    _ensure_loaded()
    try:
        return _MEASURES[name]
    except (KeyError, TypeError):
        raise KeyError(_unknown_message(name)) from None


def failed_plugins() -> dict[str, str]:
    """Entry points of the ``importance.measures`` group that failed to import: name -> error."""
    _ensure_loaded()
    return dict(_FAILED_PLUGINS)


def compute_importance(name: str, model: Any, data: Any = None, **options: Any) -> list[np.ndarray]:
    """Compute a registered measure and check its result.

    Args:
        name: Registry name of the measure.
        model: A built Keras model (a single-output classifier when ``data`` is given).
        data: What the measure needs, usually ``(x, y)`` arrays or a batched ``tf.data.Dataset``
            (see :func:`importance.data.as_dataset`). Online measures ignore it. Checked here,
            before the measure runs (:func:`importance.validation.check_data`): a NaN input or a
            label outside the model's classes is reported as bad data, never as a bad measure.
        **options: Keyword options for the measure, over the registered defaults.

    Returns:
        One float64 array per ``model.trainable_weights`` entry, with that weight's shape.

    Raises:
        KeyError: Unknown measure.
        ValueError: A model or data the library cannot judge (see :mod:`importance.validation`).
        ImportanceError: The measure returned the wrong number of arrays, a wrong shape,
            or non-finite values; the message names the measure and the weight.
        RuntimeError: An online measure with no recorded trajectory for this model.
    """
    spec = get_measure(name)
    kwargs = {**spec.defaults, **options}
    check_model(model)
    if data is not None:
        data = check_data(data, model=model, max_examples=kwargs.get("max_examples"))
    if spec.online and "trajectory" not in kwargs:
        from importance.online import get_trajectory

        kwargs["trajectory"] = get_trajectory(model, name)
    with labels_for(model):
        scores = spec.fn(model, data, **kwargs)
    return validate_scores(scores, model, measure=name)


def validate_scores(scores: Any, model: Any, *, measure: str = "scores") -> list[np.ndarray]:
    """Check that ``scores`` is one finite array per trainable weight, with matching shapes.

    Args:
        scores: A sequence of array-likes (NumPy arrays, tensors, variables).
        model: The model the scores belong to.
        measure: Name used in error messages.

    Returns:
        The scores as float64 NumPy arrays.

    Raises:
        ImportanceError: Naming the measure and the offending weight.
    """
    weights = list(model.trainable_weights)
    if isinstance(scores, (np.ndarray, str, bytes)) or not isinstance(scores, Sequence):
        raise ImportanceError(
            f"Measure {measure!r} must return a list with one array per trainable weight "
            f"({len(weights)} for this model). Received: {type(scores).__name__}"
        )
    if len(scores) != len(weights):
        raise ImportanceError(
            f"Measure {measure!r} returned {len(scores)} arrays but the model has "
            f"{len(weights)} trainable weights."
        )
    out = []
    for score, weight in zip(scores, weights, strict=True):
        array = check_scores_array(score, measure=measure, weight=_weight_name(weight))
        expected = tuple(weight.shape)
        if array.shape != expected:
            raise ImportanceError(
                f"Measure {measure!r} returned shape {array.shape} for weight "
                f"{_weight_name(weight)!r}, expected {expected}."
            )
        if not np.all(np.isfinite(array)):
            bad = "NaN" if np.isnan(array).any() else "inf"
            raise ImportanceError(
                f"Measure {measure!r} returned {bad} values for weight {_weight_name(weight)!r}."
            )
        out.append(array)
    return out


def _weight_name(weight: Any) -> str:
    return getattr(weight, "path", None) or getattr(weight, "name", "?")


def _unknown_message(name: Any) -> str:
    return f"Unknown measure {name!r}. Available: {', '.join(sorted(_MEASURES)) or '(none)'}"


def _ensure_loaded() -> None:
    """Import the built-in measures, then the plugins, once."""
    global _BUILTINS_LOADED, _PLUGINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        importlib.import_module("importance.measures")
    if not _PLUGINS_LOADED:
        _PLUGINS_LOADED = True
        load_plugins()


def load_plugins() -> dict[str, str]:
    """Import every module of the ``importance.measures`` entry-point group.

    A plugin that fails to import is reported with a warning naming it, and skipped.

    Returns:
        The failed plugins: entry-point name -> error message.
    """
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name in _FAILED_PLUGINS:
            continue
        try:
            entry_point.load()
        except Exception as error:  # a broken plugin must not break the suite
            message = f"{type(error).__name__}: {error}"
            _FAILED_PLUGINS[entry_point.name] = message
            warnings.warn(
                f"importance plugin {entry_point.name!r} ({entry_point.value}) failed to load "
                f"and is skipped: {message}",
                PluginWarning,
                stacklevel=2,
            )
    return dict(_FAILED_PLUGINS)


class PluginWarning(UserWarning):
    """A plugin of the ``importance.measures`` entry-point group failed to load."""
