"""A researcher's trained model and data as a benchmark task: :func:`from_model`.

The built-in tasks build and train their models from a seed. A model that is *already trained*
(the usual case: "I have this network; which importance measure should I prune it by?") joins
the leaderboard through :func:`from_model` instead::

    import tasks

    task = tasks.from_model("my_model.keras", data="my_data.npz")      # or a live model,
    task = tasks.from_model(model, train=(x, y), test=(x_test, y_test),  # arrays, or batched
                            name="mine")                                # tf.data.Datasets
    tasks.trained("mine").model        # the model itself: nothing is trained or cached

Everything is checked at the edge, with :mod:`importance.validation`, before anything runs: the
file loads, the model is a built single-output classifier with at least two classes (logits or
probabilities, decided by :func:`importance.validation.output_kind`), the inputs fit its input
shape and are finite, the labels are class ids within its classes; each error names the value.

What the task can and cannot be used for (:func:`not_applicable`): the removal axis runs on it
at every aggregation level and treatment; the explanation axes when it has a 2-D convolution on
image inputs (``task.info["convolutional"]``); online measures (SI and the trajectory trackers),
consolidation and CAM-guided training need a training run or a task sequence, which a trained
model does not have, so they are listed as not applicable with the reason.

The model is never changed by this module: a model file is only read (``keras.saving.
load_model``), a live model is only called. The benchmark's sweeps replace weights and restore
them afterwards, whatever happens (:func:`importance.threshold_sweep`).
"""

from __future__ import annotations

import math
import os
import pathlib
import re
from typing import Any

import numpy as np

from tasks.registry import Task, TrainingSettings, register_task

VARIANT = "pretrained"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# Axes (and measure kinds) a trained model without its training run cannot take part in.
ONLINE_REASON = (
    "needs the training run (an online measure records it while the model trains); "
    "a model given trained has none"
)
CONSOLIDATION_REASON = (
    "needs a sequence of tasks trained one after the other; a single trained model has none"
)
CAM_TRAINING_REASON = "trains a model with a CAM penalty; a model given trained is not retrained"
EXPLANATION_REASON = "needs a 2-D convolution on image inputs (N, H, W, C); this model has none"


class PretrainedTask(Task):
    """A task whose model is given trained (see :func:`from_model`); it has no builder.

    :func:`tasks.trained` returns :meth:`model` for it, whatever the seed: the seed then varies
    only the measures' and the sweeps' random choices, never the model.
    """

    pretrained = True

    def __init__(
        self,
        name: str,
        *,
        model: Any,
        source: str,
        train: tuple,
        test: tuple,
        num_classes: int,
        description: str,
        info: dict[str, Any],
    ):
        super().__init__(
            name,
            description=description,
            num_classes=num_classes,
            input_shape=tuple(np.shape(train[0])[1:]),
            load=lambda: (train, test),
            build=self._no_builder,
            training=TrainingSettings(epochs=0, batch_size=1, learning_rate=0.0),
            variants=(VARIANT,),
            version=f"pretrained:{source}",
            info=info,
        )
        self._model = model
        self.source = source
        self._history: dict[str, float] | None = None

    def _no_builder(self, seed: int, variant: str) -> Any:
        raise TypeError(
            f"Task {self.name!r} holds a trained model ({self.source}); it has no seeded builder. "
            f"Use tasks.trained({self.name!r}).model."
        )

    def model(self) -> Any:
        """The trained model itself (the live object given, or the one loaded from the file)."""
        return self._model

    def history(self) -> dict[str, float]:
        """``test_loss`` and ``test_accuracy`` of the model (computed once)."""
        if self._history is None:
            from importance.data import evaluate

            loss, accuracy = evaluate(self._model, self.test_data())
            self._history = {"test_loss": loss, "test_accuracy": accuracy}
        return dict(self._history)


