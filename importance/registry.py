"""The one registry: named things of one kind, built-ins from a module, plugins from entry points.

Every plug-in axis of the project is an instance of :class:`Registry`, in the ``registry.py`` of
its package:

=========================  ==============================================  ======================
what                       instance                                        entry-point group
=========================  ==============================================  ======================
importance measures        ``importance.measures.registry.MEASURES``       ``importance.measures``
saliency methods           ``importance.interpret.registry.SALIENCY``      ``importance.saliency``
consolidation strategies   ``importance.continual.registry.STRATEGIES``    ``importance.strategies``
benchmark tasks            ``tasks.registry.TASKS``                        ``importance.tasks``
continual sequences        ``tasks.continual.sequences.SEQUENCES``         (none)
=========================  ==============================================  ======================

The rules are the same for all of them: a duplicate name is an error naming the module that owns
it; an unknown name's error lists the available ones; the ``builtins`` module is imported and the
plugins of the ``group`` are loaded lazily, the first time the registry is read; a plugin that
fails to import is skipped with a :class:`PluginWarning` naming it, and is not retried;
:meth:`Registry.scoped` undoes every registration made inside a block.

A callable is registered with the :meth:`Registry.register` decorator, which stores an
:class:`Entry` (name, function, default options, the docstring's first line) and returns the
function unchanged; any other object (a task) is stored as it is with :meth:`Registry.add`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.metadata
import warnings
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["Entry", "PluginWarning", "Registry"]


class PluginWarning(UserWarning):
    """A module of an entry-point group of importance-bench failed to load and was skipped."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """One registered callable.

    Attributes:
        name: Registry name.
        fn: The callable (a function or a class).
        defaults: Default keyword options, merged under the caller's options.
        description: First line of the callable's docstring.
    """

    name: str
    fn: Callable[..., Any]
    defaults: dict[str, Any] = dataclasses.field(default_factory=dict)
    description: str = ""


def first_doc_line(fn: Any) -> str:
    """The first line of ``fn``'s docstring, or ``""``."""
    lines = (getattr(fn, "__doc__", None) or "").strip().splitlines()
    return lines[0] if lines else ""


