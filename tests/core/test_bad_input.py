"""Bad input never gives a silent wrong answer (issue 9).

Every public entry point that takes a model and data is called with each kind of bad input; the
error type and that its message names the argument are checked, and the model must be bitwise
unchanged afterwards. Then: logits vs probabilities decided from the outputs, plugin outputs,
and hypothesis properties for label ranges, NaN placements and threshold lists.
"""

from __future__ import annotations

import json
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import importance as imp
import reports
from importance.data import evaluate, iter_batches
from importance.testing import assert_weights_unchanged, weights_snapshot
from reports.__main__ import main as reports_main
from reports.sections import thresholding
from tasks.trainer import train

PROPERTY = settings(max_examples=25, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def _ones(model):
    return [np.ones(w.shape) for w in model.trainable_weights]


ENTRY_POINTS = {
    "fisher": lambda m, d: imp.compute_importance("fisher", m, d),
    "fisher_empirical": lambda m, d: imp.compute_importance("fisher_empirical", m, d),
    "mas": lambda m, d: imp.compute_importance("mas", m, d),
    "threshold_sweep": lambda m, d: imp.threshold_sweep(m, _ones(m), d, thresholds=[0.0, 0.5]),
    "evaluate": lambda m, d: evaluate(m, d),
    "train": lambda m, d: train(m, d, epochs=1, batch_size=8, learning_rate=0.01),
}
MODEL_FREE = {"iter_batches": lambda m, d: list(iter_batches(d))}


def _expect(call, model, data, error, match):
    before = weights_snapshot(model)
    with pytest.raises(error, match=match) as info:
        call(model, data)
    assert not isinstance(info.value, imp.ImportanceError), "bad data blamed on the measure"
    assert_weights_unchanged(model, before)


def _with(data, *, x=None, y=None):
    return (data[0] if x is None else x, data[1] if y is None else y)


def _nan_at(data, index):
    x = data[0].copy()
    x[index, 1] = np.nan
    return x


# Each case: (name, data transform, expected message), for every entry point.
DATA_CASES = [
    ("negative label", lambda d: _with(d, y=np.where(np.arange(32) == 4, -1, d[1])), r"labels.*-1.*example 4"),
    ("label >= classes", lambda d: _with(d, y=np.where(np.arange(32) == 7, 3, d[1])), r"labels.*\[0, 3\).*example 7"),
    ("float label", lambda d: _with(d, y=np.where(np.arange(32) == 2, 0.5, d[1])), r"labels.*integer.*0\.5.*example 2"),
    ("NaN input", lambda d: _with(d, x=_nan_at(d, 5)), r"data.*non-finite.*example 5"),
    ("inf input", lambda d: _with(d, x=np.where(np.arange(32)[:, None] == 9, np.inf, d[0]).astype(np.float32)),
     r"data.*non-finite.*example 9"),
    ("one-hot width", lambda d: _with(d, y=np.eye(4)[d[1]]), r"labels are one-hot with 4 columns.*3 classes"),
    ("one-hot width in a dataset", lambda d: tf.data.Dataset.from_tensor_slices(_with(d, y=np.eye(4)[d[1]])).batch(8),
     r"labels are one-hot with 4 columns.*3 classes"),
    ("wrong input width", lambda d: _with(d, x=d[0][:, :5]), r"data.*shape \(32, 5\).*expects"),
    ("infinite dataset", lambda d: tf.data.Dataset.from_tensor_slices(d).batch(8).repeat(), r"data.*infinite.*max_examples"),
    ("unbatched dataset", lambda d: tf.data.Dataset.from_tensor_slices(d), r"data.*unbatched.*\.batch"),
    ("NaN in a dataset batch", lambda d: tf.data.Dataset.from_tensor_slices(_with(d, x=_nan_at(d, 13))).batch(8),
     r"data.*non-finite.*example 13"),
    ("label >= classes in a dataset", lambda d: tf.data.Dataset.from_tensor_slices(
        _with(d, y=np.where(np.arange(32) == 21, 5, d[1]))).batch(8), r"labels.*\[0, 3\).*example 21"),
]


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("case", DATA_CASES, ids=[c[0] for c in DATA_CASES])
def test_bad_data_is_named(entry, case, dense_model, dense_data):
    _, transform, match = case
    data = transform(dense_data)
    error = ValueError
    if entry == "train" and isinstance(data, tf.data.Dataset):  # the trainer takes arrays only
        error, match = TypeError, r"train_data must be \(x, y\) arrays"
    _expect(ENTRY_POINTS[entry], dense_model, data, error, match)


MODEL_FREE_CASES = [c for c in DATA_CASES if "classes" not in c[0] and "width" not in c[0]]


@pytest.mark.parametrize("case", MODEL_FREE_CASES, ids=[c[0] for c in MODEL_FREE_CASES])
def test_iter_batches_names_bad_data(case, dense_model, dense_data):
    _, transform, match = case
    _expect(MODEL_FREE["iter_batches"], dense_model, transform(dense_data), ValueError, match)


def _regression():
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.Dense(1)])


