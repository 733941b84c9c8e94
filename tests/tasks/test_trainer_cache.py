"""The trainer's cache of compiled epochs: bitwise what a fresh trace gives, and fewer traces.

The reference for every comparison is the same sequence of calls on a twin model with the cache
switched off (``MAX_EPOCHS_PER_MODEL = 0``: every call builds a fresh optimiser and traces anew,
as the trainer did before it had a cache).
"""

from __future__ import annotations

import gc
import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from importance.continual import Consolidator
from tasks import models, trainer
from tasks.trainer import train


def _data(n: int = 150, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32) + 2 * (x[:, 2 + seed % 3] > 0).astype(np.int32)
    return x, y


def _model():
    return models.mlp((6,), 4, hidden=(8,), seed=0)


def _omega(model, seed):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.1, 2.0, tuple(w.shape)) for w in model.trainable_weights]


def _traces() -> int:
    return trainer._trace_count


def _session(model) -> list:
    """Task A, then task B under EWC three times, each anchored where the last run ended, with
    its own lam, omega and seed; then a last run with task A's settings: weights and histories
    after every call."""
    out = []
    out.append(train(model, _data(seed=0), epochs=2, batch_size=32, learning_rate=0.01, seed=1))
    for lam, seed in ((0.1, 0), (1.0, 1), (30.0, 2)):
        strategy = Consolidator("ewc", measure="fisher", lam=lam)
        strategy.consolidate(model, [True] * 4, omega=_omega(model, seed))
        out.append(train(model, _data(seed=1), epochs=3, batch_size=32, learning_rate=0.01, seed=2 + seed,
                         penalty=strategy.penalty))
        out.append([w.numpy() for w in model.trainable_weights])
    out.append(train(model, _data(seed=2), epochs=2, batch_size=32, learning_rate=0.01, seed=7))
    out.append([w.numpy() for w in model.trainable_weights])
    return out


def _assert_same(got: list, want: list) -> None:
    for a, b in zip(got, want, strict=True):
        if isinstance(a, dict):
            assert a["loss"] == b["loss"] and a["accuracy"] == b["accuracy"]
        else:
            for u, v in zip(a, b, strict=True):
                np.testing.assert_array_equal(u, v)


def test_cached_epochs_give_bitwise_what_fresh_traces_give(monkeypatch) -> None:
    start = _traces()
    cached = _session(_model())
    traced = _traces() - start
    # One trace for task A, one for all three EWC runs (new lam, omegas, anchors, seed), and the
    # last run reuses task A's: the comparison below is between cached and fresh.
    assert traced == 2
    monkeypatch.setattr(trainer, "MAX_EPOCHS_PER_MODEL", 0)
    start = _traces()
    fresh = _session(_model())
    assert _traces() - start == 5
    _assert_same(cached, fresh)


def test_penalty_as_state_trains_like_the_penalty_with_its_values_baked_in() -> None:
    """The reference is EWC written as a plain callable with lam, anchors and omegas as Python
    and constant values (how the penalty was traced before it had state), traced on every call."""
    def session(baked):
        model, out = _model(), []
        train(model, _data(seed=0), epochs=2, batch_size=32, learning_rate=0.01, seed=1)
        for lam, seed in ((0.1, 0), (30.0, 1)):
            omega = _omega(model, seed)
            if baked:
                anchors = [tf.constant(w.numpy()) for w in model.trainable_weights]
                omegas = [tf.constant(o, tf.float32) for o in omega]

                def penalty(m, lam=lam, anchors=anchors, omegas=omegas):
                    total = tf.constant(0.0, tf.float32)
                    for v, a, o in zip(m.trainable_weights, anchors, omegas, strict=True):
                        total += tf.reduce_sum(o * tf.square(tf.convert_to_tensor(v) - a))
                    return 0.5 * lam * total
            else:
                strategy = Consolidator("ewc", measure="fisher", lam=lam)
                strategy.consolidate(model, [True] * 4, omega=omega)
                penalty = strategy.penalty
            out.append(train(model, _data(seed=1), epochs=3, batch_size=32, learning_rate=0.01, seed=2 + seed,
                             penalty=penalty))
            out.append([w.numpy() for w in model.trainable_weights])
        return out

    _assert_same(session(baked=False), session(baked=True))


