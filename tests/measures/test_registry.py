"""The measure registry: decorator forms, lookups, validation and entry-point plugins."""

from __future__ import annotations

import importlib.metadata
import sys
import textwrap
import uuid

import numpy as np
import pytest
import tensorflow as tf

import importance as imp
from importance.measures import registry


@pytest.fixture
def names():
    """Unique measure names for one test; whatever got registered under them is removed."""
    made: list[str] = []

    def make(stem: str = "m") -> str:
        made.append(f"test_{stem}_{uuid.uuid4().hex[:8]}")
        return made[-1]

    yield make
    for name in made:
        if name in imp.available_measures():
            imp.unregister_measure(name)


def _ones(model, data=None, **options):
    return [np.ones(tuple(w.shape)) for w in model.trainable_weights]


def test_bare_decorator_uses_the_function_name_and_returns_it_unchanged(names, dense_model):
    name = names("bare")

    def fn(model, data=None):
        """One-line summary.

        More text.
        """
        return _ones(model)

    fn.__name__ = name
    assert imp.register_measure(fn) is fn
    spec = imp.get_measure(name)
    assert spec.fn is fn and spec.online is False and spec.defaults == {}
    assert spec.description == "One-line summary."
    assert name in imp.available_measures()
    assert all(np.all(s == 1) for s in imp.compute_importance(name, dense_model))


def test_named_decorator_with_defaults_and_one_function_under_two_names(names, dense_model):
    plain, scaled = names("plain"), names("scaled")

    def scaled_ones(model, data=None, *, scale=1.0):
        return [scale * s for s in _ones(model)]

    decorated = imp.register_measure(scaled, scale=3.0)(imp.register_measure(plain)(scaled_ones))
    assert decorated is scaled_ones
    assert imp.get_measure(scaled).defaults == {"scale": 3.0}
    assert np.all(imp.compute_importance(plain, dense_model)[0] == 1.0)
    assert np.all(imp.compute_importance(scaled, dense_model)[0] == 3.0)
    assert np.all(imp.compute_importance(scaled, dense_model, scale=5.0)[0] == 5.0)  # caller wins


def test_online_flag_is_recorded(names):
    name = names("online")
    imp.register_measure(name, online=True)(_ones)
    assert imp.get_measure(name).online is True
    assert name in imp.available_measures(online=True)
    assert name not in imp.available_measures(online=False)


def test_duplicate_name_is_an_error_naming_it(names):
    name = names("dup")
    imp.register_measure(name)(_ones)
    with pytest.raises(ValueError, match=f"A measure named '{name}' is already registered"):
        imp.register_measure(name)(_ones)
    with pytest.raises(ValueError, match="'magnitude' is already registered"):
        imp.register_measure("magnitude")(_ones)


@pytest.mark.parametrize("bad", ["", "   ", 3])
def test_bad_names_are_rejected(bad):
    with pytest.raises(ValueError, match="A measure name must be a non-empty string"):
        imp.register_measure(bad)(_ones)


def test_unknown_name_lists_the_available_measures(dense_model):
    with pytest.raises(KeyError, match="Unknown measure 'fsher'. Available: .*fisher.*magnitude"):
        imp.compute_importance("fsher", dense_model)
    with pytest.raises(KeyError, match="Unknown measure 'nope'"):
        imp.unregister_measure("nope")


def test_available_measures_is_sorted_and_has_the_builtins():
    available = imp.available_measures()
    assert available == sorted(available)
    builtin = {"random", "magnitude", "uniform", "fisher", "fisher_sampled", "fisher_empirical",
               "fisher_batch", "mas", "shuffled_magnitude", "shuffled_fisher",
               "obd", "snip", "grasp", "synflow", "lamp", "wanda", "hessian_diag"}
    assert builtin <= set(available)
    assert set(imp.available_measures(online=False)) >= builtin


def test_unregister_removes_the_name(names):
    name = names("gone")
    imp.register_measure(name)(_ones)
    imp.unregister_measure(name)
    assert name not in imp.available_measures()


