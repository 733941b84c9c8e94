"""Shared check of the per-example engine's layer families.

Fixture ``engine_vs_loop``: a function ``(model, x, *, moment="square", vmapped=0,
method="auto") -> moments`` that runs the engine on ``x`` with labels ``i % classes`` under the
log-likelihood objective and asserts that the result matches the per-example loop (relative
error <= 1e-5, shapes of the trainable weights), that the whole-batch Jacobian never runs, and
that exactly ``vmapped`` layers take the per-layer vmap (no closed form).
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from importance.per_example import engine, per_example_moment
from importance.per_example.layers import scoped_vmap
from importance.testing import relative_error

TOL = 1e-5


def _log_likelihood(outputs: tf.Tensor, targets: tf.Tensor) -> tf.Tensor:
    return tf.gather(tf.nn.log_softmax(outputs), targets, axis=1, batch_dims=1)


@pytest.fixture
def engine_vs_loop():
    def check(model, x, *, moment="square", vmapped=0, method="auto"):
        scoped = []
        original = scoped_vmap.moments

        def counting(*args, **kwargs):
            scoped.append(1)
            return original(*args, **kwargs)

        def refuse(*args, **kwargs):
            raise AssertionError("the whole-batch jacobian ran")

        classes = int(model(x[:1]).shape[-1])
        y = tf.constant(np.arange(int(x.shape[0])) % classes, tf.int32)
        with pytest.MonkeyPatch.context() as patch:  # only these two; the caller's patches stay
            patch.setattr(engine, "jacobian_moments", refuse)
            patch.setattr(scoped_vmap, "moments", counting)
            got = per_example_moment(model, x, _log_likelihood, moment=moment, method=method, targets=y)
        ref = per_example_moment(model, x, _log_likelihood, moment=moment, method="loop", targets=y)
        assert [tuple(g.shape) for g in got] == [tuple(w.shape) for w in model.trainable_weights]
        assert relative_error(got, ref) <= TOL
        assert len(scoped) == vmapped
        return got

    return check
