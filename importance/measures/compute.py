"""Calling a registered measure: :func:`compute_importance` (checked in and out) and :func:`track`.

:func:`compute_importance` checks the model and the data at the edge
(:mod:`importance.validation`), hands an online measure its model's
:class:`~importance.online.Recorder`, and checks what the measure returned
(:func:`importance.scores.validate_scores`). :func:`track` starts recording a model's training
trajectory for the online measures.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from importance.measures.registry import get_measure, recordable_measures
from importance.online import Recorder, attach, require_recorder
from importance.scores import validate_scores
from importance.validation import check_data, check_model, labels_for

__all__ = ["compute_importance", "track"]


def compute_importance(name: str, model: Any, data: Any = None, **options: Any) -> list[np.ndarray]:
    """Compute a registered measure and check its result.

    Args:
        name: Registry name of the measure.
        model: A built Keras model (a single-output classifier when ``data`` is given).
        data: What the measure needs, usually ``(x, y)`` arrays or a batched ``tf.data.Dataset``
            (see :func:`importance.data.as_dataset`). Online measures ignore it. Checked here,
            before the measure runs (:func:`importance.validation.check_data`): a NaN input or a
            label outside the model's classes is reported as bad data, never as a bad measure.
        **options: Keyword options for the measure, over the registered defaults.

    Returns:
        One float64 array per ``model.trainable_weights`` entry, with that weight's shape.

    Raises:
        KeyError: Unknown measure.
        ValueError: A model or data the library cannot judge (see :mod:`importance.validation`).
        ImportanceError: The measure returned the wrong number of arrays, a wrong shape,
            or non-finite values; the message names the measure and the weight.
        RuntimeError: An online measure with no recorded trajectory for this model.
    """
    spec = get_measure(name)
    kwargs = {**spec.defaults, **options}
    check_model(model)
    if data is not None:
        data = check_data(data, model=model, max_examples=kwargs.get("max_examples"))
    if spec.online and "recorder" not in kwargs:
        kwargs["recorder"] = require_recorder(model, name)
    with labels_for(model):
        scores = spec.fn(model, data, **kwargs)
    return validate_scores(scores, model, measure=name)


def track(model: Any, measures: Iterable[str] | None = None, *, patch_fit: bool = True) -> Recorder:
    """Start recording the training trajectory of ``model`` for online measures.

    Args:
        model: A built Keras model.
        measures: Online measure names; all registered ones that have a tracker when None.
        patch_fit: Also record steps of ``model.fit`` by wrapping the model's ``train_step``
            (a training loop that calls :meth:`~importance.online.Recorder.observe` itself does
            not need it). The gradient fed to the trackers is that of the compiled loss alone; a
            model whose training loss is not its compiled loss (an overridden ``compute_loss``
            or ``train_step`` with extra terms) should feed ``Recorder.observe`` itself.

    Returns:
        The :class:`~importance.online.Recorder`, also attached to the model so that
        :func:`compute_importance` finds it.

    Raises:
        KeyError: A name that is not an online measure with a tracker; the message lists them.
        ValueError: The model has not been built.
    """
    recordable = dict(recordable_measures())
    names = sorted(recordable) if measures is None else list(measures)
    unknown = [n for n in names if n not in recordable]
    if unknown:
        raise KeyError(f"No online tracker for {unknown}. Available: {', '.join(recordable)}")
    recorder = Recorder(model, {n: recordable[n].tracker for n in names})
    return attach(model, recorder, patch_fit=patch_fit)
