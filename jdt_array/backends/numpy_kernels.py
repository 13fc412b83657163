"""NumPy kernels for the hot spots of the JDT losses (see ``jdt_array._kernels``).

The hard label is turned into flat positions once, then used with ``take``,
``bincount`` and a flat ``+=`` (much faster than ``take_along_axis``); each function
works in place on its own temporaries, since NumPy allocates a buffer per operation.
"""

from __future__ import annotations

import functools

import numpy as np

from .._kernels import Generic

# The class blocks of an in-place gradient: the temporary is 1/_BLOCKS of the logits.
_BLOCKS = 8


class NumPyKernels(Generic):
    @staticmethod
    def softmax(x: np.ndarray, axis: int) -> np.ndarray:
        e = x - np.max(x, axis=axis, keepdims=True)
        np.exp(e, out=e)
        e /= np.sum(e, axis=axis, keepdims=True)
        return e

    @staticmethod
    def argmax(x: np.ndarray, axis: int) -> np.ndarray:
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
        index = index.astype(np.intp)
        if np.isnan(best).any():  # as np.argmax: a pixel with a NaN takes its first NaN
            nan = np.isnan(best)
            index[nan] = np.argmax(np.isnan(np.moveaxis(x, axis, -1)[nan]), axis=-1)
        return index

    @staticmethod
    def class_counts(ids: np.ndarray, num_classes: int) -> np.ndarray:
        b = ids.shape[0]
        rows = ids + (num_classes + 1) * np.arange(b, dtype=np.intp)[:, None]
        counts = np.bincount(rows.ravel(), minlength=b * (num_classes + 1))
        return counts.reshape(b, num_classes + 1)[:, :num_classes].astype(np.int64)

    @staticmethod
    def pair_counts(label_ids, pred_ids, num_classes):
        b, n = label_ids.shape
        size = (num_classes + 1) ** 2
        if size > max(n, 1024):
            return None  # a table larger than the image: count class by class
        code = label_ids.astype(np.intp) * (num_classes + 1)
        code += pred_ids
        if b > 1:
            code += size * np.arange(b, dtype=np.intp)[:, None]
        counts = np.bincount(code.ravel(), minlength=b * size)
        return counts.reshape(b, num_classes + 1, num_classes + 1).astype(np.int64)

    @staticmethod
    def hard_l1_statistics(prob, label, keep):
        b, c = prob.shape[:2]
        p = prob.reshape(b, c, -1)
        rows, at, weight = _positions(label, keep, p.shape, p.dtype)
        p_label = np.take(p, at)  # (B, N): x at each pixel's class
        if weight is None:
            counts = np.bincount(rows.ravel(), minlength=b * c)
            prob_card = p.sum(axis=2)
        else:
            p_label *= weight
            counts = np.bincount(rows.ravel(), weights=weight.ravel(), minlength=b * c)
            prob_card = np.matmul(p, weight[:, :, None])[:, :, 0]
        overlap = np.bincount(rows.ravel(), weights=p_label.ravel(), minlength=b * c)
        cast = p.dtype
        return (
            prob_card,
            counts.reshape(b, c).astype(cast),
            overlap.reshape(b, c).astype(cast),
        )

    @staticmethod
    def hard_l1_vjp(prob, label, keep, g_prob_card, g_diff_card, *, overwrite=False):
        b, c = prob.shape[:2]
        p = prob.reshape(b, c, -1)
        rows, at, weight = _positions(label, keep, p.shape, p.dtype)
        # d |x| / dx = 1 and d |x - y| / dx = 1 - 2 y on kept pixels: g = a - 2 d y.
        a = (g_prob_card + g_diff_card).astype(p.dtype)
        # Softmax VJP: x * (g - sum_c x_c g_c), with the one-hot term kept as indices:
        # on_label = -2 d_y x_y at each pixel.
        on_label = np.take(g_diff_card.astype(p.dtype), rows)
        on_label *= np.take(p, at)
        on_label *= -2
        inner = np.matmul(a[:, None, :], p)[:, 0]
        inner += on_label
        if overwrite:
            grad = p
            step = max(1, c // _BLOCKS)  # (a - inner) a block of classes at a time
            for start in range(0, c, step):
                block = slice(start, start + step)
                grad[:, block] *= a[:, block, None] - inner[:, None]
        else:
            grad = a[:, :, None] - inner[:, None]
            grad *= p
        flat = grad.reshape(-1)  # a view: grad is contiguous
        flat[at] = np.take(flat, at) + on_label  # one labelled entry per pixel
        if weight is not None:
            grad *= weight[:, None]
        return grad.reshape(prob.shape)


def _positions(label, keep, shape, dtype):
    """Per pixel (B, N): its row b * C + class in the (B * C, N) view of the
    probabilities, its flat position in them, and its 0/1 weight (``None`` when every
    pixel counts). Dropped pixels point at class 0 with weight 0."""
    b, c, n = shape
    index = label.reshape(b, n)
    weight = None
    if keep is not None:
        kept = keep.reshape(b, n)
        index, weight = np.where(kept, index, 0), kept.astype(dtype)
    rows = index.astype(np.intp, copy=False)
    if b > 1:
        rows = rows + c * np.arange(b, dtype=np.intp)[:, None]
    at = rows * n
    at += _pixel_numbers(n)
    return rows, at, weight


@functools.lru_cache(maxsize=8)
def _pixel_numbers(n: int) -> np.ndarray:
    """0, 1, ..., n - 1, kept between steps (a fresh one costs page faults each time)."""
    numbers = np.arange(n, dtype=np.intp)
    numbers.flags.writeable = False
    return numbers
