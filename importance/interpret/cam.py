"""Class activation maps: the layer search and a differentiable core for Grad-CAM and HiResCAM.

:func:`cam_pass` runs the model once and returns a convolution's activations ``A`` (N, h, w, K),
the gradients ``dy_c/dA`` of each example's target-class score and the model's outputs. It is
built on :class:`tf.GradientTape` with no NumPy in the path, so it can run inside a training step:
an outer tape differentiates the maps made from it (:func:`grad_cam_maps`, :func:`hires_cam_maps`)
with respect to the model's weights.

The saliency methods (:func:`cam_map`, :func:`grad_cam`, :func:`hires_cam` and the variants)
explain the centred class score of :func:`importance.interpret.outputs.class_scores`: the
target's logit minus the mean logit (``log p`` standing for the logits of a probability model),
so a softmax head and a logits head give the same maps. :func:`cam_pass` differentiates the raw
output column by default (``score="output"``: what a training step on a logits model, such as
the CAM penalty, differentiates), or that centred score (``score="centred"``).

References:
    Selvaraju et al. 2017, "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization". Draelos & Carin 2020, "Use HiResCAM instead of Grad-CAM for faithful
    explanations of convolutional neural networks".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

import keras
import numpy as np
import tensorflow as tf

from importance.checks import check_choice
from importance.interpret.outputs import class_scores
from importance.interpret.registry import register_saliency
from importance.layers import model_layers
from importance.validation import (
    check_explained,
    check_feature_map,
    check_images,
    check_probability_outputs,
    check_target,
    known_output_kind,
    output_kind,
)

SCORES = ("output", "centred")
CONV_TYPES = (
    keras.layers.Conv2D,
    keras.layers.SeparableConv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.Conv2DTranspose,
)


class CamPass(NamedTuple):
    """One forward pass seen by a CAM: everything is a ``tf.Tensor``.

    Attributes:
        activations: The layer's output ``A``, shape (N, h, w, K).
        gradients: ``d y_c / d A`` for each example's target class ``c``, same shape.
        outputs: The model's outputs, shape (N, classes), from the same forward pass.
    """

    activations: tf.Tensor
    gradients: tf.Tensor
    outputs: tf.Tensor


def find_cam_layer(model: keras.Model, layer: str | keras.layers.Layer | None = None) -> Any:
    """The layer a CAM explains: the named one, or the last 2-D convolution of the model.

    Searches Sequential, functional and nested Keras 3 models (a model used as a layer is searched
    inside). "Last" means last in the order of ``model.layers``, depth first.

    Args:
        model: A Keras model.
        layer: A layer name, a layer object of the model, or None for the last convolution.

    Returns:
        The layer object.

    Raises:
        ValueError: ``model`` has no 2-D convolution (the message names the model), or no layer
            has the given name (the message lists the layer names).
    """
    layers = list(model_layers(model))
    if layer is None:
        convs = [candidate for candidate in layers if isinstance(candidate, CONV_TYPES)]
        if not convs:
            raise ValueError(
                f"Model {model.name!r} has no 2-D convolution layer, so a class activation map "
                f"has no layer to explain. Pass layer=<name of a layer with (N, h, w, K) output>."
            )
        return convs[-1]
    if isinstance(layer, keras.layers.Layer):
        if not any(candidate is layer for candidate in layers):
            raise ValueError(f"layer {layer.name!r} is not a layer of model {model.name!r}.")
        return layer
    for candidate in layers:
        if candidate.name == layer:
            return candidate
    raise ValueError(
        f"Unknown layer {layer!r} in model {model.name!r}. "
        f"Available: {', '.join(candidate.name for candidate in layers)}"
    )


@contextlib.contextmanager
def watch_layer_output(layer: Any, tape: tf.GradientTape) -> Iterator[list[tf.Tensor]]:
    """While active, every call of ``layer`` appends its (watched) output to the yielded list.

    Replaces the layer's ``call`` on the instance and restores it whatever happens.
    """
    captured: list[tf.Tensor] = []
    original = layer.call
    had_own = "call" in vars(layer)

    def watched_call(*args: Any, **kwargs: Any) -> Any:
        output = original(*args, **kwargs)
        tape.watch(output)
        captured.append(output)
        return output

    object.__setattr__(layer, "call", watched_call)
    try:
        yield captured
    finally:
        if had_own:
            object.__setattr__(layer, "call", original)
        else:
            object.__delattr__(layer, "call")


def cam_pass(
    model: keras.Model,
    images: Any,
    target: Any,
    *,
    layer: str | keras.layers.Layer | None = None,
    training: bool = False,
    score: str = "output",
    from_logits: bool | None = None,
) -> CamPass:
    """Activations of a layer and the target-class score's gradients w.r.t. them, in one pass.

    Signature: ``cam_pass(model, images, target, *, layer=None, training=False,
    score="output", from_logits=None) -> CamPass``.

    Differentiable: no NumPy between the weights and the result, so inside an outer
    ``tf.GradientTape`` (e.g. a training step) the returned tensors, and maps made from them with
    :func:`grad_cam_maps` / :func:`hires_cam_maps`, can be differentiated w.r.t.
    ``model.trainable_weights``. ``CamPass.outputs`` comes from the same forward pass, so a
    training step can compute its loss from it without a second pass.

    Args:
        model: A Keras model with outputs (N, classes).
        images: (N, H, W, C) images (array or tensor).
        target: One class id for all images, or one per image (N,).
        layer: The layer to explain (name or object); default the last 2-D convolution
            (:func:`find_cam_layer`).
        training: Passed to the model call (True inside a training step).
        score: What ``y_c`` is: ``"output"``, the model's output column ``c`` as it is (the
            logit of a logits model); ``"centred"``, the centred class score of
            :func:`importance.interpret.outputs.class_scores` (the same for a softmax head and
            a logits head; what the saliency methods explain).
        from_logits: For ``score="centred"``: whether the model outputs logits; decided on the
            images by :func:`importance.validation.output_kind` when None (inside a
            ``tf.function`` the decision must already be known for the model, or given).

    Returns:
        ``CamPass(activations, gradients, outputs)``.

    Raises:
        ValueError: Bad images, a target outside the classes, no convolution / unknown layer, a
            layer whose output is not (N, h, w, K), or a layer called more than once per pass.
    """
    check_choice("score", score, SCORES)
    images = check_images(images, model)
    chosen = find_cam_layer(model, layer)
    check_feature_map(chosen, model=model)
    eager = tf.executing_eagerly()
    if score == "centred" and from_logits is None:
        kind = output_kind(model, images) if eager else known_output_kind(model)
        if kind is None:
            raise ValueError(
                "cam_pass(score='centred') inside a tf.function needs from_logits=True/False, or "
                "a model whose outputs were seen eagerly once. Received from_logits=None."
            )
        from_logits = kind == "logits"
    with tf.GradientTape() as tape:
        with watch_layer_output(chosen, tape) as captured:
            outputs = model(images, training=training)
        if len(captured) != 1:
            raise ValueError(
                f"layer {chosen.name!r} was called {len(captured)} times in one pass of model "
                f"{model.name!r}; a CAM needs a layer called exactly once."
            )
        activations = captured[0]
        if activations.shape.rank != 4:
            raise ValueError(
                f"layer {chosen.name!r} outputs shape {tuple(activations.shape)}; a CAM needs a "
                f"(N, h, w, K) feature map."
            )
        # A batch of unknown size (e.g. inside tasks.trainer.train's compiled loop) has no static N.
        num_images = images.shape[0] if images.shape[0] is not None else tf.shape(images)[0]
        targets = check_target(target, num_images=num_images, outputs=outputs)
        if score == "output":
            scores = tf.gather(outputs, targets, axis=1, batch_dims=1)
        else:
            if not from_logits and eager:
                check_probability_outputs(outputs)
            scores = class_scores(outputs, targets, from_logits=from_logits)
    gradients = tape.gradient(scores, activations)
    return CamPass(activations, gradients, outputs)


def resize_maps(maps: tf.Tensor, size: tuple[int, int]) -> tf.Tensor:
    """(N, h, w) maps resized bilinearly to ``size`` = (H, W); unchanged when already that size."""
    if tuple(maps.shape[1:3]) == tuple(size):
        return maps
    return tf.image.resize(maps[..., None], size, method="bilinear")[..., 0]


def grad_cam_maps(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """Grad-CAM from a :class:`CamPass`: ``relu(sum_k alpha_k A_k)``, (N, h, w), differentiable.

    ``alpha_k`` is the spatial mean of ``d y_c / d A_k`` (Selvaraju et al. 2017, eq. 1-2). The sum
    starts from zero.
    """
    alpha = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)
    return tf.nn.relu(tf.reduce_sum(alpha * activations, axis=-1))


def hires_cam_maps(activations: tf.Tensor, gradients: tf.Tensor) -> tf.Tensor:
    """HiResCAM from a :class:`CamPass`: ``sum_k (d y_c / d A_k) * A_k``, (N, h, w), differentiable.

    Draelos & Carin 2020, eq. 4. No ReLU: negative evidence stays visible (the paper's definition;
    apply ``tf.nn.relu`` for a positive-only map).
    """
    return tf.reduce_sum(gradients * activations, axis=-1)


def cam_map(
    combine: Any,
    model: keras.Model,
    images: Any,
    *,
    target: Any,
    layer: Any = None,
    from_logits: bool | None = None,
) -> np.ndarray:
    """A CAM resized to the input, (N, H, W) float64: ``combine(activations, gradients)`` of one
    :func:`cam_pass` of the centred class score (``score="centred"``; e.g.
    :func:`grad_cam_maps`), bilinearly resized to the images' size.

    Model, images, target and layer are checked (:func:`importance.validation.check_explained`,
    :func:`find_cam_layer`, :func:`importance.validation.check_feature_map`) before the pass.

    Args:
        combine: ``combine(activations, gradients) -> (N, h, w)`` tensor.
        model: A Keras model with outputs (N, classes).
        images: (N, H, W, C) images.
        target: One class id, or one per image.
        layer: Layer name or object; default the last 2-D convolution.
        from_logits: Whether the model outputs logits; decided on the images when None.
    """
    images, ids, from_logits = check_explained(model, images, target, from_logits=from_logits)
    chosen = find_cam_layer(model, layer)
    check_feature_map(chosen, model=model)
    cam = cam_pass(model, images, ids, layer=chosen, score="centred", from_logits=from_logits)
    maps = combine(cam.activations, cam.gradients)
    return resize_maps(maps, spatial_size(images)).numpy().astype(np.float64)


@register_saliency
def grad_cam(
    model: keras.Model, images: Any, *, target: Any, layer: Any = None,
    from_logits: bool | None = None,
) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017) resized to the input: (N, H, W) float64.

    ``y_c`` is the centred class score (:func:`importance.interpret.outputs.class_scores`), a
    pre-softmax score as in the paper. Arguments as :func:`cam_map` (``layer``: default the last
    2-D convolution).
    """
    return cam_map(grad_cam_maps, model, images, target=target, layer=layer,
                   from_logits=from_logits)


@register_saliency
def hires_cam(
    model: keras.Model, images: Any, *, target: Any, layer: Any = None,
    from_logits: bool | None = None,
) -> np.ndarray:
    """HiResCAM (Draelos & Carin 2020) resized to the input: (N, H, W) float64.

    Of the centred class score, as :func:`grad_cam`. Arguments as :func:`cam_map` (``layer``:
    default the last 2-D convolution).
    """
    return cam_map(hires_cam_maps, model, images, target=target, layer=layer,
                   from_logits=from_logits)


def spatial_size(images: Any) -> tuple[int, int]:
    """(H, W) of (N, H, W, C) images."""
    return int(images.shape[1]), int(images.shape[2])
