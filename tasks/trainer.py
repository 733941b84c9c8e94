"""The project's training loop: a compiled step that also feeds online importance measures.

Each step computes the task loss (sparse categorical cross-entropy from logits) and, when given,
a penalty (an :class:`importance.penalties.Penalty`, e.g. an EWC or a class-activation-map
penalty) plus the model's own regularisation losses. The penalty is called one way,
``penalty(model, x, y, epoch, state=...)``: the batch's inputs and int32 labels and the 0-based
epoch as an int32 scalar tensor (a penalty that does not need them ignores them); a plain
callable is taken as a function of the model alone (:func:`importance.penalties.as_penalty`).
The optimiser applies the sum of their gradients, but an attached
:class:`importance.online.Recorder` observes only the *task-loss* gradient, with the weights
before and after the step, as SI requires (Zenke et al. 2017).

Runs are reproducible: the seed fixes the shuffling order and Keras' random state (the global seeds are
set when the epoch is traced), and TensorFlow op determinism is switched on (a process-wide setting).

**One trace serves many calls.** The compiled epoch is cached per model (weakly: the cache never
keeps a model alive) under what shapes its graph: the trainable weights, the input shape, the
batch size, the optimiser and its hyperparameters, the recorder's structure (its trackers'
classes and plain settings: a new recorder of the same measures on the same model lends its state
to the recorder the graph was traced with for the call, takes back what it recorded, and that
recorder gets its own state back) and the penalty's
``trace_key``. Each cached epoch keeps its optimiser, whose variables (step count, moments) are
reset at the start of every call to the values of a freshly built one, so a call gives bitwise
what a fresh optimiser and a fresh trace give. A penalty is cached only if it is *traceable*
(see :mod:`importance.penalties`): ``trace_key`` not None (hashable; equal keys mean the same
function of the model and the state, e.g. the same penalised variables) and ``trace_state()`` (a
list of tensors: the values that change between calls, fed to the compiled epoch as arguments and
to the penalty as ``state=``). :class:`importance.continual.ConsolidationPenalty` is, so a new
lambda, new anchors or new omegas reuse the graph. Any other penalty is called with
``state=None`` and traced afresh on every call, as is
a graph that draws unseeded random numbers (Keras' global seed generator, which every call
reseeds, or op-seeded stateful random ops): reusing it would continue a random stream that a
fresh trace restarts. Python state the key cannot see (e.g. a layer attribute changed between
calls) is baked into a cached graph, as with ``model.fit``'s compiled step.
"""

from __future__ import annotations

import dataclasses
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from importance.checks import check_choice, check_int, check_seed
from importance.data import evaluate
from importance.penalties import Penalty, as_penalty
from importance.validation import check_data, output_kind
from tasks.registry import OPTIMIZERS


def make_optimizer(name: str, *, learning_rate: float, weight_decay: float = 0.0) -> Any:
    """A Keras optimiser by name (see :data:`tasks.registry.OPTIMIZERS`).

    Raises:
        ValueError: An unknown name, or weight decay with an optimiser other than ``adamw``.
    """
    check_choice("optimizer", name, OPTIMIZERS)
    if weight_decay and name != "adamw":
        raise ValueError(f"weight_decay needs optimizer='adamw'. Received: optimizer={name!r}")
    lr = float(learning_rate)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate=lr, weight_decay=float(weight_decay))
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr)
    if name == "momentum":
        return keras.optimizers.SGD(learning_rate=lr, momentum=0.9)
    return keras.optimizers.RMSprop(learning_rate=lr)