def _two_heads():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4)(inputs)
    return keras.Model(inputs, [keras.layers.Dense(3)(hidden), keras.layers.Dense(2)(hidden)])


def _frozen():
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)], name="frozen")
    model.trainable = False
    return model


MODEL_CASES = [
    ("regression", _regression, r"model has 1 output unit.*classifiers.*regression"),
    ("multi-output", _two_heads, r"model has 2 outputs.*single-output.*model\.outputs\[i\]"),
    ("no trainable weights", _frozen, r"model 'frozen' has no trainable weights"),
    ("unbuilt", lambda: keras.Sequential([keras.layers.Dense(3)]), r"model must be built"),
]


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("case", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_unsupported_models_are_refused(entry, case, dense_data):
    _, build, match = case
    _expect(ENTRY_POINTS[entry], build(), dense_data, ValueError, match)


@pytest.mark.parametrize("case", MODEL_CASES[2:], ids=[c[0] for c in MODEL_CASES[2:]])
def test_aggregate_and_data_free_measures_refuse_models_without_weights(case):
    _, build, match = case
    model = build()
    with pytest.raises(ValueError, match=match):
        imp.aggregate([], model, level="layer")
    with pytest.raises(ValueError, match=match):
        imp.compute_importance("magnitude", model)


def test_infinite_dataset_with_max_examples_ends(dense_model, dense_data):
    finite = imp.compute_importance("fisher", dense_model, dense_data, max_examples=20)
    endless = tf.data.Dataset.from_tensor_slices(dense_data).batch(8).repeat()
    scores = imp.compute_importance("fisher", dense_model, endless, max_examples=20)
    for a, b in zip(scores, finite, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-12)


# --- logits or probabilities: decided from the outputs, not the last layer's class ---


def _softmax_endings(logits_model):
    """Probability models sharing ``logits_model``'s weights, ending in a softmax three ways."""
    inputs = keras.Input((6,))
    lam = keras.Sequential([inputs, logits_model, keras.layers.Lambda(keras.ops.softmax)])
    functional = keras.Model(inputs, keras.ops.softmax(logits_model(inputs)))
    return {"lambda": lam, "keras.ops.softmax": functional}


@pytest.mark.parametrize("ending", ["lambda", "keras.ops.softmax"])
def test_softmax_endings_are_read_as_probabilities(ending, build_dense, dense_data):
    logits_model = build_dense(seed=3)
    model = _softmax_endings(logits_model)[ending]
    x, y = dense_data
    probs = model(x).numpy().astype(np.float64)
    expected_loss = -np.mean(np.log(probs[np.arange(len(y)), y]))
    loss, _ = evaluate(model, dense_data)
    assert loss == pytest.approx(expected_loss, rel=1e-5)
    curve = imp.threshold_sweep(model, _ones(model), dense_data, thresholds=[0.0])
    assert curve["loss"].iloc[0] == pytest.approx(expected_loss, rel=1e-5)
    reference = imp.compute_importance("fisher", logits_model, dense_data, method="loop")
    scores = imp.compute_importance("fisher", model, dense_data, method="loop")
    for a, b in zip(scores, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-10)


def test_explicit_from_logits_wins(build_dense, dense_data):
    model = _softmax_endings(build_dense(seed=3))["lambda"]
    as_probs = imp.compute_importance("fisher", model, dense_data, method="loop")
    as_logits = imp.compute_importance("fisher", model, dense_data, method="loop", from_logits=True)
    assert not np.allclose(as_probs[0], as_logits[0])
    x, y = dense_data
    outputs = model(x).numpy().astype(np.float64)
    logp = outputs - np.log(np.exp(outputs).sum(axis=1, keepdims=True))
    loss, _ = evaluate(model, dense_data, from_logits=True)
    assert loss == pytest.approx(-np.mean(logp[np.arange(len(y)), y]), rel=1e-5)


def test_output_kind_needs_data_for_an_unseen_model(build_dense):
    with pytest.raises(ValueError, match=r"x is required.*from_logits"):
        imp.validation.output_kind(build_dense(seed=7), None)


def test_train_refuses_a_probability_model(build_dense, dense_data):
    model = _softmax_endings(build_dense())["keras.ops.softmax"]
    _expect(ENTRY_POINTS["train"], model, dense_data, ValueError, r"logits.*outputs probabilities")


# --- plugins ---


def _register_returning(name, make):
    @imp.register_measure(name)
    def plugin(model, data=None):
        return [make(w) for w in model.trainable_weights]

    return plugin


def _assert_plugin_refused(name, make, match, model):
    """A plugin returning ``make(w)`` per weight is refused with ``match``; the model unchanged."""
    _register_returning(name, make)
    before = weights_snapshot(model)
    try:
        with pytest.raises(imp.ImportanceError, match=match):
            imp.compute_importance(name, model)
    finally:
        imp.unregister_measure(name)
    assert_weights_unchanged(model, before)


@pytest.mark.parametrize(
    "name, make, match",
    [
        ("bad_strings", lambda w: np.full(w.shape, "x"), r"'bad_strings'.*<U1.*real numbers"),
        ("bad_complex", lambda w: np.ones(w.shape) + 1j, r"'bad_complex'.*complex128.*real numbers"),
        ("bad_ragged", lambda w: [[1.0], [1.0, 2.0]], r"'bad_ragged'.*not convertible"),
    ],
)
def test_plugin_outputs_that_are_not_real_arrays_name_the_measure(name, make, match, dense_model):
    _assert_plugin_refused(name, make, match, dense_model)


def test_plugin_tensors_are_converted(dense_model):
    _register_returning("tensor_plugin", lambda w: tf.abs(w) + 1.0)
    try:
        scores = imp.compute_importance("tensor_plugin", dense_model)
    finally:
        imp.unregister_measure("tensor_plugin")
    for score, w in zip(scores, dense_model.trainable_weights, strict=True):
        np.testing.assert_array_equal(score, (np.abs(w.numpy()) + np.float32(1)).astype(np.float64))


@pytest.mark.parametrize("thing", [3, "not a function", None])
def test_registering_a_non_callable_fails_at_registration(thing):
    with pytest.raises(TypeError, match=r"register_measure\('not_callable'\) needs a callable"):
        imp.register_measure("not_callable")(thing)
    assert "not_callable" not in imp.available_measures()


# --- properties ---

_MODEL = None


def _shared_model():
    global _MODEL
    if _MODEL is None:
        keras.utils.set_random_seed(0)
        _MODEL = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    return _MODEL


@PROPERTY
@given(labels=st.lists(st.integers(-5, 8), min_size=1, max_size=24))
def test_labels_outside_the_classes_name_the_first_one(labels):
    model = _shared_model()
    y = np.array(labels, np.int64)
    x = np.zeros((len(y), 6), np.float32)
    bad = np.flatnonzero((y < 0) | (y >= 3))
    if bad.size == 0:
        evaluate(model, (x, y))
        return
    with pytest.raises(ValueError, match=rf"labels.*Received {y[bad[0]]} for example {bad[0]}\."):
        evaluate(model, (x, y))


@PROPERTY
@given(
    n=st.integers(1, 20),
    cells=st.lists(st.tuples(st.integers(0, 19), st.integers(0, 5)), min_size=1, max_size=5),
    value=st.sampled_from([np.nan, np.inf, -np.inf]),
    as_dataset=st.booleans(),
)
def test_non_finite_inputs_name_the_first_example(n, cells, value, as_dataset):
    model = _shared_model()
    x = np.zeros((n, 6), np.float32)
    rows = [r for r, _ in cells if r < n]
    for r, c in cells:
        if r < n:
            x[r, c] = value
    data = (x, np.zeros(n, np.int32))
    if as_dataset:
        data = tf.data.Dataset.from_tensor_slices(data).batch(4)
    before = weights_snapshot(model)
    if not rows:
        imp.threshold_sweep(model, _ones(model), data, thresholds=[0.5])
    else:
        with pytest.raises(ValueError, match=rf"non-finite input .* example {min(rows)};"):
            imp.threshold_sweep(model, _ones(model), data, thresholds=[0.5])
    assert_weights_unchanged(model, before)


@PROPERTY
@given(st.lists(st.one_of(st.floats(allow_nan=True), st.integers(-2, 2), st.booleans()), max_size=6))
def test_threshold_lists(thresholds):
    model = _shared_model()
    data = (np.ones((4, 6), np.float32), np.zeros(4, np.int32))
    valid = thresholds and all(
        not isinstance(t, bool) and np.isfinite(t) and 0 <= t <= 1 for t in thresholds
    )
    if valid:
        curve = imp.threshold_sweep(model, _ones(model), data, thresholds=thresholds)
        assert list(curve["threshold"]) == [float(t) for t in thresholds]
    else:
        with pytest.raises(ValueError, match="threshold"):
            imp.threshold_sweep(model, _ones(model), data, thresholds=thresholds)


# --- reports never blend or drop silently ---


GRID = (0.0, 0.25, 0.5, 0.75, 1.0)


def _curve_records(seeds=(0, 1), *, mode="quick", thresholds=GRID):
    """A run's meta and the points of two measures' curves (loss rising from 0.2 to ln 10)."""
    out = [{"kind": "meta", "run": {"mode": mode, "thresholds": list(thresholds)}}]
    for seed in seeds:
        for measure, power in (("good", 3.0), ("random", 1.0)):
            for p in GRID:
                rise = p**power + (0.02 * seed if 0 < p < 1 else 0.0)
                out.append({
                    "kind": "point", "measure": measure, "task": "toy", "variant": "",
                    "level": "weight", "scope": "global", "replace": "noise", "seed": seed,
                    "threshold": p, "loss": 0.2 + rise * (np.log(10) - 0.2),
                    "accuracy": 0.95 - 0.85 * rise, "fraction_replaced": p, "num_classes": 10,
                    "base_loss": 0.2, "base_accuracy": 0.95,
                })
    return out


def _run_file(path, *, mode="quick", thresholds=GRID, schema=None, extra=()):
    records = _curve_records(mode=mode, thresholds=thresholds)
    if schema is not None:
        for record in records:
            record["schema"] = schema
    lines = [json.dumps(r) for r in records] + list(extra)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "second, match",
    [
        ({"mode": "full"}, r"different mode: 'quick' in .*a\.jsonl; 'full' in .*b\.jsonl"),
        ({"thresholds": (0.0, 0.5, 1.0)}, r"different thresholds"),
        ({"schema": 2}, r"different record format: 1 in .*a\.jsonl; 2 in .*b\.jsonl"),
    ],
)
def test_reports_refuse_to_blend_runs(tmp_path, capsys, second, match):
    a = _run_file(tmp_path / "a.jsonl")
    b = _run_file(tmp_path / "b.jsonl", **second)
    with pytest.raises(reports.MixedRunsError, match=match):
        reports.read_records([a, b])
    assert reports_main([str(a), str(b), "--out", str(tmp_path / "out"), "--no-plots"]) == 2
    assert re.search(match, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
    merged = reports.read_records([a, b], allow_mixed=True)
    assert len([r for r in merged if r["kind"] == "meta"]) == 2
    assert reports_main([str(a), str(b), "--out", str(tmp_path / "out"), "--no-plots", "--allow-mixed"]) == 0


BAD_LINES = [
    ('{"kind": "point", "measure": "good", "task": "toy", "variant": "", "level": "weight", '
     '"scope": "global", "replace": "noise", "seed": 5, "threshold": 0.5, "loss": NaN, '
     '"accuracy": 0.5, "num_classes": 10, "fraction_replaced": 0.5, "base_loss": 0.1, '
     '"base_accuracy": 0.9}', r"non-finite loss=nan"),
    ('{"kind": "point", "measure": "good", "task": "toy", "seed": 6, "threshold": 0.5, '
     '"loss": 1.0, "accuracy": 0.5, "num_classes": 10}', r"missing field\(s\) variant, level, scope, replace"),
    ('{"kind": "mystery"}', r"not a result record \(kind 'mystery'\)"),
    ('{"kind": "point", "measure": "go', r"torn last line"),
]


@pytest.mark.parametrize("line, reason", BAD_LINES, ids=["nan", "missing", "unknown", "torn"])
def test_reports_name_every_skipped_line(tmp_path, capsys, line, reason):
    path = _run_file(tmp_path / "a.jsonl", extra=[line])
    number = len(path.read_text().splitlines())
    records = reports.read_records([path])
    (note,) = reports.skipped_lines(records)
    assert re.fullmatch(rf"{re.escape(str(path))}:{number}: .*{reason}.*", note)
    assert reports_main([str(path), "--out", str(tmp_path / "out"), "--no-plots"]) == 0
    assert re.search(rf"skipped .*a\.jsonl:{number}: .*{reason}", capsys.readouterr().err)
    header = (tmp_path / "out" / "leaderboard.md").read_text().split("## ")[0]
    assert "**skipped records**: 1" in header and f"a.jsonl:{number}" in header


def test_a_nan_point_keeps_the_rest_of_its_curve(tmp_path):
    records = _curve_records(seeds=(0, 1, 2))
    clean = thresholding.curves_frame(thresholding.points_frame(records))
    target = next(r for r in records if r["kind"] == "point" and r["threshold"] == 0.25)
    lines = [json.dumps(r) for r in records]
    lines[records.index(target)] = json.dumps({**target, "loss": float("nan")})
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(lines) + "\n")
    read = reports.read_records([path])
    curves = thresholding.curves_frame(thresholding.points_frame(read))
    assert curves["robustness"].notna().all() and len(curves) == len(clean)
    assert len(reports.skipped_lines(read)) == 1


