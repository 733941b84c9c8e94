"""Seeding that keeps TensorFlow's kernels: for the tests' per-test seeds (the root conftest) and
the benchmark's per-computation seeds (:mod:`benchmarks.thresholding.study`).

``tf.random.set_seed`` (and so ``keras.utils.set_random_seed``) sets TensorFlow's global seed and
the generator of op seeds, then empties the eager context's kernel cache, so that a stateful random
op (``tf.random.normal``, ...) seeded again restarts its stream. Everything that runs next builds
its kernels again and instantiates each ``tf.function`` again: about 10 ms per function and per
model call on the 2-core machine, 20-90 ms per test, and 17-27 % of the CPU time of the removal
and saliency cases (``--bench-tasks planted,digits``, three pairs of serial runs).

Here every seeding gets a TensorFlow seed of its own (:func:`seed_of`, from what is being seeded:
a test's node id, a measure's computation), set without emptying the cache
(:func:`kernel_cache_kept`). A stateful random op then has attributes ``(seed, seed2)`` that
nothing else in the process has used, so it never continues another stream from a cached kernel,
and its stream is the same whatever ran before it. The one case the cache cannot serve is the same
seeding twice in one process: its second stateful draws would continue the first's streams, so a
caller that may seed the same thing again empties the cache then (``keep=False``).
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator

import numpy as np


def seed_of(*parts: object) -> int:
    """A TensorFlow global seed for what ``parts`` name: 31 bits of the SHA-256 of their text."""
    text = "\x1f".join(map(str, parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


@contextlib.contextmanager
def kernel_cache_kept() -> Iterator[None]:
    """TensorFlow's seeding calls inside, without the emptying of its kernel cache they end with.

    Patches the one binding they call for it (``TFE_ContextClearCaches``) with a no-op, and puts it
    back on exit. A TensorFlow without that binding is left as it is (its calls empty the cache).
    """
    from tensorflow.python.eager import context

    bindings = context.pywrap_tfe
    clear = getattr(bindings, "TFE_ContextClearCaches", None)
    if clear is None:
        yield
        return
    bindings.TFE_ContextClearCaches = lambda handle: None
    try:
        yield
    finally:
        bindings.TFE_ContextClearCaches = clear


def seed_everything(seed: int, tensorflow_seed: int, *, keep: bool = True) -> None:
    """Python's, NumPy's and Keras's generators at ``seed`` (``keras.utils.set_random_seed``: Keras's
    global ``SeedGenerator`` is made again from it), TensorFlow's global seed at
    ``tensorflow_seed``; the kernel cache kept unless ``keep`` is False."""
    import keras
    import tensorflow as tf

    with kernel_cache_kept() if keep else contextlib.nullcontext():
        keras.utils.set_random_seed(seed)
        tf.random.set_seed(tensorflow_seed)


def seed_weights(seed: int) -> None:
    """Same seed, same initial weights, with TensorFlow's seed and kernel cache left alone: Keras
    draws a layer's initializer and dropout seeds from Python's generator (NumPy's is set too, for
    builders that draw from it). For model builders; :func:`seed_everything` seeds everything."""
    random.seed(seed)
    np.random.seed(seed)
