"""NumPy kernels for the hot spots of the JDT losses (see ``jdt_array._kernels``):
``bincount`` and ``take_along_axis`` use the hard label as indices, and the softmax
works in place on its own temporaries."""

from __future__ import annotations

import numpy as np


class NumPyKernels:
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
        p_label = np.take_along_axis(p, index[:, None], axis=1)[:, 0] * weight
        flat = (index + c * np.arange(b)[:, None]).ravel()
        overlap = np.bincount(flat, weights=p_label.ravel(), minlength=b * c)
        counts = np.bincount(flat, weights=weight.ravel(), minlength=b * c)
        prob_card = p.sum(axis=2) if keep is None else np.einsum("bcn,bn->bc", p, weight)
        cast = p.dtype
        return (
            prob_card,
            counts.reshape(b, c).astype(cast),
            overlap.reshape(b, c).astype(cast),
        )

    @staticmethod
    def hard_l1_vjp(prob, label, keep, g_prob_card, g_diff_card):
        b, c = prob.shape[:2]
        p = prob.reshape(b, c, -1)
        index, weight = _index_and_weight(label, keep, b, p.dtype)
        a = (g_prob_card + g_diff_card).astype(p.dtype)
        d_label = np.take_along_axis(g_diff_card.astype(p.dtype), index, axis=1)
        p_label = np.take_along_axis(p, index[:, None], axis=1)[:, 0]
        inner = np.einsum("bcn,bc->bn", p, a) - 2 * d_label * p_label
        grad = p * (a[:, :, None] - inner[:, None])
        at_label = np.take_along_axis(grad, index[:, None], axis=1)
        np.put_along_axis(grad, index[:, None], at_label - (2 * d_label * p_label)[:, None],
                          axis=1)  # fmt: skip
        if keep is not None:
            grad *= weight[:, None]
        return grad.reshape(prob.shape)


def _index_and_weight(label, keep, batch, dtype):
    """Class ids (B, N) and the 0/1 weight of each pixel; dropped pixels -> class 0."""
    flat = label.reshape(batch, -1)
    if keep is None:
        return flat.astype(np.intp, copy=False), np.ones(flat.shape, dtype=dtype)
    kept = keep.reshape(batch, -1)
    return np.where(kept, flat, 0).astype(np.intp), kept.astype(dtype)
