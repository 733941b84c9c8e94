"""The root conftest's seeding: every test starts from its own TensorFlow seed, whatever ran
before it in the process, and TensorFlow's kernels are kept from one test to the next."""

from __future__ import annotations

import pathlib
import random

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.eager import context

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def root_conftest(request):
    plugin = request.config.pluginmanager.get_plugin(str(ROOT / "conftest.py"))
    assert plugin is not None, "the root conftest is registered under its path"
    return plugin


def test_each_test_starts_from_its_own_seeds(request, root_conftest):
    assert context.global_seed() == root_conftest.seed_of_test(request.node.nodeid)
    assert random.random() == random.Random(root_conftest.SEED).random()
    assert np.random.rand() == np.random.RandomState(root_conftest.SEED).rand()
    seeds = {root_conftest.seed_of_test(f"tests/x.py::test_{i}") for i in range(1000)}
    assert len(seeds) == 1000 and all(0 <= seed < 2**31 for seed in seeds)


def test_a_tests_stream_does_not_depend_on_what_ran_before_it(root_conftest):
    mine, other = (root_conftest.seed_of_test(f"tests/x.py::test_{name}") for name in ("mine", "other"))
    with root_conftest.kernel_cache_kept():
        tf.random.set_seed(other)  # another test ran first in this process, and drew
        tf.random.normal([5])
        tf.random.set_seed(mine)
        kept = tf.random.normal([5]).numpy()
    tf.random.set_seed(mine)  # the public call: the kernel cache emptied, the stream from its start
    fresh = tf.random.normal([5]).numpy()
    np.testing.assert_array_equal(kept, fresh)
    # The cache really is kept inside: the same seed again continues the stream (the documented
    # exception, a test run twice in one process), where the public call restarts it.
    with root_conftest.kernel_cache_kept():
        tf.random.set_seed(mine)
        continued = tf.random.normal([5]).numpy()
    assert not np.array_equal(continued, fresh)
    tf.random.set_seed(mine)
    np.testing.assert_array_equal(tf.random.normal([5]).numpy(), fresh)
