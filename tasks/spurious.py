"""``spurious_mnist``: centred real digits on a background texture that predicts the class in training.

A Waterbirds-style task (Sagawa et al. 2020, "Distributionally Robust Neural Networks") built
offline from the ``mnist5k`` digits. Each image is a ``canvas x canvas`` grey picture: a striped
background texture, and in its centre a black square of side ``object_size`` holding the digit
(resized from 28 px). Background ``b`` is a stripe pattern at angle ``180° * b / K`` (K classes:
horizontal and vertical stripes for two classes), with a random phase per image.

* **train** and **val**: the background equals the class for exactly ``round(share * n_c)``
  examples of each class ``c`` (95 % by default); the others get one of the other backgrounds
  at random. ``val`` is carved from the training digits (stratified, seeded) and has the
  *training* correlation: it is the split to choose hyper-parameters on.
* **val_balanced** (an *oracle*, as in the group-robustness literature): the same digits as
  ``val``, each drawn once with every background, so every group (class x background) is equally
  large. Choosing on it uses knowledge of the groups that a practitioner would not have.
* **test**: the ``mnist5k`` test digits of these classes, each drawn once with every background:
  exactly group-balanced, so the background carries no information about the class.

Groups are ``class * K + background``; :func:`group_accuracy` gives the average accuracy (over
examples) and the worst-group accuracy, as in the Waterbirds literature. The object patch is
:attr:`SpuriousData.centre_mask`; a model that classifies by the digit needs nothing outside it.
Everything is seeded; the registered task uses ``DATA_SEED``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from tasks import datasets, models
from tasks.registry import Task, TrainingSettings, register_task

DIGITS = (4, 9)
SHARE = 0.95
CANVAS = 32
OBJECT_SIZE = 20
STRIPE_PERIOD = 4.0
STRIPE_CONTRAST = 0.2
VAL_FRACTION = 0.2
DATA_SEED = 0


@dataclasses.dataclass(frozen=True)
class Split:
    """One split: images ``x`` (N, H, W, 1), labels ``y`` and backgrounds (both int32)."""

    x: np.ndarray
    y: np.ndarray
    background: np.ndarray
    num_classes: int

    @property
    def groups(self) -> np.ndarray:
        """Group of every example: ``y * num_classes + background``."""
        return self.y * self.num_classes + self.background

    def as_xy(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x, self.y


@dataclasses.dataclass(frozen=True)
class SpuriousData:
    """The four splits and how they were made (see the module docstring)."""

    train: Split
    val: Split
    val_balanced: Split
    test: Split
    digits: tuple[int, ...]
    share: float
    centre_mask: np.ndarray


def _check(name: str, value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise ValueError(f"{name} must be {expected}. Received: {value!r}")


def generate(
    *,
    digits: tuple[int, ...] = DIGITS,
    share: float = SHARE,
    canvas: int = CANVAS,
    object_size: int = OBJECT_SIZE,
    val_fraction: float = VAL_FRACTION,
    seed: int = DATA_SEED,
) -> SpuriousData:
    """Generate the task's splits from the ``mnist5k`` digits (deterministic for a seed).

    Args:
        digits: Two or more distinct MNIST digits; digit ``digits[i]`` gets label ``i``.
        share: Fraction of each class drawn on its own background in train and val.
        canvas: Side of the square image in pixels.
        object_size: Side of the centred object patch (digit resized to it), < ``canvas``.
        val_fraction: Fraction of the training digits held out for validation.
        seed: Seed of the split, the background assignment and the stripe phases.

    Raises:
        ValueError: A bad option, naming it and the received value.
    """
    _check("digits", digits, len(set(digits)) == len(digits) >= 2
           and all(isinstance(d, (int, np.integer)) and 0 <= d <= 9 for d in digits),
           "two or more distinct digits in 0..9")
    _check("share", share, isinstance(share, (int, float)) and 0 <= share <= 1, "in [0, 1]")
    _check("object_size", object_size, isinstance(object_size, int) and 4 <= object_size < canvas,
           f"an integer in [4, canvas={canvas})")
    _check("val_fraction", val_fraction, isinstance(val_fraction, float) and 0 < val_fraction < 1,
           "a float in (0, 1)")
    (x_all, y_all), (x_test, y_test) = datasets.mnist5k()
    x_tr, y_tr = _select(x_all, y_all, digits)
    x_te, y_te = _select(x_test, y_test, digits)
    n_val = int(round(val_fraction * len(y_tr)))
    (x_tr, y_tr), (x_val, y_val) = datasets.stratified_split(x_tr, y_tr, test_size=n_val, seed=seed)
    k = len(digits)
    rng = np.random.default_rng(seed)
    draw = functools.partial(_draw, canvas=canvas, object_size=object_size, k=k, rng=rng)
    train = draw(x_tr, y_tr, _correlated_backgrounds(y_tr, k, share, rng))
    val = draw(x_val, y_val, _correlated_backgrounds(y_val, k, share, rng))
    val_balanced = draw(*_every_background(x_val, y_val, k))
    test = draw(*_every_background(x_te, y_te, k))
    offset = (canvas - object_size) // 2
    mask = np.zeros((canvas, canvas), dtype=bool)
    mask[offset:offset + object_size, offset:offset + object_size] = True
    mask.flags.writeable = False
    return SpuriousData(train, val, val_balanced, test, tuple(int(d) for d in digits), float(share), mask)


def _select(x: np.ndarray, y: np.ndarray, digits: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isin(y, digits)
    lookup = {int(d): i for i, d in enumerate(digits)}
    return x[keep, ..., 0], np.array([lookup[int(v)] for v in y[keep]], dtype=np.int32)


def _correlated_backgrounds(y: np.ndarray, k: int, share: float, rng: np.random.Generator) -> np.ndarray:
    """Background = class for exactly round(share * n_c) examples of class c, another one else."""
    background = y.copy()
    for c in range(k):
        members = np.flatnonzero(y == c)
        minority = rng.choice(members, size=len(members) - int(round(share * len(members))), replace=False)
        others = np.array([b for b in range(k) if b != c])
        background[minority] = rng.choice(others, size=len(minority))
    return background.astype(np.int32)


def _every_background(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every image once with every background (exactly balanced groups)."""
    background = np.repeat(np.arange(k, dtype=np.int32), len(y))
    return np.tile(x, (k, 1, 1)), np.tile(y, k), background


