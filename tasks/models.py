"""Seeded model builders for the tasks: small MLPs and CNNs with logits output.

Every layer gets its own seeded initialiser, so a model's initial weights depend only on the seed
(not on Keras' global random state or on how many models were built before).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras


def _init(seed: int, index: int) -> keras.initializers.Initializer:
    return keras.initializers.GlorotUniform(seed=seed * 1000 + index)


def mlp(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    hidden: Sequence[int] = (256, 128),
    seed: int = 0,
    name: str = "mlp",
) -> keras.Model:
    """A ReLU multilayer perceptron (inputs flattened first), logits out.

    Args:
        input_shape: Shape of one example.
        num_classes: Output width.
        hidden: Widths of the hidden Dense layers.
        seed: Seed of the initial weights.
        name: Model name.
    """
    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    h = keras.layers.Flatten(name="flatten")(inputs) if len(input_shape) > 1 else inputs
    for i, width in enumerate(hidden):
        h = keras.layers.Dense(
            int(width), activation="relu", kernel_initializer=_init(seed, i), name=f"dense_{i}"
        )(h)
    logits = keras.layers.Dense(
        int(num_classes), kernel_initializer=_init(seed, len(hidden)), name="logits"
    )(h)
    return keras.Model(inputs, logits, name=name)


def _conv_stack(h: keras.KerasTensor, filters: Sequence[int], *, seed: int, pool_last: bool) -> keras.KerasTensor:
    """``conv_<i>`` (3x3, same padding, ReLU) per entry of ``filters``, each followed by a 2x2
    max-pool ``pool_<i>`` (the last one only with ``pool_last``)."""
    for i, f in enumerate(filters):
        h = keras.layers.Conv2D(
            int(f), 3, padding="same", activation="relu", kernel_initializer=_init(seed, i),
            name=f"conv_{i}",
        )(h)
        if pool_last or i < len(filters) - 1:
            h = keras.layers.MaxPooling2D(2, name=f"pool_{i}")(h)
    return h


def cnn(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    filters: Sequence[int] = (16, 32),
    dense: int = 64,
    seed: int = 0,
    name: str = "cnn",
) -> keras.Model:
    """A small CNN: (3x3 conv, ReLU, 2x2 max-pool) per entry of ``filters``, a Dense layer, logits.

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: Output width.
        filters: Output channels of each conv block.
        dense: Width of the hidden Dense layer.
        seed: Seed of the initial weights.
        name: Model name.
    """
    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    h = _conv_stack(inputs, filters, seed=seed, pool_last=True)
    h = keras.layers.Flatten(name="flatten")(h)
    h = keras.layers.Dense(
        int(dense), activation="relu", kernel_initializer=_init(seed, len(filters)), name="dense"
    )(h)
    logits = keras.layers.Dense(
        int(num_classes), kernel_initializer=_init(seed, len(filters) + 1), name="logits"
    )(h)
    return keras.Model(inputs, logits, name=name)


def gap_cnn(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    filters: Sequence[int] = (16, 32, 32),
    seed: int = 0,
    name: str = "gap_cnn",
) -> keras.Model:
    """A CNN with a class-activation-map head: 3x3 convs (ReLU), 2x2 max-pool between them,
    global average pooling and one Dense layer to the logits (Zhou et al. 2016, "Learning Deep
    Features for Discriminative Localization"). The last conv layer (``conv_<last>``) is the CAM
    layer: with GAP + Dense, its class activation map is exact.

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: Output width.
        filters: Output channels of each conv layer; a max-pool follows every conv but the last.
        seed: Seed of the initial weights.
        name: Model name.
    """
    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    h = _conv_stack(inputs, filters, seed=seed, pool_last=False)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    logits = keras.layers.Dense(
        int(num_classes), kernel_initializer=_init(seed, len(filters)), name="logits"
    )(h)
    return keras.Model(inputs, logits, name=name)


def resnet_bn(
    input_shape: Sequence[int],
    num_classes: int,
    *,
    filters: int = 16,
    blocks: int = 2,
    seed: int = 0,
    name: str = "resnet_bn",
) -> keras.Model:
    """A small ResNet with BatchNormalization (He et al., CVPR 2016): a 3x3 conv stem, ``blocks``
    residual blocks (conv-BN-ReLU-conv-BN, identity shortcut, ReLU), 2x2 max-pool, global average
    pooling, logits. Convolutions have no bias (BatchNorm's beta takes its place).

    Args:
        input_shape: ``(height, width, channels)``.
        num_classes: Output width.
        filters: Channels of every convolution.
        blocks: Number of residual blocks.
        seed: Seed of the initial weights.
        name: Model name.
    """
    index = iter(range(2 * blocks + 2))

    def conv_bn(h: keras.KerasTensor, label: str) -> keras.KerasTensor:
        h = keras.layers.Conv2D(int(filters), 3, padding="same", use_bias=False,
                                kernel_initializer=_init(seed, next(index)), name=f"conv_{label}")(h)
        return keras.layers.BatchNormalization(momentum=0.9, name=f"bn_{label}")(h)

    inputs = keras.Input(shape=tuple(input_shape), name="inputs")
    h = keras.layers.Activation("relu", name="relu_stem")(conv_bn(inputs, "stem"))
    for b in range(int(blocks)):
        r = keras.layers.Activation("relu", name=f"relu_{b}a")(conv_bn(h, f"{b}a"))
        h = keras.layers.Add(name=f"add_{b}")([h, conv_bn(r, f"{b}b")])
        h = keras.layers.Activation("relu", name=f"relu_{b}b")(h)
    h = keras.layers.GlobalAveragePooling2D(name="pool")(keras.layers.MaxPooling2D(2, name="maxpool")(h))
    logits = keras.layers.Dense(int(num_classes), kernel_initializer=_init(seed, next(index)), name="logits")(h)
    return keras.Model(inputs, logits, name=name)