def test_undecodable_file_is_named(tmp_path):
    path = tmp_path / "binary.jsonl"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ValueError, match=r"binary\.jsonl is not a UTF-8 JSON-lines result file"):
        reports.read_records([path])


@PROPERTY
@given(shape=st.lists(st.integers(1, 7), min_size=1, max_size=3).filter(lambda s: s != [6]))
def test_inputs_of_another_shape_are_named(shape):
    model = _shared_model()
    data = (np.zeros((3, *shape), np.float32), np.zeros(3, np.int32))
    before = weights_snapshot(model)
    for call in (ENTRY_POINTS["fisher"], ENTRY_POINTS["threshold_sweep"]):
        with pytest.raises(ValueError, match=rf"data has inputs of shape \(3, {', '.join(map(str, shape))},?\) but the model expects \(None, 6\)"):
            call(model, data)
    assert_weights_unchanged(model, before)


# --- issue 20: the remaining silent core cases ---


class _NoArray:
    """Neither an array, a tensor nor a sequence of numbers."""


class _RequiresGrad:
    """Like a torch tensor that requires grad: a sequence whose conversions raise."""

    def __init__(self, shape):
        self.values = np.ones(shape)

    def __len__(self):
        return len(self.values)

    def __getitem__(self, index):
        return self.values[index]

    def __array__(self, dtype=None, copy=None):
        raise RuntimeError("Can't call numpy() on Tensor that requires grad.")

    def numpy(self):
        raise RuntimeError("Can't call numpy() on Tensor that requires grad.")