def from_model(
    model_or_path: Any,
    *,
    train: Any = None,
    test: Any = None,
    data: str | os.PathLike | None = None,
    name: str | None = None,
    description: str | None = None,
    register: bool = True,
) -> PretrainedTask:
    """A trained classifier and its data as a task, registered under ``name``.

    Args:
        model_or_path: A built Keras model, or the path of a saved one (``.keras``; ``.h5`` as
            Keras reads it). A file is read once and never written.
        train: The data the measures see: ``(x, y)`` arrays, a batched ``tf.data.Dataset`` of
            ``(x, y)`` (read once, into memory) or an ``.npz`` path with ``x`` and ``y`` (or
            ``x_train`` and ``y_train``). Labels are class ids or one-hot rows.
        test: The data the thresholding curves and explanations are evaluated on, same forms
            (an ``.npz`` with ``x`` and ``y``, or ``x_test`` and ``y_test``).
        data: Instead of ``train`` and ``test``: one ``.npz`` with ``x_train, y_train, x_test,
            y_test`` (the ``--bench-data`` format).
        name: Task name on the leaderboard (letters, digits, ``_`` and ``-``). Default: the
            file's stem, or the live model's name.
        description: One line for the task list; default says where the model came from.
        register: Add the task to the registry (``tasks.get_task(name)``, ``--bench-tasks``).

    Returns:
        The :class:`PretrainedTask`.

    Raises:
        FileNotFoundError: ``model_or_path`` or a data file does not exist.
        ValueError: A file that does not load as a Keras model; a model that is not a built,
            single-output classifier with at least two classes (e.g. a regression model);
            inputs that do not fit the model; labels out of range; a model at or below chance
            on ``test`` (an untrained one); a bad or taken ``name``;
            ``data`` given together with ``train``/``test``, or neither.
        TypeError: ``model_or_path`` is neither a model nor a path; data of another form.
    """
    from importance import validation

    model, source = _model(model_or_path)
    label = f"model ({source})"
    try:
        validation.check_classifier(model, name=label)
    except ValueError as error:
        raise ValueError(f"{error} tasks.from_model needs a single-output classifier.") from None
    train, test = _splits(train, test, data)
    train = _arrays(train, "train", model, NPZ_KEYS[:2])
    test = _arrays(test, "test", model, NPZ_KEYS[2:])
    if train[0].shape[1:] != test[0].shape[1:]:
        raise ValueError(
            f"test has inputs of shape {(None, *test[0].shape[1:])} but train has "
            f"{(None, *train[0].shape[1:])}; expected the same example shape."
        )
    classes = validation.num_classes(model, train[0])
    kind = validation.output_kind(model, train[0])
    name = _name(name, model_or_path, model)
    convolutional = _convolutional(model, train[0])
    info = {
        "source": source,
        "output": kind,
        "parameters": int(model.count_params()),
        "convolutional": convolutional,
        "not_applicable": not_applicable(convolutional=convolutional),
    }
    task = PretrainedTask(
        name,
        model=model,
        source=source,
        train=train,
        test=test,
        num_classes=classes,
        info=info,
        description=description or f"A trained model given by the user ({source}), {kind} out.",
    )
    loss = task.history()["test_loss"]
    if not loss < math.log(classes):
        raise ValueError(
            f"{label} has test loss {loss:.4g}, not below chance (ln {classes} = "
            f"{math.log(classes):.4g}); expected a trained model: the removal axis measures how "
            "fast "
            "a model falls to chance as weights are removed."
        )
    return register_task(task) if register else task


def not_applicable(*, convolutional: bool) -> dict[str, str]:
    """What a trained model without its training run cannot take part in, and why.

    Returns:
        ``{what: reason}`` with ``what`` one of ``online measures``, ``consolidation``,
        ``cam_training`` and, without a 2-D convolution, ``explanation``.
    """
    out = {
        "online measures": ONLINE_REASON,
        "consolidation": CONSOLIDATION_REASON,
        "cam_training": CAM_TRAINING_REASON,
    }
    if not convolutional:
        out["explanation"] = EXPLANATION_REASON
    return out


def load_npz(path: str | os.PathLike, keys: tuple[str, str], *, name: str) -> tuple[Any, Any]:
    """Two arrays of an ``.npz`` file (``x`` and ``y`` also under the split's own keys).

    Raises:
        FileNotFoundError: No such file.
        ValueError: Not an ``.npz`` archive, or the keys are missing (the message lists what
            the file holds).
    """
    path = pathlib.Path(os.fspath(path)).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{name} file {str(path)!r} does not exist.")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{name} file {str(path)!r} is not an .npz archive of arrays: {error}"
        ) from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(
            f"{name} file {str(path)!r} is a single array; expected an .npz with {', '.join(keys)}."
        )
    with archive:
        files = set(archive.files)
        for candidate in (keys, ("x", "y")):
            if set(candidate) <= files:
                return archive[candidate[0]], archive[candidate[1]]
    raise ValueError(
        f"{name} file {str(path)!r} must hold arrays {', '.join(keys)} (or x, y). "
        f"Received: {', '.join(sorted(files)) or 'none'}"
    )


