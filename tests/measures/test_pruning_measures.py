"""The pruning criteria (obd, snip, grasp, synflow, lamp, wanda, hessian_diag) against slow references.

Each measure is checked on tiny Dense and Conv models against an independent implementation:
per-example or per-patch loops, finite differences of the gradient for Hessian-vector products,
the exact Hessian (autodiff, column by column) for the Hutchinson diagonal, NumPy forward passes
for SynFlow, and a hand-computed LAMP example. Models whose Hessian is checked use tanh, so that
finite differences do not straddle a ReLU kink.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

import importance as imp
from importance.measures import taylor

N = 16
# Finite differences in float32: step EPS, central differences, error relative to the vector's norm.
EPS = 1e-2
FD_RTOL = 2e-2


def _model(kind: str, activation: str = "relu", *, softmax: bool = False) -> keras.Model:
    keras.utils.set_random_seed(3)
    head = keras.layers.Dense(3, activation="softmax" if softmax else None)
    if kind == "dense":
        layers = [keras.Input((5,)), keras.layers.Dense(4, activation=activation), head]
    else:
        layers = [
            keras.Input((5, 5, 2)),
            keras.layers.Conv2D(3, 3, activation=activation),
            keras.layers.Flatten(),
            head,
        ]
    model = keras.Sequential(layers)
    # Non-zero biases, so that they are really tested; seeded by position, not by the weight's
    # path, whose auto-generated layer name depends on how many layers the process built before.
    for i, w in enumerate(model.trainable_weights):
        w.assign(
            np.random.default_rng(i)
            .normal(scale=0.5, size=tuple(w.shape))
            .astype(np.float32)
        )
    return model


def _data(kind: str, seed: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = (5,) if kind == "dense" else (5, 5, 2)
    return rng.normal(size=(N, *shape)).astype(np.float32), rng.integers(0, 3, size=N).astype(
        np.int32
    )


def _numpy(weights) -> list[np.ndarray]:
    return [np.asarray(w.numpy(), np.float64) for w in weights]


def _example_gradient(model, x, y) -> list[np.ndarray]:
    """Gradient of one example's cross-entropy (eager, one example at a time)."""
    with tf.GradientTape() as tape:
        logits = model(x[None], training=False)
        loss = tf.keras.losses.sparse_categorical_crossentropy(y[None], logits, from_logits=True)[0]
    return _numpy(tape.gradient(loss, model.trainable_weights))


def _mean_gradient(model, data, shift=None) -> list[np.ndarray]:
    """Mean over examples of per-example gradients, at the weights moved by ``shift`` if given."""
    x, y = data
    original = _numpy(model.trainable_weights)
    if shift is not None:
        for w, o, s in zip(model.trainable_weights, original, shift, strict=True):
            w.assign((o + s).astype(np.float32))
    try:
        grads = [_example_gradient(model, x[i], y[i]) for i in range(len(y))]
    finally:
        for w, o in zip(model.trainable_weights, original, strict=True):
            w.assign(o.astype(np.float32))
    return [np.mean(g, axis=0) for g in zip(*grads, strict=True)]


def _fd_hvp(model, data, vector) -> list[np.ndarray]:
    """H v by central differences of the mean gradient along v."""
    plus = _mean_gradient(model, data, [EPS * v for v in vector])
    minus = _mean_gradient(model, data, [-EPS * v for v in vector])
    return [(p - m) / (2 * EPS) for p, m in zip(plus, minus, strict=True)]


