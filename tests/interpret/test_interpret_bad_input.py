"""Bad input on the saliency axis never gives a silent wrong answer (issue 20).

The interpret sibling of ``tests/core/test_bad_input.py``: every public entry point of
``importance.interpret`` (``compute_saliency`` and each registered method, the CAMs, occlusion,
the gradient methods, ``deletion_insertion``, ``explanation_kept``, the filter visualisations,
``CamPenalty`` and ``cam_mass_outside``) is called with each kind of bad or edge input. Each case
checks the error type, that the message names the argument and the bad value (the regex holds
the value), and that the model is bitwise unchanged. In-range ``np.float32`` values are
accepted. Then hypothesis properties: any NaN/inf pixel is named by image and pixel, any
out-of-range target by value and image; a model raising mid-call in ``explanation_kept`` is left
bitwise as it was.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from importance.interpret import cam_pass, compute_saliency, grad_cam, register_saliency
from importance.interpret.faithfulness import deletion_insertion
from importance.interpret.filters import kernel_images, maximise_classes, maximise_filters
from importance.interpret.penalty import CamPenalty, cam_mass_outside
from importance.interpret.registry import SALIENCY
from importance.interpret.under_thresholding import explanation_kept
from importance.testing import assert_weights_unchanged, weights_snapshot
from tasks.trainer import train

PROPERTY = settings(max_examples=20, deadline=5000, suppress_health_check=[HealthCheck.too_slow])
SHAPE = (6, 6, 2)
N = 4


def _cnn(*, seed=0, softmax=False, name="cnn"):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(SHAPE),
            keras.layers.Conv2D(3, 3, padding="same", activation="relu", name="conv"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(3, activation="softmax" if softmax else None, name="head"),
        ],
        name=name,
    )


def _flat_mlp():
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(3)], name="flat_mlp"
    )


def _two_inputs():
    a, b = keras.Input(SHAPE), keras.Input(SHAPE)
    h = keras.layers.Conv2D(2, 3, name="conv")(keras.layers.Add()([a, b]))
    return keras.Model([a, b], keras.layers.Dense(3)(keras.layers.Flatten()(h)), name="twin_in")


def _two_outputs():
    x = keras.Input(SHAPE)
    h = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, name="conv")(x))
    return keras.Model(x, [keras.layers.Dense(3)(h), keras.layers.Dense(2)(h)], name="twin_out")


def _regression():
    x = keras.Input(SHAPE)
    h = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, name="conv")(x))
    return keras.Model(x, keras.layers.Dense(1)(h), name="regressor")


def _underflowing_softmax():
    model = _cnn(softmax=True, name="overconfident")
    head = model.get_layer("head")
    head.bias.assign(np.array([300.0, 0.0, 0.0], np.float32))  # p_1 = p_2 = 0 in float32
    return model


@pytest.fixture(scope="module")
def model():
    return _cnn()


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).random((N, *SHAPE)).astype(np.float32)


def _bad(x, index, value):
    x = np.array(x, copy=True)
    x[index] = value
    return x


def _ones(m):
    return [np.ones(w.shape) for w in m.trainable_weights]


def _sal(name, **options):
    return lambda m, x: compute_saliency(name, m, x, target=options.pop("target", 0), **options)


# (id, model factory or None for the module model, call(model, images), error, message regex)
CASES = [
    # images: NaN / inf, rank, channels, size, empty, dtype
    ("nan pixel, gradient", None, lambda m, x: compute_saliency("gradient", m, _bad(x, (2, 3, 1, 0), np.nan), target=0),
     ValueError, r"images must be finite. Received nan in image 2 at pixel \(row 3, column 1, channel 0\)"),
    ("inf pixel, gradient", None, lambda m, x: compute_saliency("gradient", m, _bad(x, (0, 5, 5, 1), np.inf), target=0),
     ValueError, r"images must be finite. Received inf in image 0 at pixel \(row 5, column 5, channel 1\)"),
    ("-inf pixel, occlusion", None, lambda m, x: compute_saliency("occlusion", m, _bad(x, (1, 0, 2, 0), -np.inf), target=0, window=3),
     ValueError, r"Received -inf in image 1 at pixel \(row 0, column 2, channel 0\)"),
    ("nan pixel, grad_cam", None, lambda m, x: grad_cam(m, _bad(x, (3, 1, 1, 1), np.nan), target=0),
     ValueError, r"Received nan in image 3 at pixel \(row 1, column 1, channel 1\)"),
    ("nan pixel, deletion_insertion", None, lambda m, x: deletion_insertion(m, _bad(x, (1, 2, 2, 0), np.nan), np.zeros((N, 6, 6)), target=0),
     ValueError, r"images must be finite. Received nan in image 1 at pixel \(row 2, column 2"),
    ("nan pixel, explanation_kept", None, lambda m, x: explanation_kept(m, _ones(m), _bad(x, (0, 0, 0, 0), np.nan), np.zeros(N, int)),
     ValueError, r"images must be finite. Received nan in image 0"),
    ("rank 3 images", None, lambda m, x: compute_saliency("gradient", m, x[0], target=0),
     ValueError, r"images must have rank 4 \(N, H, W, C\). Received shape: \(6, 6, 2\)"),
    ("3 channels for 2", None, lambda m, x: compute_saliency("grad_cam", m, np.zeros((N, 6, 6, 3), np.float32), target=0),
     ValueError, r"images of shape \(4, 6, 6, 3\) do not fit model 'cnn', which expects \(N, 6, 6, 2\)"),
    ("wrong height", None, lambda m, x: compute_saliency("score_cam", m, np.zeros((N, 5, 6, 2), np.float32), target=0),
     ValueError, r"images of shape \(4, 5, 6, 2\) do not fit"),
    ("empty batch", None, lambda m, x: compute_saliency("smoothgrad", m, x[:0], target=0),
     ValueError, r"images must hold at least one image. Received shape: \(0, 6, 6, 2\)"),
    ("string images", None, lambda m, x: compute_saliency("gradient", m, np.full((1, 6, 6, 2), "a"), target=0),
     ValueError, r"images must be numeric. Received dtype: <U1"),
    # targets
    ("target = K", None, lambda m, x: compute_saliency("gradient_x_input", m, x, target=3),
     ValueError, r"target must be a class id in \[0, 3\). Received: 3"),
    ("negative target of image 1", None, lambda m, x: compute_saliency("integrated_gradients", m, x, target=[0, -1, 0, 0]),
     ValueError, r"target must be a class id in \[0, 3\). Received: -1 for image 1"),
    ("target too short", None, lambda m, x: compute_saliency("hires_cam", m, x, target=[0, 1, 2]),
     ValueError, r"target must hold one class id per image \(4\). Received 3 ids"),
    ("one-hot target", None, lambda m, x: compute_saliency("layer_cam", m, x, target=np.eye(3)[[0, 1, 2, 0]]),
     ValueError, r"target must hold class ids, not one-hot rows.* shape \(4, 3\)"),
    ("fractional target", None, lambda m, x: compute_saliency("grad_cam_plus_plus", m, x, target=0.5),
     ValueError, r"target must be .* \(integers\). Received: 0.5"),
    ("string target", None, lambda m, x: compute_saliency("random_map", m, x, target="cat"),
     ValueError, r"\(integers\). Received: 'cat'"),
    ("labels out of range, deletion", None, lambda m, x: deletion_insertion(m, x, np.zeros((N, 6, 6)), target=0, labels=[0, 7, 0, 0]),
     ValueError, r"labels must be a class id in \[0, 3\). Received: 7 for image 1"),
    ("labels wrong length, explanation_kept", None, lambda m, x: explanation_kept(m, _ones(m), x, np.zeros(3, int)),
     ValueError, r"labels must hold one class id per image \(4\). Received 3 ids"),
    # models
    ("not a model", None, lambda m, x: compute_saliency("gradient", "resnet", x, target=0),
     TypeError, r"model must be a Keras model. Received: str"),
    ("unbuilt model", None, lambda m, x: compute_saliency("gradient", keras.Sequential([keras.layers.Dense(3)], name="raw"), x, target=0),
     ValueError, r"model must be built .* Received an unbuilt Sequential 'raw'"),
    ("no convolution for a CAM", _flat_mlp, lambda m, x: compute_saliency("grad_cam", m, x, target=0),
     ValueError, r"Model 'flat_mlp' has no 2-D convolution layer"),
    ("no convolution for Score-CAM", _flat_mlp, lambda m, x: compute_saliency("score_cam", m, x, target=0),
     ValueError, r"Model 'flat_mlp' has no 2-D convolution layer"),
    ("unknown layer", None, lambda m, x: compute_saliency("grad_cam", m, x, target=0, layer="conv9"),
     ValueError, r"Unknown layer 'conv9' in model 'cnn'. Available: conv, flat, head"),
    ("layer not spatial", None, lambda m, x: compute_saliency("hires_cam", m, x, target=0, layer="head"),
     ValueError, r"layer 'head' of model 'cnn' outputs shape \(None, 3\); expected a spatial"),
    ("two inputs", _two_inputs, lambda m, x: compute_saliency("gradient", m, x, target=0),
     ValueError, r"model 'twin_in' has 2 inputs"),
    ("two outputs", _two_outputs, lambda m, x: compute_saliency("occlusion", m, x, target=0),
     ValueError, r"model has 2 outputs; only single-output models"),
    ("regression output", _regression, lambda m, x: compute_saliency("gradient", m, x, target=0),
     ValueError, r"model has 1 output unit"),
    ("softmax underflow", _underflowing_softmax, lambda m, x: compute_saliency("gradient", m, x, target=0),
     ValueError, r"model outputs probability 0.0 for class 1 of image 0"),
    ("explicit from_logits not a bool", None, lambda m, x: compute_saliency("gradient", m, x, target=0, from_logits="yes"),
     ValueError, r"from_logits must be True, False or None. Received: 'yes'"),
    # options
    ("occlusion window > image", None, lambda m, x: compute_saliency("occlusion", m, x, target=0, window=7),
     ValueError, r"window \(7, 7\) is larger than the images \(6, 6\)"),
    ("occlusion stride 0", None, lambda m, x: compute_saliency("occlusion", m, x, target=0, strides=0),
     ValueError, r"strides must be a positive integer or a pair of them. Received: 0"),
    ("occlusion batch_size 0", None, lambda m, x: compute_saliency("occlusion", m, x, target=0, batch_size=0),
     ValueError, r"batch_size must be a positive integer. Received: 0"),
    ("integrated gradients 0 steps", None, lambda m, x: compute_saliency("integrated_gradients", m, x, target=0, steps=0),
     ValueError, r"steps must be a positive integer. Received: 0"),
    ("integrated gradients nan baseline", None, lambda m, x: compute_saliency("integrated_gradients", m, x, target=0, baseline=float("nan")),
     ValueError, r"baseline must be a finite number. Received: nan"),
    ("smoothgrad sigma 0", None, lambda m, x: compute_saliency("smoothgrad", m, x, target=0, sigma=0.0),
     ValueError, r"sigma must be a finite number > 0. Received: 0.0"),
    ("smoothgrad sigma negative", None, lambda m, x: compute_saliency("smoothgrad", m, x, target=0, sigma=-0.1),
     ValueError, r"sigma must be a finite number > 0. Received: -0.1"),
    ("centre prior width 0", None, lambda m, x: compute_saliency("centre_prior", m, x, target=0, width=0),
     ValueError, r"width must be a finite number > 0. Received: 0"),
    ("score_cam batch_size 0", None, lambda m, x: compute_saliency("score_cam", m, x, target=0, batch_size=0),
     ValueError, r"batch_size must be a positive integer. Received: 0"),
    ("deletion steps 0", None, lambda m, x: deletion_insertion(m, x, np.zeros((N, 6, 6)), target=0, steps=0),
     ValueError, r"steps must be a positive integer. Received: 0"),
    ("deletion maps nan", None, lambda m, x: deletion_insertion(m, x, _bad(np.zeros((N, 6, 6)), (2, 0, 0), np.nan), target=0),
     ValueError, r"maps must be finite. Received NaN or inf values in the map of image 2"),
    ("explanation_kept threshold 1.5", None, lambda m, x: explanation_kept(m, _ones(m), x, np.zeros(N, int), thresholds=[0.5, 1.5]),
     ValueError, r"thresholds must be numbers in \[0, 1\]. Received: 1.5"),
    ("explanation_kept empty thresholds", None, lambda m, x: explanation_kept(m, _ones(m), x, np.zeros(N, int), thresholds=[]),
     ValueError, r"thresholds must be a non-empty sequence .* Received: \[\]"),
    ("explanation_kept unknown method", None, lambda m, x: explanation_kept(m, _ones(m), x, np.zeros(N, int), method="gradcam"),
     KeyError, r"Unknown saliency method 'gradcam'"),
    ("explanation_kept scope", None, lambda m, x: explanation_kept(m, _ones(m), x, np.zeros(N, int), scope="model"),
     ValueError, r"scope must be one of \('global', 'layer'\). Received: 'model'"),
    # filters
    ("filters not integers", None, lambda m, x: maximise_filters(m, filters=[1.5], steps=1),
     ValueError, r"filters must be a non-empty sequence of integer filter indices. Received: \[1.5\]"),
    ("filter out of range", None, lambda m, x: maximise_filters(m, filters=[3], steps=1),
     ValueError, r"filters must be in \[0, 3\) for layer 'conv'. Received: \[3\]"),
    ("ascent step_size nan", None, lambda m, x: maximise_filters(m, steps=1, step_size=float("nan")),
     ValueError, r"step_size must be a finite number >= 0. Received: nan"),
    ("ascent 0 steps", None, lambda m, x: maximise_classes(m, [0], steps=0),
     ValueError, r"steps must be a positive integer. Received: 0"),
    ("no classes", None, lambda m, x: maximise_classes(m, []),
     ValueError, r"classes must be a non-empty sequence of class ids. Received: \[\]"),
    ("class out of range", None, lambda m, x: maximise_classes(m, [0, 3], steps=1),
     ValueError, r"classes must be a class id in \[0, 3\). Received: 3 for image 1"),
    ("kernel of a dense layer", None, lambda m, x: kernel_images(m, layer="head"),
     ValueError, r"layer 'head' is not a 2-D convolution"),
    # the CAM penalty
    ("penalty weight inf", None, lambda m, x: CamPenalty(m, weight=float("inf")),
     ValueError, r"weight must be a number >= 0. Received: inf; expected finite"),
    ("penalty weight negative", None, lambda m, x: CamPenalty(m, weight=-2.0),
     ValueError, r"weight must be a number >= 0. Received: -2.0"),
    ("penalty width 0", None, lambda m, x: CamPenalty(m, weight=1.0, width=0.0),
     ValueError, r"width must be a finite number > 0. Received: 0.0"),
    ("penalty without convolution", _flat_mlp, lambda m, x: CamPenalty(m, weight=1.0),
     ValueError, r"Model 'flat_mlp' has no 2-D convolution layer"),
    ("penalty layer not spatial", None, lambda m, x: CamPenalty(m, weight=1.0, layer="flat"),
     ValueError, r"layer 'flat' of model 'cnn' outputs shape \(None, 108\)"),
    ("schedule past the last epoch", None,
     lambda m, x: train(m, (x, np.zeros(N, np.int32)), epochs=2, batch_size=4, learning_rate=0.01, penalty=CamPenalty(m, weight=1.0, schedule=[5, 6])),
     ValueError, r"schedule \[5, 6\] names epochs \[5, 6\] past the last epoch .*epochs=2.* would never be on"),
    ("schedule partly past the last epoch", None,
     lambda m, x: train(m, (x, np.zeros(N, np.int32)), epochs=2, batch_size=4, learning_rate=0.01, penalty=CamPenalty(m, weight=1.0, schedule=[1, 2])),
     ValueError, r"schedule \[1, 2\] names epochs \[2\] .* would be on in 1 of its 2 epochs"),
    ("mass outside: mask size", None, lambda m, x: cam_mass_outside(m, x, np.zeros(N, int), centre_mask=np.ones((5, 5), bool)),
     ValueError, r"centre_mask must be a boolean \(H, W\) = \(6, 6\) mask .* shape \(5, 5\)"),
    ("mass outside: label range", None, lambda m, x: cam_mass_outside(m, x, [0, 0, 5, 0], centre_mask=np.ones((6, 6), bool)),
     ValueError, r"y must be a class id in \[0, 3\). Received: 5 for image 2"),
    ("cam_pass score", None, lambda m, x: cam_pass(m, x, 0, score="probability"),
     ValueError, r"score must be one of \('output', 'centred'\). Received: 'probability'"),
]


@pytest.mark.parametrize(
    ("factory", "call", "error", "match"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_is_named_and_the_model_unchanged(model, images, factory, call, error, match):
    subject = model if factory is None else factory()
    before = weights_snapshot(subject)
    with pytest.raises(error, match=match):
        call(subject, images)
    assert_weights_unchanged(subject, before)


def test_there_are_enough_cases():
    assert len(CASES) >= 35
    assert len({case[0] for case in CASES}) == len(CASES)


def test_a_method_returning_non_finite_maps_is_blamed_not_the_images(model, images):
    @register_saliency("test_nan_map")
    def nan_map(model, images, *, target):
        maps = np.zeros(np.shape(images)[:3])
        maps[1, 2, 3] = np.nan
        return maps

    try:
        with pytest.raises(ValueError, match=r"'test_nan_map' returned non-finite values for image 1 of finite"):
            compute_saliency("test_nan_map", model, images, target=0)
        # and a plugin gets the same edge checks as the built-ins, before it runs
        with pytest.raises(ValueError, match=r"Received nan in image 0"):
            compute_saliency("test_nan_map", model, _bad(images, (0, 0, 0, 0), np.nan), target=0)
    finally:
        SALIENCY.unregister("test_nan_map")


def test_centred_cam_pass_in_a_graph_needs_the_output_kind():
    fresh = _cnn(seed=5, name="fresh")  # never seen eagerly: the decision is not known
    compiled = tf.function(lambda x: cam_pass(fresh, x, 0, score="centred").gradients,
                           autograph=False)
    with pytest.raises(ValueError, match=r"needs from_logits=True/False.*Received from_logits=None"):
        compiled(tf.zeros((1, *SHAPE)))


# ---- in-range values of NumPy types are accepted ----------------------------------------------


def test_numpy_float32_values_in_range_are_accepted(model, images):
    as_int = compute_saliency("gradient", model, images, target=1)
    as_float32 = compute_saliency("gradient", model, images, target=np.float32(1.0))
    np.testing.assert_array_equal(as_float32, as_int)
    per_image = compute_saliency("gradient", model, images, target=np.array([1, 1, 1, 1], np.float32))
    np.testing.assert_array_equal(per_image, as_int)
    compute_saliency("smoothgrad", model, images, target=0, sigma=np.float32(0.15), samples=np.int64(2))
    compute_saliency("centre_prior", model, images, target=0, width=np.float32(0.3))
    compute_saliency("integrated_gradients", model, images, target=0, steps=np.int32(4),
                     baseline=np.float32(0.0))
    compute_saliency("occlusion", model, images, target=0, window=np.int64(3), strides=(np.int32(2), 2))
    penalty = CamPenalty(model, weight=np.float32(2.0), width=np.float32(0.25),
                         schedule=[np.int64(0)])
    assert penalty.weight == 2.0 and penalty.width == 0.25
    maximise_filters(model, filters=[np.int64(0)], steps=1, step_size=np.float32(0.01))


# ---- properties --------------------------------------------------------------------------------


@PROPERTY
@given(
    position=st.tuples(st.integers(0, N - 1), st.integers(0, 5), st.integers(0, 5), st.integers(0, 1)),
    value=st.sampled_from([np.nan, np.inf, -np.inf]),
    method=st.sampled_from(["gradient", "grad_cam", "occlusion", "random_map"]),
)
def test_any_non_finite_pixel_is_named(model, images, position, value, method):
    before = weights_snapshot(model)
    n, row, col, channel = position
    with pytest.raises(ValueError) as info:
        compute_saliency(method, model, _bad(images, position, value), target=0)
    assert f"Received {value} in image {n} at pixel (row {row}, column {col}, channel {channel})" in str(info.value)
    assert_weights_unchanged(model, before)


@PROPERTY
@given(
    bad=st.one_of(st.integers(-10**6, -1), st.integers(3, 10**6)),
    index=st.integers(0, N - 1),
    method=st.sampled_from(["gradient", "hires_cam", "score_cam", "centre_prior"]),
)
def test_any_target_outside_the_classes_is_named_with_its_image(model, images, bad, index, method):
    before = weights_snapshot(model)
    target = np.zeros(N, np.int64)
    target[index] = bad
    with pytest.raises(ValueError) as info:
        compute_saliency(method, model, images, target=target)
    assert f"target must be a class id in [0, 3). Received: {bad} for image {index}." in str(info.value)
    assert_weights_unchanged(model, before)


@PROPERTY
@given(window=st.tuples(st.integers(1, 9), st.integers(1, 9)).filter(lambda w: max(w) > 6))
def test_any_occlusion_window_larger_than_the_image_is_named(model, images, window):
    with pytest.raises(ValueError, match=rf"window \({window[0]}, {window[1]}\) is larger than"):
        compute_saliency("occlusion", model, images, target=0, window=window, strides=1)


# ---- a model that raises mid-call is left as it was ---------------------------------------------


class Tripwire(keras.layers.Layer):
    """Identity that raises, in an eager call, once the model's weights no longer equal the
    ones it was armed with (i.e. while ``explanation_kept`` has the model thresholded)."""

    def arm(self, model):  # plain attribute: not tracked by Keras
        armed = [(w, w.numpy().copy()) for w in model.trainable_weights]
        object.__setattr__(self, "armed", armed)

    def call(self, x):
        armed = getattr(self, "armed", None)
        if armed is not None and tf.executing_eagerly():
            if any(not np.array_equal(w.numpy(), a) for w, a in armed):
                raise RuntimeError("tripwire: called on the thresholded model")
        return x


@pytest.mark.parametrize(("method", "options"), [("grad_cam", {}), ("gradient", {}),
                                                ("occlusion", {"window": 3})])
def test_a_model_raising_mid_call_in_explanation_kept_is_restored_bitwise(images, method, options):
    keras.utils.set_random_seed(1)
    tripwire = Tripwire(name="tripwire")
    subject = keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Conv2D(3, 3, padding="same", name="conv"), tripwire,
         keras.layers.Flatten(), keras.layers.Dense(3, name="head")], name="tripped",
    )
    tripwire.arm(subject)
    before = weights_snapshot(subject)
    scores = [np.abs(w.numpy()) for w in subject.trainable_weights]
    with pytest.raises(RuntimeError, match="tripwire"):
        explanation_kept(subject, scores, images, np.arange(N) % 3, thresholds=(0.5,),
                         method=method, replace="zero", **options)
    assert_weights_unchanged(subject, before)
