"""keras.applications networks as task variants, and the offline ``mnist5k_rgb32`` task."""

from __future__ import annotations

import numpy as np
import pytest

import tasks
from tasks import applications, datasets


def test_the_offline_task_is_mnist5k_padded_to_32x32_rgb():
    (xtr, ytr), (xte, yte) = datasets.mnist5k()
    task = tasks.get_task("mnist5k_rgb32")
    x, y = task.train_data()
    assert x.shape == (len(xtr), 32, 32, 3) and task.test_data()[0].shape == (len(xte), 32, 32, 3)
    np.testing.assert_array_equal(y, ytr)
    for channel in range(3):
        np.testing.assert_array_equal(x[:, 2:30, 2:30, channel], xtr[..., 0])
    assert (
        not x[:, :2].any()
        and not x[:, 30:].any()
        and not x[:, :, :2].any()
        and not x[:, :, 30:].any()
    )
    assert "not ImageNet-scale" in task.description
    assert task.variants == ("mobilenetv2", "resnet50", "efficientnetb0")


def test_cifar10_has_the_application_variants():
    assert tasks.get_task("cifar10").variants == (
        "cnn",
        "mobilenetv2",
        "resnet50",
        "efficientnetb0",
    )


@pytest.mark.slow  # builds MobileNetV2 three times (about 6 s of CPU)
def test_an_application_is_seeded_flat_and_ends_in_logits():
    first = applications.application("mobilenetv2", (32, 32, 3), 7, seed=1)
    again = applications.application("mobilenetv2", (32, 32, 3), 7, seed=1)
    other = applications.application("mobilenetv2", (32, 32, 3), 7, seed=2)
    assert first.output_shape == (None, 7) and first.layers[-1].name == "logits"
    norms = [layer for layer in first.layers if type(layer).__name__ == "BatchNormalization"]
    assert norms and all(layer.momentum == applications.BN_MOMENTUM for layer in norms)
    assert first.layers[-1].activation.__name__ == "linear"
    assert not any(hasattr(layer, "layers") for layer in first.layers)  # no nested model
    assert all(
        np.array_equal(a, b) for a, b in zip(first.get_weights(), again.get_weights(), strict=True)
    )
    assert not all(
        np.array_equal(a, b) for a, b in zip(first.get_weights(), other.get_weights(), strict=True)
    )


@pytest.mark.parametrize(
    ("arch", "shape", "message"),
    [
        ("vgg16", (32, 32, 3), r"arch must be one of .*mobilenetv2.* Received: 'vgg16'"),
        (
            "resnet50",
            (28, 28, 1),
            r"input_shape must be \(height, width, 3\) with height and width >= 32\. "
            r"Received: \(28, 28, 1\)",
        ),
    ],
)
def test_bad_architecture_or_shape_is_refused(arch, shape, message):
    with pytest.raises(ValueError, match=message):
        applications.application(arch, shape, 10)
