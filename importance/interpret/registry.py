"""The saliency-method registry: ``fn(model, images, *, target, **options) -> maps (N, H, W)``.

Registered like the measures::

    from importance.interpret import register_saliency, compute_saliency

    @register_saliency("my_map")                 # also bare: @register_saliency
    def my_map(model, images, *, target, **options): ...   # -> (N, H, W)

    available_saliency()                         # sorted names, built-ins and plugins
    maps = compute_saliency("grad_cam", model, images, target=labels)

Plugins register through the entry-point group ``importance.saliency`` (a module applying the
decorator); one that fails to import is reported by name with a warning. Orientation: a higher
value means a more important pixel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from importance.registry import Entry, Registry
from importance.validation import check_explained, checked_call

ENTRY_POINT_GROUP = "importance.saliency"
SALIENCY = Registry(
    "saliency method",
    group=ENTRY_POINT_GROUP,
    builtins="importance.interpret.builtin",
    decorator="register_saliency",
    signature="fn(model, images, *, target, **options)",
)

register_saliency = SALIENCY.register
unregister_saliency = SALIENCY.unregister


def available_saliency() -> list[str]:
    """Sorted names of the registered saliency methods."""
    return SALIENCY.names()


def get_saliency(name: str) -> Entry:
    """The registry entry of a saliency method. Raises KeyError listing the available ones."""
    return SALIENCY.get(name)


def compute_saliency(
    name: str, model: Any, images: Any, *, target: Any, **options: Any
) -> np.ndarray:
    """Run a registered saliency method and check its maps.

    Args:
        name: Registry name.
        model: A Keras classifier (outputs (N, classes)).
        images: (N, H, W, C) images.
        target: The class to explain: one id, or one per image.
        **options: The method's keyword options, over its registered defaults.

    Model, images and target are checked first, whatever the method (a plugin too), by
    :func:`importance.validation.check_explained`: a built single-input, single-output
    classifier, finite (N, H, W, C) images of its input shape, class ids in range.

    Returns:
        float64 maps (N, H, W).

    Raises:
        KeyError: Unknown method.
        ValueError: Bad model, images or target (naming the value), or the method returned
            another shape or non-finite values (naming it).
    """
    entry = get_saliency(name)
    checked = check_explained(model, images, target, from_logits=options.get("from_logits"))
    with checked_call(model, images, target, checked):
        maps = np.asarray(entry.fn(model, images, target=target, **{**entry.defaults, **options}))
    expected = tuple(np.shape(images)[:3])
    if maps.shape != expected:
        raise ValueError(
            f"Saliency method {name!r} returned shape {maps.shape}, expected {expected}."
        )
    if not np.all(np.isfinite(maps)):
        first = int(np.argmax(~np.isfinite(maps).reshape(len(maps), -1).all(axis=1)))
        raise ValueError(
            f"Saliency method {name!r} returned non-finite values for image {first} of finite "
            "images (a fault of the method or of the model's weights, not of the input)."
        )
    return maps.astype(np.float64)
