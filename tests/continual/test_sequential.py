"""The sequential learner, the lambda search and the consolidation plot, on tiny generated tasks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import importance as imp
import reports
from importance.continual import Consolidator
from tasks.continual import learner as learner_module
from tasks.continual.lambda_search import LambdaSearch, log_grid, search_lambda
from tasks.continual.learner import SequentialLearner, prepare_sequence
from tasks.registry import Task, TrainingSettings


def _task(name, seed, *, classes=3, shape=(6,)):
    def load():
        rng = np.random.default_rng(seed)
        centres = rng.normal(scale=3.0, size=(classes, int(np.prod(shape))))
        out = []
        for n in (120, 40):
            y = np.arange(n) % classes
            x = centres[y] + rng.normal(size=(n, centres.shape[1]))
            out.append((x.reshape(n, *shape).astype(np.float32), y.astype(np.int32)))
        return tuple(out)

    return Task(name, description="blobs", num_classes=classes, input_shape=shape, load=load,
                build=lambda s, v: None, training=TrainingSettings(epochs=1, batch_size=16, learning_rate=0.01))


def _learner(heads="shared", seed=0, tasks=2):
    data = prepare_sequence([_task(f"blobs_{t}", t) for t in range(tasks)], heads=heads)
    return SequentialLearner(data, heads=heads, hidden=(8,), seed=seed, epochs=2, batch_size=16,
                             learning_rate=0.01, measure_examples=40)


def test_validation_is_carved_from_training_data_never_test():
    task = _task("blobs", 0)
    (data,) = prepare_sequence([task], validation_fraction=0.25)
    x_train, x_test = task.train_data()[0], task.test_data()[0]
    assert len(data.validation[1]) == 30 and len(data.train[1]) == 90
    rows = {r.tobytes() for r in x_train}
    assert all(r.tobytes() in rows for r in data.validation[0])
    assert not {r.tobytes() for r in data.validation[0]} & {r.tobytes() for r in data.train[0]}
    assert not {r.tobytes() for r in data.validation[0]} & {r.tobytes() for r in x_test}


def test_mismatched_tasks_are_named():
    with pytest.raises(ValueError, match=r"input shape: task 'b' has \(7,\), expected \(6,\)"):
        prepare_sequence([_task("a", 0), _task("b", 1, shape=(7,))])
    with pytest.raises(ValueError, match=r"same classes in every task: task 'b' has 4, expected 3"):
        prepare_sequence([_task("a", 0), _task("b", 1, classes=4)])
    assert len(prepare_sequence([_task("a", 0), _task("b", 1, classes=4)], heads="per_task")) == 2
    with pytest.raises(ValueError, match=r"heads must be one of .*Received: 'many'"):
        prepare_sequence([_task("a", 0)], heads="many")


ONLINE_EWC = dict(measure="si", lam=1.0, mode="online", gamma=0.5)


@pytest.fixture(scope="module")
def three_tasks():
    """Three tasks learned with online EWC driven by SI (a trajectory recorded for every task)."""
    learner = _learner(tasks=3)
    learner.learn(Consolidator("ewc", **ONLINE_EWC))
    return learner


def test_every_task_is_evaluated_after_every_epoch_and_R_comes_from_task_ends(three_tasks):
    learner = three_tasks
    history = learner.history
    assert learner.tasks_done == 3
    assert list(history.columns) == ["epoch", "trained", "evaluated", "split", "loss", "accuracy"]
    assert len(history) == (1 + 3 * 2) * 3 * 2  # epoch 0 + 2 epochs per task; 3 tasks; 2 splits
    assert sorted(history["epoch"].unique()) == list(range(7))
    test = history[history["split"] == "test"].set_index(["epoch", "evaluated"])["accuracy"]
    R = learner.accuracy_matrix()
    for i, end in enumerate((2, 4, 6)):
        for j in range(3):
            assert R[i, j] == test[(end, f"blobs_{j}")]
    assert R[0, 0] > 0.8  # the blobs are easy


def test_same_seed_same_history(three_tasks):
    again = _learner(tasks=3)
    again.learn(Consolidator("ewc", **ONLINE_EWC))
    pd.testing.assert_frame_equal(again.history, three_tasks.history, check_exact=True)


def test_an_online_measure_records_every_task_but_the_last(monkeypatch):
    """The last task's importance is never computed; a recorder would only cost a trace."""
    recorded = []
    track = imp.track
    monkeypatch.setattr(imp, "track", lambda model, *a, **k: recorded.append(model) or track(model, *a, **k))
    learner = _learner(tasks=3)
    learner.learn(Consolidator("ewc", **ONLINE_EWC))
    assert learner.tasks_done == 3 and len(recorded) == 2


