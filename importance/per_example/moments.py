"""Per-example gradient moments: the kinds, the objective type, the moment function, the chunked
sum over a batch and the XLA test.

Shared by the public face (:mod:`importance.per_example`), the reference methods, the engine
(:mod:`importance.per_example.engine`) and the layer families
(:mod:`importance.per_example.layers`), so each is defined once.

Internal surface (tests may set these with ``monkeypatch``): :data:`CHUNK_ELEMENTS`,
:data:`HELD_FRACTION` and :data:`MIN_CHUNK_ELEMENTS`, the budget of :func:`chunked_sum`,
:data:`PAIR_POSITIONS`, :data:`FUSED_POSITIONS` and :data:`FUSED` (the ways of
:func:`outer_sum_moment`) and :data:`LANES` (the engine's order of the layers' moments), read when
a step is traced.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf

from importance.checks import check_choice

Objective = Callable[[tf.Tensor], tf.Tensor]
MOMENTS = ("square", "abs")


def check_moment(moment: Any) -> str:
    """``moment`` if it is one of :data:`MOMENTS`.

    Raises:
        ValueError: Naming the bad value and the choices.
    """
    return check_choice("moment", moment, MOMENTS)


def apply_moment(t: tf.Tensor, moment: str) -> tf.Tensor:
    """The moment of ``t``: ``t**2`` for ``"square"``, ``|t|`` for ``"abs"``."""
    return tf.square(t) if moment == "square" else tf.abs(t)


# Positions up to which the square moment of a sum of outer products over positions is taken
# from pairs of positions (:func:`outer_sum_moment`). Measured, 2-core CPU, batch 32, process
# time against the plain (batch-summed) product of the same tensors: 4 positions 2.3-2.5x with
# pairs against 4-10x formed per example; 9 positions 5.0x against 2.3-3.7x; 16: 8-10x against
# 2.0-2.5x.
PAIR_POSITIONS = 4


def outer_sum_moment(a: tf.Tensor, g: tf.Tensor, moment: str) -> tf.Tensor:
    """``sum_i f(A_i^T G_i)`` for ``a`` (batch, positions, D) and ``g`` (batch, positions, F):
    the moment of per-example gradients that are sums over positions of outer products (a Dense
    layer over a sequence or pixels, a convolution's patches).

    Three ways, chosen by the number of positions P (known when the graph is built):

    * P <= :data:`FUSED_POSITIONS` on the CPU: one loop over the examples compiled with XLA
      (:func:`fused_outer_sum_moment`), without a per-example tensor in memory;
    * otherwise, the square moment over at most :data:`PAIR_POSITIONS` positions from pairs of
      positions (below);
    * otherwise formed per example: one batched matmul, then the moment, summed.

    Pairs of positions:
    ``sum_i (sum_p a_ip g_ip^T)**2 = sum_{i, p <= q} w_pq (a_ip * a_iq) (g_ip * g_iq)^T`` with
    ``w = 1`` on the diagonal and 2 off it: one matmul over ``batch * P (P + 1) / 2`` rows, which
    runs at matmul speed where the per-example products (P multiply-adds per element written)
    are bound by memory. Deviation in rounding only: where an example's terms nearly cancel over
    positions the expanded square loses digits with the *square* of the cancellation
    (``eps * (sum |x_p| / |sum x_p|)**2`` relative, against ``eps * sum |x_p| / |sum x_p|``
    formed per example); a result rounded below zero is clipped to 0.
    """
    positions = a.shape[1]
    if fused_applies(positions):
        return fused_outer_sum_moment(a, g, moment)
    if moment != "square" or positions is None or positions > PAIR_POSITIONS:
        return tf.reduce_sum(apply_moment(tf.matmul(a, g, transpose_a=True), moment), axis=0)
    first, second = np.triu_indices(positions)
    weight = tf.constant(np.where(first == second, 1.0, 2.0)[None, :, None], tf.float32)
    a_pairs = tf.gather(a, first, axis=1) * tf.gather(a, second, axis=1) * weight
    g_pairs = tf.gather(g, first, axis=1) * tf.gather(g, second, axis=1)
    total = tf.matmul(
        tf.reshape(a_pairs, [-1, a.shape[-1]]), tf.reshape(g_pairs, [-1, g.shape[-1]]),
        transpose_a=True,
    )
    return tf.maximum(total, 0.0)


def outer_sum_elements(positions: int | None, depth: int, filters: int, moment: str) -> int:
    """Float32 elements :func:`outer_sum_moment` forms per example (its chunk budget)."""
    if fused_applies(positions):
        return 0  # the loop keeps one (D x F) sum, whatever the batch
    if moment == "square" and positions is not None and positions <= PAIR_POSITIONS:
        return positions * (positions + 1) // 2 * (depth + filters)
    return 2 * depth * filters


# Positions up to which, on the CPU, :func:`outer_sum_moment` runs one loop over the examples
# compiled with XLA. Measured (benchmarks.per_example.profile_families --outer-sums: 2-core CPU,
# batch 32, process time over the plain batch-summed product, abs / square; per-example
# products, pairs -> fused): 4 positions, 2304 x 256: 12.5x / 12.3x, 3.1x -> 1.7x / 1.7x;
# 9 positions: 5.4x / 5.2x, 4.8x -> 1.5x / 1.4x; 16 positions, 1152 x 256: 4.5x / 3.6x, 9.9x ->
# 1.9x / 1.9x; but 36 positions, 576 x 64: 1.9x / 2.1x -> 2.9x / 3.6x.
FUSED_POSITIONS = 16
# Elements of the fused loop's row of columns over all positions (positions x F as laid out)
# up to which the loop keeps them in cache: XLA's loop reads the F values of every position for
# each of the D rows of the sum, and past that a large sum costs 2-2.5x. So for a large sum (at
# least FUSED_TRANSPOSED_SUM_ELEMENTS) with F > D and positions x F past this, the wider side
# becomes the rows (the loop forms G^T A, sum_p g_p a_p^T, and the (F, D) sum is transposed
# once); columns still too many for it are split into equal blocks, one loop each,
# concatenated. Measured (2-core CPU, batch 32, process time over the plain product, abs, two
# runs; one loop as laid out -> as chosen): 16 positions, 256 x 1024 (ResNet50's expansion):
# 3.7-4.3x -> 1.6-1.7x; 512 x 1024: 2.9-4.4x -> 1.3-2.0x; 384 x 1536 (ConvNeXtTiny's MLP):
# 2.3-2.5x -> 1.9x; 4 positions, 512 x 2048: 1.8-2.4x -> 1.5-1.9x; 768 x 3072: 2.7x -> 2.0x;
# 9 positions, 1536 x 2048 (Xception's exit flow): 3.5x -> 2.1x (square alike). Smaller sums
# gain nothing or lose (4 positions, 192 x 1152: 1.45x as laid out, 1.75x transposed; 16
# positions, 80 x 480: 1.5x, 1.65x), and blocks of columns where F < D change nothing
# (16 positions, 1024 x 512 and 1536 x 384: within 0.1x).
FUSED_ROW_ELEMENTS = 4096
FUSED_TRANSPOSED_SUM_ELEMENTS = 1 << 18
# Whether the fused loop may be used: None until probed (once, by fused_works: no GPU visible,
# and XLA compiles it here); tests set False to force the other ways.
FUSED: bool | None = None


def fused_applies(positions: int | None) -> bool:
    """Whether :func:`outer_sum_moment` takes the fused loop over this many positions."""
    return positions is not None and 0 < positions <= FUSED_POSITIONS and fused_works()


def _fused_loop(moment: str, positions: int) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    def loop(a: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
        def body(i: tf.Tensor, total: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            gradient = a[i, 0][:, None] * g[i, 0][None, :]
            for p in range(1, positions):
                gradient += a[i, p][:, None] * g[i, p][None, :]
            return i + 1, total + apply_moment(gradient, moment)

        start = (tf.constant(0), tf.zeros(tf.stack([tf.shape(a)[2], tf.shape(g)[2]])))
        return tf.while_loop(lambda i, _: i < tf.shape(a)[0], body, start)[1]

    # One function per (moment, positions), its other sizes left open; XLA compiles each
    # concrete shape once when it first runs.
    return tf.function(loop, autograph=False, jit_compile=True, reduce_retracing=True)


_FUSED_LOOPS: dict[tuple[str, int], Callable[[tf.Tensor, tf.Tensor], tf.Tensor]] = {}


def fused_outer_sum_moment(a: tf.Tensor, g: tf.Tensor, moment: str) -> tf.Tensor:
    """:func:`outer_sum_moment` as one loop over the examples compiled with XLA: example ``i``'s
    gradient ``sum_p a_ip g_ip^T`` is formed, its moment taken and added to the sum in one
    fused pass, so no (batch x D x F) tensor is written to memory. The per-example products
    write and read ``batch * D * F`` elements, which on the CPU bounds them by memory bandwidth
    (3-12x the plain product over 4-16 positions); the fused loop is 1.4-1.9x. The float32 sum
    over positions runs in order ``p = 0, 1, ...``: rounding like the matmul's, not the pairs'.
    Where the output gradients are wide (:func:`fused_transposes`) the loop forms the transposed
    gradient ``sum_p g_ip a_ip^T`` and the (F, D) sum is transposed once: the same products and
    sums, laid out so that the loop's columns stay in cache. Columns still too many for it are
    formed a block at a time (:func:`fused_block_columns`), each block one loop over the
    examples: again the same products and sums. The number of positions must be known when the
    graph is built.
    """
    key = (check_moment(moment), int(a.shape[1]))
    if key not in _FUSED_LOOPS:
        _FUSED_LOOPS[key] = _fused_loop(*key)
    loop = _FUSED_LOOPS[key]
    transposed = fused_transposes(key[1], a.shape[2], g.shape[2])
    rows, columns = (g, a) if transposed else (a, g)
    block = fused_block_columns(key[1], columns.shape[2])
    if block is None:
        total = loop(rows, columns)
    else:
        starts = range(0, columns.shape[2], block)
        total = tf.concat([loop(rows, columns[:, :, s : s + block]) for s in starts], axis=1)
    return tf.transpose(total) if transposed else total


def fused_block_columns(positions: int, columns: int | None) -> int | None:
    """Columns per block of :func:`fused_outer_sum_moment`'s loop: equal blocks of at most
    :data:`FUSED_ROW_ELEMENTS` over all positions, or None for one loop (also when the number of
    columns is unknown)."""
    if columns is None or positions * columns <= FUSED_ROW_ELEMENTS:
        return None
    blocks = -(-positions * columns // max(1, FUSED_ROW_ELEMENTS))
    return -(-columns // blocks)


def fused_transposes(positions: int, depth: int | None, filters: int | None) -> bool:
    """Whether :func:`fused_outer_sum_moment` runs its loop transposed: both sides known,
    ``filters > depth``, ``positions * filters`` past :data:`FUSED_ROW_ELEMENTS` and the sum at
    least :data:`FUSED_TRANSPOSED_SUM_ELEMENTS`."""
    if depth is None or filters is None:
        return False
    return (
        filters > depth
        and positions * filters > FUSED_ROW_ELEMENTS
        and depth * filters >= FUSED_TRANSPOSED_SUM_ELEMENTS
    )


def fused_works() -> bool:
    """Whether the fused loop is used here (probed once, eagerly): only on the CPU (no GPU
    visible: there the batched matmul is not bound the same way, and this path is unmeasured),
    and only if XLA compiles it and it agrees with the per-example products."""
    global FUSED
    if FUSED is None:
        with tf.init_scope():
            if tf.config.list_logical_devices("GPU"):
                FUSED = False
            else:
                a = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) / 7.0 - 1.0
                g = np.arange(2 * 3 * 5, dtype=np.float32).reshape(2, 3, 5) / 9.0 - 1.5
                expected = np.abs(np.einsum("ipd,ipf->idf", a, g)).sum(axis=0)
                try:
                    got = fused_outer_sum_moment(tf.constant(a), tf.constant(g), "abs").numpy()
                except (tf.errors.OpError, ValueError, NotImplementedError):
                    FUSED = False
                else:
                    FUSED = bool(np.allclose(got, expected, rtol=1e-5))
    return FUSED


def chunked_outer_sum(a: tf.Tensor, g: tf.Tensor, moment: str, *, held: bool = False) -> tf.Tensor:
    """:func:`outer_sum_moment` over the whole batch, a chunk at a time (:func:`chunked_sum`):
    the (D, F) moment of a layer whose per-example gradient is ``A_i^T G_i``.

    A chunk's budget counts its slices of ``a`` and ``g`` (when the positions are known) and what
    :func:`outer_sum_moment` forms. With ``held`` the held-tensor rule applies too, ``a`` and
    ``g`` being tensors the engine holds for the layer anyway. The fused loop forms no
    per-example tensor and takes the whole batch at once.
    """
    positions, depth, filters = a.shape[1], int(a.shape[-1]), int(g.shape[-1])
    if fused_applies(positions):
        return fused_outer_sum_moment(a, g, moment)
    slices = 0 if positions is None else positions * (depth + filters)
    return chunked_sum(
        lambda chunk: outer_sum_moment(chunk[0], chunk[1], moment),
        [a, g],
        slices + outer_sum_elements(positions, depth, filters, moment),
        [depth, filters],
        held=slices if held and slices else None,
    )


# Budget, in float32 elements, for the per-example tensors one chunk of the batch forms at once
# when a layer's per-example gradient does not factorise (patches, per-example gradients).
CHUNK_ELEMENTS = 1 << 22
# With ``held`` given, a chunk's temporaries are also kept under this fraction of the batch's
# tensors the engine already holds for the layer (so a small model's peak stays near a plain
# pass's), but never split below ``MIN_CHUNK_ELEMENTS`` (a caller may pass a smaller floor:
# the Embedding family does: ``layers/embedding.CHUNK_FLOOR``).
HELD_FRACTION = 0.5
MIN_CHUNK_ELEMENTS = 1 << 20
# The engine runs the layers' moments in this many lanes (0: no order imposed): in backward
# order, each layer's moments wait for those of the layer before it in its lane, so at most
# LANES layers' chunks are alive at once; without lanes TensorFlow runs every ready layer's
# chunk loop at once. The lanes make room for the floor above: one chunk of up to 1M elements
# per layer instead of one example (per-iteration overhead; a chunk that stays in cache).
# Measured with benchmarks.per_example.compare_settings (2-core CPU, N=64, batch 32, CPU over
# the plain pass / peak memory over its peak), before (no lanes, floor 64K) -> after (4 lanes,
# floor 1M): DenseNet121 fisher_empirical 1.73x/1.39x -> 1.47x/1.07x, mas 2.12x/1.39x ->
# 1.61x/1.07x; MobileNetV2 mas 1.66x/1.26x -> 1.25x/1.11x; NASNetMobile mas 1.79x/1.93x ->
# 1.49x/1.19x; EfficientNetB0 mas 1.37x/1.25x -> 1.10x/1.02x; ResNet50 mas 1.51x/1.06x ->
# 1.44x/1.04x; ConvNeXtTiny mas 1.32-1.37x -> 1.45x (the larger floor; lanes alone 1.34x).
# A floor of 1M without lanes: DenseNet121 1.45x but 2.3x the plain peak.
LANES = 4


def chunked_sum(
    block: Callable[[list[tf.Tensor]], tf.Tensor],
    tensors: list[tf.Tensor],
    per_example: Any,
    shape: Any,
    *,
    held: Any = None,
    floor: int | None = None,
    balanced: bool = False,
) -> tf.Tensor:
    """Sum of ``block(chunk)`` over chunks of the batch (axis 0 of every tensor), one at a time.

    Chunks run one after another (``parallel_iterations=1``) so that at most one chunk's
    per-example temporaries (``per_example`` float32 elements each) are alive: at most
    :data:`CHUNK_ELEMENTS`, and with ``held`` (per-example elements of the tensors already held
    for the layer) at most :data:`HELD_FRACTION` of those over the batch. No (batch x
    parameters) tensor of the model is formed.

    Args:
        block: Maps the chunk's slices of ``tensors`` to a float32 tensor of ``shape``.
        tensors: Tensors sharing the batch axis 0.
        per_example: Float32 elements of temporaries ``block`` forms per example (an int, or a
            scalar tensor when the shapes are only known at run time).
        shape: The shape of ``block``'s result.
        held: Per-example float32 elements of the layer's tensors alive anyway (inputs, output
            gradients), or None for the absolute budget only.
        floor: The held rule's floor, in elements per chunk (default :data:`MIN_CHUNK_ELEMENTS`).
        balanced: Keep the number of chunks the rule gives, but make them as even as one chunk
            size allows (the smallest size that needs no more chunks: 128 examples in chunks of
            at most 56 run as 43, 43, 42 rather than 56, 56, 16). The convolutions ask for it:
            in whole models it was never slower and ResNet-BN gained 0.03-0.04x of the plain
            pass; the Embedding family does not (0.05-0.09x slower on the text model). See
            docs/per_example.md, "The CNN at the bar".
    """
    floor = MIN_CHUNK_ELEMENTS if floor is None else floor
    static_n = tensors[0].shape[0]
    n = tf.shape(tensors[0])[0]
    static_held = held is None or (isinstance(held, int) and static_n is not None)
    if isinstance(per_example, int) and static_held:
        per_example = max(1, per_example)
        chunk = max(1, CHUNK_ELEMENTS // per_example)
        if held is not None:
            by_batch = int(HELD_FRACTION * static_n * held) // per_example
            chunk = min(chunk, max(1, floor // per_example, by_batch))
        if static_n is not None and static_n <= chunk:
            return block(tensors)
    else:  # the same rule on run-time sizes
        per_example = tf.maximum(tf.cast(per_example, tf.float64), 1.0)
        chunk = tf.math.floor(CHUNK_ELEMENTS / per_example)
        if held is not None:
            by_batch = tf.math.floor(
                HELD_FRACTION * tf.cast(n, tf.float64) * tf.cast(held, tf.float64) / per_example
            )
            smallest = tf.math.floor(floor / per_example)
            chunk = tf.minimum(chunk, tf.maximum(smallest, by_batch))
        chunk = tf.cast(tf.maximum(chunk, 1.0), tf.int32)
    if balanced:  # as many chunks, of the smallest size that needs no more
        if static_n is not None and isinstance(chunk, int):
            chunk = -(-static_n // -(-static_n // chunk))
        else:
            count = (n + chunk - 1) // chunk
            chunk = (n + count - 1) // count
    _, total = tf.while_loop(
        lambda start, _: start < n,
        lambda start, acc: (
            start + chunk, acc + block([t[start : start + chunk] for t in tensors])
        ),
        (tf.constant(0), tf.zeros(shape, tf.float32)),
        parallel_iterations=1,
    )
    return total


def in_xla() -> bool:
    """Whether the graph being built is compiled by XLA (``jit_compile=True``): some closed forms
    need shapes XLA does not allow (batch-sized group counts, data-dependent sizes)."""
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - private module moved: take the path XLA accepts
        return True
    if tf.executing_eagerly():
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))
