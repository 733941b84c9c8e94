"""Bad input on the consolidation / sequential-learning axis (issue 20): every entry point refuses
it before any work, with a message naming the argument, the bad value and what was expected, and
leaves the learner's (and any user's) model bitwise as it was, also when something raises
mid-call.

Entry points covered: :func:`prepare_sequence`, :class:`SequentialLearner` (constructor,
``model``, ``penalised``, ``measure_data``, ``train_task``, ``learn``), :func:`search_lambda`,
:func:`log_grid`, :func:`Consolidator` / ``Strategy.consolidate``, the continual metrics.
"""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import importance as imp
from importance.continual import Consolidator, Strategy, register_strategy, summary
from importance.continual import metrics as cm
from importance.continual.registry import STRATEGIES
from tasks.continual.lambda_search import log_grid, search_lambda
from tasks.continual.learner import SequentialLearner, TaskData, prepare_sequence
from tasks.registry import Task, TrainingSettings

SETTINGS = settings(max_examples=15, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def _task(name, seed, *, classes=3, n=(60, 20)):
    def load():
        rng = np.random.default_rng(seed)
        centres = rng.normal(scale=3.0, size=(classes, 6))
        out = []
        for size in n:
            y = np.arange(size) % classes
            out.append(((centres[y] + rng.normal(size=(size, 6))).astype(np.float32),
                        y.astype(np.int32)))
        return tuple(out)

    return Task(name, description="blobs", num_classes=classes, input_shape=(6,), load=load,
                build=lambda s, v: None,
                training=TrainingSettings(epochs=1, batch_size=16, learning_rate=0.01))


@pytest.fixture(scope="module")
def sequence():
    return prepare_sequence([_task("a", 0), _task("b", 1)])


def _learner(sequence, **options):
    return SequentialLearner(sequence, **{"hidden": (8,), "epochs": 1, "batch_size": 16,
                                          "learning_rate": 0.01, **options})


def _snapshot(learner):
    return ([np.array(w.numpy()) for m in learner.models for w in m.weights],
            learner.history.copy(), learner.tasks_done, learner.epochs_done)


def _assert_unchanged(learner, before):
    weights, history, tasks_done, epochs_done = before
    after = [np.array(w.numpy()) for m in learner.models for w in m.weights]
    assert len(after) == len(weights)
    for a, b in zip(after, weights, strict=True):
        assert a.tobytes() == b.tobytes()  # bitwise
    assert learner.history.equals(history)
    assert (learner.tasks_done, learner.epochs_done) == (tasks_done, epochs_done)


def _raises(error, *fragments, call):
    """``call()`` raises ``error`` and the message holds every fragment (literally)."""
    with pytest.raises(error) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


# --- prepare_sequence and the learner's construction (nothing trained) ----------------------


def test_empty_sequences_are_named(sequence):
    _raises(ValueError, "tasks must hold at least one task", "empty sequence",
            call=lambda: SequentialLearner([]))
    _raises(ValueError, "tasks must hold at least one task", "empty sequence",
            call=lambda: prepare_sequence([]))
    _raises(TypeError, "tasks must be a sequence", "'split_mnist'",
            call=lambda: SequentialLearner("split_mnist"))
    _raises(TypeError, "tasks[0] must be a TaskData", "Task",
            call=lambda: SequentialLearner([_task("a", 0)]))


@pytest.mark.parametrize("value", [0, -10, -1, 2.5, True, "all"])
def test_measure_examples_not_a_positive_integer_is_refused_before_training(sequence, value):
    _raises(ValueError, "measure_examples must be a positive integer or None",
            f"Received: {value!r}", call=lambda: _learner(sequence, measure_examples=value))


def test_measure_examples_beyond_a_task_is_named_with_the_task(sequence):
    size = len(sequence[0].train[1])
    _raises(ValueError, "measure_examples must be at most the training examples of every task",
            f"has {size}", "Received: 1000000",
            call=lambda: _learner(sequence, measure_examples=10**6))
    assert _learner(sequence, measure_examples=np.int64(size)).measure_examples == size


@pytest.mark.parametrize("options, fragments", [
    ({"heads": "many"}, ["heads must be one of", "'many'"]),
    ({"init": "torch"}, ["init must be one of ('keras', 'pytorch')", "'torch'"]),
    ({"hidden": ()}, ["hidden must be a non-empty sequence", "()"]),
    ({"hidden": (8, 0)}, ["hidden[1] must be a positive integer", "0"]),
    ({"seed": -1}, ["seed must be a non-negative integer", "-1"]),
    ({"epochs": 0}, ["epochs must be a positive integer", "0"]),
    ({"learning_rate": float("nan")}, ["learning_rate must be a finite number > 0", "nan"]),
    ({"optimizer": "adamm"}, ["optimizer must be one of", "'adamm'"]),
    ({"evaluate_every_epoch": "yes"}, ["evaluate_every_epoch must be True or False", "'yes'"]),
])
def test_bad_learner_options_are_named(sequence, options, fragments):
    _raises(ValueError, *fragments, call=lambda: _learner(sequence, **options))


def test_np_float32_in_range_options_are_accepted(sequence):
    learner = _learner(sequence, learning_rate=np.float32(0.01), seed=np.int32(2))
    assert learner.training["learning_rate"] == pytest.approx(0.01)
    strategy = Consolidator("ewc", measure="fisher", lam=np.float32(0.5), gamma=np.float32(0.9),
                            mode="online")
    assert strategy.lam == 0.5 and strategy.gamma == pytest.approx(0.9)


def test_nan_inputs_and_out_of_range_labels_in_a_task_are_named(sequence):
    x, y = sequence[0].train
    bad_x = x.copy()
    bad_x[7, 2] = np.nan
    nan_task = TaskData("nan", 3, (bad_x, y), sequence[0].validation, sequence[0].test)
    _raises(ValueError, "tasks[0] ('nan').train", "non-finite input (nan) in example 7",
            call=lambda: SequentialLearner([nan_task, sequence[1]]))
    bad_y = y.copy()
    bad_y[4] = 5
    label_task = TaskData("labels", 3, sequence[0].train, (sequence[0].validation[0],
                          np.full_like(sequence[0].validation[1], 5)), sequence[0].test)
    _raises(ValueError, "tasks[1] ('labels').validation", "class ids in [0, 3)", "Received 5",
            call=lambda: SequentialLearner([sequence[0], label_task]))


def test_explicit_splits_are_checked_and_counted(sequence):
    task = _task("a", 0)
    (x, y), test = task.train_data(), task.test_data()
    _raises(ValueError, "splits must hold one entry per task (1)", "Received: 2",
            call=lambda: prepare_sequence([task], splits=[{}, {}]))
    _raises(ValueError, "splits[0] must have keys 'train', 'validation'", "['fit']",
            call=lambda: prepare_sequence([task], splits=[{"fit": (x, y)}]))
    bad = x.copy()
    bad[3, 0] = np.inf
    _raises(ValueError, "validation", "non-finite input (inf) in example 3",
            call=lambda: prepare_sequence([task], splits=[{"train": (x, y),
                                                           "validation": (bad, y)}]))
    (data,) = prepare_sequence([task], splits=[{"train": (x[:40], y[:40]),
                                                "validation": (x[40:], y[40:])}])
    assert len(data.train[1]) == 40 and len(data.validation[1]) == 20
    assert len(data.test[1]) == len(test[1])


@pytest.mark.parametrize("call, fragments", [
    (lambda learner: learner.model(2), ["t must be a task index in [0, 2)", "Received: 2"]),
    (lambda learner: learner.penalised(-1), ["t must be a task index in [0, 2)", "Received: -1"]),
    (lambda learner: learner.measure_data(7), ["t must be a task index", "Received: 7"]),
    (lambda learner: learner.train_task(5), ["t must be a task index in [0, 2)", "Received: 5"]),
    (lambda learner: learner.model(1.0), ["t must be a task index", "Received: 1.0"]),
    (lambda learner: learner.learn("ewc"), ["strategy must be an importance.continual.Strategy",
                                            "'ewc'"]),
    (lambda learner: learner.learn(Consolidator("l2"), omega={9: []}),
     ["omega key must be a task index in [0, 2)", "Received: 9"]),
    (lambda learner: learner.accuracy_matrix("train"), ["split must be one of", "'train'"]),
])
def test_task_ids_out_of_range_are_named_and_nothing_changes(sequence, call, fragments):
    learner = _learner(sequence, heads="per_task")
    before = _snapshot(learner)
    _raises((ValueError, TypeError), *fragments, call=lambda: call(learner))
    _assert_unchanged(learner, before)


# --- lambda search --------------------------------------------------------------------------


@pytest.mark.parametrize("grid, fragments", [
    (1.0, ["grid must be a non-empty sequence of lambdas", "Received: 1.0"]),
    ("0.1", ["grid must be a non-empty sequence", "Received: '0.1'"]),
    ((), ["grid must hold at least one lambda", "empty grid"]),
    ((0.1, -1.0), ["lam must be a finite number >= 0", "Received: -1.0", "grid[1]"]),
    ((0.1, float("nan")), ["lam must be a finite number >= 0", "Received: nan", "grid[1]"]),
    ((float("inf"),), ["lam must be a finite number >= 0", "Received: inf", "grid[0]"]),
])
def test_bad_grids_are_refused_before_anything_trains(sequence, grid, fragments):
    learner = _learner(sequence)
    before = _snapshot(learner)
    _raises(ValueError, *fragments, call=lambda: search_lambda(learner, "l2", grid=grid))
    _assert_unchanged(learner, before)
    assert learner.history.empty  # nothing was evaluated either


@pytest.mark.parametrize("options, fragments", [
    ({"strategy": "ewk"}, ["strategy must be one of", "'ewk'"]),
    ({"strategy": "ewc", "measure": "fsher"}, ["Unknown measure 'fsher'"]),
    ({"strategy": "ewc"}, ["needs a measure", "None"]),
    ({"mode": "both"}, ["mode must be one of", "'both'"]),
    ({"gamma": 0.0}, ["gamma must be in (0, 1]", "Received: 0.0"]),
    ({"measure_examples": 0}, ["measure_examples must be a positive integer", "Received: 0"]),
    ({"measure_examples": 10**5}, ["measure_examples must be at most", "Received: 100000"]),
    ({"strategy": "ewc", "measure": "fisher", "measure_options": "exact"},
     ["measure_options must be a dict", "'exact'"]),
])
def test_bad_search_options_are_refused_before_anything_trains(sequence, options, fragments):
    learner = _learner(sequence)
    before = _snapshot(learner)
    options = {"strategy": "l2", **options}
    strategy = options.pop("strategy")
    _raises((ValueError, KeyError, TypeError), *fragments,
            call=lambda: search_lambda(learner, strategy, grid=(0.1, 1.0), **options))
    _assert_unchanged(learner, before)
    assert learner.history.empty


def test_search_lambda_refuses_something_that_is_not_a_learner():
    _raises(TypeError, "learner must be a SequentialLearner", "list",
            call=lambda: search_lambda([], "l2", grid=(1.0,)))


@pytest.mark.parametrize("low, high, fragments", [
    (0.0, 1.0, ["low must be a finite number > 0", "Received: 0.0"]),
    (1.0, 0.1, ["high must be a finite number > 1", "Received: 0.1"]),
])
def test_log_grid_bounds_are_named(low, high, fragments):
    _raises(ValueError, *fragments, call=lambda: log_grid(low, high))


# --- strategies and Consolidator ------------------------------------------------------------


@SETTINGS
@given(lam=st.one_of(st.floats(max_value=-1e-9), st.just(float("inf")), st.just(float("nan"))))
def test_negative_or_non_finite_lambda_is_named(lam):
    message = _raises(ValueError, "lam must be a finite number >= 0", "Received:",
                      call=lambda: Consolidator("ewc", measure="fisher", lam=lam))
    assert re.search(r"Received: np\.float64\(|Received: -?[\d.e+-]+|nan|inf", message)


@SETTINGS
@given(gamma=st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0, exclude_min=True),
                       st.just(float("nan"))))