def test_task_heads_share_the_base_and_only_the_base_is_penalised():
    learner = _learner(heads="per_task")
    a, b = learner.model(0), learner.model(1)
    assert a is not b and a.trainable_weights[:2] == b.trainable_weights[:2]
    assert learner.penalised(0) == [True, True, False, False]
    strategy = Consolidator("l2", lam=1e4)
    learner.learn(strategy)
    head_a = [w.numpy() for w in a.trainable_weights[2:]]
    assert len(strategy.terms) == 1 and len(strategy.terms[0][0]) == 2  # base kernel and bias
    R = learner.accuracy_matrix()
    assert R[1, 0] == pytest.approx(R[0, 0], abs=0.05)  # a stiff base keeps task 0
    assert all(np.array_equal(h, w.numpy()) for h, w in zip(head_a, a.trainable_weights[2:], strict=True))


def test_an_interrupted_task_leaves_the_state_it_started_from(monkeypatch):
    learner = _learner()
    learner.train_task(0)
    before = learner.state()
    real_train = learner_module.train

    def interrupted(*args, on_epoch_end, **kwargs):
        def after_epoch(epoch, logs):
            on_epoch_end(epoch, logs)  # the learner records the epoch's accuracies
            raise KeyboardInterrupt  # after the first epoch of task 1: weights have moved

        return real_train(*args, on_epoch_end=after_epoch, **kwargs)

    monkeypatch.setattr(learner_module, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        learner.train_task(1)
    assert learner.tasks_done == 1 and len(learner.history) == len(before["rows"])
    for model in learner.models:
        for w in model.weights:
            np.testing.assert_array_equal(w.numpy(), before["weights"][id(w)])
    with pytest.raises(ValueError, match=r"task index must be the next task, 1\. Received: 0"):
        learner.train_task(0)


class _PlantedLearner:
    """Validation ACC peaks at lam = 0.1, test ACC at lam = 10: the search must pick 0.1."""

    def __init__(self):
        self.lam, self.restored = None, 0

    def state(self):
        return "start"

    def set_state(self, state):
        assert state == "start"
        self.restored += 1

    def learn(self, consolidator, **kwargs):
        self.lam = consolidator.lam

    def accuracy_matrix(self, split="test"):
        best = 0.1 if split == "validation" else 10.0
        acc = 1.0 - abs(np.log10(max(self.lam, 1e-3)) - np.log10(best)) / 10
        return np.array([[1.0, 0.0], [acc, acc]])

    history = None


def test_lambda_is_chosen_on_validation_not_test():
    learner = _PlantedLearner()
    search = search_lambda(learner, "l2", grid=(0.01, 0.1, 1.0, 10.0))
    assert isinstance(search, LambdaSearch) and search.lam == 0.1
    assert search.val_acc == pytest.approx([0.9, 1.0, 0.9, 0.8])
    assert learner.restored == 5  # before each lambda, and once at the end
    with pytest.raises(ValueError, match="lam must be"):
        search_lambda(learner, "ewc", grid=(0.1, -1.0), measure="fisher")
    assert search_lambda(learner, "naive", grid=(5.0,)).grid == (0.0,)
    assert log_grid(0.01, 1.0) == (0.01, 0.0316, 0.1, 0.316, 1.0)


def test_search_restores_the_learner_and_a_failing_measure_changes_nothing(tmp_path):
    learner = _learner()
    learner.train_task(0)
    before = learner.state()
    name = "always_fails"
    imp.register_measure(name)(lambda model, data: (_ for _ in ()).throw(RuntimeError("boom")))
    try:
        with pytest.raises(RuntimeError, match="boom"):
            search_lambda(learner, "ewc", grid=(1.0,), measure=name)
    finally:
        imp.unregister_measure(name)
    search = search_lambda(learner, "ewc", grid=(1.0,), measure="fisher")
    assert search.R.shape == (2, 2) and learner.tasks_done == 1
    assert len(learner.history) == len(before["rows"])
    for model in learner.models:
        for w in model.weights:
            np.testing.assert_array_equal(w.numpy(), before["weights"][id(w)])
    learner.set_state(before)
    learner.learn(Consolidator("naive"))
    path = reports.plot_task_accuracy({"naive": learner.history}, tmp_path / "accuracy.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


# --- stated, recorded choices: initialisation, per-epoch evaluation, examples, options --------


@pytest.mark.parametrize("init", ["keras", "pytorch"])
def test_initialisation_follows_the_stated_convention(init):
    """PyTorch's nn.Linear.reset_parameters: kaiming_uniform_(a=sqrt(5)), bound
    gain * sqrt(3 / fan_in) with gain = sqrt(2 / (1 + a^2)); bias U(-1/sqrt(fan_in), ...).
    Keras: Glorot-uniform limit sqrt(6 / (fan_in + fan_out)), zero bias."""
    data = prepare_sequence([_task("a", 0, shape=(64,)), _task("b", 1, shape=(64,))])
    learner = SequentialLearner(data, hidden=(200,), init=init, seed=3)
    assert learner.init == init
    for layer in [la for la in learner.models[0].layers if la.weights]:
        kernel, bias = (np.asarray(w.numpy(), np.float64) for w in layer.weights)
        fan_in, fan_out = kernel.shape
        if init == "pytorch":
            a = np.sqrt(5.0)
            bound = np.sqrt(2.0 / (1 + a**2)) * np.sqrt(3.0 / fan_in)
            bias_bound = 1 / np.sqrt(fan_in)
            assert np.abs(bias).max() <= bias_bound and np.abs(bias).max() > 0.5 * bias_bound
        else:
            bound = np.sqrt(6.0 / (fan_in + fan_out))
            assert not bias.any()
        assert np.abs(kernel).max() <= bound * (1 + 1e-6)
        assert kernel.std() == pytest.approx(bound / np.sqrt(3), rel=0.1)  # uniform's std


@pytest.mark.slow
def test_evaluating_only_at_task_ends_gives_the_same_matrix():
    every = _learner()
    every.learn(Consolidator("l2", lam=1.0))
    ends = _learner()
    ends.evaluate_every_epoch = False
    ends.learn(Consolidator("l2", lam=1.0))
    np.testing.assert_array_equal(every.accuracy_matrix(), ends.accuracy_matrix())
    np.testing.assert_array_equal(every.accuracy_matrix("validation"),
                                  ends.accuracy_matrix("validation"))
    assert sorted(ends.history["epoch"].unique()) == [0, 2, 4]  # before training, task ends
    assert len(every.history) > len(ends.history)


@pytest.mark.slow
def test_search_passes_the_measures_options_and_counts_the_examples_each_importance_saw():
    learner = _learner()
    learner.measure_examples = None  # the default: the whole task
    through = search_lambda(learner, "ewc", grid=(1.0,), measure="fisher", measure_examples=25,
                            measure_options={"labels": "empirical"})
    named = search_lambda(learner, "ewc", grid=(1.0,), measure="fisher_empirical",
                          measure_examples=25)
    assert through.history.equals(named.history)
    assert through.measure_seen == {0: 25} and learner.measure_examples is None
    whole = search_lambda(learner, "ewc", grid=(1.0,), measure="fisher_empirical")
    assert whole.measure_seen == {0: len(learner.tasks[0].train[1])}
    assert not whole.history.equals(named.history)
    assert search_lambda(learner, "naive", grid=(1.0,)).measure_seen == {}


def test_a_researchers_own_splits_are_used_as_given():
    task = _task("a", 0)
    (x, y), (xt, yt) = task.train_data(), task.test_data()
    (data,) = prepare_sequence([task], splits=[(( x[:50], y[:50]), (x[50:], y[50:]), (xt, yt))])
    np.testing.assert_array_equal(data.train[0], x[:50])
    np.testing.assert_array_equal(data.validation[1], y[50:])
    np.testing.assert_array_equal(data.test[0], xt)