def train(
    model: Any,
    train_data: Any,
    *,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    optimizer: str = "adam",
    seed: int = 0,
    recorder: Any = None,
    penalty: Penalty | Callable[[Any], Any] | None = None,
    verbose: bool = False,
    validation_data: Any = None,
    weight_decay: float = 0.0,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None = None,
) -> dict[str, list[float]]:
    """Train a logits classifier in place with a seeded, compiled custom loop.

    Args:
        model: A built Keras model outputting logits.
        train_data: ``(x, y)`` arrays with integer (or one-hot) labels.
        epochs: Passes over the data (0 trains nothing).
        batch_size: Examples per step; the last batch of an epoch may be smaller.
        learning_rate: Optimiser step size.
        optimizer: ``"adam"``, ``"adamw"``, ``"sgd"``, ``"momentum"`` or ``"rmsprop"``.
        seed: Fixes the shuffling order and Keras' random state (e.g. dropout).
        recorder: An :class:`importance.online.Recorder` fed ``(task_grads, before, after)``
            after every step.
        penalty: An :class:`importance.penalties.Penalty`, called as
            ``penalty(model, x, y, epoch, state=...)`` (batch inputs, int32 labels, 0-based epoch
            as an int32 scalar tensor), e.g. :class:`importance.interpret.penalty.CamPenalty`;
            or a plain ``fn(model) -> scalar``. Added to the loss; its gradient is applied but
            never shown to ``recorder``. A traceable penalty (``trace_key``, ``trace_state()``;
            see the module docstring) receives its state, and its compiled epoch is reused
            across calls.
        verbose: Print one progress line per epoch.
        validation_data: ``(x, y)`` evaluated after every epoch (``val_loss``, ``val_accuracy``).
        weight_decay: Decoupled weight decay (``optimizer="adamw"`` only).
        on_epoch_end: Called as ``on_epoch_end(epoch, logs)`` after every epoch.

    Returns:
        History: ``loss`` and ``accuracy`` per epoch (the task loss during training),
        ``val_loss`` / ``val_accuracy`` with validation data, and ``epoch_seconds``.

    Raises:
        ValueError: A bad option, naming it and the received value; bad ``train_data`` or a
            model that is not a logits classifier (see :mod:`importance.validation`).
    """
    check_int("epochs", epochs, minimum=0)
    check_int("batch_size", batch_size, minimum=1)
    check_seed(seed)
    if not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
        raise ValueError(f"learning_rate must be a positive number. Received: {learning_rate!r}")
    if not getattr(model, "built", False):
        raise ValueError("The model must be built before training (call it on a batch first).")
    if isinstance(train_data, tf.data.Dataset):
        raise TypeError(
            "train_data must be (x, y) arrays (the trainer shuffles them itself). "
            "Received a tf.data.Dataset."
        )
    x, y = check_data(train_data, model=model, name="train_data")
    x = np.asarray(x, dtype=np.float32)
    if output_kind(model, x) != "logits":
        raise ValueError(
            "train needs a model outputting logits (its loss is cross-entropy from logits); "
            "this model outputs probabilities. Drop its final softmax."
        )

    penalty = as_penalty(penalty)
    if penalty is not None:
        penalty.check_training(model, epochs=int(epochs))  # e.g. a CAM schedule past the last epoch

    tf.config.experimental.enable_op_determinism()
    traceable = penalty is not None and penalty.trace_key is not None
    state = list(penalty.trace_state()) if traceable else []
    options = dict(optimizer=optimizer, learning_rate=float(learning_rate), weight_decay=float(weight_decay),
                   recorder=recorder, penalty=penalty, traceable=traceable, shape=tuple(x.shape[1:]),
                   batch_size=int(batch_size), state_specs=[tf.TensorSpec.from_tensor(t) for t in state])
    key = _epoch_key(model, **options) if penalty is None or traceable else None
    if epochs:  # zero epochs traces nothing
        compiled = _compiled_epoch(model, key, options, seed=int(seed))
        compiled.reset_optimizer()
        vessel = compiled.recorder  # the recorder the graph was traced with (captured in it)
        if vessel is not recorder:  # another recorder of the same structure: lend it its state
            kept = vessel.state_dict()  # the vessel's own state, given back after the call
            vessel.load_state_dict(recorder.state_dict())

    rng = np.random.default_rng(int(seed))
    history: dict[str, list[float]] = {"loss": [], "accuracy": [], "epoch_seconds": []}
    if validation_data is not None:
        history.update(val_loss=[], val_accuracy=[])
    x_all, y_all = tf.constant(x), tf.constant(y)
    try:
        _run_epochs(compiled if epochs else None, x_all, y_all, state, rng, int(epochs), history,
                    model=model, validation_data=validation_data, verbose=verbose,
                    on_epoch_end=on_epoch_end)
    finally:
        if epochs and compiled.recorder is not recorder:
            recorder.load_state_dict(compiled.recorder.state_dict())  # what it recorded, handed back
            compiled.recorder.load_state_dict(kept)
    return history


def _run_epochs(compiled: Any, x_all: tf.Tensor, y_all: tf.Tensor, state: list[tf.Tensor],
                rng: np.random.Generator, epochs: int, history: dict[str, list[float]], *, model: Any,
                validation_data: Any, verbose: bool,
                on_epoch_end: Callable[[int, dict[str, float]], None] | None) -> None:
    """The epochs of :func:`train`, appending to ``history``."""
    n = int(x_all.shape[0])
    for epoch in range(epochs):
        start = time.perf_counter()
        order = tf.constant(rng.permutation(n).astype(np.int32))
        total_loss, total_correct = compiled.run_epoch(x_all, y_all, order, tf.constant(epoch, tf.int32), state)
        total_loss, total_correct = float(total_loss), int(total_correct)
        logs = {"loss": total_loss / n, "accuracy": total_correct / n}
        if validation_data is not None:
            logs["val_loss"], logs["val_accuracy"] = evaluate(model, validation_data)
        logs["epoch_seconds"] = time.perf_counter() - start
        for k, v in logs.items():
            history[k].append(float(v))
        if verbose:
            shown = " - ".join(f"{k} {v:.4f}" for k, v in logs.items() if k != "epoch_seconds")
            print(f"epoch {epoch + 1}/{epochs} - {shown} - {logs['epoch_seconds']:.1f}s", flush=True)
        if on_epoch_end is not None:
            on_epoch_end(epoch, logs)


_EPOCHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> OrderedDict(key -> _Epoch)
MAX_EPOCHS_PER_MODEL = 8  # least recently used entries beyond this are dropped
_trace_count = 0  # compiled epochs traced in this process (tests count retraces with it)


@dataclasses.dataclass
class _Epoch:
    """A compiled epoch with its optimiser and the optimiser's initial variable values."""

    run_epoch: Callable[..., tuple[tf.Tensor, tf.Tensor]]
    optimizer: Any
    initial: list[np.ndarray]
    reusable: bool
    recorder: Any = None  # the recorder captured in the graph (another of its structure borrows it)

    def reset_optimizer(self) -> None:
        """Put the optimiser back to its freshly built state (step count 0, zero moments)."""
        for variable, value in zip(self.optimizer.variables, self.initial, strict=True):
            variable.assign(value)


def _epoch_key(model: Any, *, recorder: Any, penalty: Any, traceable: bool, state_specs: list[Any],
               **options: Any) -> Hashable:
    """What shapes the compiled epoch's graph, besides the model the cache is keyed on.

    The recorder is keyed by its structure (:func:`_recorder_key`): a cached epoch holds the
    recorder it was traced with, whose variables the graph captures, and a later recorder of the
    same structure lends it its state for the call (:func:`train`)."""
    penalty_key = (penalty.trace_key, tuple(state_specs)) if traceable else None
    return (tuple(id(w) for w in model.trainable_weights), tuple(sorted(options.items())),
            None if recorder is None else _recorder_key(recorder), penalty_key)


def _recorder_key(recorder: Any) -> Hashable:
    """What of a recorder shapes the graph: per online measure its tracker's class, which
    measures share a tracker, and each tracker's plain attributes (numbers, strings, tuples:
    e.g. a decay rate read at trace time) besides its variables. A recorder subclass, or a
    tracker holding anything else (which the graph might read), is keyed by identity: its
    cached epoch holds it, so its id cannot be reused while the entry lives."""
    from importance.online import Recorder

    if type(recorder) is not Recorder:
        return ("identity", id(recorder))
    slots: dict[int, int] = {}
    parts = []
    for name, tracker in recorder.trackers.items():
        variables = tracker.variables()
        attributes = []
        for attribute, value in sorted(vars(tracker).items()):
            if attribute in variables:
                continue
            frozen = _frozen(value)
            if frozen is None:
                return ("identity", id(recorder))
            attributes.append((attribute, frozen))
        shapes = tuple((label, tuple((tuple(v.shape), v.dtype.name) for v in vs))
                       for label, vs in sorted(variables.items()))
        parts.append((name, type(tracker), slots.setdefault(id(tracker), len(slots)), tuple(attributes), shapes))
    return ("structure", tuple(parts))


