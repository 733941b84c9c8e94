"""A registry of named callables with entry-point plugins: the pattern of the measure registry.

:class:`Registry` holds one dict of name -> :class:`Entry`; its :meth:`Registry.register` decorator
returns the function unchanged, a duplicate name is an error, an unknown name's error lists the
available ones, and the modules of an entry-point group are imported lazily on the first read
(a plugin that fails to import is skipped with a :class:`importance.PluginWarning` naming it).
The saliency methods (:mod:`importance.interpret.registry`) use it.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import warnings
from collections.abc import Callable
from typing import Any

from importance.registry import PluginWarning


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered callable: name, function, default options and its docstring's first line."""

    name: str
    fn: Callable[..., Any]
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""


class Registry:
    """Named callables of one kind, built-ins from a module and plugins from an entry-point group.

    Args:
        kind: What is registered, for messages (e.g. ``"saliency method"``).
        group: Entry-point group of the plugins (e.g. ``"importance.saliency"``).
        builtins: Module whose import registers the built-ins.
    """

    def __init__(self, kind: str, *, group: str, builtins: str):
        self.kind = kind
        self.group = group
        self._builtins = builtins
        self._entries: dict[str, Entry] = {}
        self._loaded = False
        self._failed: dict[str, str] = {}

    def register(self, name: str | Callable[..., Any] | None = None, **defaults: Any) -> Any:
        """Decorator registering a function under ``name`` (its own name when bare).

        Raises:
            ValueError: The name is taken or is not a non-empty string.
        """
        if callable(name):
            return self.register(None, **defaults)(name)

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            key = fn.__name__ if name is None else name
            if not isinstance(key, str) or not key.strip():
                raise ValueError(
                    f"A {self.kind} name must be a non-empty string. Received: {key!r}"
                )
            if key in self._entries:
                raise ValueError(
                    f"A {self.kind} named {key!r} is already registered "
                    f"(by {self._entries[key].fn.__module__}). Choose another name."
                )
            doc = (fn.__doc__ or "").strip().splitlines()
            self._entries[key] = Entry(key, fn, dict(defaults), doc[0] if doc else "")
            return fn

        return decorator

    def unregister(self, name: str) -> None:
        """Remove an entry. Raises KeyError listing the available names if unknown."""
        self.get(name)
        del self._entries[name]

    def names(self) -> list[str]:
        """Sorted registered names, built-ins and plugins."""
        self._ensure_loaded()
        return sorted(self._entries)

    def get(self, name: str) -> Entry:
        """The entry of ``name``. Raises KeyError listing the available names if unknown."""
        self._ensure_loaded()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            available = ", ".join(sorted(self._entries)) or "(none)"
            raise KeyError(f"Unknown {self.kind} {name!r}. Available: {available}") from None

    def failed_plugins(self) -> dict[str, str]:
        """Entry points of the group that failed to import: name -> error."""
        self._ensure_loaded()
        return dict(self._failed)

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        importlib.import_module(self._builtins)
        for entry_point in importlib.metadata.entry_points(group=self.group):
            try:
                entry_point.load()
            except Exception as error:  # a broken plugin must not break the suite
                self._failed[entry_point.name] = f"{type(error).__name__}: {error}"
                warnings.warn(
                    f"{self.group} plugin {entry_point.name!r} ({entry_point.value}) failed to "
                    f"load and is skipped: {self._failed[entry_point.name]}",
                    PluginWarning,
                    stacklevel=3,
                )
