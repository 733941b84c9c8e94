"""The compiled trainer: determinism, what online measures see, penalties, history, errors."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

import importance
from tasks import models
from tasks.trainer import make_optimizer, train


def _data(n: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 6)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(np.int32) + 2 * (x[:, 2] > 0).astype(np.int32)
    return x, y


def _model(seed: int = 0):
    return models.mlp((6,), 4, hidden=(8,), seed=seed)


class _LastStep:
    """A duck-typed recorder keeping the last observed (grads, before, after) and a step count."""

    def __init__(self, model):
        shapes = [tuple(w.shape) for w in model.trainable_weights]
        self.grads = [tf.Variable(tf.zeros(s)) for s in shapes]
        self.before = [tf.Variable(tf.zeros(s)) for s in shapes]
        self.after = [tf.Variable(tf.zeros(s)) for s in shapes]
        self.calls = tf.Variable(0)

    def observe(self, grads, before, after):
        for store, values in ((self.grads, grads), (self.before, before), (self.after, after)):
            for var, value in zip(store, values, strict=True):
                var.assign(value)
        self.calls.assign_add(1)


def test_same_seed_same_weights_other_seed_differs() -> None:
    data = _data()
    runs = []
    for seed in (1, 1, 2):
        model = _model(0)
        history = train(model, data, epochs=3, batch_size=16, learning_rate=0.01, seed=seed)
        runs.append((model.get_weights(), history))
    for a, b in zip(runs[0][0], runs[1][0], strict=True):
        np.testing.assert_array_equal(a, b)
    assert runs[0][1]["loss"] == runs[1][1]["loss"]
    assert any(not np.array_equal(a, c) for a, c in zip(runs[0][0], runs[2][0], strict=True))  # other order


def test_training_learns_and_history_is_per_epoch() -> None:
    data = _data(256)
    model = _model()
    before = importance.data.evaluate(model, data)[0]
    history = train(model, data, epochs=15, batch_size=32, learning_rate=0.02, validation_data=data)
    assert set(history) == {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds"}
    assert all(len(v) == 15 for v in history.values())
    assert history["loss"][-1] < history["loss"][0] < before * 1.01
    loss, acc = importance.data.evaluate(model, data)
    assert history["val_loss"][-1] == pytest.approx(loss, rel=1e-5)
    assert history["val_accuracy"][-1] == pytest.approx(acc) and acc > 0.85


def test_recorder_sees_task_gradient_and_weights_not_the_penalty() -> None:
    """One full-batch step: recorder gets d(task loss)/dw at the old weights, before and after;
    the penalty's gradient is applied to the weights but never shown to the recorder."""
    x, y = _data(32)
    model = _model()
    initial = [w.numpy() for w in model.trainable_weights]
    with tf.GradientTape() as tape:
        logits = model(x, training=True)
        task_loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    expected_grads = [g.numpy() for g in tape.gradient(task_loss, model.trainable_weights)]

    def penalty(m):
        return 5.0 * tf.add_n([tf.reduce_sum(tf.square(w.value)) for w in m.trainable_weights])

    recorder = _LastStep(model)
    train(model, (x, y), epochs=1, batch_size=32, learning_rate=0.1, optimizer="sgd",
          recorder=recorder, penalty=penalty)
    assert int(recorder.calls.numpy()) == 1
    for got, want in zip(recorder.grads, expected_grads, strict=True):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-7)
    for got, want in zip(recorder.before, initial, strict=True):
        np.testing.assert_array_equal(got.numpy(), want)
    for got, w, g0, w0 in zip(recorder.after, model.trainable_weights, expected_grads, initial, strict=True):
        np.testing.assert_array_equal(got.numpy(), w.numpy())
        # Plain SGD: w1 = w0 - lr * (task grad + penalty grad), penalty grad = 10 * w0.
        np.testing.assert_allclose(w.numpy(), w0 - 0.1 * (g0 + 10.0 * w0), rtol=1e-5, atol=1e-6)


def test_recorder_counts_every_step_with_real_recorder() -> None:
    data = _data(100)
    model = _model()
    recorder = importance.track(model, patch_fit=False)
    train(model, data, epochs=2, batch_size=32, learning_rate=0.01, recorder=recorder)
    assert recorder.num_steps == 2 * 4  # ceil(100 / 32) steps per epoch
    assert importance.online.recorder_for(model) is recorder