def _rel(got, ref) -> float:
    got = np.concatenate([np.ravel(g) for g in got])
    ref = np.concatenate([np.ravel(r) for r in ref])
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_snip_matches_a_per_example_loop(kind):
    model, data = _model(kind), _data(kind)
    g = _mean_gradient(model, data)
    raw = [np.abs(w * gi) for w, gi in zip(_numpy(model.trainable_weights), g, strict=True)]
    total = sum(r.sum() for r in raw)
    got = imp.compute_importance("snip", model, data, batch_size=5)  # batches of uneven size
    assert _rel(got, [r / total for r in raw]) < 1e-5
    assert sum(s.sum() for s in got) == pytest.approx(1.0)


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_grasp_is_w_times_a_finite_difference_hvp(kind):
    model, data = _model(kind, "tanh"), _data(kind)
    g = _mean_gradient(model, data)
    hg = _fd_hvp(model, data, g)
    expected = [w * h for w, h in zip(_numpy(model.trainable_weights), hg, strict=True)]
    got = imp.compute_importance("grasp", model, data, batch_size=6)
    assert _rel(got, expected) < FD_RTOL


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_hutchinson_probe_matches_finite_differences(kind):
    """One probe: the estimate is z * (H z), with H z by finite differences."""
    model, data = _model(kind, "tanh"), _data(kind)
    weights = model.trainable_weights
    z = [
        np.random.default_rng([7, 0, i]).choice([-1.0, 1.0], size=tuple(w.shape))
        for i, w in enumerate(weights)
    ]
    expected = [zi * h for zi, h in zip(z, _fd_hvp(model, data, z), strict=True)]
    got = taylor.hutchinson_diagonal(
        model, data, samples=1, seed=7, batch_size=6, max_examples=None
    )
    assert _rel(got, expected) < FD_RTOL
    scores = imp.compute_importance("hessian_diag", model, data, samples=1, seed=7, batch_size=6)
    for s, d, w in zip(scores, got, _numpy(weights), strict=True):
        np.testing.assert_allclose(s, 0.5 * d * w**2, rtol=1e-12)


def test_hessian_diag_converges_to_the_exact_diagonal():
    """With S probes each entry's error has standard deviation sqrt(sum_{j != i} H_ij^2 / S):
    every entry must lie within 5 of them of the exact diagonal (autodiff, column by column)."""
    model, data = _model("dense", "tanh"), _data("dense")
    weights = model.trainable_weights
    x, y = tf.constant(data[0]), tf.constant(data[1])
    sizes = [int(np.prod(w.shape)) for w in weights]
    hessian = []
    for i, w in enumerate(weights):  # one weight's columns at a time: d(grad)/d(w_i)
        with tf.GradientTape(persistent=True) as outer:
            with tf.GradientTape() as inner:
                loss = taylor.loss_sum(model, x, y, from_logits=True) / N
            grads = inner.gradient(loss, weights)
            flat = tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0)
        hessian.append(tf.reshape(outer.jacobian(flat, w), (sum(sizes), sizes[i])).numpy())
    hessian = np.concatenate(hessian, axis=1).astype(np.float64)
    samples = 3000
    got = np.concatenate(
        [
            d.ravel()
            for d in taylor.hutchinson_diagonal(
                model, data, samples=samples, seed=0, batch_size=N, max_examples=None
            )
        ]
    )
    exact = np.diag(hessian)
    off = np.sqrt((np.sum(hessian**2, axis=1) - exact**2) / samples)
    assert np.all(np.abs(got - exact) <= 5 * off + 1e-6), np.max(
        np.abs(got - exact) / (off + 1e-12)
    )
    assert _rel([got], [exact]) < 0.1


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_obd_is_half_the_exact_fisher_times_w_squared(kind):
    model, data = _model(kind), _data(kind)
    fisher = imp.compute_importance("fisher", model, data)
    got = imp.compute_importance("obd", model, data)
    for o, f, w in zip(got, fisher, _numpy(model.trainable_weights), strict=True):
        np.testing.assert_array_equal(o, 0.5 * f * w**2)
    sampled = imp.compute_importance("fisher", model, data, labels="sampled", seed=3)
    got = imp.compute_importance("obd", model, data, labels="sampled", seed=3)
    np.testing.assert_array_equal(
        got[0], 0.5 * sampled[0] * _numpy(model.trainable_weights)[0] ** 2
    )


def test_lamp_matches_a_hand_computed_example():
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1)])
    model.layers[0].kernel.assign(np.array([[3.0], [-1.0], [2.0], [0.0], [0.0]], np.float32))
    model.layers[0].bias.assign(np.array([-2.0], np.float32))
    kernel, bias = imp.compute_importance("lamp", model)
    # sorted squares 0, 0, 1, 4, 9; tails 14, 14, 14, 13, 9: 1/14, 4/13, 9/9; zeros score 0.
    np.testing.assert_allclose(kernel.ravel(), [1.0, 1 / 14, 4 / 13, 0.0, 0.0], rtol=1e-12)
    np.testing.assert_array_equal(bias, [1.0])  # a tensor's largest weight scores 1