def test_second_call_with_new_lam_and_anchors_does_not_retrace() -> None:
    model, data = _model(), _data()
    first = Consolidator("ewc", measure="fisher", lam=0.3)
    first.consolidate(model, [True] * 4, omega=_omega(model, 0))
    start = _traces()
    train(model, data, epochs=1, batch_size=32, learning_rate=0.01, penalty=first.penalty)
    assert _traces() - start == 1
    second = Consolidator("l2", lam=3.0)  # another strategy, other anchors and omegas, same variables
    second.consolidate(model, [True] * 4)
    train(model, data, epochs=1, batch_size=32, learning_rate=0.01, seed=5, penalty=second.penalty)
    train(model, data, epochs=1, batch_size=32, learning_rate=0.01, seed=6)
    assert _traces() - start == 2  # the second penalty reused the graph; no penalty is another graph
    # What changes the graph retraces: the penalised variables, batch size, optimiser settings.
    third = Consolidator("ewc", measure="fisher", lam=1.0)
    third.consolidate(model, [True, True, False, False], omega=_omega(model, 1))
    train(model, data, epochs=1, batch_size=32, learning_rate=0.01, penalty=third.penalty)
    train(model, data, epochs=1, batch_size=16, learning_rate=0.01, penalty=third.penalty)
    train(model, data, epochs=1, batch_size=16, learning_rate=0.02, penalty=third.penalty)
    assert _traces() - start == 5


def test_a_plain_callable_penalty_is_traced_on_every_call() -> None:
    """Its Python values may change between calls: here the strength, read at trace time."""
    def run(second_strength):
        model, strength = _model(), {"value": 0.0}

        def penalty(m):
            return strength["value"] * tf.add_n([tf.reduce_sum(tf.square(w.value)) for w in m.trainable_weights])

        for value in (0.0, second_strength):
            strength["value"] = value
            train(model, _data(), epochs=1, batch_size=32, learning_rate=0.001, optimizer="sgd", penalty=penalty)
        return sum(float(np.sum(w.numpy() ** 2)) for w in model.trainable_weights)

    start = _traces()
    shrunk = run(100.0)
    assert _traces() - start == 2
    assert shrunk < 0.5 * run(0.0)  # the new strength acted: (1 - 0.2)^5 per weight


def test_a_failed_trace_stores_nothing_and_an_interrupted_run_leaks_no_state(monkeypatch) -> None:
    def session(model):
        out = []
        strategy = Consolidator("ewc", measure="fisher", lam=1.0)
        strategy.consolidate(model, [True] * 4, omega=_omega(model, 0))

        class Raising(type(strategy.penalty)):
            def __call__(self, *args, **kwargs):
                raise RuntimeError("penalty failed while tracing")

        with pytest.raises(RuntimeError, match="while tracing"):  # same trace_key as the good penalty
            train(model, _data(), epochs=1, batch_size=32, learning_rate=0.01, penalty=Raising(strategy))

        def stop(epoch, logs):
            if epoch == 1:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):  # optimiser state left mid-run must not leak
            train(model, _data(), epochs=3, batch_size=32, learning_rate=0.01, penalty=strategy.penalty,
                  on_epoch_end=stop)
        out.append([w.numpy() for w in model.trainable_weights])
        out.append(train(model, _data(seed=1), epochs=2, batch_size=32, learning_rate=0.01,
                         penalty=strategy.penalty))
        out.append([w.numpy() for w in model.trainable_weights])
        return out

    start = _traces()
    cached = session(_model())
    assert _traces() - start == 2  # the raising trace, then one good trace reused after the interrupt
    monkeypatch.setattr(trainer, "MAX_EPOCHS_PER_MODEL", 0)
    _assert_same(cached, session(_model()))


def test_optimizer_starts_fresh_on_every_call() -> None:
    model, data = _model(), _data()
    train(model, data, epochs=2, batch_size=32, learning_rate=0.01)
    train(model, data, epochs=1, batch_size=32, learning_rate=0.01)
    (epoch,) = trainer._EPOCHS[model].values()
    assert int(epoch.optimizer.iterations.numpy()) == 5  # ceil(150 / 32) steps of the last call only


class _Noisy(keras.layers.Layer):
    """Adds noise from Keras' global seed generator (``seed=None``), which every train reseeds."""

    def call(self, x, training=False):
        return x + keras.random.normal(tf.shape(x), stddev=0.1) if training else x


class _OpSeeded(keras.layers.Layer):
    """Adds noise from an op-seeded stateful op, whose stream lives in the op."""

    def call(self, x, training=False):
        return x + tf.random.uniform(tf.shape(x), maxval=0.1) if training else x


