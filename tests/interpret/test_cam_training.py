"""CAM-guided training: radial weight, schedule, the penalty's gradient, the spurious task."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from importance.interpret.penalty import CamPenalty, cam_mass_outside, phases, radial_weight
from tasks import spurious, trainer


def _tiny_cnn(seed: int = 0, dtype: str = "float32", size: int = 6) -> keras.Model:
    init = keras.initializers.GlorotUniform
    inputs = keras.Input((size, size, 1), dtype=dtype)
    h = keras.layers.Conv2D(3, 3, padding="same", activation="tanh", dtype=dtype,
                            kernel_initializer=init(seed), bias_initializer="ones", name="conv")(inputs)
    h = keras.layers.GlobalAveragePooling2D(dtype=dtype)(h)
    out = keras.layers.Dense(2, dtype=dtype, kernel_initializer=init(seed + 1), name="head")(h)
    return keras.Model(inputs, out)


# ---- radial weight and schedule -------------------------------------------------------------


def test_radial_weight_is_an_inverted_gaussian():
    w = radial_weight((7, 9), width=0.25)
    assert w.shape == (7, 9)
    assert w[3, 4] == 0.0  # the centre cell
    assert np.all((w >= 0) & (w < 1))
    np.testing.assert_allclose(w, w[::-1, :])
    np.testing.assert_allclose(w, w[:, ::-1])
    sigma = 0.25 * 9
    np.testing.assert_allclose(w[0, 0], 1 - np.exp(-(3**2 + 4**2) / (2 * sigma**2)))
    rows, cols = np.mgrid[0:7, 0:9]
    r = np.hypot(rows - 3, cols - 4).ravel()
    order = np.argsort(r, kind="stable")
    assert np.all(np.diff(w.ravel()[order]) >= -1e-15)  # grows with the distance
    assert np.all(radial_weight((7, 9), width=0.5) <= w)  # wider: less weight everywhere


@pytest.mark.parametrize("bad", [{"shape": (0, 3)}, {"shape": (3,)}, {"width": 0}, {"width": -1.0}])
def test_radial_weight_rejects_bad_input(bad):
    args = {"shape": (3, 3), "width": 0.25, **bad}
    with pytest.raises(ValueError, match="shape|width"):
        radial_weight(args["shape"], width=args["width"])


def test_phases_and_schedule():
    assert phases(before=2, during=3) == [2, 3, 4]
    model = _tiny_cnn()
    x = np.random.default_rng(0).uniform(size=(4, 6, 6, 1)).astype("float32")
    y = np.array([0, 1, 0, 1], np.int32)
    penalty = CamPenalty(model, weight=2.0, variant="difference", schedule=[1, 3])
    value = float(penalty.value(model, x, y))
    assert value > 0
    assert float(penalty(model, x, y, tf.constant(0))) == 0.0
    np.testing.assert_allclose(float(penalty(model, x, y, tf.constant(3))), 2.0 * value, rtol=1e-6)


@pytest.mark.parametrize(
    ("options", "match"),
    [({"weight": -1.0}, r"weight must be a number >= 0. Received: -1.0"),
     ({"weight": 1.0, "schedule": "0-3"}, r"schedule must be .* Received: '0-3'"),
     ({"weight": 1.0, "schedule": [0, 1.5]}, r"schedule must be .* Received: \[0, 1.5\]"),
     ({"weight": 1.0, "schedule": [-1]}, r"schedule must be .* Received: \[-1\]"),
     ({"weight": 1.0, "variant": "both"}, r"variant must be one of .* Received: 'both'")],
)
def test_penalty_rejects_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        CamPenalty(_tiny_cnn(), **options)


def test_penalty_needs_a_cam_layer():
    mlp = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(2)],
                           name="flat_mlp")
    with pytest.raises(ValueError, match="'flat_mlp' has no 2-D convolution"):
        CamPenalty(mlp, weight=1.0)


# ---- the penalty's gradient -----------------------------------------------------------------


@pytest.mark.parametrize("variant", ["true_class", "difference"])
def test_penalty_gradient_matches_finite_differences(variant):
    model = _tiny_cnn(seed=3, dtype="float64")
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(3, 6, 6, 1))
    y = np.array([0, 1, 1], np.int32)
    penalty = CamPenalty(model, weight=1.0, variant=variant)
    with tf.GradientTape() as tape:
        value = penalty.value(model, x, y)
    grads = tape.gradient(value, model.trainable_weights)
    # The maps do not depend on the head's bias: no gradient there (checked as 0 below).
    assert [g is None for g in grads] == [False, False, False, True]
    grads = [np.zeros(w.shape) if g is None else g for g, w in zip(grads, model.trainable_weights, strict=True)]

    def at(weights: list[np.ndarray]) -> float:
        model.set_weights(weights)
        return _value64(penalty, model, x, y)

    base = [w.copy() for w in model.get_weights()]
    eps = 1e-6
    checked = 0
    for i, g in enumerate(grads):
        flat = np.asarray(g).ravel()
        for j in rng.choice(flat.size, size=min(4, flat.size), replace=False):
            plus = [w.copy() for w in base]
            minus = [w.copy() for w in base]
            plus[i].ravel()[j] += eps
            minus[i].ravel()[j] -= eps
            numeric = (at(plus) - at(minus)) / (2 * eps)
            np.testing.assert_allclose(flat[j], numeric, rtol=1e-4, atol=1e-9)
            checked += 1
    model.set_weights(base)
    assert checked >= 10


def _value64(penalty: CamPenalty, model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    """The penalty in float64 (value() casts the result to float32, too coarse for differences)."""
    maps = penalty.maps(model, x, y)
    radial = tf.constant(penalty.radial, maps.dtype)
    if penalty.variant == "true_class":
        return float(tf.reduce_mean(tf.square(radial * tf.nn.relu(maps))))
    size = tf.sqrt(tf.reduce_sum(tf.square(maps), axis=[1, 2], keepdims=True))
    return float(tf.reduce_mean(tf.square(radial) * tf.abs(maps) / (size + 1e-12)))


def test_cam_mass_outside_matches_a_numpy_reference():
    model = _tiny_cnn(seed=5, size=8)
    x = np.random.default_rng(2).uniform(size=(5, 8, 8, 1)).astype("float32")
    y = np.array([0, 1, 0, 1, 1], np.int32)
    mask = np.zeros((8, 8), bool)
    mask[2:6, 3:6] = True
    # GAP + Dense: the map of class c is sum_k A_k W[k, c] / (h w); difference = true - other.
    features = keras.Model(model.inputs[0], model.get_layer("conv").output)(x).numpy()
    kernel = model.get_layer("head").kernel.numpy()
    maps = features @ kernel / 64.0  # (N, 8, 8, 2)
    diff = np.abs(np.where(y[:, None, None] == 0, maps[..., 0] - maps[..., 1], maps[..., 1] - maps[..., 0]))
    expected = np.mean((diff * ~mask).sum(axis=(1, 2)) / diff.sum(axis=(1, 2)))
    got = cam_mass_outside(model, x, y, centre_mask=mask)
    np.testing.assert_allclose(got, expected, rtol=1e-4)


def test_penalty_trains_through_the_trainer_deterministically():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(48, 6, 6, 1)).astype("float32")
    y = (x[:, :, :3].mean(axis=(1, 2, 3)) > x[:, :, 3:].mean(axis=(1, 2, 3))).astype("int32")

    def run(weight: float) -> list[np.ndarray]:
        model = _tiny_cnn(seed=7)
        penalty = CamPenalty(model, weight=weight, variant="difference", schedule=[1])
        trainer.train(model, (x, y), epochs=2, batch_size=20, learning_rate=1e-2, seed=4, penalty=penalty)
        return model.get_weights()

    first, again, plain = run(5.0), run(5.0), run(0.0)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.allclose(a, b) for a, b in zip(first, plain, strict=True))


def test_a_new_weight_reuses_the_compiled_epoch_and_trains_as_a_fresh_trace(monkeypatch):
    """The weight is the penalty's state: a second training of the same model with another weight
    traces nothing new, and gives bitwise what a fresh trace gives (cache switched off)."""
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(40, 6, 6, 1)).astype("float32")
    y = (x[:, :, :3].mean(axis=(1, 2, 3)) > x[:, :, 3:].mean(axis=(1, 2, 3))).astype("int32")

    def session() -> tuple[list[np.ndarray], int]:
        model = _tiny_cnn(seed=3)
        start = trainer._trace_count
        for weight, seed in ((2.0, 1), (8.0, 2)):
            penalty = CamPenalty(model, weight=weight, variant="difference", schedule=[1])
            trainer.train(model, (x, y), epochs=2, batch_size=16, learning_rate=1e-2, seed=seed,
                          penalty=penalty)
        return model.get_weights(), trainer._trace_count - start

    cached, traces = session()
    assert traces == 1
    monkeypatch.setattr(trainer, "MAX_EPOCHS_PER_MODEL", 0)
    fresh, traces = session()
    assert traces == 2
    for a, b in zip(cached, fresh, strict=True):
        np.testing.assert_array_equal(a, b)


# ---- the spurious-background task -----------------------------------------------------------


@pytest.fixture(scope="module")
def data() -> spurious.SpuriousData:
    return spurious.generate(share=0.9, canvas=24, object_size=14, seed=3)


def test_backgrounds_follow_the_class_at_the_stated_share(data):
    for split in (data.train, data.val):
        for c in range(2):
            members = split.background[split.y == c]
            assert abs(np.mean(members == c) - 0.9) <= 0.5 / len(members) + 1e-12
    counts = np.bincount(data.test.groups, minlength=4)
    assert counts.min() == counts.max() > 0  # group-balanced test
    balanced = np.bincount(data.val_balanced.groups, minlength=4)
    assert balanced.min() == balanced.max() == len(data.val.y) // 2
    np.testing.assert_array_equal(data.val_balanced.x[: len(data.val.y), 5:19, 5:19],
                                  data.val_balanced.x[len(data.val.y):, 5:19, 5:19])


def test_image_layout_and_groups(data):
    x = data.train.x
    assert x.shape[1:] == (24, 24, 1) and x.dtype == np.float32
    assert data.centre_mask.sum() == 14 * 14 and data.centre_mask[5:19, 5:19].all()
    outside = x[:, ~data.centre_mask, 0]
    assert 0 <= outside.min() and outside.max() <= spurious.STRIPE_CONTRAST + 1e-6
    horizontal = data.train.x[data.train.background == 0][0, :, 0, 0]  # stripes vary down the rows
    assert np.ptp(horizontal[:5]) > 0.05
    assert np.ptp(data.train.x[data.train.background == 0][0, 0, :5, 0]) < 1e-6
    np.testing.assert_array_equal(data.train.groups, data.train.y * 2 + data.train.background)


def test_generation_is_seeded(data):
    again = spurious.generate(share=0.9, canvas=24, object_size=14, seed=3)
    other = spurious.generate(share=0.9, canvas=24, object_size=14, seed=4)
    np.testing.assert_array_equal(data.train.x, again.train.x)
    np.testing.assert_array_equal(data.train.background, again.train.background)
    assert not np.array_equal(data.train.background, other.train.background)


@pytest.mark.parametrize(("options", "match"), [
    ({"share": 1.5}, "share must be in"), ({"digits": (3, 3)}, "digits must be"),
    ({"object_size": 40}, "object_size must be"), ({"val_fraction": 0}, "val_fraction must be")])
def test_generate_rejects_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        spurious.generate(**options)


def test_group_accuracy_on_a_planted_example():
    y = np.array([0, 0, 0, 1, 1, 1])
    groups = np.array([0, 0, 1, 3, 3, 2])
    predicted = np.array([0, 0, 1, 1, 1, 1])
    result = spurious.group_accuracy(predicted, y, groups)
    assert result["average"] == pytest.approx(5 / 6)
    assert result["per_group"] == {0: 1.0, 1: 0.0, 2: 1.0, 3: 1.0}
    assert result["worst_group"] == 0.0
    with pytest.raises(ValueError, match="one length"):
        spurious.group_accuracy(predicted[:3], y, groups)
