"""Benchmark tasks: offline data, seeded model builders and training settings, by name.

    import tasks

    tasks.available_tasks()
    task = tasks.get_task("mnist5k")
    run = tasks.trained("mnist5k", variant="cnn", seed=0)   # cached on disk
    run.model, run.recorder, run.history, run.from_cache

    tasks.from_model("my_model.keras", data="my_data.npz")   # a trained model as a task

Continual-learning sequences have their own registry (``tasks.continual.sequences.SEQUENCES``):
``tasks.continual_sequence("split_mnist")``; the sequential learner and the lambda search are in
:mod:`tasks.continual`.
"""

from tasks import applications, builtin, keras_data, planted, planted_region, spurious  # noqa: F401,I001  (register the tasks)
from tasks.cache import CacheEntryUnreadable, CacheLockTimeout, CacheWarning
from tasks.from_model import PretrainedTask, from_model
from tasks.continual.sequences import available_sequences, continual_sequence, register_sequence
from tasks.registry import (
    DatasetUnavailable,
    Task,
    TrainingSettings,
    available_tasks,
    get_task,
    register_task,
    unregister_task,
)
from tasks.run import TrainedModel, trained

__all__ = [
    "CacheEntryUnreadable",
    "CacheLockTimeout",
    "CacheWarning",
    "PretrainedTask",
    "DatasetUnavailable",
    "Task",
    "TrainedModel",
    "TrainingSettings",
    "available_sequences",
    "available_tasks",
    "continual_sequence",
    "from_model",
    "get_task",
    "register_sequence",
    "register_task",
    "trained",
    "unregister_task",
]
