"""Pointing game (Zhang et al. 2018) and relevance rank accuracy (Arras et al. 2022, as Quantus
defines it) against plain loops, with chance scores for maps that point nowhere."""

from __future__ import annotations

import numpy as np
import pytest

from importance.interpret.localisation import pointing_game, relevance_rank_accuracy


def _regions(rng, n, shape=(7, 9)):
    regions = rng.random((n, *shape)) < 0.3
    regions[:, 0, 0], regions[:, -1, -1] = True, False  # some but not all pixels
    return regions


def test_pointing_game_matches_a_loop_and_grows_with_tolerance():
    rng = np.random.default_rng(0)
    maps, regions = rng.normal(size=(20, 7, 9)), _regions(rng, 20)
    expected = []
    for m, region in zip(maps, regions, strict=True):
        r, c = np.unravel_index(np.argmax(np.abs(m)), m.shape)
        expected.append(float(region[r, c]))
    np.testing.assert_array_equal(pointing_game(maps, regions), expected)
    signed = [float(region[np.unravel_index(np.argmax(m), m.shape)])
              for m, region in zip(maps, regions, strict=True)]  # fmt: skip
    np.testing.assert_array_equal(pointing_game(maps, regions, absolute=False), signed)
    loose = []
    for m, region in zip(maps, regions, strict=True):
        r, c = np.unravel_index(np.argmax(np.abs(m)), m.shape)
        near = region[max(r - 1, 0) : r + 2, max(c - 1, 0) : c + 2]
        loose.append(float(near.any()))
    np.testing.assert_array_equal(pointing_game(maps, regions, tolerance=1), loose)


def test_tied_maxima_score_their_share_so_a_constant_map_scores_chance():
    region = np.zeros((4, 5), bool)
    region[:2, :2] = True
    np.testing.assert_allclose(pointing_game(np.ones((1, 4, 5)), region), [4 / 20])
    two = np.zeros((1, 4, 5))
    two[0, 0, 0] = two[0, 3, 4] = 1.0
    np.testing.assert_allclose(pointing_game(two, region), [0.5])


def test_relevance_rank_accuracy_matches_quantus_definition_by_loop():
    rng = np.random.default_rng(1)
    maps, regions = rng.normal(size=(20, 7, 9)), _regions(rng, 20)
    expected = []
    for m, region in zip(maps, regions, strict=True):
        k = int(region.sum())
        top = np.argsort(np.abs(m).ravel())[-k:]  # Quantus: the k highest |a|
        expected.append(len(np.intersect1d(top, np.flatnonzero(region.ravel()))) / k)
    np.testing.assert_allclose(relevance_rank_accuracy(maps, regions), expected)


def test_relevance_rank_accuracy_of_the_truth_is_one_and_of_a_constant_map_chance():
    region = np.zeros((10, 10), bool)
    region[2:5, 3:8] = True
    assert relevance_rank_accuracy(region[None] * 2.0 + 0.5, region)[0] == 1.0
    flat = relevance_rank_accuracy(np.zeros((400, 10, 10)), region, seed=0)
    assert abs(flat.mean() - 0.15) < 0.02


@pytest.mark.parametrize(
    "maps, regions, message",
    [
        (np.zeros((2, 4, 4)), np.zeros((4, 4), bool), "regions must mark some but not all"),
        (np.zeros((2, 4, 4)), np.ones((4, 4), bool), "Received 16 of 16 pixels for image 0"),
        (np.zeros((2, 4, 4)), np.ones((4, 5), bool), r"regions must have shape \(H, W\)"),
        (np.zeros((2, 4, 4)), np.full((4, 4), 0.5), "regions must be a boolean"),
        (np.zeros((4, 4)), np.eye(4, dtype=bool), r"maps must have shape \(N, H, W\)"),
        (np.full((1, 4, 4), np.nan), np.eye(4, dtype=bool), "maps must be finite"),
    ],
)
def test_bad_input_is_named(maps, regions, message):
    for score in (pointing_game, relevance_rank_accuracy):
        with pytest.raises(ValueError, match=message):
            score(maps, regions)
    with pytest.raises(ValueError, match="tolerance must be a non-negative integer. Received: -1"):
        pointing_game(np.zeros((1, 4, 4)), np.eye(4, dtype=bool), tolerance=-1)
