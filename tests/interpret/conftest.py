"""Shared model of the saliency tests: the small CNN several files built on their own.

Fixture ``build_small_cnn``: factory ``(input_shape, *, seed=0, hidden=None, **head) -> model``,
``Conv2D(4, 3x3, same, relu, name="conv")`` then Flatten, an optional ``Dense(hidden, tanh)`` and
``Dense(3, **head)`` (logits). Same seed, same weights.
"""

from __future__ import annotations

from typing import Any

import keras
import pytest

from benchmarks.plugin.seeding import seed_weights


def small_cnn(
    input_shape: tuple[int, ...], *, seed: int = 0, hidden: int | None = None, **head: Any
) -> keras.Model:
    seed_weights(seed)  # not keras.utils.set_random_seed: it empties TF's kernel cache
    layers = [
        keras.Input(input_shape),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv"),
        keras.layers.Flatten(),
    ]
    if hidden is not None:
        layers.append(keras.layers.Dense(hidden, activation="tanh"))
    layers.append(keras.layers.Dense(3, **head))
    return keras.Sequential(layers, name="small")


@pytest.fixture(scope="session")
def build_small_cnn():
    return small_cnn
