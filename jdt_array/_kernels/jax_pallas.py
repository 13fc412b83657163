"""The JDT statistics and their gradient as two fused Pallas passes over the logits.

Pass 1 (:func:`statistics`): one program per (image, block of pixels) loads the logits
tile by tile of classes, runs an online softmax over the classes of each pixel (a
running max and a running sum of exponentials, rescaled when the max grows), then a
second sweep over the class tiles accumulates, in float32 (float64 for float64
logits), the per-(image, class) sums of the block: |x|, and for a hard label the
class counts and the overlap (the probability at the pixel's class, found by comparing
class ids: no one-hot in memory), for a soft label |y|, |x - y| and max y. Each
program writes its partial sums to a (B, blocks, K, C) buffer that XLA sums afterwards
(deterministic, no atomics).

Pass 2 (:func:`statistics_vjp`): the same programs recompute the softmax and write
the logits' gradient x_c (g_c - sum_k x_k g_k), where g_c comes from the (B, C)
coefficients of the ratios' gradient: a_c - 2 d_c [label = c] for a hard label,
g_|x| + g_|x-y| sign(x - y) for a soft one; 0 at dropped pixels. Nothing pixel-sized
is kept between the passes.

Dropped pixels (``ignore_index``, ``keep_mask``) and the padding of the last blocks are
removed by selection (``where``), never by a 0/1 factor, so NaN or inf there stays
inert. Tiles are powers of two (classes and pixels padded and masked), as Triton
needs. On CPU the kernels run in Pallas's interpreter (``interpret=True``), which is
how the tests check them; on GPU they go through Pallas's GPU lowering (not yet run on
a GPU by this project).

What it covers (:func:`covers`): the softmax, the L1 norm (``norm=1``), hard or soft
labels, the class axis first (B, C, ...) or last (B, ..., C), floating logits of any
width, at least one pixel; on CPU not inside a ``shard_map`` that checks replication
(``check_vma=True``, the default: Pallas's interpreter fails there). Everything else
runs the XLA form.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

# Classes per tile (the online softmax sweeps the tiles) and pixels per block.
CLASS_TILE = 32
PIXEL_BLOCK = 512


def covers(logits: Any, label: Any, class_axis: int, norm: float,
           activation: str | None = "softmax") -> bool:  # fmt: skip
    """Whether the Pallas form computes this case (``class_axis`` non-negative);
    ``False`` sends it to the XLA form. The one place that decides, so a new option
    (another activation, say) declines here."""
    return (
        activation == "softmax"
        and norm == 1
        and class_axis in (1, logits.ndim - 1)
        and logits.size > 0
        and jnp.issubdtype(logits.dtype, jnp.floating)
        # Pallas's interpreter cannot run on values that vary over the axes of a
        # shard_map that checks them (check_vma=True); on CPU those go to XLA.
        and not (_interpret() and _varies(logits))
    )


def _varies(x) -> bool:
    typeof = getattr(jax, "typeof", None)  # older JAX has no typed manual axes
    axis_type = getattr(typeof(x), "manual_axis_type", None) if typeof else None
    return bool(axis_type is not None and axis_type.varying)


def _interpret() -> bool:
    return jax.default_backend() == "cpu"


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _acc_dtype(dtype) -> Any:
    return jnp.float64 if dtype == jnp.float64 else jnp.float32


class _Layout:
    """The logits as (B, C, N) (``first``) or (B, N, C), and the tile sizes."""

    def __init__(self, logits, class_axis):
        self.first = class_axis == 1 and logits.ndim > 2
        self.B, self.C = logits.shape[0], logits.shape[class_axis]
        self.N = logits.size // (self.B * self.C)
        self.ct = min(CLASS_TILE, _pow2(self.C))
        self.tiles = -(-self.C // self.ct)
        self.cp = self.ct * self.tiles  # padded classes
        self.bn = min(PIXEL_BLOCK, _pow2(self.N))
        self.blocks = -(-self.N // self.bn)

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

    def class_spec(self):
        return pl.BlockSpec((1, self.cp), lambda b, j: (b, 0))


def _load(ref, t, layout):
    """Class tile ``t`` of a (1, Cp, BN) or (1, BN, Cp) block, as [BN, CT] rows of
    pixels (a transpose in registers for channels-first)."""
    ct = layout.ct
    if layout.first:
        return ref[0, pl.ds(t * ct, ct), :].T
    return ref[0, :, pl.ds(t * ct, ct)]


def _store(ref, t, layout, value):
    ct = layout.ct
    if layout.first:
        ref[0, pl.ds(t * ct, ct), :] = value.T
    else:
        ref[0, :, pl.ds(t * ct, ct)] = value


def _masks(t, layout, kept):
    """[BN, CT] mask of real classes at kept pixels, and the tile's class ids."""
    classes = t * layout.ct + lax.broadcasted_iota(jnp.int32, (1, layout.ct), 1)
    return (classes < layout.C) & kept[:, None], classes