def _synflow_numpy_dense(model) -> list[np.ndarray]:
    w1, b1, w2, b2 = (np.abs(w) for w in _numpy(model.trainable_weights))
    hidden = np.ones(w1.shape[0]) @ w1 + b1  # all positive: every ReLU is active
    upstream = w2.sum(axis=1)  # dR/dh
    grads = [
        np.outer(np.ones(w1.shape[0]), upstream),
        upstream,
        np.outer(hidden, np.ones(w2.shape[1])),
        np.ones(w2.shape[1]),
    ]
    return [w * g for w, g in zip((w1, b1, w2, b2), grads, strict=True)]


def _synflow_numpy_conv(model) -> list[np.ndarray]:
    k, bk, w, bw = (np.abs(v) for v in _numpy(model.trainable_weights))
    out_h = 5 - 3 + 1
    fmap = np.full((out_h, out_h, 3), k.sum(axis=(0, 1, 2)) + bk)  # conv of an all-ones image
    upstream = w.sum(axis=1).reshape(out_h, out_h, 3)  # dR/dfmap (Flatten is row-major)
    dk = np.broadcast_to(upstream.sum(axis=(0, 1)), k.shape)
    grads = [
        dk,
        upstream.sum(axis=(0, 1)),
        np.outer(fmap.ravel(), np.ones(w.shape[1])),
        np.ones(w.shape[1]),
    ]
    return [v * g for v, g in zip((k, bk, w, bw), grads, strict=True)]


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_synflow_matches_numpy_and_ignores_data(kind):
    model = _model(kind)
    reference = _synflow_numpy_dense(model) if kind == "dense" else _synflow_numpy_conv(model)
    first = imp.compute_importance("synflow", model, _data(kind, seed=1))
    second = imp.compute_importance("synflow", model, _data(kind, seed=2))
    for a, b, r in zip(first, second, reference, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, r, rtol=1e-6)
    # A softmax output is scored through its logits: same weights, same scores.
    with_softmax = _model(kind, softmax=True)
    for a, b in zip(imp.compute_importance("synflow", with_softmax), first, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def _wanda_reference(model, data) -> list[np.ndarray]:
    """Loops over examples (and patches): the first layer's input norms, the head's inputs."""
    x = data[0].astype(np.float64)
    first, head = model.layers[0], model.layers[-1]
    kernel, bias, w, b = (np.abs(v) for v in _numpy(model.trainable_weights))
    if isinstance(first, keras.layers.Dense):
        norms = np.sqrt(sum(x[i] ** 2 for i in range(len(x))))
        first_scores = [kernel * norms[:, None], bias * np.sqrt(len(x))]
    else:
        squares, tokens = np.zeros((3, 3, 2)), 0
        for i in range(len(x)):
            for r in range(3):
                for c in range(3):
                    squares += x[i, r : r + 3, c : c + 3, :] ** 2
                    tokens += 1
        first_scores = [kernel * np.sqrt(squares)[..., None], bias * np.sqrt(tokens)]
    head_inputs = keras.Model(model.inputs[0], head.input)(data[0]).numpy().astype(np.float64)
    head_norms = np.sqrt(sum(head_inputs[i] ** 2 for i in range(len(x))))
    return [*first_scores, w * head_norms[:, None], b * np.sqrt(len(x))]


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_wanda_matches_a_per_example_loop(kind):
    model, data = _model(kind), _data(kind)
    got = imp.compute_importance("wanda", model, data, batch_size=5)
    for g, r in zip(got, _wanda_reference(model, data), strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-5)


def test_wanda_scores_uncovered_weights_by_magnitude():
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((5,)),
            keras.layers.Dense(4),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(3),
        ]
    )
    scores = imp.compute_importance("wanda", model, _data("dense"))
    gamma_index = [i for i, w in enumerate(model.trainable_weights) if "gamma" in w.path][0]
    np.testing.assert_array_equal(
        scores[gamma_index], np.abs(model.trainable_weights[gamma_index].numpy())
    )
    assert "|w|" in imp.get_measure("wanda").fn.coverage


def test_bad_options_are_named():
    model, data = _model("dense"), _data("dense")
    with pytest.raises(ValueError, match="samples must be a positive integer. Received: 0"):
        imp.compute_importance("hessian_diag", model, data, samples=0)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        imp.compute_importance("hessian_diag", model, data, seed=-1)
    with pytest.raises(ValueError, match="labels must be one of"):
        imp.compute_importance("obd", model, data, labels="true")
