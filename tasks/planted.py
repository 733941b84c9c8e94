"""``planted``: a generated task whose important and irrelevant weights are known by construction.

The data has ``D = 20`` input features, each drawn i.i.d. from N(0, 1). The label is the index of
the largest of the first four features (the *signal inputs*, 4 classes)::

    y = argmax(x[0], x[1], x[2], x[3])

The other 16 features (the *noise inputs*) are independent of the label and of the signal inputs.

Why the ground truth holds. The label is a deterministic function of the signal inputs alone, so
the Bayes-optimal classifier does not look at the noise inputs: any weight that multiplies a noise
input only adds label-independent variance to the logits and can only increase the expected loss.
In the first Dense layer (kernel shape ``(20, hidden)``), row ``j`` holds the weights that read
input ``j``. Hence:

* **known important**: the kernel rows of the four signal inputs; zeroing them leaves the network
  blind to the label (chance accuracy, 25 %);
* **known irrelevant**: the kernel rows of the 16 noise inputs; their task-loss gradient has mean
  zero, and the task trains with decoupled weight decay (AdamW), which pulls them to zero while the
  signal rows grow. Zeroing them leaves accuracy unchanged.

Other weights (first-layer bias, second layer) have no planted truth.

Measured (3 seeds, default settings): test accuracy 0.967-0.970; zeroing the noise rows raises it
to ~0.985, zeroing the signal rows drops it to ~0.24; mean |w| of signal rows is ~15x that of
noise rows (ROC AUC of magnitude for important vs irrelevant ~0.98-0.99). The empirical Fisher
diagonal, by contrast, ranks the noise rows *higher* (AUC ~0.27): it measures how sensitive the
loss is to a weight (``E[delta_h^2 x_j^2]``, which the noise inputs' unit variance keeps large),
not how much the trained value contributes. That contrast is what the benchmark can show. :func:`known_importance`
returns the truth as masks aligned with ``model.trainable_weights``; the tests check that
magnitude ranks the important rows above the irrelevant ones and that removing each group has the
effect described above.
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


def generate(n: int, *, seed: int = DATA_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``n`` examples of the planted task: ``x`` float32 ``(n, 20)``, ``y`` int32 ``(n,)``."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, NUM_INPUTS)).astype(np.float32)
    y = np.argmax(x[:, list(SIGNAL_INPUTS)], axis=1).astype(np.int32)
    return x, y


def _load() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    x, y = generate(5000)
    return (x[:4000], y[:4000]), (x[4000:], y[4000:])


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


PLANTED = register_task(
    Task(
        "planted",
        description="Generated: label = argmax of 4 signal inputs next to 16 pure-noise inputs; "
        "the first-layer weights of the noise inputs are known to be irrelevant.",
        num_classes=len(SIGNAL_INPUTS),
        input_shape=(NUM_INPUTS,),
        load=_load,
        build=_build,
        training=TrainingSettings(
            epochs=20, batch_size=64, learning_rate=3e-3, optimizer="adamw", weight_decay=0.5
        ),
        info={"signal_inputs": SIGNAL_INPUTS, "noise_inputs": NOISE_INPUTS},
    )
)
