"""Triton kernels of the JDT statistics and their gradient: two fused passes over the
logits (see ``../shared/design/fused-kernels.md`` in the project's workspace and
``docs/architecture.md``).

Pass 1, ``statistics_kernel``: each program reads a run of pixels of one image, takes
the softmax over the classes of each pixel in registers and accumulates, per class,
|x|^p, |y|^p, |x - y|^p and max y over its kept pixels (and the cross-entropy
-sum_c y_c log x_c with the number of kept pixels); it writes these partial sums to
its own row of a small buffer, which the caller sums (deterministic, no atomics).

Pass 2, ``gradient_kernel``: each program reads a block of pixels again, recomputes
the softmax and writes d loss / d logits = x (g - sum_c x_c g_c) (+ the cross-entropy
term), with g the derivative of the statistics weighted by their (B, C) cotangents;
0 at dropped pixels.

Both take strides, so channels-first (B, C, N) and channels-last (B, N, C) views are
read in place. Dropped pixels (``keep`` false, ``ignore_index``, the tail of a block)
are removed by selection, never by multiplying with 0, so NaN or inf there stays
inert. Everything accumulates in float32; the gradient is stored in the output's dtype.

Compiled for CUDA tensors; with ``TRITON_INTERPRET=1`` in the environment before
``triton`` is imported, Triton interprets them on CPU tensors (how the tests run them).
"""

from __future__ import annotations

import triton
import triton.language as tl

# The statistics of one (image, class), in this order in the partial-sum buffer.
NUM_STATS = 4  # |x|^p, |y|^p, |x - y|^p, max y
NUM_CE = 2  # the cross-entropy sum and the number of kept pixels


@triton.jit
def _power(v, p, L1: tl.constexpr):
    """v^p for v >= 0 (0 at v = 0, as p >= 1); the identity for the L1 norm."""
    if L1:
        return v
    return tl.where(v > 0, tl.exp2(p * tl.log2(tl.where(v > 0, v, 1.0))), 0.0)


@triton.jit
def _power_slope(v, p, L1: tl.constexpr):
    """d v^p / dv = p v^(p - 1) for v >= 0 (1 for the L1 norm)."""
    if L1:
        return tl.full(v.shape, 1.0, tl.float32)
    return tl.where(v > 0, p * tl.exp2((p - 1.0) * tl.log2(tl.where(v > 0, v, 1.0))), 0.0)


@triton.jit
def _tile(
    logits_ptr, label_ptr, keep_ptr, b, n, classes, N, C, ignore_index,
    s_b, s_c, s_n, l_b, l_c, l_n, k_b, k_n,
    HARD: tl.constexpr, HAS_KEEP: tl.constexpr, HAS_IGNORE: tl.constexpr,
):  # fmt: skip
    """The softmax x of a [classes, pixels] tile, its logits z (0 off the tile), the
    label y as floats (one-hot for a hard label), the kept pixels and the mask of
    kept (pixel, class) entries."""
    n64 = n.to(tl.int64)
    c64 = classes.to(tl.int64)
    in_n = n < N
    in_c = classes < C
    inside = in_c[:, None] & in_n[None, :]
    base = b.to(tl.int64) * s_b
    z = tl.load(logits_ptr + base + c64[:, None] * s_c + n64[None, :] * s_n,
                mask=inside, other=float("-inf")).to(tl.float32)  # fmt: skip
    top = tl.max(z, axis=0)
    top = tl.where(in_n, top, 0.0)  # tail pixels: no -inf - -inf
    e = tl.exp(z - top[None, :])
    total = tl.where(in_n, tl.sum(e, axis=0), 1.0)
    x = e / total[None, :]
    kept = in_n
    if HAS_KEEP:
        kept = kept & (tl.load(keep_ptr + b.to(tl.int64) * k_b + n64 * k_n,
                               mask=in_n, other=0) != 0)  # fmt: skip
    if HARD:
        ids = tl.load(label_ptr + b.to(tl.int64) * l_b + n64 * l_n, mask=in_n, other=0)
        ids = ids.to(tl.int64)
        if HAS_IGNORE:
            kept = kept & (ids != ignore_index)
        y = tl.where(c64[:, None] == ids[None, :], 1.0, 0.0)
    else:
        at = b.to(tl.int64) * l_b + c64[:, None] * l_c + n64[None, :] * l_n
        y = tl.load(label_ptr + at, mask=inside, other=0.0).to(tl.float32)
    used = in_c[:, None] & kept[None, :]
    lse = top + tl.log(total)
    return x, tl.where(inside, z, 0.0), y, kept, used, lse