def _online_softmax(x_ref, layout, kept, acc):
    """Per pixel of the block, the max and the sum of exp(x - max) over the classes,
    one class tile at a time (dropped pixels count as logits 0)."""

    def tile(t):
        ok, _ = _masks(t, layout, kept)
        x = jnp.where(kept[:, None], _load(x_ref, t, layout).astype(acc), 0.0)
        return jnp.where(ok | ~kept[:, None], x, -jnp.inf)

    def step(t, carry):
        shift, total = carry
        x = tile(t)
        new = jnp.maximum(shift, jnp.max(x, axis=1))
        total = total * jnp.exp(shift - new) + jnp.sum(jnp.exp(x - new[:, None]), axis=1)
        return new, total

    x0 = tile(0)
    shift = jnp.max(x0, axis=1)
    total = jnp.sum(jnp.exp(x0 - shift[:, None]), axis=1)
    if layout.tiles > 1:
        shift, total = lax.fori_loop(1, layout.tiles, step, (shift, total))
    return tile, shift, total


def _kept(j, layout, code_ref=None, keep_ref=None):
    n = j * layout.bn + lax.broadcasted_iota(jnp.int32, (layout.bn,), 0)
    kept = n < layout.N
    if code_ref is not None:
        kept = kept & (code_ref[0, :] >= 0)
    if keep_ref is not None:
        kept = kept & (keep_ref[0, :] != 0)
    return kept


# -- pass 1: statistics ----------------------------------------------------------------


def _hard_stats_kernel(x_ref, code_ref, out_ref, *, layout, acc):
    kept = _kept(pl.program_id(1), layout, code_ref=code_ref)
    code = code_ref[0, :]
    tile, shift, total = _online_softmax(x_ref, layout, kept, acc)

    def accumulate(t, _):
        ok, classes = _masks(t, layout, kept)
        prob = jnp.where(ok, jnp.exp(tile(t) - shift[:, None]) / total[:, None], 0.0)
        hit = ok & (code[:, None] == classes)
        ct = layout.ct
        out_ref[0, 0, 0, pl.ds(t * ct, ct)] = jnp.sum(prob, axis=0)
        out_ref[0, 0, 1, pl.ds(t * ct, ct)] = jnp.sum(
            jnp.where(hit, 1.0, 0.0).astype(acc), axis=0
        )
        out_ref[0, 0, 2, pl.ds(t * ct, ct)] = jnp.sum(jnp.where(hit, prob, 0.0), axis=0)
        return 0

    lax.fori_loop(0, layout.tiles, accumulate, 0)


def _soft_stats_kernel(x_ref, y_ref, *rest, layout, acc, has_keep):
    keep_ref, out_ref = rest if has_keep else (None, rest[0])
    kept = _kept(pl.program_id(1), layout, keep_ref=keep_ref)
    tile, shift, total = _online_softmax(x_ref, layout, kept, acc)

    def accumulate(t, _):
        ok, _ = _masks(t, layout, kept)
        prob = jnp.where(ok, jnp.exp(tile(t) - shift[:, None]) / total[:, None], 0.0)
        y = jnp.where(ok, _load(y_ref, t, layout).astype(acc), 0.0)
        ct = layout.ct
        out_ref[0, 0, 0, pl.ds(t * ct, ct)] = jnp.sum(prob, axis=0)
        out_ref[0, 0, 1, pl.ds(t * ct, ct)] = jnp.sum(y, axis=0)
        out_ref[0, 0, 2, pl.ds(t * ct, ct)] = jnp.sum(jnp.abs(prob - y), axis=0)
        out_ref[0, 0, 3, pl.ds(t * ct, ct)] = jnp.max(y, axis=0)
        return 0

    lax.fori_loop(0, layout.tiles, accumulate, 0)


def class_codes(label, keep, num_classes: int) -> jax.Array:
    """A hard label as int32 codes: the class id in [0, C), C for an id outside it
    (a pixel of no class, as in the XLA form), -1 for a dropped pixel."""
    info = jnp.iinfo(label.dtype)
    valid = label >= 0 if info.min < 0 else jnp.ones(label.shape, bool)
    if num_classes <= info.max:
        valid = valid & (label < num_classes)
    code = jnp.where(valid, label, 0).astype(jnp.int32)
    code = jnp.where(valid, code, num_classes)
    return code if keep is None else jnp.where(keep, code, -1)


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


