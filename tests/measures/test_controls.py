"""Layer-shuffled controls: a permutation of the base measure's scores within each layer."""

from __future__ import annotations

import numpy as np
import pytest

import importance as imp


def _layer_values(scores, groups):
    return [np.sort(np.concatenate([scores[i].ravel() for i in members])) for members in groups]


GROUPS = [[0, 1], [2, 3]]  # hidden kernel+bias, head kernel+bias of the tiny Dense model


def test_shuffled_magnitude_keeps_each_layers_scores(dense_model):
    base = imp.compute_importance("magnitude", dense_model)
    shuffled = imp.compute_importance("shuffled_magnitude", dense_model, seed=3)
    for got, want in zip(_layer_values(shuffled, GROUPS), _layer_values(base, GROUPS), strict=True):
        np.testing.assert_array_equal(got, want)
    assert not all(np.array_equal(a, b) for a, b in zip(shuffled, base, strict=True))


def test_kernel_and_bias_are_shuffled_together(dense_model):
    base = imp.compute_importance("magnitude", dense_model)
    shuffled = imp.compute_importance("shuffled_magnitude", dense_model, seed=0)
    moved_in = np.isin(shuffled[3], base[2]).any() or np.isin(shuffled[1], base[0]).any()
    assert moved_in, "no kernel score ever lands on a bias: weights are shuffled separately"
    assert not np.isin(shuffled[0], base[2]).any()  # never across layers


def test_same_seed_same_scores_other_seed_other_scores(conv_model):
    a = imp.compute_importance("shuffled_magnitude", conv_model, seed=1)
    b = imp.compute_importance("shuffled_magnitude", conv_model, seed=1)
    c = imp.compute_importance("shuffled_magnitude", conv_model, seed=2)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(np.array_equal(p, q) for p, q in zip(a, c, strict=True))


def test_shuffled_fisher_passes_options_to_its_base(dense_model, dense_data):
    assert imp.get_measure("shuffled_fisher").defaults == {"base": "fisher"}
    base = imp.compute_importance("fisher", dense_model, dense_data, labels="empirical")
    shuffled = imp.compute_importance("shuffled_fisher", dense_model, dense_data, labels="empirical")
    for got, want in zip(_layer_values(shuffled, GROUPS), _layer_values(base, GROUPS), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_any_registered_base_can_be_shuffled(dense_model):
    base = imp.compute_importance("random", dense_model, seed=4)
    shuffled = imp.compute_importance("shuffled_magnitude", dense_model, base="random", seed=4)
    for got, want in zip(_layer_values(shuffled, GROUPS), _layer_values(base, GROUPS), strict=True):
        np.testing.assert_array_equal(got, want)


def test_bad_bases_are_named(dense_model):
    with pytest.raises(KeyError, match="Unknown measure 'magnitud'. Available: .*magnitude"):
        imp.compute_importance("shuffled_magnitude", dense_model, base="magnitud")
    with pytest.raises(ValueError, match="Received: 'shuffled_fisher'"):
        imp.compute_importance("shuffled_magnitude", dense_model, base="shuffled_fisher")
