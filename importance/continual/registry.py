"""The consolidation-strategy registry: name -> :class:`~importance.continual.Strategy` subclass.

Registered like the measures, on the shared :class:`~importance.registry.Registry`::

    from importance.continual import Strategy, register_strategy

    @register_strategy("my_strategy")
    class MyStrategy(Strategy): ...

    available_strategies()                 # sorted names, built-ins and plugins
    get_strategy("ewc").penalised          # the class: ask it what the strategy does
    Consolidator("ewc", measure="fisher", lam=1.0)   # an instance, ready for a learner

Plugins register through the entry-point group ``importance.strategies`` (a module applying the
decorator); one that fails to import is reported by name with a warning. The built-ins
(:mod:`importance.continual.strategies`) are loaded the first time the registry is read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from importance.registry import Registry

__all__ = [
    "ENTRY_POINT_GROUP",
    "STRATEGIES",
    "available_strategies",
    "get_strategy",
    "register_strategy",
    "unregister_strategy",
]

ENTRY_POINT_GROUP = "importance.strategies"
STRATEGIES = Registry(
    "consolidation strategy",
    group=ENTRY_POINT_GROUP,
    builtins="importance.continual.strategies",
    decorator="register_strategy",
    signature="(a Strategy subclass)",
)

register_strategy = STRATEGIES.register
unregister_strategy = STRATEGIES.unregister


def get_strategy(name: str) -> Any:
    """The :class:`~importance.continual.Strategy` subclass registered as ``name``.

    Raises:
        KeyError: Unknown strategy; the message lists the available ones.
    """
    return STRATEGIES.get(name).fn


def available_strategies(where: Callable[[Any], bool] | None = None) -> list[str]:
    """Sorted names of the registered strategies (those whose class passes ``where``, e.g.
    ``lambda cls: cls.penalised``)."""
    return STRATEGIES.names(None if where is None else lambda entry: where(entry.fn))