class _ArrayRaises(_RequiresGrad):
    numpy = None  # only __array__, and it raises

    def __getattribute__(self, name):
        if name == "numpy":
            raise AttributeError(name)
        return super().__getattribute__(name)


@pytest.mark.parametrize(
    "name, make, match",
    [
        ("no_array", lambda w: _NoArray(), r"'no_array' returned a _NoArray for weight '[^']*kernel'.*no __array__"),
        ("list_of_objects", lambda w: [_NoArray()] * w.shape[-1],
         r"'list_of_objects' returned a list of _NoArray for weight '[^']*kernel'.*real numbers"),
        ("requires_grad", lambda w: _RequiresGrad(w.shape),
         r"'requires_grad' returned a _RequiresGrad for weight '[^']*kernel'.*not convertible.*requires grad"),
        ("array_raises", lambda w: _ArrayRaises(w.shape),
         r"'array_raises' returned a _ArrayRaises for weight '[^']*kernel'.*not convertible.*requires grad"),
    ],
)
def test_plugin_objects_without_a_usable_array_name_the_measure_and_weight(name, make, match, dense_model):
    _assert_plugin_refused(name, make, match, dense_model)


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"measure": None}, r"point record missing field\(s\) measure"),
        ({"measure": ""}, r"point record with an empty or non-text measure=''"),
        ({"measure": 3}, r"point record with an empty or non-text measure=3"),
        ({"task": "  "}, r"point record with an empty or non-text task='  '"),
        ({"loss": None}, r"point record missing field\(s\) loss"),
    ],
    ids=["null measure", "empty measure", "numeric measure", "blank task", "null loss"],
)
def test_records_without_a_usable_name_are_named_and_excluded(tmp_path, change, reason):
    records = _curve_records()
    target = next(r for r in records if r["kind"] == "point" and r["measure"] == "good" and r["seed"] == 1)
    lines = [json.dumps(r) for r in records]
    index = records.index(target)
    lines[index] = json.dumps({**target, **change})
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(lines) + "\n")
    read = reports.read_records([path])
    (note,) = reports.skipped_lines(read)
    assert re.fullmatch(rf"{re.escape(str(path))}:{index + 1}: .*{reason}.*", note)
    points = thresholding.points_frame(read)
    assert set(points["measure"]) == {"good", "random"}  # nothing scored under a blank name
    assert len(points) == len([r for r in records if r["kind"] == "point"]) - 1