def statistics(logits, label, keep, class_axis: int, hard: bool):
    """``(|x|, |y|, |x - y|, label max)``, each (B, C) in the accumulation dtype, of
    softmax(logits) against ``label`` over the kept pixels (``keep``: boolean like a
    hard label, or None)."""
    layout = _Layout(logits, class_axis)
    acc = _acc_dtype(logits.dtype)
    grid = (layout.B, layout.blocks)
    k = 3 if hard else 4
    out_spec = pl.BlockSpec((1, 1, k, layout.cp), lambda b, j: (b, j, 0, 0))
    if hard:
        code = _pixels(class_codes(label, keep, layout.C), layout)
        kernel = functools.partial(_hard_stats_kernel, layout=layout, acc=acc)
        args, specs = (layout.flat(logits), code), [layout.tile_spec(), layout.pixel_spec()]
    else:
        kernel = functools.partial(_soft_stats_kernel, layout=layout, acc=acc,
                                   has_keep=keep is not None)  # fmt: skip
        args = [layout.flat(logits), layout.flat(label)]
        specs = [layout.tile_spec(), layout.tile_spec()]
        if keep is not None:
            args.append(_pixels(keep.astype(jnp.int32), layout))
            specs.append(layout.pixel_spec())
    out_shape = _output((layout.B, layout.blocks, k, layout.cp), acc, *args)
    partial = pl.pallas_call(
        kernel, out_shape=out_shape, grid=grid, in_specs=specs, out_specs=out_spec,
        interpret=_interpret(),
    )(*args)  # fmt: skip
    partial = partial[..., : layout.C]
    sums = jnp.sum(partial[:, :, :3], axis=1)
    if hard:
        prob_card, label_card, overlap = sums[:, 0], sums[:, 1], sums[:, 2]
        diff_card = prob_card + label_card - 2 * overlap
        return prob_card, label_card, diff_card, (label_card > 0).astype(acc)
    label_max = jnp.max(partial[:, :, 3], axis=1)
    return sums[:, 0], sums[:, 1], sums[:, 2], label_max


# -- pass 2: the gradient --------------------------------------------------------------


def _grad_kernel(x_ref, lab_ref, *rest, layout, acc, hard, has_keep):
    if hard:
        a_ref, d_ref, out_ref = rest
        code = lab_ref[0, :]
        kept = _kept(pl.program_id(1), layout, code_ref=lab_ref)
    else:
        keep_ref = rest[0] if has_keep else None
        a_ref, d_ref, out_ref = rest[1:] if has_keep else rest
        kept = _kept(pl.program_id(1), layout, keep_ref=keep_ref)
    tile, shift, total = _online_softmax(x_ref, layout, kept, acc)
    ct = layout.ct

    def coefficients(t, prob, ok, classes):
        a = a_ref[0, pl.ds(t * ct, ct)][None, :]
        d = d_ref[0, pl.ds(t * ct, ct)][None, :]
        if hard:  # a = g_|x| + g_|x-y|, d = g_|x-y|
            return jnp.where(ok & (code[:, None] == classes), a - 2 * d, a)
        y = _load(lab_ref, t, layout).astype(acc)
        return a + d * jnp.sign(prob - y)  # a = g_|x|, d = g_|x-y|

    def probabilities(t):
        ok, classes = _masks(t, layout, kept)
        return (
            jnp.where(ok, jnp.exp(tile(t) - shift[:, None]) / total[:, None], 0.0),
            ok,
            classes,
        )

    def inner_step(t, inner):
        prob, ok, classes = probabilities(t)
        g = coefficients(t, prob, ok, classes)
        return inner + jnp.sum(jnp.where(ok, prob * g, 0.0), axis=1)

    inner = lax.fori_loop(0, layout.tiles, inner_step, jnp.zeros((layout.bn,), acc))

    def write(t, _):
        prob, ok, classes = probabilities(t)
        g = coefficients(t, prob, ok, classes)
        grad = jnp.where(ok, prob * (g - inner[:, None]), 0.0)
        _store(out_ref, t, layout, grad.astype(out_ref.dtype))
        return 0

    lax.fori_loop(0, layout.tiles, write, 0)


def statistics_vjp(logits, label, keep, class_axis: int, hard: bool, g_prob_card,
                   g_diff_card):  # fmt: skip
    """The logits' gradient of sum(g_prob_card |x|) + sum(g_diff_card |x - y|), in the
    logits' dtype and shape (0 at dropped pixels)."""
    layout = _Layout(logits, class_axis)
    acc = _acc_dtype(logits.dtype)
    pad = ((0, 0), (0, layout.cp - layout.C))
    g_p, g_d = (jnp.pad(g.astype(acc), pad) for g in (g_prob_card, g_diff_card))
    flat = layout.flat(logits)
    if hard:
        code = _pixels(class_codes(label, keep, layout.C), layout)
        args, specs = (
            [flat, code, g_p + g_d, g_d],
            [layout.tile_spec(), layout.pixel_spec()],
        )
    else:
        args, specs = [flat, layout.flat(label)], [layout.tile_spec(), layout.tile_spec()]
        if keep is not None:
            args.append(_pixels(keep.astype(jnp.int32), layout))
            specs.append(layout.pixel_spec())
        args += [g_p, g_d]
    specs += [layout.class_spec(), layout.class_spec()]
    kernel = functools.partial(_grad_kernel, layout=layout, acc=acc, hard=hard,
                               has_keep=keep is not None)  # fmt: skip
    grad = pl.pallas_call(
        kernel, out_shape=_output(flat.shape, logits.dtype, *args),
        grid=(layout.B, layout.blocks), in_specs=specs, out_specs=layout.tile_spec(),
        interpret=_interpret(),
    )(*args)  # fmt: skip
    return jnp.reshape(grad, logits.shape)
