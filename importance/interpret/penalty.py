"""CAM-guided training: a radial penalty on class activation maps, computed inside the training step.

The ``lint`` project ("Interpretability Tools as Feedback Loops", J. Setpal,
github.com/jinensetpal/lint) adds to the cross-entropy a loss on the class activation map (CAM;
Zhou et al. 2016) of the last convolutional layer, weighted by an *inverted Gaussian* that is 0
at the image centre and grows outward: most targets are centred, so activation far from the
centre is taken to be the background. Its paper states the objective as

    L = L_CE + sum_{i, j, k} [(1 - exp(-j^2 - k^2)) * relu(h_i^{j,k})]^2

with ``h_i`` the map of example ``i``; its code also has a variant on the *difference* between
the two class maps. Both are here (:class:`CamPenalty`, ``variant="true_class"`` or
``"difference"``), with the penalty weight and an epoch schedule (the original trained with
cross-entropy only, then with the CAM loss, then with cross-entropy again).

The maps come from the CAM code of :mod:`importance.interpret` (the CAM layer it finds and the
layer's activations ``A`` and class-score gradients ``dS/dA``, differentiable): the map of a
score ``S`` is ``sum_k dS/dA_k * A_k`` (HiResCAM, Draelos & Carin 2020), which for a
GAP + Dense head equals the CAM of Zhou et al. divided by the number of map positions. The
penalty's gradient therefore contains second derivatives (through ``dS/dA``).

Deviations from the original, named:

* The width of the Gaussian is an option (``width``: its standard deviation as a fraction of the
  map's side); the original fixed it per experiment (``0.01`` to ``0.3`` of the image side over
  its history). The weight is ``1 - exp(-r^2 / (2 width^2))`` on the CAM grid, in [0, 1).
* Means over examples and map positions instead of the paper's sums (only the scale of
  ``weight`` changes).
* ``difference``: the true class's map minus the mean of the other classes' maps (for two
  classes, the original's ``map_0 - map_1`` up to sign), absolute value, normalised by its L2
  norm over the map per example; the original's ``F.normalize`` normalised along one spatial
  axis. The radial weight is squared, as in that code.
* Cross-entropy stays on while the penalty is on; the original's middle phase switched the
  cross-entropy weight to 0. Its clamp of the CAM loss to 10x the cross-entropy is not kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from importance.checks import (
    check_choice,
    check_int,
    check_number,
    check_positive_int,
    is_integer,
    is_number,
)
from importance.interpret.cam import cam_pass, find_cam_layer, hires_cam_maps
from importance.penalties import Penalty
from importance.validation import (
    check_classifier,
    check_explained,
    check_feature_map,
    check_single_input,
    num_classes,
)

VARIANTS = ("true_class", "difference")


def radial_weight(shape: Sequence[int], *, width: float = 0.25) -> np.ndarray:
    """The inverted Gaussian ``1 - exp(-r^2 / (2 sigma^2))`` on an ``(h, w)`` grid.

    ``r`` is the distance of a cell's centre from the grid's centre, in cells;
    ``sigma = width * max(h, w)``. The weight is 0 exactly at the centre (a cell exists there
    when both sides are odd), grows with the distance and stays below 1.

    Raises:
        ValueError: ``shape`` not two positive integers, or ``width`` not > 0.
    """
    if len(tuple(shape)) != 2 or not all(is_integer(s) and s > 0 for s in shape):
        raise ValueError(f"shape must be two positive integers (h, w). Received: {shape!r}")
    check_number("width", width, minimum=0, strict=True)
    h, w = (int(s) for s in shape)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    r2 = (rows - (h - 1) / 2) ** 2 + (cols - (w - 1) / 2) ** 2
    sigma = float(width) * max(h, w)
    return 1.0 - np.exp(-r2 / (2 * sigma**2))


def phases(*, before: int, during: int) -> list[int]:
    """The original's schedule as epochs: cross-entropy only for ``before`` epochs, then the
    penalty for ``during`` epochs, then cross-entropy only again (until training ends)."""
    before, during = check_int("before", before, minimum=0), check_int("during", during, minimum=0)
    return list(range(before, before + during))


def _check_schedule(schedule: Any) -> tuple[int, ...] | None:
    if schedule is None:
        return None
    ok = isinstance(schedule, (list, tuple, range)) and all(
        is_integer(e) and e >= 0 for e in schedule
    )
    if not ok:
        raise ValueError(
            "schedule must be None (every epoch) or a list of epoch numbers (integers >= 0, "
            f"0-based), e.g. phases(before=2, during=6). Received: {schedule!r}"
        )
    return tuple(sorted({int(e) for e in schedule}))


class CamPenalty(Penalty):
    """The radial CAM penalty as a :class:`~importance.penalties.Penalty` (it uses the batch and
    the epoch), e.g. for :func:`tasks.trainer.train`. It is traceable: its graph depends on the
    variant, width, schedule and CAM layer (:attr:`trace_key`), and its weight is a state tensor,
    so training one model again with another weight reuses the compiled epoch.

    Args:
        model: The CNN to train; its CAM layer is found (or checked) now.
        weight: Multiplier of the penalty (>= 0; 0 adds nothing).
        variant: ``"true_class"``: mean of ``(radial * relu(map of the true class))^2``;
            ``"difference"``: mean of ``radial^2 * |D| / ||D||_2`` with ``D`` the true class's
            map minus the mean of the other classes' maps.
        width: Standard deviation of the Gaussian as a fraction of the map's side.
        schedule: Epochs (0-based) in which the penalty is on; None: every epoch. See
            :func:`phases` for the original's off-on-off schedule. A schedule reaching past the
            last epoch of a training run is refused by :func:`tasks.trainer.train` (through
            :meth:`check_training`), never silently cut: the penalty would be on for fewer
            epochs than asked, or never.
        layer: The CAM layer (name or layer); found by the CAM code when None.

    The class score is the model's output column, the logit (the original's CAM of the class
    weights): the trainer takes logits models only.

    Raises:
        ValueError: A negative or non-finite weight, an unknown variant, a bad width or
            schedule, a model that is not a single-input classifier, or one whose CAM layer
            cannot be found or has no spatial output of a fixed size.
    """

    def __init__(self, model: Any, *, weight: float, variant: str = "true_class",
                 width: float = 0.25, schedule: Sequence[int] | None = None, layer: Any = None):
        if not is_number(weight) or not weight >= 0 or not np.isfinite(weight):
            finite = "" if not is_number(weight) or np.isfinite(weight) else "; expected finite"
            raise ValueError(f"weight must be a number >= 0. Received: {weight!r}{finite}")
        check_choice("variant", variant, VARIANTS)
        self.width = check_number("width", width, minimum=0, strict=True)
        self.weight = float(weight)
        self.variant = variant
        self.schedule = _check_schedule(schedule)
        check_classifier(model)
        check_single_input(model)
        self.layer = find_cam_layer(model, layer)
        check_feature_map(self.layer, model=model)
        grid = tuple(self.layer.output.shape[1:3])
        if any(d is None for d in grid):
            raise ValueError(
                f"layer {self.layer.name!r} has a map of unknown size {grid}; the radial weight "
                "needs a fixed (h, w): build the model on an Input of a fixed image size."
            )
        self.radial = radial_weight(grid, width=self.width)

    def __repr__(self) -> str:
        return (f"CamPenalty(weight={self.weight:g}, variant={self.variant!r}, width={self.width:g}, "
                f"schedule={list(self.schedule) if self.schedule is not None else None}, "
                f"layer={self.layer.name!r})")

    def check_training(self, model: Any, *, epochs: int) -> None:
        """Refuse a training run of ``epochs`` epochs in which the schedule cannot run whole, or
        a model that does not hold this penalty's CAM layer.

        Raises:
            ValueError: A scheduled epoch at or past ``epochs`` (naming them), or another model.
        """
        find_cam_layer(model, self.layer)
        if self.schedule is None or not epochs:
            return
        beyond = [e for e in self.schedule if e >= epochs]
        if beyond:
            effect = "would never be on" if len(beyond) == len(self.schedule) else (
                f"would be on in {len(self.schedule) - len(beyond)} of its "
                f"{len(self.schedule)} epochs")
            raise ValueError(
                f"schedule {list(self.schedule)} names epochs {beyond} past the last epoch of this "
                f"training (epochs={epochs}: 0-based epochs 0..{epochs - 1}); the CAM penalty "
                f"{effect}. Expected scheduled epochs in [0, {epochs})."
            )

    def active(self, epoch: Any) -> Any:
        """Whether the penalty is on in ``epoch`` (a bool tensor)."""
        if self.schedule is None:
            return tf.constant(True)
        if not self.schedule:
            return tf.constant(False)
        return tf.reduce_any(tf.equal(tf.cast(epoch, tf.int32), tf.constant(self.schedule, tf.int32)))

    @property
    def trace_key(self) -> tuple[Any, ...]:
        """What shapes the penalty's graph: variant, width, schedule, the CAM layer, and whether
        the weight is 0 (which adds nothing: no CAM pass is traced)."""
        schedule = None if self.schedule is None else tuple(self.schedule)
        return ("cam", self.variant, self.width, schedule, id(self.layer), self.weight == 0)

    def trace_state(self) -> list[tf.Tensor]:
        """``[weight]``, a float32 scalar: what changes between training calls."""
        return [tf.constant(self.weight, tf.float32)]

    def __call__(self, model: Any, x: Any, y: Any, epoch: Any = 0, *,
                 state: Sequence[Any] | None = None) -> tf.Tensor:
        """The weighted penalty on the batch ``(x, y)`` in ``epoch`` (0 when switched off);
        with ``state`` (from :meth:`trace_state` of a penalty with the same :attr:`trace_key`)
        the weight is taken from there."""
        if self.weight == 0:
            return tf.constant(0.0)
        weight = self.trace_state()[0] if state is None else state[0]
        return tf.cond(self.active(epoch), lambda: weight * self.value(model, x, y),
                       lambda: tf.constant(0.0))

    def value(self, model: Any, x: Any, y: Any) -> tf.Tensor:
        """The unweighted penalty on ``(x, y)``, whatever the schedule (float32 scalar)."""
        maps = self.maps(model, x, y)
        radial = tf.constant(self.radial, maps.dtype)
        if self.variant == "true_class":
            value = tf.reduce_mean(tf.square(radial * tf.nn.relu(maps)))
        else:
            size = tf.sqrt(tf.reduce_sum(tf.square(maps), axis=[1, 2], keepdims=True))
            value = tf.reduce_mean(tf.square(radial) * tf.abs(maps) / (size + 1e-12))
        return tf.cast(value, tf.float32)

    def maps(self, model: Any, x: Any, y: Any, *, training: bool = True,
             score: str = "output", from_logits: bool | None = None) -> tf.Tensor:
        """``(N, h, w)`` HiResCAM maps on the CAM grid, differentiable: the true class's
        (``true_class``), or the true class's minus the mean of the other classes'
        (``difference``; one pass per class). ``score`` and ``from_logits`` as in
        :func:`importance.interpret.cam.cam_pass` (the difference map is the same for both
        scores: the centring cancels in it)."""
        y = tf.reshape(tf.cast(y, tf.int32), [-1])
        options = {"layer": self.layer, "training": training, "score": score,
                   "from_logits": from_logits}
        if self.variant == "true_class":
            own = cam_pass(model, x, y, **options)
            return hires_cam_maps(own.activations, own.gradients)
        k = num_classes(model, x)
        difference = 0.0
        for c in range(k):
            other = cam_pass(model, x, tf.fill(tf.shape(y), c), **options)
            maps = hires_cam_maps(other.activations, other.gradients)
            is_true = tf.cast(tf.equal(y, c), maps.dtype)[:, None, None]
            difference += (is_true - (1.0 - is_true) / max(k - 1, 1)) * maps
        return difference


def cam_mass_outside(model: Any, x: Any, y: Any, *, centre_mask: np.ndarray, layer: Any = None,
                     batch_size: int = 256) -> float:
    """Mean share of the class-evidence map's absolute mass that lies outside the centre.

    The map is the true class's HiResCAM minus the mean of the other classes' (the
    ``difference`` map of :class:`CamPenalty`; for a GAP + Dense head its mean is the logit margin
    up to the biases), on the CAM grid. ``centre_mask`` is an ``(H, W)`` boolean mask of the input
    (the object region); a map cell counts as outside by the share of its area outside the mask.
    Examples whose map is exactly 0 are skipped; NaN when all are. The class scores are the
    centred ones of :func:`importance.interpret.outputs.class_scores`, so a softmax head and a
    logits head give the same figure (for a logits model the difference map equals that of the
    raw logits: the centring cancels in it).

    Raises:
        ValueError: A bad model, images (``x``) or labels (``y``), checked before any map by
            :func:`importance.validation.check_explained`; a ``centre_mask`` that is not an
            ``(H, W)`` mask of the images' size; a bad ``batch_size``.
    """
    batch_size = check_positive_int("batch_size", batch_size)
    maps_of = CamPenalty(model, weight=0.0, variant="difference", layer=layer)
    images, ids, from_logits = check_explained(model, x, y, target_name="y")
    size = tuple(int(d) for d in images.shape[1:3])
    mask = np.asarray(centre_mask)
    if mask.shape != size or mask.dtype.kind not in "bui" or not np.isin(mask, (0, 1)).all():
        raise ValueError(
            f"centre_mask must be a boolean (H, W) = {size} mask of the images. Received an array "
            f"of shape {mask.shape} and dtype {mask.dtype}."
        )
    h, w = maps_of.radial.shape
    mask = tf.constant(mask.astype(np.float32)[None, ..., None])
    outside = 1.0 - tf.image.resize(mask, (h, w), method="area")[0, ..., 0]
    shares = []
    for i in range(0, len(ids), batch_size):
        size = tf.abs(maps_of.maps(model, images[i:i + batch_size], ids[i:i + batch_size],
                                   training=False, score="centred", from_logits=from_logits))
        total = tf.reduce_sum(size, axis=[1, 2]).numpy()
        out = tf.reduce_sum(size * tf.cast(outside, size.dtype), axis=[1, 2]).numpy()
        shares += list(out[total > 0] / total[total > 0])
    return float(np.mean(shares)) if shares else float("nan")
