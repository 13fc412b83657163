"""NumPy kernels for the hot spots of the JDT losses (see ``jdt_array._kernels``):
``bincount`` and ``take_along_axis`` use the hard label as indices, and each function
works in place on its own temporaries (NumPy allocates a buffer per operation)."""

from __future__ import annotations

import numpy as np

from .._kernels import Generic


class NumPyKernels(Generic):
    @staticmethod
    def softmax(x: np.ndarray, axis: int) -> np.ndarray:
        e = x - np.max(x, axis=axis, keepdims=True)
        np.exp(e, out=e)
        e /= np.sum(e, axis=axis, keepdims=True)
        return e

    @staticmethod
    def hard_l1_statistics(prob, label, keep):
        b, c = prob.shape[:2]
        p = prob.reshape(b, c, -1)
        index, weight = _index_and_weight(label, keep, b, p.dtype)
        p_label = np.take_along_axis(p, index[:, None], axis=1)[:, 0]
        flat = (index + c * np.arange(b)[:, None]).ravel()
        if weight is None:
            counts = np.bincount(flat, minlength=b * c)
            prob_card = p.sum(axis=2)
        else:
            p_label *= weight
            counts = np.bincount(flat, weights=weight.ravel(), minlength=b * c)
            prob_card = np.matmul(p, weight[:, :, None])[:, :, 0]
        overlap = np.bincount(flat, weights=p_label.ravel(), minlength=b * c)
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
        n = p.shape[2]
        index, weight = _index_and_weight(label, keep, b, p.dtype)
        # d |x| / dx = 1 and d |x - y| / dx = 1 - 2 y on kept pixels: g = a - 2 d y.
        a = (g_prob_card + g_diff_card).astype(p.dtype)
        # Softmax VJP: x * (g - sum_c x_c g_c), with the one-hot term kept as indices:
        # on_label = -2 d_y x_y at each pixel.
        on_label = np.take_along_axis(g_diff_card.astype(p.dtype), index, axis=1)
        on_label *= np.take_along_axis(p, index[:, None], axis=1)[:, 0]
        on_label *= -2
        inner = np.matmul(a[:, None, :], p)[:, 0]
        inner += on_label
        if overwrite:
            grad = p
            grad *= a[:, :, None] - inner[:, None]
        else:
            grad = a[:, :, None] - inner[:, None]
            grad *= p
        # Each pixel has one labelled entry, so a fancy-indexed += adds each value once.
        at_label = (np.arange(b)[:, None] * c + index) * n + np.arange(n)
        grad.reshape(-1)[at_label.ravel()] += on_label.ravel()
        if weight is not None:
            grad *= weight[:, None]
        return grad.reshape(prob.shape)


def _index_and_weight(label, keep, batch, dtype):
    """Class ids (B, N) and the 0/1 weight of each pixel, ``None`` when every pixel
    counts; dropped pixels point at class 0 with weight 0."""
    flat = label.reshape(batch, -1)
    if keep is None:
        return flat.astype(np.intp, copy=False), None
    kept = keep.reshape(batch, -1)
    return np.where(kept, flat, 0).astype(np.intp), kept.astype(dtype)