def test_gamma_outside_zero_one_is_named(gamma):
    _raises(ValueError, "gamma must be in (0, 1]", f"Received: {gamma!r}",
            call=lambda: Consolidator("ewc", measure="fisher", mode="online", gamma=gamma))


@SETTINGS
@given(gamma=st.floats(min_value=1e-6, max_value=1.0), lam=st.floats(0, 1e6))
def test_np_float32_gamma_and_lam_in_range_are_accepted(gamma, lam):
    strategy = Consolidator("ewc", measure="fisher", mode="online", gamma=np.float32(gamma),
                            lam=np.float32(lam))
    assert 0 < strategy.gamma <= 1 and strategy.lam >= 0


def _dense(outputs=1):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4, kernel_initializer=keras.initializers.GlorotUniform(0))(inputs)
    heads = [keras.layers.Dense(3, kernel_initializer=keras.initializers.GlorotUniform(i))(hidden)
             for i in range(outputs)]
    return keras.Model(inputs, heads if outputs > 1 else heads[0])


def _weights(model):
    return [np.array(w.numpy()).tobytes() for w in model.weights]


@pytest.mark.parametrize("case", ["multi_output", "penalised_length", "penalised_type", "nan_data",
                                  "labels", "width", "omega_length", "empty"])
def test_consolidate_checks_model_and_data_before_any_work(sequence, case):
    model = _dense(2 if case == "multi_output" else 1)
    x, y = sequence[0].train
    flags = [True] * len(model.trainable_weights)
    data, omega = (x, y), None
    fragments = {
        "multi_output": ["model has 2 outputs", "single-output"],
        "penalised_length": ["penalised must have one flag per trainable weight (4)",
                             "Received: 3 flags"],
        "penalised_type": ["penalised must be a sequence of booleans", "'yes'"],
        "nan_data": ["non-finite input (nan) in example 2"],
        "labels": ["class ids in [0, 3) for this model", "Received 7"],
        "width": ["inputs of shape", "(None, 6)"],
        "omega_length": ["omega must have one array per trainable weight (4)", "Received: 1"],
        "empty": ["data is empty", "0 examples"],
    }[case]
    if case == "penalised_length":
        flags = flags[:3]
    elif case == "penalised_type":
        flags = "yes"
    elif case == "nan_data":
        x = x.copy()
        x[2, 1] = np.nan
        data = (x, y)
    elif case == "labels":
        y = y.copy()
        y[0] = 7
        data = (x, y)
    elif case == "width":
        data = (x[:, :5], y)
    elif case == "omega_length":
        omega = [np.ones(3)]
    elif case == "empty":
        data = (x[:0], y[:0])
    before = _weights(model)
    strategy = Consolidator("ewc", measure="fisher", lam=1.0)
    _raises((ValueError, TypeError), *fragments,
            call=lambda: strategy.consolidate(model, flags, data=data, omega=omega))
    assert _weights(model) == before and strategy.terms == []


