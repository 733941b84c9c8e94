"""The cascading model-parameter randomisation test (Adebayo et al. 2018, "Sanity Checks for
Saliency Maps", NeurIPS, sec. 3.1).

A saliency map that explains a *model* must change when the model does. The test re-initialises
the model's layers one after the other from the top (logits first), cumulatively, and after each
step compares the maps of the partly random model with the trained model's maps on the same
images. A method whose maps stay similar with every layer random draws the input (edges, the
object), not what the network learnt; Adebayo et al. find this for guided backpropagation and
guided Grad-CAM, while Grad-CAM and the vanilla gradient change.

Similarity, per image, of the maps' absolute values (the paper's main figures; ``absolute=False``
compares the signed maps): the Spearman rank correlation
(:func:`importance.interpret.under_thresholding.rank_correlation`) and the structural similarity
index SSIM (:func:`ssim`, Wang et al. 2004) of the maps min-max normalised to [0, 1].

Each randomised weight is drawn again with its layer's own initialiser (``kernel_initializer``,
``bias_initializer``, ``gamma_initializer``, ...; the paper's "re-initialise with the
initialisation scheme used for training"), seeded; a weight whose layer has no initialiser for it
is drawn from a truncated normal of standard deviation 0.01, the paper's other scheme. Only
trainable weights are re-drawn (BatchNorm's moving statistics stay). The model's weights, all of
them, are restored bitwise when the test ends, also when the saliency method raises (unlike
Quantus's ``MPRT`` for Keras, which clones the model without its trained weights).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from importance.checks import check_seed
from importance.interpret.inputs import check_images, class_ids
from importance.interpret.registry import compute_saliency
from importance.interpret.under_thresholding import rank_correlation
from importance.layers import layer_groups

# The check passes when the mean Spearman similarity of the maps with every layer random to the
# trained model's maps is below this: less than half of their rank agreement survives a model
# that has learnt nothing. Adebayo et al. state no threshold; this one is the project's.
PASS_THRESHOLD = 0.5


@dataclasses.dataclass(frozen=True)
class Randomisation:
    """The result of one cascade.

    Attributes:
        layers: Names of the layers randomised, in order (top first); step ``i`` has
            ``layers[: i + 1]`` random.
        spearman: (L, N) rank correlation of each image's map after step ``i`` with its
            original map.
        ssim: (L, N) SSIM of the same pairs.
        maps: (L + 1, N, H, W): the original maps, then the maps after each step (only with
            ``keep_maps=True``; else None).
    """

    layers: tuple[str, ...]
    spearman: np.ndarray
    ssim: np.ndarray
    maps: np.ndarray | None = None

    @property
    def top_layer(self) -> float:
        """Mean Spearman similarity after the top layer alone is random."""
        return float(self.spearman[0].mean())

    @property
    def all_layers(self) -> float:
        """Mean Spearman similarity with every layer random."""
        return float(self.spearman[-1].mean())

    def passed(self, threshold: float = PASS_THRESHOLD) -> bool:
        """Whether the maps changed: mean Spearman with every layer random below ``threshold``."""
        return self.all_layers < threshold


def ssim(
    first: np.ndarray,
    second: np.ndarray,
    *,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
) -> np.ndarray:
    """Mean structural similarity of each pair of maps (N, H, W) -> (N,) (Wang et al. 2004).

    ``SSIM(x, y) = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2))``
    with Gaussian-weighted local means, variances and covariance (``window`` x ``window``,
    standard deviation ``sigma``; the paper's 11 and 1.5), ``C1 = (0.01 L)^2``,
    ``C2 = (0.03 L)^2``, ``L = data_range``, averaged over the windows that fit inside the image
    (as ``tf.image.ssim``). A window larger than the maps shrinks to their smaller side.
    """
    from numpy.lib.stride_tricks import sliding_window_view

    first = np.asarray(first, dtype=np.float64)
    second = np.asarray(second, dtype=np.float64)
    if first.shape != second.shape or first.ndim != 3:
        raise ValueError(
            f"first and second must be maps of one shape (N, H, W). Received: {first.shape} "
            f"and {second.shape}"
        )
    size = min(int(window), first.shape[1], first.shape[2])
    offsets = np.arange(size) - (size - 1) / 2
    g = np.exp(-(offsets**2) / (2 * sigma**2))
    kernel = np.outer(g, g) / np.outer(g, g).sum()

    def local(values: np.ndarray) -> np.ndarray:
        return np.einsum("nhwij,ij->nhw", sliding_window_view(values, (size, size), axis=(1, 2)),
                         kernel)  # fmt: skip

    mu_x, mu_y = local(first), local(second)
    var_x = local(first * first) - mu_x**2
    var_y = local(second * second) - mu_y**2
    cov = local(first * second) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return index.mean(axis=(1, 2))


def normalise_maps(maps: np.ndarray) -> np.ndarray:
    """Each map min-max scaled to [0, 1]; a constant map becomes all zeros."""
    maps = np.asarray(maps, dtype=np.float64)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0)


def randomisation_order(model: Any) -> list[tuple[Any, list[Any]]]:
    """The layers holding trainable weights, top (output side) first, each with its weights."""
    weights = model.trainable_weights
    groups = layer_groups(model)
    return [(layer, [weights[i] for i in indices]) for layer, indices in reversed(groups)]


def reinitialised(layer: Any, variable: Any, seed: int) -> np.ndarray:
    """A fresh value for ``variable`` from ``layer``'s initialiser for it, seeded."""
    import keras

    short = variable.name.split("/")[-1]
    candidates = (short, short.removesuffix("_kernel"), short.removesuffix("_weight"))
    initializer = None
    for name in candidates:
        initializer = getattr(layer, f"{name}_initializer", None)
        if initializer is not None:
            break
    if initializer is None:
        initializer = keras.initializers.TruncatedNormal(stddev=0.01, seed=seed)
    else:
        initializer = keras.initializers.get(initializer)
        config = initializer.get_config()
        if "seed" in config:
            initializer = initializer.__class__.from_config({**config, "seed": seed})
    value = initializer(tuple(variable.shape), dtype=variable.dtype)
    return np.asarray(keras.ops.convert_to_numpy(value))


def model_randomisation(
    model: Any,
    images: Any,
    *,
    target: Any,
    method: str | Callable[..., Any] = "grad_cam",
    options: Mapping[str, Any] | None = None,
    layers: Sequence[str] | None = None,
    absolute: bool = True,
    seed: int = 0,
    keep_maps: bool = False,
) -> Randomisation:
    """Cascading model-parameter randomisation (Adebayo et al. 2018) of one saliency method.

    Args:
        model: A Keras classifier; its weights are changed during the test and restored bitwise
            afterwards, whatever happens.
        images: (N, H, W, C) images.
        target: The class explained: one id, or one per image.
        method: A registered saliency method's name, or ``fn(model, images, *, target,
            **options) -> (N, H, W)``.
        options: Keyword options of the method.
        layers: Names of the layers to randomise, in the cascade's order (top first); default
            every layer with trainable weights.
        absolute: Compare the maps' absolute values (the paper's main comparison).
        seed: Seed of the re-drawn weights.
        keep_maps: Keep every step's maps in the result (for a figure).

    Returns:
        A :class:`Randomisation`.

    Raises:
        ValueError: Bad images or target, an unknown layer name, a model with no trainable
            weights; whatever the method raises (after the model is restored).
    """
    seed = check_seed(seed)
    images = check_images(images, model)
    class_ids(model, images, target)
    options = dict(options or {})
    order = randomisation_order(model)
    if not order:
        raise ValueError(f"model {model.name!r} has no trainable weights to randomise.")
    if layers is not None:
        by_name = {layer.name: (layer, variables) for layer, variables in order}
        unknown = [name for name in layers if name not in by_name]
        if unknown or not layers:
            raise ValueError(
                f"layers must name layers of model {model.name!r} that hold trainable weights "
                f"({', '.join(by_name)}). Received: {list(layers)!r}"
            )
        order = [by_name[name] for name in layers]

    def saliency(current: Any) -> np.ndarray:
        if callable(method):
            maps = np.asarray(method(current, images, target=target, **options), np.float64)
        else:
            maps = compute_saliency(method, current, images, target=target, **options)
        return np.abs(maps) if absolute else maps

    snapshot = [(variable, np.array(variable.numpy(), copy=True)) for variable in model.weights]
    try:
        original = saliency(model)
        steps, spearman, structural = [original], [], []
        reference = normalise_maps(original)
        for step, (layer, variables) in enumerate(order):
            for k, variable in enumerate(variables):
                state = np.random.SeedSequence([seed, step, k]).generate_state(1)[0]
                variable.assign(reinitialised(layer, variable, int(state & 0x7FFFFFFF)))
            maps = saliency(model)
            spearman.append(rank_correlation(original, maps))
            structural.append(ssim(reference, normalise_maps(maps)))
            if keep_maps:
                steps.append(maps)
    finally:
        for variable, value in snapshot:
            variable.assign(value)
    return Randomisation(
        layers=tuple(layer.name for layer, _ in order),
        spearman=np.stack(spearman),
        ssim=np.stack(structural),
        maps=np.stack(steps) if keep_maps else None,
    )
