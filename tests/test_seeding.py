"""Seeding that keeps TensorFlow's kernels (:mod:`benchmarks.plugin.seeding`): every test starts
from its own TensorFlow seed, whatever ran before it in the process, and TensorFlow's kernels are
kept from one test to the next."""

from __future__ import annotations

import random

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context

from benchmarks.plugin.seeding import kernel_cache_kept, seed_everything, seed_of, seed_weights

SEED = 1234  # the root conftest's


def test_each_test_starts_from_its_own_seeds(request):
    assert context.global_seed() == seed_of(request.node.nodeid)
    assert random.random() == random.Random(SEED).random()
    assert np.random.rand() == np.random.RandomState(SEED).rand()
    seeds = {seed_of(f"tests/x.py::test_{i}") for i in range(1000)}
    assert len(seeds) == 1000 and all(0 <= seed < 2**31 for seed in seeds)
    assert seed_of("fisher", "mnist5k", "cnn", 0) != seed_of("fisher", "mnist5k", "cnn", 1)


def test_a_stream_does_not_depend_on_what_ran_before_it():
    mine, other = seed_of("tests/x.py::test_mine"), seed_of("tests/x.py::test_other")
    seed_everything(0, other)  # something else ran first in this process, and drew
    tf.random.normal([5])
    seed_everything(0, mine)
    kept = tf.random.normal([5]).numpy()
    tf.random.set_seed(mine)  # the public call: the kernel cache emptied, the stream from its start
    fresh = tf.random.normal([5]).numpy()
    np.testing.assert_array_equal(kept, fresh)
    # The cache really is kept: the same seeding again continues the stream, where emptying the
    # cache (keep=False, as the public call) restarts it.
    seed_everything(0, mine)
    assert not np.array_equal(tf.random.normal([5]).numpy(), fresh)
    seed_everything(0, mine, keep=False)
    np.testing.assert_array_equal(tf.random.normal([5]).numpy(), fresh)
    with kernel_cache_kept():
        tf.random.set_seed(mine)
    assert not np.array_equal(tf.random.normal([5]).numpy(), fresh)


def test_seed_weights_gives_set_random_seeds_weights_and_leaves_tensorflows_seed(request):
    def build():
        return keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Conv2D(3, 3), keras.layers.Flatten(),
                                 keras.layers.Dropout(0.5), keras.layers.Dense(3)])

    x = np.ones((2, 4, 4, 2), np.float32)
    seed_weights(7)
    assert context.global_seed() == seed_of(request.node.nodeid)  # left as the test's own
    mine = build()
    keras.utils.set_random_seed(7)
    public = build()
    for ours, theirs in zip(mine.weights, public.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    np.testing.assert_array_equal(mine(x, training=True), public(x, training=True))  # dropout's seed