# --- the accuracy matrix --------------------------------------------------------------------


@SETTINGS
@given(value=st.one_of(st.floats(min_value=1.0, exclude_min=True, allow_infinity=False),
                       st.floats(max_value=0.0, exclude_max=True, allow_infinity=False)),
       i=st.integers(0, 1), j=st.integers(0, 1))
def test_accuracies_outside_zero_one_are_named_with_their_position(value, i, j):
    R = np.full((2, 2), 0.5)
    R[i, j] = value
    for metric in (cm.average_accuracy, cm.backward_transfer, cm.forgetting, summary):
        _raises(ValueError, "R must hold accuracies in [0, 1]", f"R[{i}, {j}] = {value!r}",
                call=lambda metric=metric: metric(R))


@pytest.mark.parametrize("matrix, fragments", [
    ([[0.5, np.nan], [0.5, 0.5]], ["R must hold finite accuracies", "R[0, 1] = nan"]),
    ([[0.5, 0.5, 0.5], [0.5, 0.5, 0.5]], ["square matrix", "Received shape: (2, 3)"]),
    ([], ["square matrix", "Received shape: (0,)"]),
    ([[0.9, 1.7], [0.4, -0.2]], ["accuracies in [0, 1]", "R[0, 1] = 1.7"]),
    ([["a", "b"], ["c", "d"]], ["R must be a square matrix of accuracies", "'a'"]),
])
def test_malformed_accuracy_matrices_are_named(matrix, fragments):
    _raises((ValueError, TypeError), *fragments, call=lambda: cm.summary(matrix))


