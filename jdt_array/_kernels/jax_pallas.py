"""The JDT statistics and their gradient as two fused Pallas passes over the logits:
:class:`PallasFused`, the :class:`~jdt_array._kernels.fused.FusedKernel` of the kernel
set ``JDT_ARRAY_JAX_KERNEL=pallas`` (:class:`PallasKernels`).

Pass 1 (:func:`statistics_pass`): one program per (image, block of pixels) sweeps the
class tiles of its block twice: an online softmax over the classes of each pixel (a
running max and a running sum of exponentials, rescaled when the max grows), then the
accumulation, in float32 (float64 for float64 logits), of the per-(image, class) sums
of the block: |x|, and for a hard label the class counts and the overlap (the
probability at the pixel's class, found by comparing class ids: no one-hot in
memory), for a soft label |y|, |x - y| and max y; and of the cross-entropy sum
-sum_c y_c log x_c and the number of kept pixels. Each program writes its partial
sums to a (B, blocks, K, C) buffer that XLA sums afterwards (deterministic, no
atomics).

Pass 2 (:func:`gradient_pass`): the same programs recompute the softmax and write the
logits' gradient x_c (g_c - sum_k x_k g_k) + g_ce (x_c sum_k y_k - y_c), where g_c
comes from the (B, C) coefficients of the ratios' gradient: a_c - 2 d_c [label = c]
for a hard label, g_|x| + g_|x-y| sign(x - y) for a soft one; 0 at dropped pixels.
Nothing pixel-sized is kept between the passes.

The arithmetic is the Triton kernels' (``triton_jdt.py``): a -inf logit is a
probability of exactly 0 (:func:`_shift`: the running maximum of a pixel whose classes
so far are all -inf shifts by 0; a zero label weight times a -inf logit counts 0); a
kept pixel whose logits are all -inf, or that holds NaN or +inf, gives NaN, as XLA's
softmax does. Dropped pixels (``ignore_index``, ``keep_mask``) and the padding of the
last blocks are removed by selection (``where``), never by a 0/1 factor, so NaN or inf
there stays inert.

Where it runs is decided by the platform of the computation (``lax.platform_dependent``,
resolved when XLA lowers it for the device of the arrays), not by JAX's default
backend: on CUDA (and ROCm) the kernels are compiled through Pallas's **Triton
lowering**, pinned by ``compiler_params`` (JAX's default GPU lowering, Mosaic GPU,
targets Hopper and newer only, and runs ``pallas_call`` only as a deprecated path: the
Triton lowering is the one that covers A100, H100/H200 and B200 alike); on CPU they run
in Pallas's interpreter (the tests); on TPU, and on CPU inside a ``shard_map`` that
checks replication (``check_vma=True``, where the interpreter cannot run), the same
statistics run as XLA code (:func:`~jdt_array._kernels.fused.reference_statistics`).
Block shapes are powers of two (classes and pixels padded and masked), as Triton
needs; a tile holds at most ``TILE_ELEMENTS`` elements (registers: the compile report,
``jdt_array._tools.kernel_report``).

The statistics are a ``custom_vjp`` whose backward is pass 2. Pass 2 is a
``custom_jvp`` whose derivative is JAX's derivative of the XLA form of the same
backward, so ``jax.grad`` of ``jax.grad`` (and ``jax.hessian``-style forward-over-
reverse of the backward) gives the XLA form's second derivative. A soft label's own
gradient is XLA code (JAX drops it when it is not used).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as pallas_triton

from .fused import (
    FusedCase,
    FusedKernel,
    FusedStatistics,
    reference_statistics,
    reference_vjp_total,
)
from .generic import Generic
from .jax import JaxKernels

__all__ = ["PallasFused", "PallasKernels", "gradient_pass", "statistics_pass"]

# Classes per tile (the passes sweep the tiles), elements per tile, warps per program.
CLASS_TILE = 32
TILE_ELEMENTS = 1024
WARPS = 4
NUM_STAGES = 1
_COMPILER_PARAMS = pallas_triton.CompilerParams(num_warps=WARPS, num_stages=NUM_STAGES)


class PallasFused(FusedKernel):
    """The JDT statistics and the cross-entropy sums in two Pallas passes."""

    name = "pallas"

    def covers(self, case: FusedCase) -> bool:
        """The L1 norm (``norm=1``), hard or soft labels, the class axis first (B, C,
        ...) or last (B, ..., C), floating logits of any width, at least one pixel
        and a label of the logits' dtype when soft."""
        logits = case.logits
        return (
            case.norm == 1
            and case.class_axis in (1, logits.ndim - 1)
            and logits.size > 0
            and jnp.issubdtype(logits.dtype, jnp.floating)
            and (case.hard or case.label.dtype == logits.dtype)
        )

    def statistics(self, case: FusedCase) -> FusedStatistics:
        static = _Static.of(case)
        return FusedStatistics(*_statistics(static, case.logits, case.label, case.keep))

    def statistics_vjp(self, case, g_prob_card, g_diff_card, g_ce=None):
        static = _Static.of(case)
        acc = _acc_dtype(case.logits.dtype)
        if g_ce is None:
            g_ce = jnp.zeros(case.logits.shape[:1], acc)
        return _gradient(static, case.logits, case.label, case.keep,
                         g_prob_card.astype(acc), g_diff_card.astype(acc),
                         g_ce.astype(acc))  # fmt: skip