def _frozen(value: Any) -> Hashable | None:
    """``value`` as a hashable of plain values (lists as tuples), or None if it is not plain."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return ("plain", value)
    if isinstance(value, (list, tuple)):
        items = [_frozen(v) for v in value]
        return None if any(i is None for i in items) else ("sequence", tuple(items))
    return None


def _compiled_epoch(model: Any, key: Hashable | None, options: dict[str, Any], *, seed: int) -> _Epoch:
    """The cached compiled epoch of ``model`` under ``key``, traced and stored if missing.

    Tracing happens here, before anything is stored: a trace that raises (or is interrupted)
    leaves no entry. ``key`` None (an untraceable penalty) traces without caching.

    The global seeds (Python, NumPy, Keras, TensorFlow: ``keras.utils.set_random_seed``) are
    set to ``seed`` just before a trace, where they decide the seeds of the random ops the
    graph is built with. A cached epoch is reused only if it draws no unseeded random number
    (:class:`_Epoch` ``reusable``), so nothing it runs depends on them, and they are left alone:
    setting TensorFlow's seed clears its kernel cache, and the next call of the epoch then
    instantiates its kernels again, which cost ~3x the epoch itself on the small MLPs of the
    consolidation study (every lambda of the grid paid it)."""
    cache = _EPOCHS.setdefault(model, OrderedDict())
    if key is not None and key in cache:
        cache.move_to_end(key)
        return cache[key]
    keras.utils.set_random_seed(seed)
    epoch = _make_epoch(model, **options)
    if key is not None and epoch.reusable:
        cache[key] = epoch
        while len(cache) > MAX_EPOCHS_PER_MODEL:
            cache.popitem(last=False)
    return epoch


def _make_epoch(
    model: Any,
    *,
    optimizer: str,
    learning_rate: float,
    weight_decay: float,
    recorder: Any,
    penalty: Any,
    traceable: bool,
    shape: tuple[int, ...],
    batch_size: int,
    state_specs: list[tf.TensorSpec],
) -> _Epoch:
    """One compiled, traced epoch over ``x[order]`` in batches; it returns (sum of task losses,
    correct) and takes the penalty's state as its last argument."""
    opt = make_optimizer(optimizer, learning_rate=learning_rate, weight_decay=weight_decay)
    weights = list(model.trainable_weights)
    opt.build(weights)
    initial = [np.array(v.numpy()) for v in opt.variables]
    model_ref = weakref.ref(model)  # the cache is weak on the model: its entry must not hold it

    def step(x: tf.Tensor, y: tf.Tensor, epoch: tf.Tensor, state: list[tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        model = model_ref()
        before = [tf.identity(w.value) for w in weights] if recorder is not None else None
        with tf.GradientTape(persistent=True) as tape:
            logits = model(x, training=True)
            per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            task_loss = tf.reduce_mean(per_example)
            extra = [tf.cast(loss, tf.float32) for loss in model.losses]
            if penalty is not None:
                value = penalty(model, x, y, epoch, state=state if traceable else None)
                extra.append(tf.cast(value, tf.float32))
        task_grads = _dense(tape.gradient(task_loss, weights), weights)
        grads = task_grads
        if extra:
            extra_grads = _dense(tape.gradient(tf.add_n(extra), weights), weights)
            grads = [g + e for g, e in zip(task_grads, extra_grads, strict=True)]
        del tape
        opt.apply_gradients(zip(grads, weights, strict=True))
        if recorder is not None:
            after = [tf.identity(w.value) for w in weights]
            recorder.observe(task_grads, before, after)
        correct = tf.reduce_sum(
            tf.cast(tf.equal(tf.argmax(logits, axis=-1, output_type=tf.int32), y), tf.int32)
        )
        return tf.reduce_sum(per_example), correct

    signature = [
        tf.TensorSpec([None, *shape], tf.float32),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([None], tf.int32),
        tf.TensorSpec([], tf.int32),
        list(state_specs),
    ]

    @tf.function(input_signature=signature)
    def run_epoch(
        x: tf.Tensor, y: tf.Tensor, order: tf.Tensor, epoch: tf.Tensor, state: list[tf.Tensor]
    ) -> tuple[tf.Tensor, tf.Tensor]:
        global _trace_count
        _trace_count += 1
        n = tf.shape(order)[0]
        total_loss = tf.constant(0.0, tf.float32)
        total_correct = tf.constant(0, tf.int32)
        for begin in tf.range(0, n, batch_size):
            index = order[begin : begin + batch_size]
            loss_sum, correct = step(tf.gather(x, index), tf.gather(y, index), epoch, state)
            total_loss += loss_sum
            total_correct += correct
        return total_loss, total_correct

    created = []
    with tf.variable_creator_scope(lambda next_creator, **kw: created.append(1) or next_creator(**kw)):
        graph = run_epoch.get_concrete_function().graph
    return _Epoch(run_epoch, opt, initial, reusable=not created and not _op_seeded_random(graph),
                  recorder=recorder)


def _op_seeded_random(graph: Any) -> bool:
    """Whether ``graph`` (or a function it calls, e.g. a loop body) has an op-seeded stateful
    random op (``tf.random.uniform`` and kin: attributes ``seed`` and ``seed2``), whose stream
    lives in the op and continues from call to call."""
    graph_def = graph.as_graph_def()
    nodes = [*graph_def.node, *(n for f in graph_def.library.function for n in f.node_def)]
    return any("seed2" in node.attr for node in nodes)


def _dense(grads: list[Any], weights: list[Any]) -> list[tf.Tensor]:
    """Gradients with None (weight not used by the loss) replaced by zeros."""
    return [
        tf.zeros(w.shape, dtype=tf.float32) if g is None else tf.convert_to_tensor(g)
        for g, w in zip(grads, weights, strict=True)
    ]