@SETTINGS
@given(values=st.lists(st.floats(0, 1, width=32), min_size=9, max_size=9))
def test_np_float32_accuracies_in_range_are_accepted(values):
    R = np.asarray(values, np.float32).reshape(3, 3)
    assert cm.average_accuracy(R) == pytest.approx(float(np.mean(R[-1], dtype=np.float64)))


# --- a raise mid-call leaves everything bitwise as it was -----------------------------------


def test_a_measure_raising_after_the_first_task_leaves_the_learner_as_it_was(sequence):
    learner = _learner(sequence)
    before = _snapshot(learner)
    with imp.measures.registry.MEASURES.scoped():
        @imp.register_measure("explodes")
        def explodes(model, data):
            raise RuntimeError("boom")

        strategy = Consolidator("ewc", measure="explodes", lam=1.0)
        with pytest.raises(RuntimeError, match="boom"):
            learner.learn(strategy)  # task 0 trains, then the measure raises
    _assert_unchanged(learner, before)
    assert learner.history.empty and strategy.terms == []


def test_a_strategy_raising_mid_sequence_leaves_learner_and_anchors_as_they_were(sequence):
    with STRATEGIES.scoped():
        @register_strategy("fails_on_second_task")
        class FailsOnSecond(Strategy):
            label, penalised = "fails", True

            def importance(self, model, penalised, *, data=None, recorder=None):
                return [np.ones(tuple(w.shape)) for w in model.trainable_weights]

            def training_data(self, seen):
                if len(seen) == 2:
                    raise RuntimeError("no data for task 1")
                return seen[-1]

        learner = _learner(sequence)
        before = _snapshot(learner)
        with pytest.raises(RuntimeError, match="no data for task 1"):
            search_lambda(learner, "fails_on_second_task", grid=(0.1, 1.0))
        _assert_unchanged(learner, before)
        strategy = Consolidator("fails_on_second_task", lam=1.0)
        with pytest.raises(RuntimeError, match="no data for task 1"):
            learner.learn(strategy)
        _assert_unchanged(learner, before)
        assert strategy.terms == []
