"""Continual learning: consolidation strategies, their penalty and the continual metrics.

    from importance.continual import Consolidator, summary

    strategy = Consolidator("ewc", measure="fisher", lam=0.3)   # or "naive", "l2", "joint"
    strategy.consolidate(model, penalised, data=task_a)          # after a task
    train(model, task_b, penalty=strategy.penalty)               # tasks.trainer.train
    summary(R)                                                   # ACC, BWT, forgetting

Strategies are classes (:class:`Strategy`; :mod:`importance.continual.strategies`) on the shared
registry (:data:`~importance.continual.registry.STRATEGIES`, entry-point group
``importance.strategies``); the training loops that use them live in :mod:`tasks.continual`.
"""

from importance.continual.consolidation import (
    MODES,
    ConsolidationPenalty,
    SignedImportanceError,
    check_lam,
    normalise,
)
from importance.continual.metrics import average_accuracy, backward_transfer, forgetting, summary
from importance.continual.registry import (
    STRATEGIES,
    available_strategies,
    get_strategy,
    register_strategy,
    unregister_strategy,
)
from importance.continual.strategies import EWC, L2, Consolidator, Joint, Naive, Replay, Strategy

__all__ = [
    "EWC",
    "L2",
    "MODES",
    "STRATEGIES",
    "ConsolidationPenalty",
    "Consolidator",
    "Joint",
    "Naive",
    "Replay",
    "SignedImportanceError",
    "Strategy",
    "available_strategies",
    "average_accuracy",
    "backward_transfer",
    "check_lam",
    "forgetting",
    "get_strategy",
    "normalise",
    "register_strategy",
    "summary",
    "unregister_strategy",
]