def _draw(digits_28: np.ndarray, y: np.ndarray, background: np.ndarray, *, canvas: int,
          object_size: int, k: int, rng: np.random.Generator) -> Split:
    from scipy.ndimage import zoom

    n = len(y)
    small = np.clip(zoom(digits_28, (1, object_size / 28, object_size / 28), order=1), 0, 1)
    rows, cols = np.mgrid[0:canvas, 0:canvas].astype(np.float32)
    angle = np.pi * background / k
    phase = rng.uniform(0, 2 * np.pi, size=n)
    coord = np.cos(angle)[:, None, None] * rows + np.sin(angle)[:, None, None] * cols
    x = STRIPE_CONTRAST * 0.5 * (1 + np.sin(2 * np.pi * coord / STRIPE_PERIOD + phase[:, None, None]))
    offset = (canvas - object_size) // 2
    x[:, offset:offset + object_size, offset:offset + object_size] = small[:, :object_size, :object_size]
    x = np.ascontiguousarray(x[..., None], dtype=np.float32)
    for a in (x, y, background):
        a.flags.writeable = False
    return Split(x, np.asarray(y, np.int32), np.asarray(background, np.int32), k)


def group_accuracy(predicted: np.ndarray, y: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """Average accuracy over examples, worst-group accuracy and accuracy per group.

    Args:
        predicted: Predicted labels (N,).
        y: True labels (N,).
        groups: Group of every example (N,); every group present counts for the worst group.

    Raises:
        ValueError: Arrays of different lengths or no examples.
    """
    predicted, y, groups = (np.asarray(a).reshape(-1) for a in (predicted, y, groups))
    if not len(y) or not len(predicted) == len(y) == len(groups):
        raise ValueError(f"predicted, y and groups must be non-empty and of one length. Received: "
                         f"{len(predicted)}, {len(y)}, {len(groups)}")
    correct = predicted == y
    per_group = {int(g): float(correct[groups == g].mean()) for g in np.unique(groups)}
    return {"average": float(correct.mean()), "worst_group": min(per_group.values()), "per_group": per_group}


def evaluate_groups(model: Any, split: Split, *, batch_size: int = 512) -> dict[str, Any]:
    """:func:`group_accuracy` of ``model`` (logits out) on a :class:`Split`."""
    logits = np.concatenate([np.asarray(model(split.x[i:i + batch_size], training=False))
                             for i in range(0, len(split.y), batch_size)])
    return group_accuracy(logits.argmax(axis=-1), split.y, split.groups)


@functools.lru_cache(maxsize=1)
def task_data() -> SpuriousData:
    """The registered task's data (default options, ``DATA_SEED``), generated once per process."""
    return generate()


def _load() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    data = task_data()
    return data.train.as_xy(), data.test.as_xy()


def _build(seed: int, variant: str) -> Any:
    return models.gap_cnn((CANVAS, CANVAS, 1), len(DIGITS), seed=seed, name="spurious_gap_cnn")


SPURIOUS_MNIST = register_task(
    Task(
        "spurious_mnist",
        description=f"mnist5k digits {DIGITS[0]} vs {DIGITS[1]} centred on a striped background that "
        f"matches the class for {SHARE:.0%} of training images; group-balanced test (offline).",
        num_classes=len(DIGITS),
        input_shape=(CANVAS, CANVAS, 1),
        load=_load,
        build=_build,
        variants=("gap_cnn",),
        training=TrainingSettings(epochs=12, batch_size=32, learning_rate=3e-3),
        info={"digits": DIGITS, "share": SHARE, "canvas": CANVAS, "object_size": OBJECT_SIZE,
              "chance": 1 / len(DIGITS)},
    )
)
