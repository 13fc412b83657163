"""Triton kernels of the JDT statistics and their gradient: two fused passes over the
logits (see ``../shared/design/fused-kernels.md`` in the project's workspace and
``docs/architecture.md``).

Both passes take the softmax of each pixel *online over class tiles*, as the Pallas
kernels do (``jax_pallas.py``): a running maximum and a running sum of exponentials,
rescaled when the maximum grows, so any number of classes works with a register tile
of ``BLOCK_C`` x ``BLOCK_N`` elements. When every class fits one tile (``ONE_TILE``)
the tile is loaded once and stays in registers; otherwise the passes sweep the class
tiles again (the second read of a block hits the caches, not DRAM).

Pass 1, ``statistics_kernel``: each program reads a run of pixels of one image and
accumulates, per class, |x|^p, |y|^p, |x - y|^p and max y over its kept pixels (and
the cross-entropy -sum_c y_c log x_c with the number of kept pixels); it writes these
partial sums to its own row of a small buffer, which the caller sums (deterministic,
no atomics). With several class tiles that row is the accumulator (read, added to and
written by its one program).

Pass 2, ``gradient_kernel``: each program reads a block of pixels again, recomputes
the softmax and writes d loss / d logits = x (g - sum_c x_c g_c) + g_ce (x sum_c y_c -
y), with g the derivative of the statistics weighted by their (B, C) cotangents; 0 at
dropped pixels.

The arithmetic every kernel shares (``_shift``, ``_online``, ``_settled``,
``_cross_entropy``) holds
the rules for infinities: a -inf logit is a probability of exactly 0 (the running
maximum of a pixel whose classes so far are all -inf shifts by 0, never by -inf, which
would give -inf - -inf; a zero label weight times a -inf logit counts 0, never
0 * inf); a kept pixel whose logits are all -inf, or that holds NaN or +inf, gives
NaN, as the native softmax does.

Data types are runtime arguments, not compile-time ones: the logits, a soft label and
the gradient come as byte pointers with a dtype code (``FLOAT_CODES``), a hard label
with an integer code (``INT_CODES``); each load casts its pointer to the type, so one
compiled kernel serves every dtype (a uniform branch per load), and the kernels the
launcher can run differ only in what shapes the code: the label kind, the layout and
the tile (``triton_launch.specializations``). The layout is compile-time
(``CLASSES_LAST``): the unit stride is a literal, which lets Triton vectorize the loads
along it. Strides of the logits, a soft label and the gradient are in bytes (never 1,
so Triton specializes them only on their alignment); every other scalar is never
specialized on its value. Dropped pixels (``keep`` false, ``ignore_index``, the tail
of a block) are removed by selection, never by multiplying with 0, so NaN or inf
there stays inert. Everything accumulates in float32.

Compiled for CUDA tensors; with ``TRITON_INTERPRET=1`` in the environment before
``triton`` is imported, Triton interprets them on CPU tensors (how the tests run them).
"""

from __future__ import annotations

import triton
import triton.language as tl

# The statistics of one (image, class), in this order in the partial-sum buffer.
NUM_STATS = 4  # |x|^p, |y|^p, |x - y|^p (hard label, L1: the overlap), max y
NUM_CE = 2  # the cross-entropy sum and the number of kept pixels
# Dtype codes of the runtime ``*_code`` arguments.
FLOAT_CODES = {"float16": 0, "bfloat16": 1, "float32": 2}
INT_CODES = {"uint8": 0, "int8": 1, "int16": 2, "int32": 3, "int64": 4}
# Never specialized on their values (Triton would otherwise compile a variant for an
# argument equal to 1, or divisible by 16): per-pixel and (B, C) arrays, whose loads
# need no vectorizing, and every scalar but the byte strides.
_SCALARS = ["ids_ptr", "keep_ptr", "B", "N", "C", "ignore_index", "p",
            "pixels_per_program", "h_b", "h_n", "k_b", "k_n", "logits_code",
            "label_code", "has_keep", "has_ignore"]  # fmt: skip
_STATISTICS_SCALARS = [*_SCALARS, "partial_ptr", "ce_ptr"]
_GRADIENT_SCALARS = [*_SCALARS, "g_prob_ptr", "g_diff_ptr", "g_ce_ptr"]

# -- loads and stores --------------------------------------------------------------


