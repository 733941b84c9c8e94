"""Standard architectures from ``keras.applications`` as task variants, and their offline task.

``keras.applications`` networks (built with ``weights=None``: no download, trained from scratch
by the project's trainer) are variants of the image tasks, so that the removal and explanation
axes are measured on the networks people use, not only on the project's small models:

* ``cifar10`` gets ``mobilenetv2``, ``resnet50`` and ``efficientnetb0`` (when its files are on
  the machine; skipped with the reason otherwise, see :mod:`tasks.keras_data`);
* ``mnist5k_rgb32`` is the offline fallback: the 5,000 bundled MNIST digits (4,000 train / 1,000
  test) zero-padded to 32x32 and repeated to three channels, the smallest input the three networks
  accept. It is small and easy; a ranking on it says how measures behave on these *architectures*
  trained on little data, not on ImageNet-scale data.

The networks: MobileNetV2 (Sandler et al., CVPR 2018), ResNet50 (He et al., CVPR 2016) and
EfficientNetB0 (Tan & Le, ICML 2019), each with ``include_top=False``, global average pooling and
one seeded Dense layer to the logits. At 32x32 their last convolution has a 1x1 feature map, so a
class activation map there is one number per image (pixel-level methods still apply).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tasks import datasets
from tasks.registry import Task, TrainingSettings, register_task

APPLICATIONS = {
    "mobilenetv2": "MobileNetV2",
    "resnet50": "ResNet50",
    "efficientnetb0": "EfficientNetB0",
}
MIN_SIZE = 32  # the smallest height and width the three networks accept
# Keras' BatchNormalization momenta (0.99; 0.999 in MobileNetV2) suit ImageNet-length training.
# Over the few hundred steps of these tasks the moving statistics would stay near their initial
# values and the trained model would be at chance at inference (measured: MobileNetV2 on
# mnist5k_rgb32, 5 epochs: test accuracy 0.10); 0.9 is what tasks.models.resnet_bn uses.
BN_MOMENTUM = 0.9


def application(
    arch: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    seed: int = 0,
    name: str | None = None,
) -> Any:
    """A ``keras.applications`` network (``weights=None``) with a logits head, seeded.

    Args:
        arch: One of :data:`APPLICATIONS` (``mobilenetv2``, ``resnet50``, ``efficientnetb0``).
        input_shape: ``(height, width, 3)``, height and width at least 32.
        num_classes: Output width.
        seed: Seed of every initial weight (Keras' global seed is set to it while building).

    BatchNormalization layers get momentum :data:`BN_MOMENTUM` (0.9), so that their moving
    statistics follow a training run of a few hundred steps.
        name: Model name (default: ``arch``).

    Raises:
        ValueError: An unknown ``arch`` or an input shape the networks do not accept.
    """
    import keras

    from importance.checks import check_choice

    check_choice("arch", arch, tuple(APPLICATIONS))
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or shape[-1] != 3 or min(shape[:2]) < MIN_SIZE:
        raise ValueError(
            f"input_shape must be (height, width, 3) with height and width >= {MIN_SIZE}. "
            f"Received: {shape}"
        )
    keras.utils.set_random_seed(int(seed))  # the networks' layers take no seed of their own
    inputs = keras.Input(shape=shape, name="inputs")
    base = getattr(keras.applications, APPLICATIONS[arch])(
        include_top=False, weights=None, input_tensor=inputs, pooling="avg"
    )
    logits = keras.layers.Dense(
        int(num_classes),
        kernel_initializer=keras.initializers.GlorotUniform(seed=int(seed)),
        name="logits",
    )(base.output)
    model = keras.Model(inputs, logits, name=name or arch)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM
    return model


def mnist5k_rgb32() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """mnist5k's splits zero-padded from 28x28 to 32x32 and repeated to three channels."""
    (xtr, ytr), (xte, yte) = datasets.mnist5k()
    return (_rgb32(xtr), ytr), (_rgb32(xte), yte)


def _rgb32(x: np.ndarray) -> np.ndarray:
    x = np.pad(np.asarray(x, dtype=np.float32), ((0, 0), (2, 2), (2, 2), (0, 0)))
    return np.repeat(x, 3, axis=-1)


def _build(seed: int, variant: str) -> Any:
    return application(variant, (32, 32, 3), 10, seed=seed, name=f"mnist5k_rgb32_{variant}")


SETTINGS = TrainingSettings(epochs=5, batch_size=64, learning_rate=1e-3)

MNIST5K_RGB32 = register_task(
    Task(
        "mnist5k_rgb32",
        description="mnist5k (4,000 / 1,000 real digits) padded to 32x32 RGB for the "
        "keras.applications "
        "networks, offline: a small stand-in for CIFAR-10, not ImageNet-scale evidence.",
        num_classes=10,
        input_shape=(32, 32, 3),
        load=mnist5k_rgb32,
        build=_build,
        variants=tuple(APPLICATIONS),
        training=SETTINGS,
        version="2",  # 2: BatchNormalization momentum 0.9 (1 was at chance at inference)
        info={"convolutional": True},  # on the explanation axes when named in --bench-tasks
    )
)
