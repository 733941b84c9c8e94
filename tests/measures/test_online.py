"""Recording trajectories: the model.fit patch, errors, saving and loading, determinism."""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest

import importance as imp
from importance.online import recorder_for

ONLINE = [
    "momentum",
    "momentum_reversals",
    "si",
    "sign_flip",
    "sign_flip_count",
    "weight_change",
    "weight_path_length",
]


def _data(n=48):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 5)).astype(np.float32), rng.integers(0, 3, size=n)


def _model(seed=0, *, compile=True, jit_compile="auto"):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(
                8, activation="relu", kernel_regularizer=keras.regularizers.L2(0.05)
            ),
            keras.layers.BatchNormalization(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(3),
        ]
    )
    if compile:
        model.compile(
            optimizer=keras.optimizers.Adam(0.05),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
            jit_compile=jit_compile,
        )
    return model


def _fit(model, epochs=2, **kwargs):
    x, y = _data()
    return model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, **kwargs)


@pytest.fixture(scope="module")
def tracked_run():
    """One tracked training run (seed 0) shared by the tests that only read it."""
    model = _model()
    recorder = imp.track(model)
    history = _fit(model)
    scores = {name: imp.compute_importance(name, model) for name in ONLINE}
    return model, recorder, history, scores


def test_online_measures_are_registered():
    assert set(ONLINE) <= set(imp.available_measures(online=True))
    assert not set(ONLINE) & set(imp.available_measures(online=False))