@pytest.mark.parametrize(
    ("bad_output", "message"),
    [
        (lambda ws: [np.ones(w.shape) for w in ws][:-1], "returned 3 arrays but the model has 4 trainable weights"),
        (lambda ws: np.ones(3), "must return a list with one array per trainable weight"),
        (lambda ws: [np.ones(w.shape) for w in ws[:-1]] + [np.ones((4,))], r"returned shape \(4,\) for weight '.*head/bias', expected \(3,\)"),
        (lambda ws: [np.ones(w.shape) for w in ws[:1]] + [np.full(ws[1].shape, np.nan)] + [np.ones(w.shape) for w in ws[2:]], "returned NaN values for weight '.*hidden/bias'"),
        (lambda ws: [np.ones(w.shape) for w in ws[:2]] + [np.full(ws[2].shape, np.inf)] + [np.ones(w.shape) for w in ws[3:]], "returned inf values for weight '.*head/kernel'"),
    ],
    ids=["count", "not-a-list", "shape", "nan", "inf"],
)
def test_bad_results_raise_importance_error_naming_measure_and_weight(names, dense_model, bad_output, message):
    name = names("bad")
    imp.register_measure(name)(lambda model, data=None: bad_output(list(model.trainable_weights)))
    with pytest.raises(imp.ImportanceError, match=f"Measure '{name}' {message}"):
        imp.compute_importance(name, dense_model)


def test_validate_scores_returns_float64_copies(dense_model):
    scores = [w.numpy() for w in dense_model.trainable_weights]
    out = imp.validate_scores(scores, dense_model)
    assert all(o.dtype == np.float64 for o in out)


# --- online measures carry their tracker; seeds are read once ---------------------------------


class _CountSteps(imp.Tracker):
    def __init__(self, weights):
        super().__init__(weights)
        self.count = self.zeros_like_weights("count")

    def update(self, grads, before, after):
        for c in self.count:
            c.assign_add(tf.ones_like(c))


def test_an_online_measure_registers_its_tracker_and_shares_it(names, dense_model):
    first, second = names("steps"), names("steps_again")

    def steps(model, data=None, *, recorder):
        return [np.asarray(v.numpy(), np.float64) for v in recorder.tracker(first).count]

    imp.register_measure(first, online=True, tracker=_CountSteps)(steps)
    imp.register_measure(second, online=True, tracker=_CountSteps)(steps)
    assert imp.get_measure(first).tracker is _CountSteps
    recorder = imp.track(dense_model, measures=[first, second], patch_fit=False)
    assert recorder.tracker(first) is recorder.tracker(second)  # one class, one instance
    weights = [w.value for w in dense_model.trainable_weights]
    for _ in range(3):
        recorder.observe(weights, weights, weights)
    assert all(np.all(s == 3) for s in imp.compute_importance(second, dense_model))


def test_tracker_needs_an_online_measure_and_a_tracker_class(names):
    with pytest.raises(ValueError, match="only for online measures"):
        imp.register_measure(names("x"), tracker=_CountSteps)(_ones)
    with pytest.raises(ValueError, match=r"subclass of importance\.Tracker\. Received: <class 'int'>"):
        imp.register_measure(names("y"), online=True, tracker=int)(_ones)
    late = names("late")
    imp.register_measure(late, online=True)(_ones)
    assert imp.register_tracker(late)(_CountSteps) is _CountSteps
    assert imp.get_measure(late).tracker is _CountSteps
    with pytest.raises(ValueError, match="already has a tracker"):
        imp.register_tracker(late)(_CountSteps)


def test_takes_seed_is_read_from_the_signature_once(names):
    seeded, unseeded = names("seeded"), names("unseeded")
    imp.register_measure(seeded)(lambda model, data=None, *, seed=0: _ones(model))
    imp.register_measure(unseeded)(_ones)
    assert imp.get_measure(seeded).takes_seed and not imp.get_measure(unseeded).takes_seed
    assert imp.get_measure("random").takes_seed and not imp.get_measure("magnitude").takes_seed


