"""``planted`` and ``planted_noise``: generated tasks whose important weights are known by construction.

Both have ``D = 20`` input features. The first four (the *signal inputs*) are drawn i.i.d. from
N(0, 1) and the label is the index of the largest of them (4 classes)::

    y = argmax(x[0], x[1], x[2], x[3])

The other 16 features (the *nuisance inputs*) are independent of the label and of the signal
inputs: N(0, 0.1^2) in ``planted``, N(0, 1) in ``planted_noise``.

Why the ground truth holds. The label is a deterministic function of the signal inputs alone, so
the Bayes-optimal classifier does not look at the nuisance inputs: any weight that multiplies one
only adds label-independent variance to the logits. In the first Dense layer (kernel shape
``(20, hidden)``), row ``j`` holds the weights that read input ``j``. Hence:

* **known important**: the kernel rows of the four signal inputs; zeroing them leaves the network
  blind to the label (chance accuracy, 25 %);
* **known irrelevant**: the kernel rows of the 16 nuisance inputs; their task-loss gradient has
  mean zero, and the task trains with decoupled weight decay (AdamW), which pulls them towards
  zero while the signal rows grow. Zeroing them leaves accuracy unchanged.

Other weights (first-layer bias, second layer) have no planted truth.

Why two tasks. In ``planted`` every notion of importance agrees on the irrelevant rows: they carry
no information, are small, and the loss is insensitive to them (their inputs are small), so
magnitude, Fisher, MAS and SI all rank them low; the benchmarks assert that each such measure
beats ``random`` there. ``planted_noise`` separates two notions that usually travel together:
its nuisance inputs have unit variance, so perturbing a nuisance weight injects noise into the
hidden units and the loss is *sensitive* to it, although its trained value is near zero and
removing it costs nothing. Sensitivity measures (the Fisher variants, SI) rank the nuisance rows
*above* the signal rows there (ROC AUC ~0.3), magnitude ranks them correctly (AUC ~0.99): the
Fisher estimates the loss increase of a small perturbation ``0.5 * F * dw^2``, not of removing
the weight (for that, ``F * w^2``, Optimal Brain Damage: the ``obd`` measure ranks the signal
rows first there, AUC 0.98-0.99). Rankings on ``planted_noise`` are reported, not asserted.

Measured (2 seeds, default settings), ROC AUC of the first-kernel scores for important vs
irrelevant rows: ``planted``: magnitude 0.93-0.95, fisher/fisher_sampled/fisher_empirical/
fisher_batch/mas 1.00, si 0.82, random 0.52; ``planted_noise``: magnitude 0.99, fisher 0.26-0.29,
mas 0.60, si 0.34, random 0.52. :func:`known_importance` returns the truth as masks aligned with
``model.trainable_weights``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tasks import models
from tasks.registry import Task, TrainingSettings, register_task

NUM_INPUTS = 20
SIGNAL_INPUTS = (0, 1, 2, 3)
NOISE_INPUTS = tuple(range(len(SIGNAL_INPUTS), NUM_INPUTS))
DATA_SEED = 2017
HIDDEN = 32


NUISANCE_STD = {"planted": 0.1, "planted_noise": 1.0}


def generate(
    n: int, *, seed: int = DATA_SEED, nuisance_std: float = NUISANCE_STD["planted"]
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples: ``x`` float32 ``(n, 20)``, ``y`` int32 ``(n,)``.

    Args:
        n: Number of examples.
        seed: Data seed.
        nuisance_std: Standard deviation of the 16 label-independent inputs.
    """
    if not nuisance_std > 0:
        raise ValueError(f"nuisance_std must be positive. Received: {nuisance_std!r}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, NUM_INPUTS)).astype(np.float32)
    x[:, list(NOISE_INPUTS)] *= np.float32(nuisance_std)
    y = np.argmax(x[:, list(SIGNAL_INPUTS)], axis=1).astype(np.int32)
    return x, y


def _loader(nuisance_std: float) -> Any:
    def load() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        x, y = generate(5000, nuisance_std=nuisance_std)
        return (x[:4000], y[:4000]), (x[4000:], y[4000:])

    return load


_load = _loader(NUISANCE_STD["planted"])


def _build(seed: int, variant: str) -> Any:
    return models.mlp((NUM_INPUTS,), len(SIGNAL_INPUTS), hidden=(HIDDEN,), seed=seed, name="planted_mlp")


def known_importance(model: Any) -> list[np.ndarray]:
    """The planted truth, one float array per ``model.trainable_weights`` entry.

    Values: 1.0 for known-important weights (first-layer kernel rows of the signal inputs),
    0.0 for known-irrelevant ones (rows of the noise inputs), NaN where nothing is known.
    """
    truth = [np.full(tuple(w.shape), np.nan) for w in model.trainable_weights]
    first = truth[0]
    if first.shape != (NUM_INPUTS, HIDDEN):
        raise ValueError(f"Expected the planted MLP's first kernel (20, {HIDDEN}). Received: {first.shape}")
    first[list(SIGNAL_INPUTS), :] = 1.0
    first[list(NOISE_INPUTS), :] = 0.0
    return truth


_TRAINING = TrainingSettings(
    epochs=20, batch_size=64, learning_rate=3e-3, optimizer="adamw", weight_decay=0.5
)
_INFO = {"signal_inputs": SIGNAL_INPUTS, "noise_inputs": NOISE_INPUTS}

PLANTED = register_task(
    Task(
        "planted",
        description="Generated: label = argmax of 4 signal inputs next to 16 small label-independent "
        "inputs; the first-layer weights of those inputs are known to be irrelevant.",
        num_classes=len(SIGNAL_INPUTS),
        input_shape=(NUM_INPUTS,),
        load=_load,
        build=_build,
        training=_TRAINING,
        version="2",  # 2: nuisance inputs scaled to std 0.1 (the unit-variance task is planted_noise)
        info={**_INFO, "nuisance_std": NUISANCE_STD["planted"]},
        accuracy_bars={"mlp": 0.85},  # chance is 0.25
    )
)

PLANTED_NOISE = register_task(
    Task(
        "planted_noise",
        description="Generated: as planted, but the 16 irrelevant inputs are unit-variance noise; "
        "separates sensitivity (Fisher, SI) from removal cost (magnitude).",
        num_classes=len(SIGNAL_INPUTS),
        input_shape=(NUM_INPUTS,),
        load=_loader(NUISANCE_STD["planted_noise"]),
        build=_build,
        training=_TRAINING,
        info={**_INFO, "nuisance_std": NUISANCE_STD["planted_noise"]},
        accuracy_bars={"mlp": 0.85},
    )
)
