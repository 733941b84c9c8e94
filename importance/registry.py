"""The measure registry: one dict of name -> measure, plugins through entry points.

A *measure* is a callable ``fn(model, data, **options)`` returning one array per entry of
``model.trainable_weights``, each with that weight's shape. :func:`register_measure` records it
under a name (bare or with a name), :func:`get_measure` finds it, :func:`compute_importance` calls
it and checks what it returned.

Third-party packages register measures by exposing a module in the entry-point group
``importance.measures``; importing that module applies the decorator. Plugins are loaded lazily,
the first time the registry is read. A plugin that fails to import is reported by name with a
warning and the rest of the registry keeps working.

An *online* measure (SI, the seed trackers) is registered with the :class:`~importance.online.Tracker`
class that records its trajectory (``register_measure("si", online=True, tracker=SITracker)``);
:func:`track` starts recording a model's online measures, and :func:`compute_importance` passes
the model's recorder to the measure as ``recorder=``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import inspect
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from importance.online import Recorder, Tracker, attach, require_recorder
from importance.scores import ImportanceError, validate_scores
from importance.validation import check_data, check_model, labels_for

__all__ = [
    "ENTRY_POINT_GROUP",
    "ImportanceError",
    "MeasureSpec",
    "PluginWarning",
    "available_measures",
    "compute_importance",
    "failed_plugins",
    "get_measure",
    "load_plugins",
    "register_measure",
    "register_tracker",
    "scoped",
    "track",
    "unregister_measure",
    "validate_scores",
]

ENTRY_POINT_GROUP = "importance.measures"


@dataclasses.dataclass(frozen=True)
class MeasureSpec:
    """What the registry knows about one measure.

    Attributes:
        name: Registry name, e.g. ``"fisher"``.
        fn: The measure callable ``fn(model, data, **options)``.
        online: True when the measure needs a recorded training trajectory
            (see :mod:`importance.online`); its ``fn`` then receives the
            :class:`~importance.online.Recorder` as the keyword ``recorder``.
        defaults: Default keyword options, merged under the caller's options.
        description: First line of the callable's docstring.
        tracker: For an online measure, the :class:`~importance.online.Tracker` class that
            records what it needs during training.
        takes_seed: Whether ``fn`` has a ``seed`` parameter (read once from its signature), so
            callers that vary seeds know whether to pass one.
    """

    name: str
    fn: Callable[..., Any]
    online: bool = False
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""
    tracker: type[Tracker] | None = None
    takes_seed: bool = False


_MEASURES: dict[str, MeasureSpec] = {}
_PLUGINS_LOADED = False
_BUILTINS_LOADED = False
_FAILED_PLUGINS: dict[str, str] = {}


def register_measure(
    name: str | Callable[..., Any] | None = None,
    *,
    online: bool = False,
    tracker: type[Tracker] | None = None,
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
        tracker: For an online measure, the :class:`~importance.online.Tracker` subclass that
            records it (several measures may share one class; a recorder then holds one
            instance for them).
        **defaults: Default keyword options passed to the measure.

    Returns:
        The decorator, or the function itself when used bare.

    Raises:
        ValueError: If the name is already registered or is not a valid string, or a tracker
            is given for a measure that is not online or is not a Tracker subclass.
        TypeError: If what is registered is not callable.
    """
    if callable(name):
        return register_measure(None, online=online, tracker=tracker, **defaults)(name)
    _check_tracker(tracker, online=online)

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
            tracker=tracker,
            takes_seed=_has_parameter(fn, "seed"),
        )
        return fn

    return decorator


def register_tracker(name: str) -> Callable[[type[Tracker]], type[Tracker]]:
    """Attach a :class:`~importance.online.Tracker` class to the registered online measure ``name``.

    For a tracker written after its measure; otherwise pass ``tracker=`` to
    :func:`register_measure`. The class is returned unchanged.

    Raises:
        KeyError: No measure has that name.
        ValueError: The measure is not online, already has a tracker, or ``cls`` is not a
            Tracker subclass.
    """

    def decorator(cls: type[Tracker]) -> type[Tracker]:
        spec = get_measure(name)
        _check_tracker(cls, online=spec.online)
        if spec.tracker is not None:
            raise ValueError(f"Measure {name!r} already has a tracker ({spec.tracker.__name__}).")
        _MEASURES[name] = dataclasses.replace(spec, tracker=cls)
        return cls

    return decorator


def _check_tracker(tracker: Any, *, online: bool) -> None:
    if tracker is None:
        return
    if not online:
        raise ValueError(f"tracker is only for online measures (online=True). Received: {tracker!r}")
    if not (isinstance(tracker, type) and issubclass(tracker, Tracker)):
        raise ValueError(f"tracker must be a subclass of importance.Tracker. Received: {tracker!r}")


def _has_parameter(fn: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # builtins without a signature
        return False


def unregister_measure(name: str) -> None:
    """Remove a measure from the registry (for tests and interactive sessions).

    Raises:
        KeyError: If no measure has that name.
    """
    _ensure_loaded()
    if name not in _MEASURES:
        raise KeyError(_unknown_message(name))
    del _MEASURES[name]


@contextlib.contextmanager
def scoped(*, reload_plugins: bool = False) -> Iterator[None]:
    """Undo, on exit, every registration made inside the block (for tests and notebooks).

    Args:
        reload_plugins: Also forget which entry-point plugins were loaded or failed, so that the
            next read of the registry inside the block loads them again.
    """
    global _PLUGINS_LOADED
    _ensure_loaded()
    saved = (dict(_MEASURES), dict(_FAILED_PLUGINS), _PLUGINS_LOADED)
    if reload_plugins:
        _FAILED_PLUGINS.clear()
        _PLUGINS_LOADED = False
    try:
        yield
    finally:
        _MEASURES.clear()
        _MEASURES.update(saved[0])
        _FAILED_PLUGINS.clear()
        _FAILED_PLUGINS.update(saved[1])
        _PLUGINS_LOADED = saved[2]


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
    if spec.online and "recorder" not in kwargs:
        kwargs["recorder"] = require_recorder(model, name)
    with labels_for(model):
        scores = spec.fn(model, data, **kwargs)
    return validate_scores(scores, model, measure=name)


def track(model: Any, measures: Iterable[str] | None = None, *, patch_fit: bool = True) -> Recorder:
    """Start recording the training trajectory of ``model`` for online measures.

    Args:
        model: A built Keras model.
        measures: Online measure names; all registered ones that have a tracker when None.
        patch_fit: Also record steps of ``model.fit`` by wrapping the model's ``train_step``
            (a training loop that calls :meth:`~importance.online.Recorder.observe` itself does
            not need it). The gradient fed to the trackers is that of the compiled loss alone; a
            model whose training loss is not its compiled loss (an overridden ``compute_loss``
            or ``train_step`` with extra terms) should feed ``Recorder.observe`` itself.

    Returns:
        The :class:`~importance.online.Recorder`, also attached to the model so that
        :func:`compute_importance` finds it.

    Raises:
        KeyError: A name that is not an online measure with a tracker; the message lists them.
        ValueError: The model has not been built.
    """
    _ensure_loaded()
    recordable = sorted(n for n, s in _MEASURES.items() if s.tracker is not None)
    names = recordable if measures is None else list(measures)
    unknown = [n for n in names if n not in recordable]
    if unknown:
        raise KeyError(f"No online tracker for {unknown}. Available: {', '.join(recordable)}")
    recorder = Recorder(model, {n: _MEASURES[n].tracker for n in names})
    return attach(model, recorder, patch_fit=patch_fit)


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