def _model(model_or_path: Any) -> tuple[Any, str]:
    """The model and a short description of where it came from."""
    if isinstance(model_or_path, (str, os.PathLike)):
        path = pathlib.Path(os.fspath(model_or_path)).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"model_or_path {str(path)!r} does not exist.")
        import keras

        try:
            model = keras.saving.load_model(str(path), compile=False)
        except Exception as error:  # any reason a file does not load is reported the same way
            raise ValueError(
                f"model_or_path {str(path)!r} does not load as a Keras model "
                f"({type(error).__name__}: {error}); expected a file saved with "
                "model.save('*.keras')."
            ) from None
        return model, path.name
    if not hasattr(model_or_path, "trainable_weights") or not callable(model_or_path):
        raise TypeError(
            f"model_or_path must be a Keras model or the path of a saved one. "
            f"Received: {type(model_or_path).__name__}"
        )
    return model_or_path, f"live model {model_or_path.name!r}"


def _splits(train: Any, test: Any, data: Any) -> tuple[Any, Any]:
    if data is not None:
        if train is not None or test is not None:
            raise ValueError(
                "Pass either data= (one .npz with both splits) or train= and test=, not both."
            )
        return data, data
    if train is None or test is None:
        missing = " and ".join(n for n, v in (("train", train), ("test", test)) if v is None)
        raise ValueError(
            f"{missing} is required: (x, y) arrays, a batched tf.data.Dataset or an .npz path "
            "(or data= with one .npz holding x_train, y_train, x_test, y_test)."
        )
    return train, test


def _arrays(
    split: Any, name: str, model: Any, keys: tuple[str, str]
) -> tuple[np.ndarray, np.ndarray]:
    """One split as checked float32 inputs and int32 labels (a dataset is read into memory)."""
    import tensorflow as tf

    from importance import validation

    if isinstance(split, (str, os.PathLike)):
        split = load_npz(split, keys, name=name)
    elif isinstance(split, tf.data.Dataset):
        validation.check_dataset(split, model=model, name=name)
        xs, ys = zip(*((np.asarray(x), np.asarray(y)) for x, y in split), strict=True)
        split = (np.concatenate(xs), np.concatenate(ys))
    elif not (isinstance(split, (tuple, list)) and len(split) == 2):
        raise TypeError(
            f"{name} must be (x, y) arrays, a batched tf.data.Dataset or an .npz path. "
            f"Received: {type(split).__name__}"
        )
    x, y = np.asarray(split[0]), np.asarray(split[1])
    if x.ndim < 2:
        raise ValueError(
            f"{name} inputs must have a batch axis and an example shape. Received shape {x.shape}"
        )
    if x.dtype.kind not in "fiub":
        raise TypeError(f"{name} inputs must be numbers. Received dtype {x.dtype}")
    try:
        x, y = validation.check_data((x.astype(np.float32, copy=False), y), model=model, name=name)
    except (ValueError, TypeError) as error:
        message = str(error)
        raise type(error)(message if message.startswith(name) else f"{name}: {message}") from None
    return np.ascontiguousarray(x, dtype=np.float32), np.ascontiguousarray(y, dtype=np.int32)


def _name(name: str | None, model_or_path: Any, model: Any) -> str:
    if name is None:
        stem = (
            pathlib.Path(os.fspath(model_or_path)).stem
            if isinstance(model_or_path, (str, os.PathLike))
            else model.name
        )
        return re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_") or "model"
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ValueError(
            "name must be letters, digits, '_' and '-' (a '.' would read as task.variant). "
            f"Received: {name!r}"
        )
    return name


def _convolutional(model: Any, x: np.ndarray) -> bool:
    """Whether the explanation axes apply: image inputs (N, H, W, C) and a 2-D convolution."""
    if x.ndim != 4:
        return False
    from importance.interpret import find_cam_layer

    try:
        find_cam_layer(model)
    except ValueError:
        return False
    return True
