"""NumPy kernels for the hot spots of the losses and metrics (see ``generic.py``).

The hard label is turned into rows of the (B * C, N) probabilities once, then used
with ``take``, ``bincount`` and flat writes (much faster than ``take_along_axis``).
The softmax, the statistics and the gradient run in pixel chunks on a few threads
(``numpy_threads``): each chunk's temporaries stay in the cache, and the chunks run
in parallel although NumPy itself runs each operation on one core.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np

from .generic import HardL1
from .numpy_threads import each_chunk


class _Residual(NamedTuple):
    """What the statistics keep for the gradient: the pixels' rows and weights (see
    ``_rows``) and x at each pixel's class (B, N)."""

    positions: tuple
    label_prob: np.ndarray


# Images of fewer pixels take the per-pixel passes: a table of 65,536 byte pairs costs
# about 1.1 ms an image, the passes it saves 1.6 ms at 512 x 512 (and 31 ms against 7
# at 1024 x 2048, where the passes' int64 temporaries leave the cache), 19 classes,
# 2-core CPU, 2026-12-03.
BYTE_TABLE_PIXELS = 1 << 18


class NumPyKernels(HardL1):
    counts_pairs_in_one_pass = True

    def softmax(self, x: np.ndarray, axis: int, keep=None) -> np.ndarray:
        # (outer, C, inner) with the classes in the middle; chunks of the inner pixels,
        # or, channels-last (inner = 1), of the outer ones.
        axis = axis % x.ndim
        c = x.shape[axis]
        outer, inner = math.prod(x.shape[:axis]), math.prod(x.shape[axis + 1 :])
        x3 = x.reshape(outer, c, inner)
        k3 = None if keep is None else keep.reshape(outer, 1, inner)
        out = np.empty(x3.shape, dtype=x.dtype)
        last = x3.shape[2] == 1

        def part(chunk: slice) -> None:
            at = (chunk, slice(None), slice(None)) if last else (Ellipsis, chunk)
            e, z = out[at], x3[at]
            if k3 is not None:  # dropped pixels count as logits 0 (see Generic)
                z = np.where(k3[at], z, 0.0)
            np.subtract(z, np.max(z, axis=1, keepdims=True), out=e)
            np.exp(e, out=e)
            e *= np.reciprocal(np.sum(e, axis=1, keepdims=True))

        each_chunk(part, outer if last else x3.shape[2], c * (1 if last else outer))
        return out.reshape(x.shape)

    def argmax(self, x: np.ndarray, axis: int) -> np.ndarray:
        axis = axis % x.ndim
        if axis == x.ndim - 1:
            return np.argmax(x, axis=axis)  # contiguous classes: NumPy's own is fast
        # np.argmax over another axis copies the array to a transposed layout; a running
        # maximum reads each class slice once. A class that beats the best so far
        # raises the index to its own, larger number: maximum(index, c * better)
        # (no masked writes, which are slow on random masks). Ties keep the first.
        at = lambda c: x[(slice(None),) * axis + (c,)]  # noqa: E731
        best = at(0).copy()
        dtype = np.int16 if x.shape[axis] <= np.iinfo(np.int16).max else np.intp
        index = np.zeros(best.shape, dtype=dtype)
        better = np.empty(best.shape, dtype=bool)
        step = np.empty(best.shape, dtype=dtype)
        for c in range(1, x.shape[axis]):
            np.greater(at(c), best, out=better)
            np.multiply(better, dtype(c), out=step)
            np.maximum(index, step, out=index)
            np.maximum(best, at(c), out=best)  # NaN propagates into best
        if np.isnan(best).any():  # as np.argmax: a pixel with a NaN takes its first NaN
            nan = np.isnan(best)
            index[nan] = np.argmax(np.isnan(np.moveaxis(x, axis, -1)[nan]), axis=-1)
        return index

    def class_counts(self, ids: np.ndarray, num_classes: int) -> np.ndarray:
        b = ids.shape[0]
        rows = ids + (num_classes + 1) * np.arange(b, dtype=np.intp)[:, None]
        counts = np.bincount(rows.ravel(), minlength=b * (num_classes + 1))
        return counts.reshape(b, num_classes + 1)[:, :num_classes].astype(np.int64)

    def byte_pair_counts(self, label, pred, label_map, pred_map, shape):
        if label.shape[1] < BYTE_TABLE_PIXELS:
            return None
        b, (rows, cols) = label.shape[0], shape
        # Each image's pairs as 16-bit codes, label byte then prediction byte (a third
        # faster than in intp), counted image by image.
        table = np.empty((b, 1 << 16), dtype=np.intp)
        for i in range(b):
            code = label[i].view(np.uint8).astype(np.uint16)
            code <<= 8
            code |= pred[i].view(np.uint8)
            table[i] = np.bincount(code, minlength=1 << 16)
        # Regroup the 65,536 byte pairs of each image by their ids: a bincount
        # weighted by the pairs' counts (float64: exact below 2^53 pixels).
        ids = (label_map.astype(np.intp)[:, None] * cols + pred_map[None, :]).ravel()
        if b > 1:
            ids = (ids + (rows * cols) * np.arange(b, dtype=np.intp)[:, None]).ravel()
        counts = np.bincount(ids, weights=table.ravel(), minlength=b * rows * cols)
        return counts.astype(np.int64).reshape(b, rows, cols)

    def pair_counts(self, label_ids, pred_ids, num_classes):
        b, size = label_ids.shape[0], (num_classes + 1) ** 2
        code = label_ids.astype(np.intp) * (num_classes + 1)
        code += pred_ids
        if b > 1:
            code += size * np.arange(b, dtype=np.intp)[:, None]
        counts = np.bincount(code.ravel(), minlength=b * size)
        return counts.reshape(b, num_classes + 1, num_classes + 1).astype(np.int64)

    def hard_l1_statistics(self, prob, label, keep):
        b, c = prob.shape[:2]
        p = prob.reshape(b, c, math.prod(prob.shape[2:]))
        n = p.shape[2]
        rows, weight = positions = _rows(label, keep, p.shape, p.dtype)
        p_label = np.empty((b, n), dtype=p.dtype)  # x at each pixel's class
        partial = {}

        def part(chunk: slice) -> None:
            r, x, x_label = rows[:, chunk], p[..., chunk], p_label[:, chunk]
            np.take(p, _flat(r, n, chunk), out=x_label)
            if weight is None:
                prob_card, counts = x.sum(axis=2), np.bincount(r.ravel(), minlength=b * c)
            else:
                w = weight[:, chunk]
                x_label *= w
                prob_card = np.matmul(x, w[:, :, None])[:, :, 0]
                counts = np.bincount(r.ravel(), weights=w.ravel(), minlength=b * c)
            overlap = np.bincount(r.ravel(), weights=x_label.ravel(), minlength=b * c)
            partial[chunk.start] = (prob_card, counts, overlap)

        each_chunk(part, n, b * c)
        # Added in chunk order, whatever order the threads finished in: deterministic.
        ordered = (partial[start] for start in sorted(partial))
        prob_card, counts, overlap = (
            sum(parts).reshape(b, c).astype(p.dtype, copy=False)
            for parts in zip(*ordered, strict=True)
        )
        diff_card = prob_card + counts - 2 * overlap
        # For the gradient: no second pass to find the rows and label probabilities.
        return (prob_card, counts, diff_card), _Residual(positions, p_label)

    def hard_l1_vjp(self, prob, label, keep, g_prob_card, g_diff_card, *, residual,
                    overwrite):  # fmt: skip
        b, c = prob.shape[:2]
        p = prob.reshape(b, c, math.prod(prob.shape[2:]))
        if residual is None:
            rows, weight = _rows(label, keep, p.shape, p.dtype)
            p_label = None
        else:
            (rows, weight), p_label = residual
        n = p.shape[2]
        # d |x| / dx = 1 and d |x - y| / dx = 1 - 2 y on kept pixels: g = a - 2 d y.
        a = (g_prob_card + g_diff_card).astype(p.dtype)
        a_row, a_col = a[:, None, :], a[:, :, None]
        on_label_of_class = -2 * g_diff_card.astype(p.dtype)
        grad = p if overwrite else np.empty_like(p)
        flat = grad.reshape(-1)  # a view: grad is contiguous

        def part(chunk: slice) -> None:
            # Softmax VJP: x * (g - sum_c x_c g_c), with the one-hot term kept as
            # indices: on_label = -2 d_y x_y at each pixel.
            x, place = p[..., chunk], _flat(rows[:, chunk], n, chunk)
            on_label = np.take(on_label_of_class, rows[:, chunk])
            on_label *= np.take(p, place) if p_label is None else p_label[:, chunk]
            inner = np.matmul(a_row, x)
            inner += on_label[:, None]
            # x * (a - inner): in place where grad is p (elementwise, so safe).
            np.multiply(x, a_col - inner, out=grad[..., chunk])
            labelled = np.take(flat, place)
            labelled += on_label
            flat[place] = labelled
            if weight is not None:
                grad[..., chunk] *= weight[:, None, chunk]

        each_chunk(part, p.shape[2], b * c)
        return grad.reshape(prob.shape)


def _rows(label, keep, shape, dtype):
    """Per pixel (B, N): its row b * C + class in the (B * C, N) view of the
    probabilities, and its 0/1 weight (``None`` when every pixel counts). Dropped
    pixels point at class 0 with weight 0."""
    b, c, n = shape
    index = label.reshape(b, n)
    weight = None
    if keep is not None:
        kept = keep.reshape(b, n)
        index, weight = np.where(kept, index, 0), kept.astype(dtype)
    rows = index.astype(np.intp, copy=False)
    if b > 1:
        rows = rows + c * np.arange(b, dtype=np.intp)[:, None]
    return rows, weight


def _flat(rows, n, chunk):
    """The flat positions in the (B, C, N) probabilities of the pixels ``chunk`` with
    rows ``rows``."""
    at = rows * n
    at += _pixel_numbers(n)[chunk]
    return at


@functools.lru_cache(maxsize=8)
def _pixel_numbers(n: int) -> np.ndarray:
    """0, 1, ..., n - 1, kept between steps (a fresh one costs page faults each time)."""
    numbers = np.arange(n, dtype=np.intp)
    numbers.flags.writeable = False
    return numbers
