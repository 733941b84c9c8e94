"""``tasks.trained``: a task's model trained with its settings, through the on-disk cache."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any

from importance.checks import check_seed
from tasks import cache as _cache
from tasks.registry import Task, get_task

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainedModel:
    """A trained task model.

    Attributes:
        model: The trained Keras model (logits out).
        recorder: The :class:`importance.online.Recorder` holding its training trajectory,
            attached to the model so that ``importance.compute_importance`` finds it; None when
            trained with ``track=False``.
        history: The trainer's history, plus ``test_loss`` and ``test_accuracy`` at the end.
        task: The :class:`tasks.Task`.
        variant: Model variant.
        seed: Seed of the initial weights and of training.
        from_cache: True when the weights (and trajectory) were loaded from the cache.
        cache_path: The cache entry's file, or None without cache.
    """

    model: Any
    recorder: Any
    history: dict[str, Any]
    task: Task
    variant: str
    seed: int
    from_cache: bool
    cache_path: str | None = None


def trained(
    name: str | Task,
    *,
    variant: str | None = None,
    seed: int = 0,
    cache: bool = True,
    track: bool = True,
    verbose: bool = False,
    cache_dir: str | os.PathLike | None = None,
) -> TrainedModel:
    """Train (or load from the cache) the model of a task.

    When the model is not in the cache, one progress line per epoch goes to the ``tasks.run``
    logger at INFO level (``training mnist5k/mlp seed 0: epoch 3/10, 4s elapsed, ~9s left``);
    ``logging.basicConfig(level=logging.INFO)`` shows them, and ``pytest benchmarks`` shows them
    while it runs serially.

    Args:
        name: A registered task name, or a :class:`tasks.Task` (e.g. one of a continual sequence).
        variant: Model variant; the task's default when None.
        seed: Seed of the initial weights and of the training order (for a task made by
            :func:`tasks.from_model`, whose model is returned as given, it changes nothing).
        cache: Read and write the on-disk cache (see :mod:`tasks.cache`). A process that misses
            locks the entry before training, so concurrent processes (pytest-xdist workers)
            train a model once and the others read it.
        track: Record all registered online measures (SI and the trackers) during training.
        verbose: Print per-epoch progress.
        cache_dir: Cache directory; ``$IMPORTANCE_BENCH_CACHE`` or the default when None.

    Raises:
        KeyError: Unknown task name.
        ValueError: Unknown variant or a bad seed.
        tasks.DatasetUnavailable: The task's data is not on this machine.
        tasks.CacheEntryUnreadable: The model's cache entry exists but this user may not read it
            (another user's private file in a shared cache folder): named, never retrained.
        tasks.CacheLockTimeout: Another process trained this model for longer than
            ``$IMPORTANCE_BENCH_CACHE_LOCK_TIMEOUT`` seconds (see :mod:`tasks.cache`).
    """
    from importance import track as start_tracking
    from importance.data import evaluate

    task = name if isinstance(name, Task) else get_task(name)
    variant = task.resolve_variant(variant)
    seed = check_seed(seed)
    reason = task.unavailable_reason()
    if reason is not None:
        from tasks.registry import DatasetUnavailable

        raise DatasetUnavailable(reason)
    if task.pretrained:  # a model given trained (tasks.from_model): nothing to train or cache
        return TrainedModel(task.model(), None, task.history(), task, variant, seed, False, None)
    settings = task.training_settings(variant)
    model = task.build_model(seed, variant)
    recorder = start_tracking(model, patch_fit=False) if track else None
    key = _cache.cache_key(
        task, variant, seed, settings.as_dict(), None if recorder is None else list(recorder.trackers)
    )
    path = _cache.entry_path(_cache.cache_dir(cache_dir), key) if cache else None

    def fit() -> dict[str, Any]:
        from tasks.trainer import train

        history = train(model, task.train_data(), seed=seed, recorder=recorder, verbose=verbose,
                        on_epoch_end=_log_progress(f"{task.name}/{variant} seed {seed}", settings.epochs),
                        **settings.as_dict())
        history["test_loss"], history["test_accuracy"] = evaluate(model, task.test_data())
        if verbose:
            print(f"{task.name}/{variant} seed {seed}: test accuracy {history['test_accuracy']:.4f}", flush=True)
        return history

    if path is None:
        return TrainedModel(model, recorder, fit(), task, variant, seed, False, None)
    # A miss locks the entry: of concurrent processes one trains, the others read its entry.
    history, from_cache = _cache.load_or_train(path, key, model, recorder, fit)
    return TrainedModel(model, recorder, history, task, variant, seed, from_cache, str(path))


def _log_progress(what: str, epochs: int) -> Any:
    """An ``on_epoch_end`` callback logging the epoch, the elapsed time and what is left (estimated
    from the last epoch, so the first, which traces the step, does not inflate it)."""
    started = time.perf_counter()

    def on_epoch_end(epoch: int, logs: dict[str, float]) -> None:
        done = epoch + 1
        elapsed = time.perf_counter() - started
        logger.info("training %s: epoch %d/%d, %.0fs elapsed, ~%.0fs left",
                    what, done, epochs, elapsed, logs["epoch_seconds"] * (epochs - done))

    return on_epoch_end