def test_si_from_trainer_matches_its_definition() -> None:
    """If SI is registered: omega = sum(-g * dw) / (total dw^2 + xi), from the trainer's steps."""
    if "si" not in importance.available_measures():
        pytest.skip("the si measure is not registered yet")
    x, y = _data(64)
    model = _model()
    start = [w.numpy().astype(np.float64) for w in model.trainable_weights]
    manual = [np.zeros_like(s) for s in start]
    last = _LastStep(model)

    class Both:
        def __init__(self, recorder):
            self.recorder = recorder

        def observe(self, grads, before, after):
            self.recorder.observe(grads, before, after)
            last.observe(grads, before, after)

    recorder = importance.track(model, measures=["si"], patch_fit=False)
    for epoch in range(3):
        train(model, (x, y), epochs=1, batch_size=64, learning_rate=0.05, optimizer="sgd",
              recorder=Both(recorder), seed=epoch)
        for m, g, b, a in zip(manual, last.grads, last.before, last.after, strict=True):
            m += -g.numpy().astype(np.float64) * (a.numpy() - b.numpy())
    scores = importance.compute_importance("si", model, xi=1e-3, clip=False)
    end = [w.numpy().astype(np.float64) for w in model.trainable_weights]
    for s, m, e, b in zip(scores, manual, end, start, strict=True):
        np.testing.assert_allclose(s, m / ((e - b) ** 2 + 1e-3), rtol=2e-3, atol=1e-6)


def test_verbose_prints_one_line_per_epoch(capsys) -> None:
    seen = []
    train(_model(), _data(), epochs=2, batch_size=32, learning_rate=0.01, verbose=True,
          on_epoch_end=lambda epoch, logs: seen.append((epoch, sorted(logs))))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch ")]
    assert [line.split(" - ")[0] for line in lines] == ["epoch 1/2", "epoch 2/2"]
    assert seen == [(0, ["accuracy", "epoch_seconds", "loss"]), (1, ["accuracy", "epoch_seconds", "loss"])]


def test_zero_epochs_leaves_weights() -> None:
    model = _model()
    before = model.get_weights()
    history = train(model, _data(), epochs=0, batch_size=8, learning_rate=0.1)
    assert history["loss"] == []
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"epochs": -1}, "epochs must be an integer >= 0. Received: -1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1. Received: 0"),
        ({"learning_rate": 0.0}, "learning_rate must be a positive number. Received: 0.0"),
        ({"optimizer": "adagrad"}, "optimizer must be one of .* Received: 'adagrad'"),
        ({"seed": 1.5}, "seed must be a non-negative integer. Received: 1.5"),
        ({"weight_decay": 0.1}, "weight_decay needs optimizer='adamw'. Received: optimizer='adam'"),
    ],
)
def test_bad_options_are_named(options, message) -> None:
    kwargs = {"epochs": 1, "batch_size": 8, "learning_rate": 0.01, **options}
    with pytest.raises(ValueError, match=message):
        train(_model(), _data(), **kwargs)


def test_optimizers_by_name() -> None:
    for name in ("adam", "adamw", "sgd", "momentum", "rmsprop"):
        opt = make_optimizer(name, learning_rate=0.5)
        assert float(opt.learning_rate.numpy()) == pytest.approx(0.5)
    assert make_optimizer("momentum", learning_rate=0.1).momentum == pytest.approx(0.9)
    assert make_optimizer("adamw", learning_rate=0.1, weight_decay=0.2).weight_decay == pytest.approx(0.2)


@pytest.mark.slow
def test_cnn_training_is_deterministic() -> None:
    """Convolutions too: same seed, bit-identical weights (TF op determinism is on)."""
    import tasks

    task = tasks.get_task("mnist5k")
    x, y = task.train_data()
    runs = []
    for _ in range(2):
        model = task.build_model(0, "cnn")
        train(model, (x[:300], y[:300]), epochs=1, batch_size=50, learning_rate=0.002, seed=5)
        runs.append(model.get_weights())
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)
