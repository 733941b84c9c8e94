"""The one registry class: every plug-in axis gets the same rules from it."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
import uuid

import pytest

import tasks
from importance.interpret.registry import SALIENCY
from importance.measures.registry import MEASURES
from importance.registry import Entry, PluginWarning, Registry
from tasks.continual import SEQUENCES
from tasks.registry import TASKS


def _toy(model=None, data=None, *, scale=1.0):
    """A toy entry."""
    return scale


def test_register_forms_and_defaults():
    registry = Registry("widget")
    assert registry.register(_toy) is _toy
    assert registry.register("scaled", scale=2.0)(_toy) is _toy
    assert registry.names() == ["_toy", "scaled"]
    entry = registry.get("scaled")
    assert entry == Entry("scaled", _toy, {"scale": 2.0}, "A toy entry.")


def test_duplicate_names_the_owner_and_unknown_lists_the_choices():
    registry = Registry("widget")
    registry.register("a")(_toy)
    with pytest.raises(ValueError, match=rf"A widget named 'a' is already registered \(by {__name__}\)"):
        registry.register("a")(_toy)
    with pytest.raises(KeyError, match="Unknown widget 'b'. Available: a"):
        registry.get("b")
    with pytest.raises(KeyError, match=r"Unknown widget 'b'. Available: \(none\)"):
        Registry("widget").unregister("b")


@pytest.mark.parametrize("name", ["", "  ", 3, None])
def test_bad_names_and_non_callables_are_refused(name):
    registry = Registry("widget", decorator="register_widget", signature="fn(x)")
    with pytest.raises(ValueError, match="A widget name must be a non-empty string. Received"):
        registry.add(name, object())
    with pytest.raises(TypeError, match=r"register_widget\('w'\) needs a callable fn\(x\). Received: 3"):
        registry.register("w")(3)


def test_scoped_undoes_registrations_removals_and_replacements():
    registry = Registry("widget")
    registry.register("kept")(_toy)
    with registry.scoped():
        registry.register("temporary")(_toy)
        registry.unregister("kept")
        assert registry.names() == ["temporary"]
    assert registry.names() == ["kept"]


@pytest.fixture
def plugin_group(tmp_path, monkeypatch):
    """Serve plugin modules written to ``tmp_path`` as entry points of group ``test.widgets``."""
    monkeypatch.syspath_prepend(str(tmp_path))
    points: list[importlib.metadata.EntryPoint] = []
    real = importlib.metadata.entry_points

    def entry_points(*, group=None, **kwargs):
        if group == "test.widgets":
            return importlib.metadata.EntryPoints(points)
        return real(group=group, **kwargs)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    modules = []

    def add(name: str, source: str) -> str:
        module = f"widget_plugin_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        points.append(importlib.metadata.EntryPoint(name=name, value=module, group="test.widgets"))
        modules.append(module)
        return module

    yield add
    for module in modules:
        sys.modules.pop(module, None)


def test_plugins_load_once_and_a_broken_one_is_named_and_skipped(plugin_group):
    registry = Registry("widget", group="test.widgets")
    sys.modules[__name__].WIDGETS = registry  # the plugins register here
    plugin_group("good", f"import {__name__} as host\nhost.WIDGETS.register('from_plugin')(len)\n")
    plugin_group("broken", "raise ImportError('missing dependency: torch')\n")
    with pytest.warns(PluginWarning, match=r"test.widgets plugin 'broken' .* missing dependency: torch"):
        assert registry.names() == ["from_plugin"]
    assert "ImportError" in registry.failed_plugins()["broken"]
    assert registry.load_plugins() == registry.failed_plugins()  # a failed plugin is not retried
    with registry.scoped(reload_plugins=True):
        with pytest.warns(PluginWarning, match="'broken'"):
            registry.names()


def test_task_plugins_register_through_the_entry_point_group(plugin_group, monkeypatch):
    tasks.available_tasks()  # the real group loaded first, so the scope below saves it
    monkeypatch.setattr(TASKS, "group", "test.widgets")
    name = f"plugin_task_{uuid.uuid4().hex[:6]}"
    plugin_group(
        "tasks_plugin",
        f"""
        import tasks
        base = tasks.get_task("digits")
        tasks.register_task(tasks.Task({name!r}, description="a plugin's task",
            num_classes=base.num_classes, input_shape=base.input_shape,
            load=lambda: (base.train_data(), base.test_data()),
            build=lambda seed, variant: base.build_model(seed), training=base.training))
        """,
    )
    with TASKS.scoped(reload_plugins=True):
        assert name in tasks.available_tasks()
        assert tasks.get_task(name).num_classes == tasks.get_task("digits").num_classes
    assert name not in tasks.available_tasks()


def test_every_axis_is_an_instance_of_the_one_class():
    for registry in (MEASURES, SALIENCY, TASKS, SEQUENCES):
        assert type(registry) is Registry
    assert MEASURES.group == "importance.measures"
    assert SALIENCY.group == "importance.saliency"
    assert TASKS.group == "importance.tasks"