# --- issue 21: datasets are checked inside the measure's compiled step ---


BAD_BATCHES = {
    "nan": r"data has a non-finite input \(nan\) in example 19;",
    "inf": r"data has a non-finite input \(-inf\) in example 19;",
    "label": r"labels must be class ids in \[0, 3\) for this model\. Received 7 for example 19\.",
    "float label": r"labels must be integer class ids\. Received 1\.5 for example 19\.",
    "negative": r"labels must be class ids >= 0\. Received -1 for example 19\.",
}
# Every kind of bad batch on Fisher; MAS (labels unused, still checked), the per-batch counting
# of fisher_batch, snip and evaluate on the first two.
BAD_BATCH_CASES = [("fisher_empirical", bad) for bad in BAD_BATCHES] + [
    (entry, bad) for entry in ("mas", "fisher_batch", "snip", "evaluate") for bad in ("nan", "label")
]


@pytest.mark.parametrize(("measure", "bad"), BAD_BATCH_CASES, ids=[f"{m}-{b}" for m, b in BAD_BATCH_CASES])
def test_a_bad_batch_of_a_dataset_is_named_by_every_batched_measure(measure, bad, dense_model, dense_data):
    match = BAD_BATCHES[bad]
    x, y = dense_data[0].copy(), dense_data[1].astype(np.float32 if bad == "float label" else np.int64)
    if bad in ("nan", "inf"):
        x[19, 2] = np.nan if bad == "nan" else -np.inf
    elif bad == "label":
        y[19] = 7
    elif bad == "float label":
        y[19] = 1.5
    elif bad == "negative":
        y[19] = -1
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    # Labels are checked even by a measure that does not read them (MAS): bad data is bad data.
    call = ENTRY_POINTS["evaluate"] if measure == "evaluate" else (
        lambda m, d: imp.compute_importance(measure, m, d))
    _expect(call, dense_model, data, ValueError, match)


def test_a_bad_batch_after_max_examples_is_not_read(dense_model, dense_data):
    x = dense_data[0].copy()
    x[30, 0] = np.nan
    data = tf.data.Dataset.from_tensor_slices((x, dense_data[1])).batch(8)
    clean = tf.data.Dataset.from_tensor_slices((dense_data[0][:20], dense_data[1][:20])).batch(8)
    for measure in ("fisher_empirical", "mas"):
        got = imp.compute_importance(measure, dense_model, data, max_examples=20)
        want = imp.compute_importance(measure, dense_model, clean)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)