@pytest.mark.parametrize("layer", [_Noisy, _OpSeeded])
def test_unseeded_randomness_is_traced_on_every_call(monkeypatch, layer) -> None:
    def session():
        inputs = keras.Input((6,))
        hidden = layer()(keras.layers.Dense(8, kernel_initializer=keras.initializers.GlorotUniform(0))(inputs))
        model = keras.Model(inputs, keras.layers.Dense(4, kernel_initializer=keras.initializers.GlorotUniform(1))(hidden))
        histories = [train(model, _data(), epochs=2, batch_size=32, learning_rate=0.01, seed=3) for _ in range(2)]
        return histories + [[w.numpy() for w in model.trainable_weights]]

    start = _traces()
    cached = session()
    traced = _traces() - start
    monkeypatch.setattr(trainer, "MAX_EPOCHS_PER_MODEL", 0)
    start = _traces()
    _assert_same(cached, session())
    assert traced == _traces() - start >= 2  # both calls traced (creating a variable traces twice)


def test_cache_is_weak_on_the_model_and_bounded(monkeypatch) -> None:
    monkeypatch.setattr(trainer, "MAX_EPOCHS_PER_MODEL", 2)  # the bound, not its value: fewer traces
    model = _model()
    for batch_size in range(10, 10 + trainer.MAX_EPOCHS_PER_MODEL + 3):
        train(model, _data(), epochs=1, batch_size=batch_size, learning_rate=0.01)
    assert len(trainer._EPOCHS[model]) == trainer.MAX_EPOCHS_PER_MODEL
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_zero_epochs_traces_nothing() -> None:
    start = _traces()
    history = train(_model(), _data(), epochs=0, batch_size=32, learning_rate=0.01)
    assert _traces() == start and history["loss"] == []


def _recording_session(model) -> list:
    """Task A recorded by one recorder, then task B recorded by a new one (as the sequential
    learner does for every task but the last): weights, histories and both recorders' states."""
    import importance

    out = []
    first = importance.track(model, ["si", "sign_flip"], patch_fit=False)
    out.append(train(model, _data(seed=0), epochs=2, batch_size=32, learning_rate=0.01, seed=1, recorder=first))
    out.append(list(first.state_dict().values()))
    second = importance.track(model, ["si", "sign_flip"], patch_fit=False)
    out.append(train(model, _data(seed=1), epochs=3, batch_size=32, learning_rate=0.01, seed=2, recorder=second))
    out.append([w.numpy() for w in model.trainable_weights])
    out.append(list(second.state_dict().values()))
    out.append(list(first.state_dict().values()))  # untouched by the second call
    return out


def test_a_new_recorder_of_the_same_measures_does_not_retrace(monkeypatch) -> None:
    start = _traces()
    cached = _recording_session(_model())
    assert _traces() - start == 1  # the second recorder borrowed the first one's graph
    monkeypatch.setattr(trainer, "MAX_EPOCHS_PER_MODEL", 0)
    start = _traces()
    fresh = _recording_session(_model())
    assert _traces() - start == 2
    _assert_same(cached, fresh)
    assert int(cached[4][0]) == 3 * 5 and int(cached[5][0]) == 2 * 5  # steps: 150 / 32 -> 5 a epoch


def test_recorders_of_other_measures_trace_their_own_graph() -> None:
    import importance

    model, data = _model(), _data()
    start = _traces()
    for measures in (["si"], ["sign_flip"], ["si"]):
        recorder = importance.track(model, measures, patch_fit=False)
        train(model, data, epochs=1, batch_size=32, learning_rate=0.01, recorder=recorder)
        assert recorder.num_steps == 5
    assert _traces() - start == 2


def test_a_cached_epoch_leaves_the_global_seeds_and_tensorflows_kernels_alone(monkeypatch) -> None:
    """Seeds are set where they shape a graph, before a trace. Setting TensorFlow's seed clears
    its kernel cache, so reseeding on every call made each cached epoch instantiate its kernels
    again (~3x the epoch's own cost on a small MLP); the results are those of fresh traces
    (test_cached_epochs_give_bitwise_what_fresh_traces_give)."""
    seeded = []
    original = keras.utils.set_random_seed
    monkeypatch.setattr(keras.utils, "set_random_seed", lambda seed: seeded.append(seed) or original(seed))
    start = _traces()
    _session(_model())
    assert _traces() - start == 2
    assert seeded == [1, 2]  # task A's trace (seed 1), the EWC runs' trace (their first seed, 2)
