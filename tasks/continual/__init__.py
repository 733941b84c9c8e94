"""Continual learning on the task side: task sequences, the sequential learner, the lambda search.

    from importance.continual import Consolidator
    from tasks.continual import SequentialLearner, prepare_sequence, split_evenodd

    learner = SequentialLearner(prepare_sequence(split_evenodd()), seed=0)
    learner.learn(Consolidator("ewc", measure="fisher", lam=0.3))
    learner.accuracy_matrix()

* :mod:`tasks.continual.sequences`: the registered sequences (``split_evenodd``, ``split_mnist``,
  ``permuted_mnist``) on the shared registry (:data:`~tasks.continual.sequences.SEQUENCES`).
* :mod:`tasks.continual.learner`: :class:`SequentialLearner` and :func:`prepare_sequence`.
* :mod:`tasks.continual.lambda_search`: :func:`search_lambda` on validation data.

The strategies, their penalty and the metrics are in :mod:`importance.continual`.
"""

from tasks.continual.lambda_search import LambdaSearch, log_grid, search_lambda
from tasks.continual.learner import SequentialLearner, TaskData, prepare_sequence
from tasks.continual.sequences import (
    SEQUENCES,
    available_sequences,
    continual_sequence,
    permuted_mnist,
    register_sequence,
    split_evenodd,
    split_mnist,
)

__all__ = [
    "SEQUENCES",
    "LambdaSearch",
    "SequentialLearner",
    "TaskData",
    "available_sequences",
    "continual_sequence",
    "log_grid",
    "permuted_mnist",
    "prepare_sequence",
    "register_sequence",
    "search_lambda",
    "split_evenodd",
    "split_mnist",
]