class Registry:
    """Named things of one kind, with built-ins from a module and plugins from an entry-point group.

    Args:
        kind: What is registered, for messages (``"measure"``, ``"saliency method"``, ``"task"``).
        group: Entry-point group whose modules are imported on the first read (None: no plugins).
        builtins: Module whose import registers the built-ins, imported on the first read (None:
            the built-ins register themselves when their module is imported).
        decorator: The public name of the registering decorator, for messages.
        signature: The signature a registered callable must have, for messages.
    """

    def __init__(
        self,
        kind: str,
        *,
        group: str | None = None,
        builtins: str | None = None,
        decorator: str = "register",
        signature: str = "",
    ):
        self.kind = kind
        self.decorator = decorator
        self.signature = signature
        self.group = group
        self.builtins = builtins
        self._items: dict[str, Any] = {}
        self._failed: dict[str, str] = {}
        self._builtins_loaded = builtins is None
        self._plugins_loaded = group is None

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, group={self.group!r}, {len(self._items)} registered)"

    # --- registering -----------------------------------------------------------------------

    def register(self, name: str | Callable[..., Any] | None = None, **defaults: Any) -> Any:
        """Decorator registering a callable under ``name`` (its own ``__name__`` when bare).

        Usable bare (``@REG.register``), with a name (``@REG.register("x")``) or with default
        options (``@REG.register("x", option=1)``). Returns the callable unchanged, so one
        function may be registered under several names and defaults.

        Raises:
            TypeError: What is registered is not callable.
            ValueError: The name is taken or is not a non-empty string.
        """
        if callable(name):
            return self.register(None, **defaults)(name)

        def decorator(fn: Callable[..., Any]) -> Callable[..., Any]:
            self.check_callable(fn, name)
            key = fn.__name__ if name is None else name
            self.add(key, Entry(key, fn, dict(defaults), first_doc_line(fn)))
            return fn

        return decorator

    def check_callable(self, fn: Any, name: Any) -> None:
        """Refuse a non-callable registration, naming it.

        Raises:
            TypeError: ``fn`` is not callable.
        """
        if not callable(fn):
            wanted = f"a callable {self.signature}".rstrip()
            raise TypeError(
                f"{self.decorator}({name!r}) needs {wanted}. "
                f"Received: {fn!r} of type {type(fn).__name__}"
            )

    def add(self, name: str, item: Any) -> Any:
        """Store ``item`` under ``name`` and return it.

        Raises:
            ValueError: The name is taken (the message names the module that owns it) or is not a
                non-empty string.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"A {self.kind} name must be a non-empty string. Received: {name!r}")
        if name in self._items:
            raise ValueError(
                f"A {self.kind} named {name!r} is already registered{self._owner(name)}. "
                "Choose another name."
            )
        self._items[name] = item
        return item

    def replace(self, name: str, item: Any) -> None:
        """Replace the item of a registered name (e.g. to attach a tracker to a measure).

        Raises:
            KeyError: Unknown name; the message lists the available ones.
        """
        self.get(name)
        self._items[name] = item

    def unregister(self, name: str) -> None:
        """Remove a registered name (for tests and interactive sessions).

        Raises:
            KeyError: Unknown name; the message lists the available ones.
        """
        self.get(name)
        del self._items[name]

    # --- reading ---------------------------------------------------------------------------

    def get(self, name: str) -> Any:
        """The item registered as ``name``.

        Raises:
            KeyError: Unknown name; the message lists the available ones.
        """
        self.ensure_loaded()
        try:
            return self._items[name]
        except (KeyError, TypeError):
            raise KeyError(self.unknown_message(name)) from None

    def names(self, where: Callable[[Any], bool] | None = None) -> list[str]:
        """Sorted registered names, built-ins and plugins (those whose item passes ``where``)."""
        self.ensure_loaded()
        return sorted(n for n, item in self._items.items() if where is None or where(item))

    def items(self) -> list[tuple[str, Any]]:
        """``(name, item)`` pairs, sorted by name."""
        self.ensure_loaded()
        return sorted(self._items.items(), key=lambda pair: pair[0])

    def __contains__(self, name: object) -> bool:
        self.ensure_loaded()
        return name in self._items

    def unknown_message(self, name: Any) -> str:
        """The error text for an unknown name: the name and the available choices."""
        available = ", ".join(sorted(self._items)) or "(none)"
        return f"Unknown {self.kind} {name!r}. Available: {available}"

    # --- built-ins and plugins -------------------------------------------------------------

    def ensure_loaded(self) -> None:
        """Import the built-ins module, then the plugins of the group, once each."""
        if not self._builtins_loaded:
            self._builtins_loaded = True
            importlib.import_module(self.builtins)
        if not self._plugins_loaded:
            self._plugins_loaded = True
            self.load_plugins()

    def load_plugins(self) -> dict[str, str]:
        """Import every module of the entry-point group not already known to fail.

        A plugin that fails to import (or registers a taken name) is reported with a
        :class:`PluginWarning` naming it, and skipped; the rest keep working.

        Returns:
            The failed plugins: entry-point name -> error message.
        """
        if self.group is None:
            return {}
        for entry_point in importlib.metadata.entry_points(group=self.group):
            if entry_point.name in self._failed:
                continue
            try:
                entry_point.load()
            except Exception as error:  # a broken plugin must not break the suite
                message = f"{type(error).__name__}: {error}"
                self._failed[entry_point.name] = message
                warnings.warn(
                    f"{self.group} plugin {entry_point.name!r} ({entry_point.value}) failed to "
                    f"load and is skipped: {message}",
                    PluginWarning,
                    stacklevel=4,
                )
        return dict(self._failed)

    def failed_plugins(self) -> dict[str, str]:
        """Entry points of the group that failed to import: name -> error."""
        self.ensure_loaded()
        return dict(self._failed)

    @contextlib.contextmanager
    def scoped(self, *, reload_plugins: bool = False) -> Iterator[Registry]:
        """Undo, on exit, every registration and removal made inside the block.

        Args:
            reload_plugins: Also forget which plugins were loaded or failed, so that the next
                read inside the block loads them again.
        """
        self.ensure_loaded()
        saved = (dict(self._items), dict(self._failed), self._plugins_loaded)
        if reload_plugins and self.group is not None:
            self._failed.clear()
            self._plugins_loaded = False
        try:
            yield self
        finally:
            self._items.clear()
            self._items.update(saved[0])
            self._failed.clear()
            self._failed.update(saved[1])
            self._plugins_loaded = saved[2]

    def _owner(self, name: str) -> str:
        fn = getattr(self._items[name], "fn", None)
        module = getattr(fn, "__module__", None)
        return f" (by {module})" if module else ""