class PallasKernels(JaxKernels):
    """The JAX kernels with the JDT statistics (and, for ``ce_jdt_loss``, the
    cross-entropy) fused into two Pallas passes over the logits."""

    fused = PallasFused()


class _Static(NamedTuple):
    """The compile-time part of a case (hashable: it keys the traced functions)."""

    class_axis: int
    ignore_index: int | None
    hard: bool

    @classmethod
    def of(cls, case: FusedCase) -> _Static:
        return cls(case.class_axis, case.ignore_index, case.hard)

    def case(self, logits, label, keep) -> FusedCase:
        return FusedCase(logits, label, keep, self.class_axis, 1, self.ignore_index,
                         self.hard)  # fmt: skip


_XLA = Generic(jnp)  # the array-API form, for the derivatives and the XLA fallbacks


def _acc_dtype(dtype) -> Any:
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


# -- differentiation: custom_vjp of pass 1, custom_jvp of pass 2 ---------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _statistics(static, logits, label, keep):
    return _dispatch(static, statistics_pass, _reference_statistics, logits, label, keep)


def _statistics_forward(static, logits, label, keep):
    return _statistics(static, logits, label, keep), (logits, label, keep)


def _statistics_backward(static, residuals, cotangents):
    logits, label, keep = residuals
    g_prob, g_label_card, g_diff, _, g_ce, _ = cotangents
    acc = _acc_dtype(logits.dtype)
    g_prob, g_diff, g_ce = (g.astype(acc) for g in (g_prob, g_diff, g_ce))
    grad = _gradient(static, logits, label, keep, g_prob, g_diff, g_ce)
    g_label = None
    if not static.hard:  # a soft label's own gradient: XLA code
        # (max y has none: it only enters the loss through comparisons)
        def total(y):
            stats = _reference(static, logits, y, keep)
            terms = zip(
                (g_label_card, g_diff, g_ce),
                (stats.label_card, stats.diff_card, stats.ce_sum),
                strict=True,
            )
            return sum(jnp.sum(g.astype(acc) * v) for g, v in terms)

        g_label = jax.grad(total)(label).astype(label.dtype)
    return grad, g_label, None


_statistics.defvjp(_statistics_forward, _statistics_backward)


@functools.partial(jax.custom_jvp, nondiff_argnums=(0,))
def _gradient(static, logits, label, keep, g_prob, g_diff, g_ce):
    return _dispatch(static, gradient_pass, _reference_gradient, logits, label, keep,
                     g_prob, g_diff, g_ce)  # fmt: skip


@_gradient.defjvp
def _gradient_jvp(static, primals, tangents):
    """The derivative of the backward: JAX's, of the XLA form of the same backward."""
    logits, label, keep, g_prob, g_diff, g_ce = primals
    t_logits, _, _, t_prob, t_diff, t_ce = tangents

    def xla(z, a, d, e):
        return _reference_gradient(static, z, label, keep, a, d, e)

    out = _gradient(static, *primals)
    _, tangent = jax.jvp(xla, (logits, g_prob, g_diff, g_ce),
                         (t_logits, t_prob, t_diff, t_ce))  # fmt: skip
    return out, tangent


