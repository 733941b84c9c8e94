"""Strategies as classes on the shared registry, and the one penalty protocol of the trainer."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from importance.continual import (
    STRATEGIES,
    Consolidator,
    Strategy,
    available_strategies,
    get_strategy,
    normalise,
    register_strategy,
)
from importance.penalties import FunctionPenalty, Penalty, as_penalty
from tasks.trainer import train


def _model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name="dense")])
    model.layers[0].set_weights([np.arange(6, dtype=np.float32).reshape(3, 2) / 10,
                                 np.array([0.5, -0.5], np.float32)])
    return model


def test_builtins_answer_what_callers_asked_of_the_name():
    assert available_strategies() == ["ewc", "joint", "l2", "naive", "replay"]
    assert available_strategies(lambda cls: cls.penalised) == ["ewc", "l2"]
    assert available_strategies(lambda cls: cls.uses_measure) == ["ewc"]
    joint = get_strategy("joint")
    assert joint.upper_bound and joint.supported_heads == ("shared",)
    methods = [Consolidator(name).method for name in ("naive", "l2", "joint")]
    methods += [Consolidator("ewc", measure="fisher").method,
                Consolidator("ewc", measure="si", mode="online").method]
    assert methods == ["naive", "L2", "joint", "EWC(fisher)", "EWC-online(si)"]
    with pytest.raises(KeyError, match=r"Unknown consolidation strategy 'ewk'\. Available: ewc"):
        get_strategy("ewk")


def test_joint_trains_on_everything_seen_and_the_others_on_the_current_task():
    seen = [(np.zeros((2, 3)), np.array([0, 1])), (np.ones((3, 3)), np.array([2, 3, 4]))]
    x, y = Consolidator("joint").training_data(seen)
    np.testing.assert_array_equal(y, [0, 1, 2, 3, 4])
    assert x.shape == (5, 3)
    assert Consolidator("naive").training_data(seen) is seen[-1]


def test_replay_adds_a_fixed_even_memory_of_earlier_tasks_and_no_penalty():
    tasks = [(np.arange(100 * t, 100 * t + 50, dtype=np.float32)[:, None], np.full(50, t, np.int32))
             for t in range(3)]
    replay = Consolidator("replay", memory=20)
    assert not replay.penalised and replay.supported_heads == ("shared",)
    assert replay.training_data(tasks[:1])[0] is tasks[0][0]
    x2, y2 = replay.training_data(tasks[:2])
    assert np.bincount(y2).tolist() == [20, 50]
    x3, y3 = replay.training_data(tasks)
    assert np.bincount(y3).tolist() == [10, 10, 50]
    assert set(map(tuple, x3[y3 == 0])) <= set(map(tuple, x2[y2 == 0]))  # stored ones stay
    with pytest.raises(ValueError, match=r"memory must be a positive integer\. Received: 0"):
        Consolidator("replay", memory=0)


def test_numpy_gamma_is_accepted_like_a_numpy_integer():
    strategy = Consolidator("ewc", measure="fisher", mode="online", gamma=np.float32(0.5))
    assert strategy.gamma == 0.5 and Consolidator("l2", lam=np.float32(2.0)).lam == 2.0


def test_a_new_strategy_is_one_registered_subclass():
    """The example of importance.continual.strategies' docstring, end to end."""
    with STRATEGIES.scoped():

        @register_strategy("magnitude")
        class Magnitude(Strategy):
            """omega = |theta| at the end of each task."""

            label, penalised = "magnitude", True

            def importance(self, model, penalised, *, data=None, recorder=None):
                return normalise([abs(w.numpy()) for w in model.trainable_weights], penalised)

        assert "magnitude" in available_strategies(lambda cls: cls.penalised)
        model = _model()
        strategy = Consolidator("magnitude", lam=2.0)
        assert isinstance(strategy, Magnitude) and strategy.name == "magnitude"
        strategy.consolidate(model, [True, False])
        anchor = model.trainable_weights[0].numpy()
        model.trainable_weights[0].assign(anchor + 1.0)
        omega = np.abs(anchor) / np.abs(anchor).mean()
        np.testing.assert_allclose(float(strategy.penalty(model)), np.sum(omega), rtol=1e-5)
        with pytest.raises(ValueError, match="already registered"):
            register_strategy("magnitude")(Magnitude)
    assert "magnitude" not in available_strategies()


class _Shift(Penalty):
    """Uses the batch: the mean input times the sum of the kernel (a toy)."""

    def __call__(self, model, x=None, y=None, epoch=None, *, state=None):
        assert state is None  # not traceable: no state
        return tf.reduce_mean(x) * tf.reduce_sum(model.trainable_weights[0])


def test_the_trainer_calls_every_penalty_one_way():
    x = np.random.default_rng(0).normal(size=(16, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    for penalty in (_Shift(), lambda m: tf.reduce_sum(tf.square(m.trainable_weights[0]))):
        model = _model()
        history = train(model, (x, y), epochs=1, batch_size=8, learning_rate=0.01,
                        penalty=penalty)
        assert np.isfinite(history["loss"][0])


def test_as_penalty_wraps_functions_and_refuses_the_old_protocol():
    assert as_penalty(None) is None
    penalty = _Shift()
    assert as_penalty(penalty) is penalty
    wrapped = as_penalty(len)
    assert isinstance(wrapped, FunctionPenalty) and wrapped.trace_key is None
    assert wrapped([1, 2]) == 2

    class OldStyle:
        receives_batch = True

        def __call__(self, model, x, y, epoch):
            return 0.0

    with pytest.raises(TypeError, match=r"must subclass importance\.penalties\.Penalty"):
        as_penalty(OldStyle())
    with pytest.raises(TypeError, match=r"a Penalty or a function of the model\. Received: 3"):
        as_penalty(3)
