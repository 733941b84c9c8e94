"""The measure registry: name -> :class:`MeasureSpec`, on the shared registry class.

A *measure* is a callable ``fn(model, data, **options)`` returning one array per entry of
``model.trainable_weights``, each with that weight's shape. :func:`register_measure` records it
under a name (bare or with a name), :func:`get_measure` finds it and
:func:`importance.compute_importance` calls it and checks what it returned.

Third-party packages register measures by exposing a module in the entry-point group
``importance.measures``; importing that module applies the decorator. The built-ins
(:mod:`importance.measures.builtin`) and the plugins are loaded lazily, the first time the
registry is read. A plugin that fails to import is reported by name with a
:class:`~importance.registry.PluginWarning` and the rest of the registry keeps working.

An *online* measure (SI, the seed trackers) is registered with the
:class:`~importance.online.Tracker` class that records its trajectory
(``register_measure("si", online=True, tracker=SITracker)``).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from importance.online import Tracker
from importance.registry import Entry, Registry, first_doc_line

__all__ = [
    "ENTRY_POINT_GROUP",
    "MEASURES",
    "MeasureSpec",
    "available_measures",
    "failed_plugins",
    "get_measure",
    "load_plugins",
    "register_measure",
    "register_tracker",
    "scoped",
    "unregister_measure",
]

ENTRY_POINT_GROUP = "importance.measures"


@dataclasses.dataclass(frozen=True)
class MeasureSpec(Entry):
    """What the registry knows about one measure: an :class:`~importance.registry.Entry` plus.

    Attributes:
        online: True when the measure needs a recorded training trajectory
            (see :mod:`importance.online`); its ``fn`` then receives the
            :class:`~importance.online.Recorder` as the keyword ``recorder``.
        tracker: For an online measure, the :class:`~importance.online.Tracker` class that
            records what it needs during training.
        takes_seed: Whether ``fn`` has a ``seed`` parameter (read once from its signature), so
            callers that vary seeds know whether to pass one.
    """

    online: bool = False
    tracker: type[Tracker] | None = None
    takes_seed: bool = False


MEASURES = Registry(
    "measure",
    group=ENTRY_POINT_GROUP,
    builtins="importance.measures.builtin",
    decorator="register_measure",
    signature="fn(model, data, **options)",
)


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
        MEASURES.check_callable(fn, name)
        measure_name = fn.__name__ if name is None else name
        spec = MeasureSpec(
            name=measure_name,
            fn=fn,
            defaults=dict(defaults),
            description=first_doc_line(fn),
            online=online,
            tracker=tracker,
            takes_seed=_has_parameter(fn, "seed"),
        )
        MEASURES.add(measure_name, spec)
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
        MEASURES.replace(name, dataclasses.replace(spec, tracker=cls))
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
    MEASURES.unregister(name)


def scoped(*, reload_plugins: bool = False) -> AbstractContextManager[Registry]:
    """Undo, on exit, every measure registration made inside the block (tests, notebooks).

    Args:
        reload_plugins: Also forget which entry-point plugins were loaded or failed, so that the
            next read of the registry inside the block loads them again.
    """
    return MEASURES.scoped(reload_plugins=reload_plugins)


def available_measures(*, online: bool | None = None) -> list[str]:
    """Sorted names of all registered measures, built-ins and plugins.

    Args:
        online: If given, only the online (True) or post-hoc (False) measures.
    """
    return MEASURES.names(None if online is None else lambda spec: spec.online == online)


def get_measure(name: str) -> MeasureSpec:
    """Look up a measure by name.

    Raises:
        KeyError: If the name is unknown; the message lists the available measures.
    """
    return MEASURES.get(name)


def failed_plugins() -> dict[str, str]:
    """Entry points of the ``importance.measures`` group that failed to import: name -> error."""
    return MEASURES.failed_plugins()


def load_plugins() -> dict[str, str]:
    """Import every module of the ``importance.measures`` entry-point group (see the module doc).

    Returns:
        The failed plugins: entry-point name -> error message.
    """
    return MEASURES.load_plugins()


def recordable_measures() -> Iterator[tuple[str, MeasureSpec]]:
    """``(name, spec)`` of every measure that has a tracker, sorted by name."""
    return ((n, s) for n, s in MEASURES.items() if s.tracker is not None)