@pytest.mark.slow
def test_tracking_leaves_training_unchanged(tracked_run):
    """Same weights, batch-norm statistics, dropout masks and logs with or without track()."""
    tracked, recorder, tracked_history, scores = tracked_run
    plain = _model()
    plain_history = _fit(plain)

    assert recorder.num_steps == 6
    assert set(tracked_history.history) == {"loss", "accuracy"}
    assert tracked_history.history == plain_history.history
    for a, b in zip(plain.weights, tracked.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    for name in ONLINE:
        assert np.any(scores[name][0] != 0), name


@pytest.mark.slow
def test_track_retraces_a_compiled_model_and_stop_restores_train_step():
    model = _model()
    _fit(model, epochs=1)  # the train function is now traced and cached
    assert model.train_function is not None
    recorder = imp.track(model)
    _fit(model, epochs=1)
    assert recorder.num_steps == 3
    assert "train_step" in vars(model)

    recorder.stop()
    assert "train_step" not in vars(model)
    assert model.train_step.__func__ is type(model).train_step
    history = _fit(model, epochs=1)
    assert recorder.num_steps == 3
    assert np.isfinite(history.history["loss"][0])
    recorder.stop()  # idempotent


@pytest.mark.slow
def test_track_works_before_compile():
    model = _model(compile=False)
    recorder = imp.track(model, measures=["weight_path_length"])
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = _fit(model, epochs=1)
    assert recorder.num_steps == 3
    assert np.isfinite(history.history["loss"][0])
    assert all(s.sum() > 0 for s in imp.compute_importance("weight_path_length", model))


@pytest.fixture
def op_determinism_off():
    """Op determinism off for one test, then on again whatever happens. The suite enables it
    (root ``conftest.py``), and Keras refuses XLA under it (``Trainer.compile``)."""
    from tensorflow.python.framework import config as tf_config

    assert tf_config.is_op_determinism_enabled()
    tf_config.disable_op_determinism()
    try:
        yield
    finally:
        tf_config.enable_op_determinism()


@pytest.mark.slow
def test_track_works_with_xla_compiled_fit(op_determinism_off):
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)]
    )
    recorder = imp.track(model)
    model.compile(
        optimizer="sgd",
        jit_compile=True,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    assert model.jit_compile is True
    rng = np.random.default_rng(0)
    history = model.fit(rng.normal(size=(32, 5)), rng.integers(0, 3, 32), batch_size=16, verbose=0)
    assert np.isfinite(history.history["loss"][0]) and recorder.num_steps == 2
    for name in imp.available_measures(online=True):
        scores = imp.compute_importance(name, model)
        assert all(np.all(np.isfinite(s)) for s in scores), name


@pytest.mark.slow
def test_tracking_again_replaces_the_previous_recorder():
    model = _model()
    first = imp.track(model, measures=["weight_change"])
    second = imp.track(model, measures=["si"])
    _fit(model, epochs=1)
    assert (first.num_steps, second.num_steps) == (0, 3)
    assert recorder_for(model) is second
    imp.compute_importance("si", model)
    with pytest.raises(RuntimeError, match=r"does not record 'weight_change'"):
        imp.compute_importance("weight_change", model)


@pytest.mark.parametrize("name", ONLINE)
def test_untracked_model_raises_with_instructions(name):
    model = _model(compile=False)
    with pytest.raises(RuntimeError, match=r"No training trajectory.*importance\.track\(model\)"):
        imp.compute_importance(name, model)


def test_tracked_but_untrained_model_raises():
    model = _model(compile=False)
    imp.track(model)
    with pytest.raises(
        RuntimeError, match=r"observed 0 training steps.*importance\.track\(model\)"
    ):
        imp.compute_importance("si", model)


def test_recorder_rejects_unbuilt_models_and_unknown_measures():
    with pytest.raises(ValueError, match="must be built"):
        imp.track(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(KeyError, match=r"No online tracker for \['fisher'\]\. Available: momentum"):
        imp.track(_model(compile=False), measures=["fisher"])


def test_fit_without_a_compiled_loss_says_how_to_record():
    model = _model(compile=False)
    imp.track(model)
    model.compile(optimizer="sgd")  # no loss: Keras would use model.losses only
    with pytest.raises(RuntimeError, match=r"compiled loss.*recorder\.observe"):
        _fit(model, epochs=1)


def _npz_round_trip(state):
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    buffer.seek(0)
    with np.load(buffer) as loaded:
        return {k: loaded[k] for k in loaded.files}


@pytest.mark.slow
def test_state_dict_round_trip_reproduces_scores(tracked_run):
    _, recorder, _, expected = tracked_run
    state = _npz_round_trip(recorder.state_dict())

    fresh = _model(seed=1, compile=False)  # same architecture, other weights, never trained
    restored = imp.track(fresh, patch_fit=False)
    restored.load_state_dict(state)
    assert restored.num_steps == recorder.num_steps == 6
    for name in ONLINE:
        for e, g in zip(expected[name], imp.compute_importance(name, fresh), strict=True):
            np.testing.assert_array_equal(e, g, err_msg=name)

    with pytest.raises(ValueError, match=r"has no entry 'si/path/0'"):
        restored.load_state_dict({k: v for k, v in state.items() if k != "si/path/0"})
    wider = keras.Sequential([keras.Input((5,)), keras.layers.Dense(9), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=r"has shape \(5, 8\), expected \(5, 9\)"):
        imp.track(wider, patch_fit=False).load_state_dict(state)


@pytest.mark.slow
def test_same_seed_training_gives_identical_scores(tracked_run):
    _, _, _, first = tracked_run
    model = _model()
    imp.track(model)
    _fit(model)
    for name in ONLINE:
        for a, b in zip(first[name], imp.compute_importance(name, model), strict=True):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_observe_checks_lengths_and_treats_missing_gradients_as_zero():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    recorder = imp.track(model, measures=["si", "weight_change"], patch_fit=False)
    kernel, bias = np.ones((2, 1), np.float32), np.zeros(1, np.float32)
    with pytest.raises(ValueError, match=r"per trainable weight \(2\)\. Received: 1, 2, 2"):
        recorder.observe([kernel], [kernel, bias], [kernel, bias])
    recorder.observe([-kernel, None], [kernel, bias], [2 * kernel, bias + 1])
    si, _ = imp.compute_importance("si", model, clip=False)
    np.testing.assert_allclose(si, np.full((2, 1), 1 / 1.001))
    np.testing.assert_allclose(imp.compute_importance("si", model)[1], [0.0])
    np.testing.assert_allclose(imp.compute_importance("weight_change", model)[1], [0.5])