def _reference_statistics(static, logits, label, keep):
    return tuple(_reference(static, logits, label, keep))


def _reference(static, logits, label, keep) -> FusedStatistics:
    return reference_statistics(_XLA, static.case(logits, label, keep))


def _reference_gradient(static, logits, label, keep, g_prob, g_diff, g_ce):
    def total(z):
        return reference_vjp_total(_XLA, static.case(z, label, keep), g_prob, g_diff, g_ce)

    return jax.grad(total)(logits).astype(logits.dtype)


def _dispatch(static, kernel, xla, *args):
    """``kernel(static, *args, interpret=...)`` where Pallas runs (compiled on GPU,
    interpreted on CPU), ``xla(static, *args)`` where it cannot: on TPU (these are
    Triton kernels), and on CPU for values that vary over the axes of a shard_map that
    checks them (Pallas's interpreter cannot run there)."""

    def cpu(*a):
        if _varies(a[0]):
            return xla(static, *a)
        return kernel(static, *a, interpret=True)

    return lax.platform_dependent(
        *args, cpu=cpu, tpu=lambda *a: xla(static, *a),
        default=lambda *a: kernel(static, *a, interpret=False),
    )  # fmt: skip


def _varies(x) -> bool:
    typeof = getattr(jax, "typeof", None)  # older JAX has no typed manual axes
    axis_type = getattr(typeof(x), "manual_axis_type", None) if typeof else None
    return bool(axis_type is not None and axis_type.varying)