@triton.jit
def statistics_kernel(
    logits_ptr, label_ptr, keep_ptr, partial_ptr, ce_ptr,
    B, N, C, ignore_index, p, pixels_per_program,
    s_b, s_c, s_n, l_b, l_c, l_n, k_b, k_n,
    HARD: tl.constexpr, HAS_KEEP: tl.constexpr, HAS_IGNORE: tl.constexpr,
    L1: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """Partial statistics of the pixels [start, start + pixels_per_program) of image
    ``program_id(1)``, written to row ``program_id(0)`` of ``partial`` (P, B, 4, C) and
    of ``ce`` (P, B, 2)."""
    run = tl.program_id(0)
    b = tl.program_id(1)
    classes = tl.arange(0, BLOCK_C)
    sum_x = tl.zeros((BLOCK_C,), tl.float32)
    sum_y = tl.zeros((BLOCK_C,), tl.float32)
    sum_d = tl.zeros((BLOCK_C,), tl.float32)
    max_y = tl.zeros((BLOCK_C,), tl.float32)
    ce = tl.zeros((BLOCK_N,), tl.float32)
    count = tl.zeros((BLOCK_N,), tl.float32)
    start = run * pixels_per_program
    for offset in range(0, pixels_per_program, BLOCK_N):
        n = start + offset + tl.arange(0, BLOCK_N)
        x, z, y, kept, used, lse = _tile(
            logits_ptr, label_ptr, keep_ptr, b, n, classes, N, C, ignore_index,
            s_b, s_c, s_n, l_b, l_c, l_n, k_b, k_n, HARD, HAS_KEEP, HAS_IGNORE,
        )  # fmt: skip
        x_p = _power(x, p, L1)
        sum_x += tl.sum(tl.where(used, x_p, 0.0), axis=1)
        if HARD:
            sum_y += tl.sum(tl.where(used, y, 0.0), axis=1)
            if L1:  # |x - y| = |x| + |y| - 2 x_y: the overlap, folded in below
                sum_d += tl.sum(tl.where(used, x * y, 0.0), axis=1)
            else:
                rest = _power(1.0 - x, p, L1)
                sum_d += tl.sum(tl.where(used, tl.where(y > 0, rest, x_p), 0.0), axis=1)
        else:
            sum_y += tl.sum(tl.where(used, _power(y, p, L1), 0.0), axis=1)
            sum_d += tl.sum(tl.where(used, _power(tl.abs(x - y), p, L1), 0.0), axis=1)
            max_y = tl.maximum(max_y, tl.max(tl.where(used, y, 0.0), axis=1))
        # -sum_c y_c log x_c = lse sum_c y_c - sum_c y_c z_c
        pixel_ce = lse * tl.sum(y, axis=0) - tl.sum(y * z, axis=0)
        ce += tl.where(kept, pixel_ce, 0.0)
        count += tl.where(kept, 1.0, 0.0)
    if HARD:
        if L1:
            sum_d = sum_x + sum_y - 2.0 * sum_d
        max_y = tl.where(sum_y > 0, 1.0, 0.0)
    row = partial_ptr + ((run * B + b).to(tl.int64) * 4) * C
    in_c = classes < C
    tl.store(row + classes, sum_x, mask=in_c)
    tl.store(row + C + classes, sum_y, mask=in_c)
    tl.store(row + 2 * C + classes, sum_d, mask=in_c)
    tl.store(row + 3 * C + classes, max_y, mask=in_c)
    ce_row = ce_ptr + (run * B + b).to(tl.int64) * 2
    tl.store(ce_row, tl.sum(ce, axis=0))
    tl.store(ce_row + 1, tl.sum(count, axis=0))


@triton.jit
def gradient_kernel(
    logits_ptr, label_ptr, keep_ptr, g_prob_ptr, g_diff_ptr, g_ce_ptr, grad_ptr,
    N, C, ignore_index, p,
    s_b, s_c, s_n, l_b, l_c, l_n, k_b, k_n, o_b, o_c, o_n,
    HARD: tl.constexpr, HAS_KEEP: tl.constexpr, HAS_IGNORE: tl.constexpr,
    L1: tl.constexpr, WITH_CE: tl.constexpr, BLOCK_C: tl.constexpr,
    BLOCK_N: tl.constexpr,
):  # fmt: skip
    """d/d logits of sum_{b,c} g_prob |x|^p + g_diff |x - y|^p (+ g_ce[b] times the
    cross-entropy sum) for the pixels of block ``program_id(0)`` of image
    ``program_id(1)``."""
    b = tl.program_id(1)
    n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    classes = tl.arange(0, BLOCK_C)
    in_c = classes < C
    x, _, y, kept, used, _ = _tile(
        logits_ptr, label_ptr, keep_ptr, b, n, classes, N, C, ignore_index,
        s_b, s_c, s_n, l_b, l_c, l_n, k_b, k_n, HARD, HAS_KEEP, HAS_IGNORE,
    )  # fmt: skip
    g_prob = tl.load(g_prob_ptr + b * C + classes, mask=in_c, other=0.0)[:, None]
    g_diff = tl.load(g_diff_ptr + b * C + classes, mask=in_c, other=0.0)[:, None]
    slope = _power_slope(x, p, L1)
    if HARD:
        # |x - y|^p is (1 - x)^p at the pixel's class and x^p elsewhere.
        on_label = g_prob * slope - g_diff * _power_slope(1.0 - x, p, L1)
        g = tl.where(y > 0, on_label, (g_prob + g_diff) * slope)
    else:
        diff = x - y
        sign = tl.where(diff > 0, 1.0, tl.where(diff < 0, -1.0, 0.0))
        g = g_prob * slope + g_diff * _power_slope(tl.abs(diff), p, L1) * sign
    g = tl.where(used, g, 0.0)
    inner = tl.sum(x * g, axis=0)
    grad = x * (g - inner[None, :])
    if WITH_CE:  # d/dz of lse sum_c y_c - sum_c y_c z_c
        g_ce = tl.load(g_ce_ptr + b)
        grad += g_ce * (x * tl.sum(y, axis=0)[None, :] - y)
    grad = tl.where(kept[None, :], grad, 0.0)
    out = grad_ptr + b.to(tl.int64) * o_b
    out += classes.to(tl.int64)[:, None] * o_c + n.to(tl.int64)[None, :] * o_n
    tl.store(out, grad.to(grad_ptr.dtype.element_ty), mask=in_c[:, None] & (n < N)[None, :])


__all__ = ["NUM_CE", "NUM_STATS", "gradient_kernel", "statistics_kernel", "triton"]
