"""Localisation of saliency maps on images whose relevant region is known.

A task that plants its evidence in a known region (``tasks.planted_region``) lets a map be
scored against the truth directly, as Quantus's localisation family does:

* :func:`pointing_game` (Zhang et al. 2018, "Top-down Neural Attention by Excitation
  Backprop", sec. 5.1): a hit when the map's maximum lies in the region;
* :func:`relevance_rank_accuracy` (Arras et al. 2022, "CLEVR-XAI: A benchmark dataset for the
  ground truth evaluation of neural network explanations", sec. 4.2, as Quantus's
  ``RelevanceRankAccuracy``): the share of the region among the map's top ``K`` pixels, ``K``
  the region's size.

Both take the maps' absolute values by default (Quantus's ``abs=True``): a large negative
relevance is still a pixel the method points at. Both return one score per image in [0, 1].
"""

from __future__ import annotations

from typing import Any

import numpy as np

from importance.checks import check_seed
from importance.interpret.faithfulness import pixel_ranks


def check_maps_and_regions(maps: Any, regions: Any) -> tuple[np.ndarray, np.ndarray]:
    """``maps`` as float64 (N, H, W) and ``regions`` as a boolean (N, H, W) array.

    ``regions`` may be one (H, W) mask for every image or one per image.

    Raises:
        ValueError: Maps not rank 3 or not finite, regions of another shape, not boolean or 0/1,
            or an image whose region is empty or the whole image.
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3 or maps.shape[0] == 0:
        raise ValueError(f"maps must have shape (N, H, W) with N >= 1. Received: {maps.shape}")
    if not np.all(np.isfinite(maps)):
        raise ValueError("maps must be finite. Received NaN or inf values.")
    regions = np.asarray(regions)
    if regions.dtype != np.bool_:
        if not (np.issubdtype(regions.dtype, np.number) and np.isin(regions, (0, 1)).all()):
            raise ValueError(
                f"regions must be a boolean (or 0/1) mask. Received dtype: {regions.dtype}"
            )
        regions = regions.astype(bool)
    if regions.shape == maps.shape[1:]:
        regions = np.broadcast_to(regions, maps.shape)
    if regions.shape != maps.shape:
        raise ValueError(
            f"regions must have shape (H, W) = {maps.shape[1:]} or (N, H, W) = {maps.shape}. "
            f"Received: {regions.shape}"
        )
    sizes = regions.reshape(len(maps), -1).sum(axis=1)
    if (sizes == 0).any() or (sizes == regions[0].size).any():
        bad = int(np.flatnonzero((sizes == 0) | (sizes == regions[0].size))[0])
        raise ValueError(
            f"regions must mark some but not all pixels of each image. Received "
            f"{int(sizes[bad])} of {regions[0].size} pixels for image {bad}."
        )
    return maps, regions


def pointing_game(
    maps: Any, regions: Any, *, tolerance: int = 0, absolute: bool = True
) -> np.ndarray:
    """Pointing game (Zhang et al. 2018): 1 when the map's maximum falls in the region.

    A hit is counted when the maximum point lies within ``tolerance`` pixels (Chebyshev
    distance) of the region; the paper uses 15 pixels on 224-pixel images, the default here is
    0 (the region itself), as Quantus's ``PointingGame``. Tied maxima score the fraction of them
    that hit, so a constant map scores the region's share of the image (chance), not 1.

    Args:
        maps: (N, H, W) saliency maps.
        regions: (H, W) or (N, H, W) boolean masks of the relevant region.
        tolerance: Pixels the region is grown by (a non-negative integer).
        absolute: Score ``|maps|`` (default) rather than the signed maps.

    Returns:
        float64 (N,) hit scores in [0, 1].
    """
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, np.integer)) or tolerance < 0:
        raise ValueError(f"tolerance must be a non-negative integer. Received: {tolerance!r}")
    maps, regions = check_maps_and_regions(maps, regions)
    if tolerance:
        from scipy import ndimage

        square = np.ones((1, 2 * tolerance + 1, 2 * tolerance + 1), bool)
        regions = ndimage.binary_dilation(regions, structure=square)
    values = np.abs(maps) if absolute else maps
    flat = values.reshape(len(values), -1)
    top = flat == flat.max(axis=1, keepdims=True)
    return (top & regions.reshape(len(values), -1)).sum(axis=1) / top.sum(axis=1)


def relevance_rank_accuracy(
    maps: Any, regions: Any, *, absolute: bool = True, seed: int = 0
) -> np.ndarray:
    """Relevance rank accuracy (Arras et al. 2022, eq. 2; Quantus's ``RelevanceRankAccuracy``).

    With ``K`` the number of pixels in the image's region, the accuracy is
    ``|top_K(map) & region| / K``: the share of the ``K`` most relevant pixels that lie in the
    region. Ties in the ranking are broken in the seeded order of
    :func:`importance.interpret.faithfulness.pixel_ranks` (Quantus uses NumPy's sort order), so
    a constant map scores about the region's share of the image.

    Args:
        maps: (N, H, W) saliency maps.
        regions: (H, W) or (N, H, W) boolean masks of the relevant region.
        absolute: Rank ``|maps|`` (default) rather than the signed maps.
        seed: Seed of the tie-breaking order.

    Returns:
        float64 (N,) accuracies in [0, 1].
    """
    check_seed(seed)
    maps, regions = check_maps_and_regions(maps, regions)
    values = np.abs(maps) if absolute else maps
    ranks = pixel_ranks(values, seed=seed).reshape(len(values), -1)
    inside = regions.reshape(len(values), -1)
    k = inside.sum(axis=1, keepdims=True)
    return ((ranks < k) & inside).sum(axis=1) / k[:, 0]