# -- layout ----------------------------------------------------------------------------


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class _Layout:
    """The logits as (B, C, N) (``first``) or (B, N, C), and the tile sizes; a tile is
    [CT, BN] (``first``) or [BN, CT], as it lies in memory (no transposes)."""

    def __init__(self, logits, class_axis):
        self.first = class_axis == 1 and logits.ndim > 2
        self.B, self.C = logits.shape[0], logits.shape[class_axis]
        self.N = logits.size // (self.B * self.C)
        self.ct = min(CLASS_TILE, _pow2(self.C))
        self.tiles = -(-self.C // self.ct)
        self.cp = self.ct * self.tiles  # padded classes
        self.bn = min(TILE_ELEMENTS // self.ct, _pow2(self.N))
        self.blocks = -(-self.N // self.bn)
        self.class_dim = 0 if self.first else 1  # of a tile

    def flat(self, x):
        return jnp.reshape(
            x, (self.B, self.C, self.N) if self.first else (self.B, self.N, self.C)
        )

    def tile_spec(self):
        block = (1, self.cp, self.bn) if self.first else (1, self.bn, self.cp)
        index = (lambda b, j: (b, 0, j)) if self.first else (lambda b, j: (b, j, 0))
        return pl.BlockSpec(block, index)

    def pixel_spec(self):
        return pl.BlockSpec((1, self.bn), lambda b, j: (b, j))

    def coefficient_spec(self):
        return pl.BlockSpec((1, 3, self.cp), lambda b, j: (b, 0, 0))

    def tile(self, ref, t):
        """Class tile ``t`` of a (1, Cp, BN) or (1, BN, Cp) block."""
        if self.first:
            return ref[0, pl.ds(t * self.ct, self.ct), :]
        return ref[0, :, pl.ds(t * self.ct, self.ct)]

    def store(self, ref, t, value):
        if self.first:
            ref[0, pl.ds(t * self.ct, self.ct), :] = value
        else:
            ref[0, :, pl.ds(t * self.ct, self.ct)] = value

    def pixels(self, v):
        """A per-pixel [BN] vector broadcast along the classes of a tile."""
        return v[None, :] if self.first else v[:, None]

    def classes(self, w):
        """A per-class [CT] vector broadcast along the pixels of a tile."""
        return w[:, None] if self.first else w[None, :]

    def over_classes(self, op, x):
        return op(x, axis=self.class_dim)

    def over_pixels(self, op, x):
        return op(x, axis=1 - self.class_dim)

    def class_ids(self, t):
        shape = (self.ct, self.bn) if self.first else (self.bn, self.ct)
        return t * self.ct + lax.broadcasted_iota(jnp.int32, shape, self.class_dim)


# -- the shared arithmetic -------------------------------------------------------------


def _shift(top):
    """The shift of exp(z - shift) for a running maximum ``top``: 0 where it is -inf
    (every class so far -inf: exp(-inf - 0) = 0, where -inf - -inf would be NaN)."""
    return jnp.where(top == -jnp.inf, 0.0, top)


def _cross_entropy(y, z, lse):
    """Each class's term y (lse - z) of -sum_c y_c log x_c: 0 where y is 0 (a -inf
    logit there is a probability 0 the label does not ask for)."""
    return jnp.where(y != 0, y * (lse - z), 0.0)


def _kept(j, layout, code_ref=None, keep_ref=None):
    n = j * layout.bn + lax.broadcasted_iota(jnp.int32, (layout.bn,), 0)
    kept = n < layout.N
    if code_ref is not None:
        kept = kept & (code_ref[0, :] >= 0)
    if keep_ref is not None:
        kept = kept & (keep_ref[0, :] != 0)
    return kept


def _softmax(x_ref, layout, kept, acc):
    """The class tiles of the block as logits (-inf at padded classes and dropped
    pixels), and per pixel the shift and the sum of exp(z - shift) over the classes."""

    def logits(t):
        ok = (layout.class_ids(t) < layout.C) & layout.pixels(kept)
        return jnp.where(ok, layout.tile(x_ref, t).astype(acc), -jnp.inf), ok

    def step(t, carry):
        top, total = carry
        z, _ = logits(t)
        new = jnp.maximum(top, layout.over_classes(jnp.max, z))
        shift = _shift(new)
        e = jnp.exp(z - layout.pixels(shift))
        return new, total * jnp.exp(top - shift) + layout.over_classes(jnp.sum, e)

    start = (jnp.full((layout.bn,), -jnp.inf, acc), jnp.zeros((layout.bn,), acc))
    top, total = lax.fori_loop(0, layout.tiles, step, start)
    return logits, _shift(top), total


def _probabilities(z, shift, total, layout):
    return jnp.exp(z - layout.pixels(shift)) / layout.pixels(total)


# -- pass 1: statistics ----------------------------------------------------------------


def _block(x_ref, lab_ref, keep_ref, layout, acc, hard):
    """The kept pixels of the block, their class codes (hard labels), and the
    softmax of ``_softmax``."""
    if hard:
        kept = _kept(pl.program_id(1), layout, code_ref=lab_ref)
        code = lab_ref[0, :]
    else:
        kept, code = _kept(pl.program_id(1), layout, keep_ref=keep_ref), None
    return (kept, code, *_softmax(x_ref, layout, kept, acc))


def _stats_kernel(x_ref, lab_ref, *rest, layout, acc, hard, has_keep):
    keep_ref = rest[0] if has_keep else None
    out_ref = rest[-1]
    kept, code, logits, shift, total = _block(x_ref, lab_ref, keep_ref, layout, acc, hard)
    lse = shift + jnp.log(total)
    ct = layout.ct

    def accumulate(t, ce):
        z, ok = logits(t)
        prob = jnp.where(ok, _probabilities(z, shift, total, layout), 0.0)
        if hard:
            y = jnp.where(ok & (layout.class_ids(t) == layout.pixels(code)), 1.0, 0.0)
            y = y.astype(acc)
            rows = (prob, y, jnp.where(y > 0, prob, 0.0))
        else:
            y = jnp.where(ok, layout.tile(lab_ref, t).astype(acc), 0.0)
            rows = (prob, y, jnp.abs(prob - y))
        for k, row in enumerate(rows):
            out_ref[0, 0, k, pl.ds(t * ct, ct)] = layout.over_pixels(jnp.sum, row)
        if not hard:
            out_ref[0, 0, 3, pl.ds(t * ct, ct)] = layout.over_pixels(jnp.max, y)
        terms = _cross_entropy(y, z, layout.pixels(lse))
        return ce + layout.over_classes(jnp.sum, terms)

    ce = lax.fori_loop(0, layout.tiles, accumulate, jnp.zeros((layout.bn,), acc))
    k = 3 if hard else 4
    ce_sum = jnp.sum(jnp.where(kept, ce, 0.0))
    count = jnp.sum(jnp.where(kept, 1.0, 0.0).astype(acc))
    out_ref[0, 0, k, pl.ds(0, ct)] = jnp.full((ct,), ce_sum, acc)
    out_ref[0, 0, k + 1, pl.ds(0, ct)] = jnp.full((ct,), count, acc)


def class_codes(label, keep, num_classes: int, ignore_index: int | None) -> jax.Array:
    """A hard label as int32 codes: the class id in [0, C), C for an id outside it
    (a pixel of no class, as in the XLA form), -1 for a dropped pixel (``keep``
    false or ``ignore_index``)."""
    info = jnp.iinfo(label.dtype)
    valid = label >= 0 if info.min < 0 else jnp.ones(label.shape, bool)
    if num_classes <= info.max:
        valid = valid & (label < num_classes)
    code = jnp.where(valid, label, 0).astype(jnp.int32)
    code = jnp.where(valid, code, num_classes)
    dropped = jnp.zeros(label.shape, bool) if keep is None else ~keep
    if ignore_index is not None and info.min <= ignore_index <= info.max:
        dropped = dropped | (label == ignore_index)
    return jnp.where(dropped, -1, code)


def _output(shape, dtype, *inputs):
    """The ``out_shape`` of a pallas_call: inside ``shard_map``, varying over the mesh
    axes its inputs vary over (newer JAX checks it)."""
    typeof = getattr(jax, "typeof", None)
    types = [getattr(typeof(x), "manual_axis_type", None) for x in inputs] if typeof else []
    types = [t for t in types if t is not None]
    if not types:
        return jax.ShapeDtypeStruct(shape, dtype)
    varying = frozenset().union(*(t.varying for t in types))
    axis_type = types[0].update(varying=varying)
    return jax.ShapeDtypeStruct(shape, dtype, manual_axis_type=axis_type)


def _pixels(x, layout):
    return jnp.reshape(x, (layout.B, layout.N))


def _label_args(static, label, keep, layout):
    """The label's kernel inputs: the class codes (hard), or the soft label and the
    keep mask as int32 (soft)."""
    if static.hard:
        code = class_codes(label, keep, layout.C, static.ignore_index)
        return [_pixels(code, layout)], [layout.pixel_spec()]
    args, specs = [layout.flat(label)], [layout.tile_spec()]
    if keep is not None:
        args.append(_pixels(keep.astype(jnp.int32), layout))
        specs.append(layout.pixel_spec())
    return args, specs


def _call(kernel, out_shape, grid, in_specs, out_specs, interpret, args):
    return pl.pallas_call(
        kernel, out_shape=out_shape, grid=grid, in_specs=in_specs, out_specs=out_specs,
        interpret=interpret, compiler_params=None if interpret else _COMPILER_PARAMS,
    )(*args)  # fmt: skip


def statistics_pass(static, logits, label, keep, *, interpret: bool) -> tuple:
    """Pass 1: ``FusedStatistics`` (as a tuple) of softmax(logits) against ``label``
    over the kept pixels (``keep``: the keep mask, or None)."""
    layout = _Layout(logits, static.class_axis)
    acc = _acc_dtype(logits.dtype)
    k = 3 if static.hard else 4
    label_args, label_specs = _label_args(static, label, keep, layout)
    args = [layout.flat(logits), *label_args]
    kernel = functools.partial(_stats_kernel, layout=layout, acc=acc, hard=static.hard,
                               has_keep=not static.hard and keep is not None)  # fmt: skip
    out_spec = pl.BlockSpec((1, 1, k + 2, layout.cp), lambda b, j: (b, j, 0, 0))
    out_shape = _output((layout.B, layout.blocks, k + 2, layout.cp), acc, *args)
    partial = _call(
        kernel,
        out_shape,
        (layout.B, layout.blocks),
        [layout.tile_spec(), *label_specs],
        out_spec,
        interpret,
        args,
    )
    sums = jnp.sum(partial, axis=1)  # (B, k + 2, Cp)
    prob_card = sums[:, 0, : layout.C]
    label_card = sums[:, 1, : layout.C]
    if static.hard:
        diff_card = prob_card + label_card - 2 * sums[:, 2, : layout.C]
        label_max = (label_card > 0).astype(acc)
    else:
        diff_card = sums[:, 2, : layout.C]
        label_max = jnp.max(partial[:, :, 3, : layout.C], axis=1)
    return prob_card, label_card, diff_card, label_max, sums[:, k, 0], sums[:, k + 1, 0]


# -- pass 2: the gradient --------------------------------------------------------------


def _grad_kernel(x_ref, lab_ref, *rest, layout, acc, hard, has_keep):
    keep_ref = rest[0] if has_keep else None
    coef_ref, out_ref = rest[-2], rest[-1]
    _, code, logits, shift, total = _block(x_ref, lab_ref, keep_ref, layout, acc, hard)
    ct = layout.ct

    def tile(t):
        z, ok = logits(t)
        prob = jnp.where(ok, _probabilities(z, shift, total, layout), 0.0)
        a = layout.classes(coef_ref[0, 0, pl.ds(t * ct, ct)])
        d = layout.classes(coef_ref[0, 1, pl.ds(t * ct, ct)])
        g_ce = layout.classes(coef_ref[0, 2, pl.ds(t * ct, ct)])  # the image's, C times
        if hard:  # a = g_|x| + g_|x-y|, d = g_|x-y|
            hit = ok & (layout.class_ids(t) == layout.pixels(code))
            y = jnp.where(hit, 1.0, 0.0).astype(acc)
            return prob, ok, jnp.where(hit, a - 2 * d, a), y, g_ce
        y = jnp.where(ok, layout.tile(lab_ref, t).astype(acc), 0.0)
        return prob, ok, a + d * jnp.sign(prob - y), y, g_ce  # a = g_|x|, d = g_|x-y|

    def inner_step(t, carry):
        inner, y_sum = carry
        prob, ok, g, y, _ = tile(t)
        inner = inner + layout.over_classes(jnp.sum, jnp.where(ok, prob * g, 0.0))
        return inner, y_sum + layout.over_classes(jnp.sum, y)

    zeros = jnp.zeros((layout.bn,), acc)
    inner, y_sum = lax.fori_loop(0, layout.tiles, inner_step, (zeros, zeros))

    def write(t, _):
        prob, ok, g, y, g_ce = tile(t)
        grad = prob * (g - layout.pixels(inner)) + g_ce * (prob * layout.pixels(y_sum) - y)
        layout.store(out_ref, t, jnp.where(ok, grad, 0.0).astype(out_ref.dtype))
        return 0

    lax.fori_loop(0, layout.tiles, write, 0)


def gradient_pass(static, logits, label, keep, g_prob, g_diff, g_ce, *, interpret: bool):
    """Pass 2: the logits' gradient of sum(g_prob |x|) + sum(g_diff |x - y|) +
    sum(g_ce ce_sum), in the logits' dtype and shape (0 at dropped pixels)."""
    layout = _Layout(logits, static.class_axis)
    acc = _acc_dtype(logits.dtype)
    pad = ((0, 0), (0, layout.cp - layout.C))
    g_p, g_d = (jnp.pad(g.astype(acc), pad) for g in (g_prob, g_diff))
    a = g_p + g_d if static.hard else g_p
    e = jnp.broadcast_to(g_ce.astype(acc)[:, None], a.shape)
    coefficients = jnp.stack([a, g_d, e], axis=1)  # (B, 3, Cp)
    label_args, label_specs = _label_args(static, label, keep, layout)
    flat = layout.flat(logits)
    args = [flat, *label_args, coefficients]
    specs = [layout.tile_spec(), *label_specs, layout.coefficient_spec()]
    kernel = functools.partial(_grad_kernel, layout=layout, acc=acc, hard=static.hard,
                               has_keep=not static.hard and keep is not None)  # fmt: skip
    out_shape = _output(flat.shape, logits.dtype, *args)
    grad = _call(kernel, out_shape, (layout.B, layout.blocks), specs, layout.tile_spec(),
                 interpret, args)  # fmt: skip
    return jnp.reshape(grad, logits.shape)