@triton.jit
def _tile_offsets(classes, n, stride, CLASSES_LAST: tl.constexpr):
    """Element offsets (int32) of a [classes, pixels] tile: ``stride`` (elements) is
    that of the pixels when the classes are last in memory, else that of the classes;
    the other is 1, a literal, so that Triton vectorizes the loads along it."""
    stride = stride.to(tl.int32)  # an image has fewer than 2^31 elements
    if CLASSES_LAST:
        offsets = classes[:, None] + n[None, :] * stride
    else:
        offsets = classes[:, None] * stride + n[None, :]
    return offsets


@triton.jit
def _load_float(ptr, base, classes, n, stride, mask, code, CLASSES_LAST: tl.constexpr):
    """A [classes, pixels] tile as float32 from the byte pointer ``ptr`` + ``base``
    holding dtype ``code`` (``FLOAT_CODES``), ``stride`` in bytes; -inf where not
    ``mask``."""
    if code == 2:
        at = _tile_offsets(classes, n, stride // 4, CLASSES_LAST)
        v = tl.load((ptr + base).to(tl.pointer_type(tl.float32)) + at, mask=mask,
                    other=float("-inf"))  # fmt: skip
    elif code == 1:
        at = _tile_offsets(classes, n, stride // 2, CLASSES_LAST)
        v = tl.load((ptr + base).to(tl.pointer_type(tl.bfloat16)) + at, mask=mask,
                    other=float("-inf")).to(tl.float32)  # fmt: skip
    else:
        at = _tile_offsets(classes, n, stride // 2, CLASSES_LAST)
        v = tl.load((ptr + base).to(tl.pointer_type(tl.float16)) + at, mask=mask,
                    other=float("-inf")).to(tl.float32)  # fmt: skip
    return v


@triton.jit
def _store_float(ptr, base, classes, n, stride, value, mask, code,
                 CLASSES_LAST: tl.constexpr):  # fmt: skip
    """Store the float32 tile ``value`` as dtype ``code`` (as ``_load_float``)."""
    if code == 2:
        at = _tile_offsets(classes, n, stride // 4, CLASSES_LAST)
        tl.store((ptr + base).to(tl.pointer_type(tl.float32)) + at, value, mask=mask)
    elif code == 1:
        at = _tile_offsets(classes, n, stride // 2, CLASSES_LAST)
        tl.store((ptr + base).to(tl.pointer_type(tl.bfloat16)) + at,
                 value.to(tl.bfloat16), mask=mask)  # fmt: skip
    else:
        at = _tile_offsets(classes, n, stride // 2, CLASSES_LAST)
        tl.store((ptr + base).to(tl.pointer_type(tl.float16)) + at,
                 value.to(tl.float16), mask=mask)  # fmt: skip


@triton.jit
def _load_ids(ptr, offsets, mask, code):
    """int64 class ids at ``offsets`` (elements) of the byte pointer ``ptr`` holding
    integer dtype ``code`` (``INT_CODES``)."""
    if code == 4:
        ids = tl.load(ptr.to(tl.pointer_type(tl.int64)) + offsets, mask=mask, other=0)
    elif code == 3:
        ids = tl.load(ptr.to(tl.pointer_type(tl.int32)) + offsets, mask=mask,
                      other=0).to(tl.int64)  # fmt: skip
    elif code == 2:
        ids = tl.load(ptr.to(tl.pointer_type(tl.int16)) + offsets, mask=mask,
                      other=0).to(tl.int64)  # fmt: skip
    elif code == 1:
        ids = tl.load(ptr.to(tl.pointer_type(tl.int8)) + offsets, mask=mask,
                      other=0).to(tl.int64)  # fmt: skip
    else:
        ids = tl.load(ptr + offsets, mask=mask, other=0).to(tl.int64)
    return ids


@triton.jit
def _pixels(
    ids_ptr, keep_ptr, b, n, N, C, h_b, h_n, k_b, k_n, label_code, ignore_index,
    has_keep, has_ignore, HARD: tl.constexpr,
):  # fmt: skip
    """The kept pixels of ``n`` (inside the image, keep mask, not ``ignore_index``)
    and, for a hard label, their class ids (-1 for an id outside [0, C): no class)."""
    in_n = n < N
    # (has_keep and has_ignore are 0 or 1: a mask of every pixel, or of none)
    keep = tl.load(keep_ptr + b.to(tl.int64) * k_b + n * k_n, mask=n < N * has_keep,
                   other=1)  # fmt: skip
    kept = in_n & (keep != 0)
    ids = n * 0
    if HARD:
        raw = _load_ids(ids_ptr, b.to(tl.int64) * h_b + n * h_n, in_n, label_code)
        kept = kept & ((raw != ignore_index) | (n >= N * has_ignore))
        ids = tl.where((raw >= 0) & (raw < C), raw, -1).to(tl.int32)
    return kept, ids


@triton.jit
def _label_tile(
    label_ptr, y_base, classes, ids, n, y_s, inside, label_code,
    HARD: tl.constexpr, CLASSES_LAST: tl.constexpr,
):  # fmt: skip
    """The label of a tile as floats: one-hot for a hard label; 0 outside."""
    if HARD:
        y = tl.where(classes[:, None] == ids[None, :], 1.0, 0.0)
    else:
        y = _load_float(label_ptr, y_base, classes, n, y_s, inside, label_code,
                        CLASSES_LAST)  # fmt: skip
        y = tl.where(inside, y, 0.0)
    return y


# -- the shared arithmetic -----------------------------------------------------------


@triton.jit
def _power(v, p):
    """v^p for v >= 0 (0 at v = 0, as p >= 1); ``v`` itself for the L1 norm."""
    if p != 1.0:
        v = tl.where(v > 0, tl.exp2(p * tl.log2(tl.where(v > 0, v, 1.0))), 0.0)
    return v


@triton.jit
def _power_slope(v, p):
    """d v^p / dv = p v^(p - 1) for v >= 0 (1 for the L1 norm)."""
    slope = tl.full(v.shape, 1.0, tl.float32)
    if p != 1.0:
        slope = tl.where(v > 0, p * tl.exp2((p - 1.0) * tl.log2(tl.where(v > 0, v, 1.0))),
                         0.0)  # fmt: skip
    return slope


@triton.jit
def _shift(top):
    """The shift of exp(z - shift) for a running maximum ``top``: 0 where it is -inf
    (every class so far -inf: exp(-inf - 0) = 0, where -inf - -inf would be NaN)."""
    return tl.where(top == float("-inf"), 0.0, top)


@triton.jit
def _online(top, total, z):
    """The running maximum and sum of exp(z - maximum) per pixel, after the class tile
    ``z`` [classes, pixels]; NaN or +inf among the logits makes the sum NaN, all -inf
    leaves it 0 (and the probabilities 0 / 0)."""
    new = tl.maximum(top, tl.max(z, axis=0))
    shift = _shift(new)
    total = total * tl.exp(top - shift) + tl.sum(tl.exp(z - shift[None, :]), axis=0)
    return new, total


@triton.jit
def _softmax_sweep(
    logits_ptr, z_base, tiles, n, z_s, kept, C, logits_code,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr, CLASSES_LAST: tl.constexpr,
):  # fmt: skip
    """The shift and the sum of exponentials of each pixel of ``n``, online over the
    class tiles (the kept pixels' logits only are read)."""
    top = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    total = tl.zeros((BLOCK_N,), tl.float32)
    for first in range(0, C, BLOCK_C):
        classes = first + tiles
        inside = (classes < C)[:, None] & kept[None, :]
        z = _load_float(logits_ptr, z_base, classes, n, z_s, inside, logits_code,
                        CLASSES_LAST)  # fmt: skip
        top, total = _online(top, total, z)
    return _shift(top), _settled(total, kept)


@triton.jit
def _settled(total, kept):
    """The sum of exponentials of a pixel, 1 where it is not kept (its logits were not
    read: no 0 / 0 or log 0 is formed for it)."""
    return tl.where(kept, total, 1.0)


@triton.jit
def _cross_entropy(y, z, lse):
    """Each class's term y (lse - z) of -sum_c y_c log x_c: 0 where y is 0 (a -inf
    logit there is a probability 0 that the label does not ask for; selected before
    the product, so no 0 * inf is formed)."""
    return tl.where(y != 0, lse[None, :] - z, 0.0) * y


@triton.jit
def _class_sums(x, y, used, p, HARD: tl.constexpr):
    """Per class of a tile, the sums over its kept pixels of |x|^p, |y|^p and
    |x - y|^p (for a hard label and the L1 norm: of x y, the overlap, which the
    launcher turns into |x - y| = |x| + |y| - 2 x y) and the maximum of y."""
    x_p = _power(x, p)
    sum_x = tl.sum(tl.where(used, x_p, 0.0), axis=1)
    if HARD:
        sum_y = tl.sum(tl.where(used, y, 0.0), axis=1)
        if p == 1.0:
            sum_d = tl.sum(tl.where(used & (y > 0), x, 0.0), axis=1)
        else:
            rest = _power(1.0 - x, p)
            sum_d = tl.sum(tl.where(used, tl.where(y > 0, rest, x_p), 0.0), axis=1)
        max_y = sum_y * 0.0  # the launcher takes |y| > 0
    else:
        sum_y = tl.sum(tl.where(used, _power(y, p), 0.0), axis=1)
        sum_d = tl.sum(tl.where(used, _power(tl.abs(x - y), p), 0.0), axis=1)
        max_y = tl.max(tl.where(used, y, 0.0), axis=1)
    return sum_x, sum_y, sum_d, max_y


@triton.jit
def _coefficients(x, y, g_prob, g_diff, p, HARD: tl.constexpr):
    """d/dx of g_prob |x|^p + g_diff |x - y|^p for a tile (before the softmax)."""
    slope = _power_slope(x, p)
    if HARD:
        # |x - y|^p is (1 - x)^p at the pixel's class and x^p elsewhere.
        on_label = g_prob * slope - g_diff * _power_slope(1.0 - x, p)
        g = tl.where(y > 0, on_label, (g_prob + g_diff) * slope)
    else:
        diff = x - y
        sign = tl.where(diff > 0, 1.0, tl.where(diff < 0, -1.0, 0.0))
        g = g_prob * slope + g_diff * _power_slope(tl.abs(diff), p) * sign
    return g


# -- pass 1 ------------------------------------------------------------------------


@triton.jit(do_not_specialize=_STATISTICS_SCALARS)
def statistics_kernel(
    logits_ptr, label_ptr, ids_ptr, keep_ptr, partial_ptr, ce_ptr,
    B: tl.int32, N: tl.int32, C: tl.int32, ignore_index: tl.int64, p: tl.float32,
    pixels_per_program: tl.int32,
    z_b: tl.int64, z_s: tl.int64, y_b: tl.int64, y_s: tl.int64,
    h_b: tl.int64, h_n: tl.int64, k_b: tl.int64, k_n: tl.int64,
    logits_code: tl.int32, label_code: tl.int32, has_keep: tl.int32, has_ignore: tl.int32,
    HARD: tl.constexpr, CLASSES_LAST: tl.constexpr, ONE_TILE: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Partial statistics of the pixels [start, start + pixels_per_program) of image
    ``program_id(1)``, written to row ``program_id(0)`` of ``partial`` (P, B, 4, C),
    zeros on entry, and of ``ce`` (P, B, 2)."""
    run = tl.program_id(0)
    b = tl.program_id(1)
    z_base = b.to(tl.int64) * z_b
    y_base = b.to(tl.int64) * y_b
    row = partial_ptr + ((run * B + b).to(tl.int64) * 4) * C
    tiles = tl.arange(0, BLOCK_C)
    sum_x = tl.zeros((BLOCK_C,), tl.float32)
    sum_y = tl.zeros((BLOCK_C,), tl.float32)
    sum_d = tl.zeros((BLOCK_C,), tl.float32)
    max_y = tl.zeros((BLOCK_C,), tl.float32)
    ce = tl.zeros((BLOCK_N,), tl.float32)
    count = tl.zeros((BLOCK_N,), tl.float32)
    start = run * pixels_per_program
    for offset in range(0, pixels_per_program, BLOCK_N):
        n = start + offset + tl.arange(0, BLOCK_N)
        kept, ids = _pixels(ids_ptr, keep_ptr, b, n, N, C, h_b, h_n, k_b, k_n,
                            label_code, ignore_index, has_keep, has_ignore,
                            HARD)  # fmt: skip
        top = tl.full((BLOCK_N,), float("-inf"), tl.float32)
        total = tl.zeros((BLOCK_N,), tl.float32)
        pixel_ce = tl.zeros((BLOCK_N,), tl.float32)
        # Dropped pixels are not even read: their probabilities are 0 / 0 and unused.
        if ONE_TILE:
            inside = (tiles < C)[:, None] & kept[None, :]
            z = _load_float(logits_ptr, z_base, tiles, n, z_s, inside, logits_code,
                            CLASSES_LAST)  # fmt: skip
            top, total = _online(top, total, z)
            shift = _shift(top)
            total = _settled(total, kept)
            x = tl.exp(z - shift[None, :]) / total[None, :]
            y = _label_tile(label_ptr, y_base, tiles, ids, n, y_s, inside, label_code,
                            HARD, CLASSES_LAST)  # fmt: skip
            d_x, d_y, d_d, m_y = _class_sums(x, y, inside, p, HARD)
            sum_x += d_x
            sum_y += d_y
            sum_d += d_d
            max_y = tl.maximum(max_y, m_y)
            pixel_ce = tl.sum(_cross_entropy(y, z, shift + tl.log(total)), axis=0)
        else:
            shift, total = _softmax_sweep(
                logits_ptr, z_base, tiles, n, z_s, kept, C, logits_code, BLOCK_C,
                BLOCK_N, CLASSES_LAST,
            )  # fmt: skip
            lse = shift + tl.log(total)
            for first in range(0, C, BLOCK_C):
                classes = first + tiles
                in_c = classes < C
                inside = in_c[:, None] & kept[None, :]
                z = _load_float(logits_ptr, z_base, classes, n, z_s, inside, logits_code,
                                CLASSES_LAST)  # fmt: skip
                x = tl.exp(z - shift[None, :]) / total[None, :]
                y = _label_tile(label_ptr, y_base, classes, ids, n, y_s, inside,
                                label_code, HARD, CLASSES_LAST)  # fmt: skip
                d_x, d_y, d_d, m_y = _class_sums(x, y, inside, p, HARD)
                # This program's row accumulates every class tile.
                at = row + classes
                tl.store(at, tl.load(at, mask=in_c) + d_x, mask=in_c)
                tl.store(at + C, tl.load(at + C, mask=in_c) + d_y, mask=in_c)
                tl.store(at + 2 * C, tl.load(at + 2 * C, mask=in_c) + d_d, mask=in_c)
                tl.store(at + 3 * C, tl.maximum(tl.load(at + 3 * C, mask=in_c), m_y),
                         mask=in_c)  # fmt: skip
                pixel_ce += tl.sum(_cross_entropy(y, z, lse), axis=0)
            tl.debug_barrier()  # the next block reads what this one wrote
        ce += tl.where(kept, pixel_ce, 0.0)
        count += tl.where(kept, 1.0, 0.0)
    if ONE_TILE:
        in_c = tiles < C
        tl.store(row + tiles, sum_x, mask=in_c)
        tl.store(row + C + tiles, sum_y, mask=in_c)
        tl.store(row + 2 * C + tiles, sum_d, mask=in_c)
        tl.store(row + 3 * C + tiles, max_y, mask=in_c)
    ce_row = ce_ptr + (run * B + b).to(tl.int64) * 2
    tl.store(ce_row, tl.sum(ce, axis=0))
    tl.store(ce_row + 1, tl.sum(count, axis=0))


# -- pass 2 ------------------------------------------------------------------------


@triton.jit
def _gradient_tile(
    logits_ptr, label_ptr, g_prob_ptr, g_diff_ptr, b, classes, n, ids, kept, shift,
    total, z_base, y_base, z_s, y_s, C, p, logits_code, label_code,
    HARD: tl.constexpr, CLASSES_LAST: tl.constexpr,
):  # fmt: skip
    """The probabilities x, the label y and the coefficients g (0 where not kept) of
    one class tile, recomputed from the logits."""
    in_c = classes < C
    inside = in_c[:, None] & kept[None, :]
    z = _load_float(logits_ptr, z_base, classes, n, z_s, inside, logits_code,
                    CLASSES_LAST)  # fmt: skip
    x = tl.exp(z - shift[None, :]) / total[None, :]
    y = _label_tile(label_ptr, y_base, classes, ids, n, y_s, inside, label_code, HARD,
                    CLASSES_LAST)  # fmt: skip
    g_prob = tl.load(g_prob_ptr + b * C + classes, mask=in_c, other=0.0)[:, None]
    g_diff = tl.load(g_diff_ptr + b * C + classes, mask=in_c, other=0.0)[:, None]
    g = _coefficients(x, y, g_prob, g_diff, p, HARD)
    return x, y, tl.where(inside, g, 0.0)


@triton.jit(do_not_specialize=_GRADIENT_SCALARS)
def gradient_kernel(
    logits_ptr, label_ptr, ids_ptr, keep_ptr, g_prob_ptr, g_diff_ptr, g_ce_ptr, grad_ptr,
    B: tl.int32, N: tl.int32, C: tl.int32, ignore_index: tl.int64, p: tl.float32,
    z_b: tl.int64, z_s: tl.int64, y_b: tl.int64, y_s: tl.int64,
    h_b: tl.int64, h_n: tl.int64, k_b: tl.int64, k_n: tl.int64, o_b: tl.int64,
    o_s: tl.int64,
    logits_code: tl.int32, label_code: tl.int32, has_keep: tl.int32, has_ignore: tl.int32,
    HARD: tl.constexpr, CLASSES_LAST: tl.constexpr, ONE_TILE: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """d/d logits of sum_{b,c} g_prob |x|^p + g_diff |x - y|^p + sum_b g_ce[b] times
    the cross-entropy sum, for the pixels of block ``program_id(0)`` of image
    ``program_id(1)``, written in the logits' dtype to ``grad`` (strides ``o_*``, in
    bytes); 0 at dropped pixels."""
    b = tl.program_id(1)
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    in_n = n < N
    z_base = b.to(tl.int64) * z_b
    y_base = b.to(tl.int64) * y_b
    o_base = b.to(tl.int64) * o_b
    tiles = tl.arange(0, BLOCK_C)
    kept, ids = _pixels(ids_ptr, keep_ptr, b, n, N, C, h_b, h_n, k_b, k_n, label_code,
                        ignore_index, has_keep, has_ignore, HARD)  # fmt: skip
    g_ce = tl.load(g_ce_ptr + b)
    top = tl.full((BLOCK_N,), float("-inf"), tl.float32)
    total = tl.zeros((BLOCK_N,), tl.float32)
    # Dropped pixels are not even read: their probabilities are 0 / 0 and unused.
    if ONE_TILE:
        in_c = tiles < C
        inside = in_c[:, None] & kept[None, :]
        z = _load_float(logits_ptr, z_base, tiles, n, z_s, inside, logits_code,
                        CLASSES_LAST)  # fmt: skip
        top, total = _online(top, total, z)
        total = _settled(total, kept)
        x = tl.exp(z - _shift(top)[None, :]) / total[None, :]
        y = _label_tile(label_ptr, y_base, tiles, ids, n, y_s, inside, label_code,
                        HARD, CLASSES_LAST)  # fmt: skip
        g_prob = tl.load(g_prob_ptr + b * C + tiles, mask=in_c, other=0.0)[:, None]
        g_diff = tl.load(g_diff_ptr + b * C + tiles, mask=in_c, other=0.0)[:, None]
        g = tl.where(inside, _coefficients(x, y, g_prob, g_diff, p, HARD), 0.0)
        inner = tl.sum(x * g, axis=0)
        grad = x * (g - inner[None, :]) + g_ce * (x * tl.sum(y, axis=0)[None, :] - y)
        grad = tl.where(kept[None, :], grad, 0.0)
        _store_float(grad_ptr, o_base, tiles, n, o_s, grad, in_c[:, None] & in_n[None, :],
                     logits_code, CLASSES_LAST)  # fmt: skip
    else:
        shift, total = _softmax_sweep(
            logits_ptr, z_base, tiles, n, z_s, kept, C, logits_code, BLOCK_C, BLOCK_N,
            CLASSES_LAST,
        )  # fmt: skip
        inner = tl.zeros((BLOCK_N,), tl.float32)
        y_sum = tl.zeros((BLOCK_N,), tl.float32)
        for first in range(0, C, BLOCK_C):
            x, y, g = _gradient_tile(
                logits_ptr, label_ptr, g_prob_ptr, g_diff_ptr, b, first + tiles, n, ids,
                kept, shift, total, z_base, y_base, z_s, y_s, C, p, logits_code,
                label_code, HARD, CLASSES_LAST,
            )  # fmt: skip
            inner += tl.sum(x * g, axis=0)
            y_sum += tl.sum(y, axis=0)
        for first in range(0, C, BLOCK_C):
            classes = first + tiles
            x, y, g = _gradient_tile(
                logits_ptr, label_ptr, g_prob_ptr, g_diff_ptr, b, classes, n, ids,
                kept, shift, total, z_base, y_base, z_s, y_s, C, p, logits_code,
                label_code, HARD, CLASSES_LAST,
            )  # fmt: skip
            grad = x * (g - inner[None, :]) + g_ce * (x * y_sum[None, :] - y)
            grad = tl.where(kept[None, :], grad, 0.0)
            _store_float(grad_ptr, o_base, classes, n, o_s, grad,
                         (classes < C)[:, None] & in_n[None, :], logits_code,
                         CLASSES_LAST)  # fmt: skip


__all__ = ["FLOAT_CODES", "INT_CODES", "NUM_CE", "NUM_STATS", "gradient_kernel",
           "statistics_kernel", "triton"]  # fmt: skip
