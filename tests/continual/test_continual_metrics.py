"""ACC, BWT and forgetting against hand-worked accuracy matrices."""

from __future__ import annotations

import numpy as np
import pytest

from importance.continual import metrics as cm

# R[i, j]: accuracy on task j after training task i. Task 0 improves while task 1 is learned
# (R[1, 0] > R[0, 0]), so forgetting (from the best earlier accuracy) differs from -BWT.
R3 = [[0.6, 0.1, 0.2], [0.8, 0.7, 0.3], [0.5, 0.6, 0.9]]


def test_three_tasks_by_hand():
    assert cm.average_accuracy(R3) == pytest.approx((0.5 + 0.6 + 0.9) / 3)
    assert cm.backward_transfer(R3) == pytest.approx(((0.5 - 0.6) + (0.6 - 0.7)) / 2)  # -0.1
    assert cm.forgetting(R3) == pytest.approx(((0.8 - 0.5) + (0.7 - 0.6)) / 2)  # 0.2


def test_two_tasks_forgetting_is_minus_bwt_and_positive_transfer_is_negative_forgetting():
    R = [[0.9, 0.2], [0.4, 0.95]]
    assert cm.summary(R) == pytest.approx({"acc": 0.675, "bwt": -0.5, "forgetting": 0.5})
    better = [[0.7, 0.2], [0.8, 0.9]]
    assert cm.backward_transfer(better) == pytest.approx(0.1)
    assert cm.forgetting(better) == pytest.approx(-0.1)


def test_against_a_loop_on_random_matrices():
    rng = np.random.default_rng(0)
    for size in range(2, 6):
        R = rng.uniform(size=(size, size))
        T = size - 1
        bwt = sum(R[T, j] - R[j, j] for j in range(T)) / T
        forget = sum(max(R[row, j] for row in range(T)) - R[T, j] for j in range(T)) / T
        assert cm.backward_transfer(R) == pytest.approx(bwt)
        assert cm.forgetting(R) == pytest.approx(forget)
        assert cm.average_accuracy(R) == pytest.approx(sum(R[T]) / size)


def test_single_task_and_bad_matrices():
    assert cm.average_accuracy([[0.7]]) == pytest.approx(0.7)
    assert np.isnan(cm.backward_transfer([[0.7]])) and np.isnan(cm.forgetting([[0.7]]))
    with pytest.raises(ValueError, match=r"square matrix .*Received shape: \(2, 3\)"):
        cm.average_accuracy(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="finite"):
        cm.forgetting([[0.5, np.nan], [0.5, 0.5]])
