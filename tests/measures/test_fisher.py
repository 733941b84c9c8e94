"""Fisher diagonal (exact / sampled / empirical) and fisher_batch against slow loops in this file.

The references below loop over examples with their own GradientTape and log-probabilities; they
share no code with importance.per_example or importance.measures.fisher.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import importance as imp
from importance.measures.fisher import sample_labels
from importance.per_example import per_example_moment
from importance.testing import relative_error

N, BATCH = 16, 6  # three batches, the last one ragged
RTOL = 1e-5


def _log_probs(model, x, softmax: bool) -> tf.Tensor:
    out = model(x, training=False)
    return tf.math.log(out) if softmax else tf.nn.log_softmax(out)


def _grads(model, xi, classes, softmax):
    """Gradients of log p(c | xi) for each c in ``classes`` (float64), and p(. | xi)."""
    with tf.GradientTape(persistent=True) as tape:
        logp = _log_probs(model, xi, softmax)[0]
        values = [logp[c] for c in classes]
    grads = [
        [g.numpy().astype(np.float64) for g in tape.gradient(v, model.trainable_weights)] for v in values
    ]
    return grads, np.exp(logp.numpy().astype(np.float64))


def _grad(model, xi, c, softmax):
    return _grads(model, xi, [c], softmax)[0][0]


def reference_fisher(model, x, y, *, softmax: bool):
    """1/N sum_i sum_c w_ic g_ic**2, w = p (exact, y None) or one-hot of y."""
    total = [np.zeros(w.shape) for w in model.trainable_weights]
    num_classes = int(model.outputs[0].shape[-1])
    for i in range(len(x)):
        classes = list(range(num_classes)) if y is None else [int(y[i])]
        grads, p = _grads(model, x[i : i + 1], classes, softmax)
        for c, g_c in zip(classes, grads, strict=True):
            weight = p[c] if y is None else 1.0
            total = [t + weight * g**2 for t, g in zip(total, g_c, strict=True)]
    return [t / len(x) for t in total]


def reference_fisher_batch(model, x, y, *, batch_size: int, softmax: bool):
    """Mean over batches of (mean over the batch of per-example gradients)**2."""
    squares = []
    for start in range(0, len(x), batch_size):
        grads = [_grad(model, x[i : i + 1], int(y[i]), softmax) for i in range(start, min(start + batch_size, len(x)))]
        mean = [np.mean(gs, axis=0) for gs in zip(*grads, strict=True)]
        squares.append([m**2 for m in mean])
    return [np.mean(s, axis=0) for s in zip(*squares, strict=True)]


@pytest.fixture(params=["dense", "conv"])
def arch(request):
    return request.param


@pytest.fixture
def setup(arch, request, build_dense, build_conv, make_data):
    def make(softmax: bool):
        build = build_dense if arch == "dense" else build_conv
        model = build(softmax=softmax, seed=1)
        x, y = make_data(model.inputs[0].shape[1:], n=N, seed=2)
        return model, (x, y)

    return make


@pytest.mark.parametrize("softmax", [False, True], ids=["logits", "softmax"])
@pytest.mark.parametrize("labels", ["exact", "empirical"])
def test_fisher_matches_per_example_loop(setup, softmax, labels):
    model, (x, y) = setup(softmax)
    scores = imp.compute_importance("fisher", model, (x, y), labels=labels, batch_size=BATCH)
    expected = reference_fisher(model, x, None if labels == "exact" else y, softmax=softmax)
    assert relative_error(scores, expected) <= RTOL


@pytest.mark.parametrize("softmax", [False, True], ids=["logits", "softmax"])
def test_fisher_sampled_matches_loop_on_the_same_sampled_labels(setup, softmax):
    model, data = setup(softmax)
    drawn = sample_labels(model, data, seed=3, batch_size=BATCH)
    assert drawn.shape == (N,) and set(drawn) <= {0, 1, 2}
    scores = imp.compute_importance("fisher_sampled", model, data, seed=3, batch_size=BATCH)
    assert relative_error(scores, reference_fisher(model, data[0], drawn, softmax=softmax)) <= RTOL


@pytest.mark.slow
@pytest.mark.parametrize("softmax", [False, True], ids=["logits", "softmax"])
def test_fisher_argmax_matches_loop_on_the_models_predictions(setup, softmax):
    """FACIL / Hsu et al. 2018: the label is the model's argmax prediction (from a NumPy argmax
    of its own outputs here), one squared per-example gradient per example."""
    model, (x, y) = setup(softmax)
    predicted = np.argmax(np.asarray(model(x, training=False)), axis=1)
    assert not np.array_equal(predicted, y)  # otherwise this would not tell argmax from empirical
    scores = imp.compute_importance("fisher_argmax", model, (x, y), batch_size=BATCH)
    assert relative_error(scores, reference_fisher(model, x, predicted, softmax=softmax)) <= RTOL
    empirical = imp.compute_importance("fisher_empirical", model, (x, y), batch_size=BATCH)
    assert relative_error(scores, empirical) > 1e-2


@pytest.mark.parametrize("method", ["loop", "vmap"])
def test_fisher_methods_match_reference(build_dense, make_data, method):
    model = build_dense(seed=4)
    x, y = make_data((6,), n=8, seed=5)
    for labels, target in [("exact", None), ("empirical", y)]:
        scores = imp.compute_importance("fisher", model, (x, y), labels=labels, method=method)
        assert relative_error(scores, reference_fisher(model, x, target, softmax=False)) <= RTOL


def test_registered_variants_are_fisher_with_their_labels(dense_model, dense_data):
    assert "fisher_exact" not in imp.available_measures()  # `fisher` is the exact one
    for name, labels in [("fisher_sampled", "sampled"), ("fisher_empirical", "empirical"),
                         ("fisher_argmax", "argmax")]:
        assert imp.get_measure(name).defaults == {"labels": labels}
        via_name = imp.compute_importance(name, dense_model, dense_data)
        via_option = imp.compute_importance("fisher", dense_model, dense_data, labels=labels)
        assert all(np.array_equal(a, b) for a, b in zip(via_name, via_option, strict=True))
    assert imp.get_measure("fisher").defaults == {}


def test_sampled_labels_depend_on_the_seed_only(dense_model, dense_data):
    a = sample_labels(dense_model, dense_data, seed=0)
    assert np.array_equal(a, sample_labels(dense_model, dense_data, seed=0))
    assert not np.array_equal(a, sample_labels(dense_model, dense_data, seed=1))
    one = imp.compute_importance("fisher_sampled", dense_model, dense_data, seed=7)
    two = imp.compute_importance("fisher_sampled", dense_model, dense_data, seed=7)
    assert all(np.array_equal(p, q) for p, q in zip(one, two, strict=True))


def test_sampled_fisher_is_unbiased_for_exact(build_dense, make_data):
    """With many draws per example, the sampled Fisher approaches the exact one (loosely).

    The 16 examples are repeated 512 times, so each gets 512 independent draws (every row draws
    its own label); the exact Fisher is unchanged by the repetition.
    """
    model = build_dense(seed=6)
    x, y = make_data((6,), n=16, seed=6)
    exact = imp.compute_importance("fisher", model, (x, y))
    repeats = 512
    many = (np.tile(x, (repeats, 1)), np.tile(y, repeats))
    mean = imp.compute_importance("fisher_sampled", model, many)
    assert relative_error(mean, exact) < 0.05
    # A single draw is much further away: the test is not passing trivially.
    assert relative_error(imp.compute_importance("fisher_sampled", model, (x, y)), exact) > 0.1


@pytest.mark.parametrize("softmax", [False, True], ids=["logits", "softmax"])
def test_fisher_batch_is_its_loop_definition_and_differs_from_per_example(setup, softmax):
    model, (x, y) = setup(softmax)
    scores = imp.compute_importance("fisher_batch", model, (x, y), batch_size=BATCH)
    expected = reference_fisher_batch(model, x, y, batch_size=BATCH, softmax=softmax)
    assert relative_error(scores, expected) <= RTOL
    empirical = imp.compute_importance("fisher_empirical", model, (x, y), batch_size=BATCH)
    assert relative_error(scores, empirical) > 0.3


def test_fisher_batch_with_batches_of_one_is_the_empirical_fisher(dense_model, dense_data):
    one = imp.compute_importance("fisher_batch", dense_model, dense_data, batch_size=1)
    empirical = imp.compute_importance("fisher_empirical", dense_model, dense_data)
    assert relative_error(one, empirical) <= RTOL


@pytest.mark.parametrize("name", ["fisher", "fisher_sampled", "fisher_empirical", "fisher_batch"])
@pytest.mark.parametrize("arch_name", ["dense", "conv"])
def test_planted_zero_inputs_get_exactly_zero_fisher(name, arch_name, build_dense, build_conv, make_data):
    """Inputs that are always zero cannot move the loss through their outgoing kernel weights."""
    if arch_name == "dense":
        model = build_dense(seed=8)
        x, y = make_data((6,), seed=8)
        x[:, [1, 4]] = 0.0
        kernel = imp.compute_importance(name, model, (x, y), batch_size=BATCH)[0]
        assert np.all(kernel[[1, 4], :] == 0.0)
        assert np.all(kernel[[0, 2, 3, 5], :] > 0.0)
    else:
        model = build_conv(seed=8)
        x, y = make_data((6, 6, 2), seed=8)
        x[..., 1] = 0.0
        kernel = imp.compute_importance(name, model, (x, y), batch_size=BATCH)[0]
        assert np.all(kernel[:, :, 1, :] == 0.0)
        assert np.all(kernel[:, :, 0, :] > 0.0)


def test_max_examples_uses_the_first_examples_from_arrays_and_datasets(dense_model, dense_data):
    x, y = dense_data
    expected = reference_fisher(dense_model, x[:13], y[:13], softmax=False)
    from_arrays = imp.compute_importance("fisher_empirical", dense_model, (x, y), max_examples=13, batch_size=5)
    dataset = tf.data.Dataset.from_tensor_slices((x, np.eye(3, dtype=np.float32)[y])).batch(5)
    from_dataset = imp.compute_importance("fisher_empirical", dense_model, dataset, max_examples=13)
    assert relative_error(from_arrays, expected) <= RTOL
    assert relative_error(from_dataset, expected) <= RTOL


def test_from_logits_can_be_given_explicitly(build_dense, dense_data):
    model = build_dense(softmax=True)
    auto = imp.compute_importance("fisher", model, dense_data)
    explicit = imp.compute_importance("fisher", model, dense_data, from_logits=False)
    assert all(np.array_equal(a, b) for a, b in zip(auto, explicit, strict=True))
    wrong = imp.compute_importance("fisher", model, dense_data, from_logits=True)
    assert relative_error(wrong, auto) > 1e-3


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"labels": "true"}, "labels must be one of .* Received: 'true'"),
        ({"method": "fast"}, "method must be one of .* Received: 'fast'"),
        ({"seed": -1}, "seed must be a non-negative integer. Received: -1"),
        ({"max_examples": 0}, "max_examples must be a positive integer or None. Received: 0"),
        ({"batch_size": 0}, "batch_size must be a positive integer. Received: 0"),
        ({"from_logits": "yes"}, "from_logits must be True, False or None. Received: 'yes'"),
    ],
)
def test_bad_options_are_named(dense_model, dense_data, options, message):
    with pytest.raises(ValueError, match=message):
        imp.compute_importance("fisher", dense_model, dense_data, **options)


@pytest.mark.parametrize("moment", ["square", "abs"])
@pytest.mark.parametrize("with_targets", [False, True], ids=["objective", "targets"])
def test_per_example_loop_and_vmap_agree(arch, build_dense, build_conv, make_data, moment, with_targets):
    model = (build_dense if arch == "dense" else build_conv)(seed=9)
    x, y = make_data(model.inputs[0].shape[1:], n=8, seed=9)
    if with_targets:
        def objective(outputs, targets):
            return tf.gather(tf.nn.log_softmax(outputs), targets, axis=1, batch_dims=1)
        kwargs = {"targets": tf.constant(y)}
    else:
        def objective(outputs):
            return tf.reduce_sum(tf.square(outputs), axis=-1)
        kwargs = {}
    loop = per_example_moment(model, x, objective, moment=moment, method="loop", **kwargs)
    vmap = per_example_moment(model, x, objective, moment=moment, method="vmap", **kwargs)
    assert relative_error(vmap, loop) <= RTOL
    assert all(float(tf.reduce_sum(v)) > 0 for v in vmap)


def test_freezing_a_layer_after_a_first_call_is_seen(build_dense, dense_data):
    model = build_dense()
    assert len(imp.compute_importance("fisher", model, dense_data)) == 4
    model.layers[0].trainable = False
    scores = imp.compute_importance("fisher", model, dense_data)
    assert [s.shape for s in scores] == [(8, 3), (3,)]
    assert relative_error(scores, reference_fisher(model, dense_data[0], None, softmax=False)) <= RTOL


def test_sampled_labels_are_the_same_for_every_method(arch, build_dense, build_conv, make_data):
    """The labels are drawn inside the objective: loop, vmap and factorized must draw alike."""
    model = (build_dense if arch == "dense" else build_conv)(seed=10)
    data = make_data(model.inputs[0].shape[1:], n=N, seed=10)
    drawn = sample_labels(model, data, seed=11, batch_size=BATCH)
    expected = reference_fisher(model, data[0], drawn, softmax=False)
    for method in ("loop", "vmap", "factorized"):
        scores = imp.compute_importance("fisher_sampled", model, data, seed=11, batch_size=BATCH, method=method)
        assert relative_error(scores, expected) <= RTOL, method