# --- plugins through the entry-point group ---------------------------------------------------


@pytest.fixture
def plugin_env(tmp_path, monkeypatch):
    """Write plugin modules on sys.path and serve them as entry points of our group.

    Returns ``add(entry_name, source) -> measure_name_prefix``; the registry is made to reload its
    plugins (loaded flag and failed dict reset) and is restored afterwards.
    """
    monkeypatch.syspath_prepend(str(tmp_path))
    entry_points: list[importlib.metadata.EntryPoint] = []
    modules: list[str] = []

    def fake_entry_points(*, group=None, **_):
        assert group == registry.ENTRY_POINT_GROUP
        return importlib.metadata.EntryPoints(entry_points)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)

    def add(entry_name: str, source: str) -> str:
        module = f"plugin_{uuid.uuid4().hex[:8]}"
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        modules.append(module)
        entry_points.append(
            importlib.metadata.EntryPoint(name=entry_name, value=module, group=registry.ENTRY_POINT_GROUP)
        )
        return module

    with registry.scoped(reload_plugins=True):
        yield add
    for module in modules:
        sys.modules.pop(module, None)


GOOD_PLUGIN = """
    import numpy as np
    import importance as imp

    @imp.register_measure("{name}")
    def plugin_measure(model, data=None, *, value=2.0):
        '''A third-party measure.'''
        return [np.full(tuple(w.shape), value) for w in model.trainable_weights]
"""


def test_good_plugin_registers_its_measure(plugin_env, dense_model):
    module = plugin_env("good_plugin", GOOD_PLUGIN.format(name="plugin_good"))
    assert "plugin_good" in imp.available_measures()
    assert imp.get_measure("plugin_good").fn.__module__ == module
    assert np.all(imp.compute_importance("plugin_good", dense_model)[0] == 2.0)
    assert registry.failed_plugins() == {}


def test_broken_plugin_warns_by_name_and_the_rest_still_works(plugin_env, dense_model):
    plugin_env("broken_plugin", "raise ImportError('missing dependency: torch')\n")
    plugin_env("good_plugin", GOOD_PLUGIN.format(name="plugin_survivor"))
    with pytest.warns(imp.PluginWarning, match="'broken_plugin'.*missing dependency: torch"):
        available = imp.available_measures()
    assert "plugin_survivor" in available and "fisher" in available
    assert "ImportError" in registry.failed_plugins()["broken_plugin"]
    assert np.all(imp.compute_importance("plugin_survivor", dense_model)[0] == 2.0)
    assert np.all(imp.compute_importance("magnitude", dense_model)[1] >= 0)
    imp.available_measures()  # loaded once: no second warning (warnings are errors here)


def test_plugin_with_a_duplicate_name_is_reported_not_fatal(plugin_env):
    plugin_env("clashing_plugin", GOOD_PLUGIN.format(name="magnitude"))
    with pytest.warns(imp.PluginWarning, match="'clashing_plugin'.*already registered"):
        assert "magnitude" in imp.available_measures()
    assert imp.get_measure("magnitude").fn.__module__ == "importance.measures.basic"


def test_plugin_measure_with_bad_output_is_caught(plugin_env, dense_model):
    plugin_env("nan_plugin", GOOD_PLUGIN.format(name="plugin_nan"))
    with pytest.raises(imp.ImportanceError, match="Measure 'plugin_nan' returned NaN values for weight"):
        imp.compute_importance("plugin_nan", dense_model, value=float("nan"))


def test_scoped_undoes_registrations_and_removals():
    name = f"test_scoped_{uuid.uuid4().hex[:8]}"
    with registry.scoped():
        imp.register_measure(name)(_ones)
        imp.unregister_measure("magnitude")
        assert name in imp.available_measures() and "magnitude" not in imp.available_measures()
    assert name not in imp.available_measures() and "magnitude" in imp.available_measures()
