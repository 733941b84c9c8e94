"""Trained quality bars over 3 seeds, and the planted task's ground truth.

Models are trained once per session into a temporary cache shared by these tests (the planted
ground-truth test reuses the quality test's models from it).
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import importance
import tasks
from tasks import planted

SEEDS = (0, 1, 2)
BARS = [
    ("mnist5k", "mlp", 0.90),
    ("mnist5k", "cnn", 0.93),
    ("digits", "mlp", 0.93),
    ("planted", "mlp", 0.85),  # chance is 0.25
]


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("task_cache")


@pytest.mark.slow
@pytest.mark.parametrize("name, variant, bar", BARS, ids=[f"{n}-{v}" for n, v, _ in BARS])
def test_trained_accuracy_meets_bar(name, variant, bar, shared_cache) -> None:
    task = tasks.get_task(name)
    accuracies = []
    for seed in SEEDS:
        run = tasks.trained(name, variant=variant, seed=seed, track=False, cache_dir=shared_cache)
        _, accuracy = importance.data.evaluate(run.model, task.test_data())
        assert run.history["test_accuracy"] == pytest.approx(accuracy)
        assert run.history["loss"][-1] < run.history["loss"][0]
        accuracies.append(accuracy)
    assert min(accuracies) >= bar, f"{name}/{variant} test accuracy per seed {accuracies} < {bar}"


def _first_kernel_auc(scores: np.ndarray) -> float:
    truth = planted.known_importance(tasks.get_task("planted").build_model(0))[0]
    return roc_auc_score(truth.ravel(), np.asarray(scores).ravel())


def _accuracy_with_rows_zeroed(model, rows) -> float:
    kernel = model.trainable_weights[0]
    original = kernel.numpy()
    zeroed = original.copy()
    zeroed[list(rows)] = 0.0
    kernel.assign(zeroed)
    try:
        return importance.data.evaluate(model, tasks.get_task("planted").test_data())[1]
    finally:
        kernel.assign(original)


@pytest.mark.slow
@pytest.mark.parametrize("seed", SEEDS)
def test_planted_truth_holds_and_magnitude_finds_it(seed, shared_cache) -> None:
    """The planted truth is real (removing the irrelevant rows costs nothing, removing the
    important ones drops to chance) and magnitude ranks the important rows above."""
    run = tasks.trained("planted", seed=seed, track=False, cache_dir=shared_cache)
    model = run.model
    _, accuracy = importance.data.evaluate(model, tasks.get_task("planted").test_data())
    assert _accuracy_with_rows_zeroed(model, planted.NOISE_INPUTS) >= accuracy - 0.01
    assert _accuracy_with_rows_zeroed(model, planted.SIGNAL_INPUTS) <= 0.35

    kernel = np.abs(model.trainable_weights[0].numpy())
    assert _first_kernel_auc(kernel) >= 0.95
    signal = kernel[list(planted.SIGNAL_INPUTS)].mean()
    noise = kernel[list(planted.NOISE_INPUTS)].mean()
    assert signal > 5 * noise
    if "magnitude" in importance.available_measures():
        scores = importance.compute_importance("magnitude", model)
        assert _first_kernel_auc(scores[0]) >= 0.95
