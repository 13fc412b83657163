"""The array-API body of every hot spot of the losses and metrics.

``Generic`` is the kernel set of every library: its methods are complete, correct
array-API code. A library's native kernels (``numpy.py``, ``torch.py``) subclass it,
override the methods they can do faster, and hand a case they do not cover back to
``super()``; callers never learn which one ran.

A kernel may keep values from the statistics for their gradient: ``hard_statistics``
returns them as a *residual*, which the caller hands to ``hard_statistics_vjp`` of the
same, unchanged arrays (or drops; ``None`` means nothing was kept).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._array import device
from .._pixels import (
    along_classes,
    class_mask,
    power,
    soft_cardinalities_grad,
    spatial_axes,
)

Array = Any
Residual = Any  # what a kernel keeps from the statistics for their gradient, or None


class Generic:
    """The hot spots in array-API code, for the namespace ``xp``."""

    # Whether pair_counts is a fast one-pass count (see pair_table_pays).
    counts_pairs_in_one_pass = False
    # The fused kernel of the JDT statistics (a fused.FusedKernel: the softmax and the
    # statistics straight from the logits, in two passes), or None: the caller then
    # takes the softmax and the statistics step by step.
    fused: Any = None

    def __init__(self, xp: Any) -> None:
        self.xp = xp

    # -- probabilities ---------------------------------------------------------------

    def softmax(self, x: Array, axis: int, keep: Array | None = None) -> Array:
        """Softmax over ``axis`` in the dtype of ``x``; the max shift keeps exp finite.

        With ``keep`` (boolean, ``x``'s shape without ``axis``), dropped pixels count
        as logits 0 (probabilities 1 / C): whatever they held (NaN, inf) never reaches
        a value or a gradient, also through autodiff.
        """
        xp = self.xp
        if keep is not None:
            x = xp.where(xp.expand_dims(keep, axis=axis), x, 0.0)
        e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
        return e / xp.sum(e, axis=axis, keepdims=True)

    def softmax_vjp(self, prob: Array, g_prob: Array, axis: int) -> Array:
        """Gradient through x = softmax(z): x * (g - sum(x * g)) along ``axis``."""
        return prob * (g_prob - self.xp.sum(prob * g_prob, axis=axis, keepdims=True))

    def argmax(self, x: Array, axis: int) -> Array:
        """The first index of the maximum along ``axis`` (the first NaN if any), in an
        integer dtype that holds the number of classes."""
        return self.xp.argmax(x, axis=axis)

    # -- hard-label statistics and their gradient ------------------------------------

    def hard_statistics(
        self, prob: Array, label: Array, keep: Array | None, class_axis: int, norm: float
    ) -> tuple[tuple[Array, Array, Array], Residual]:
        """``((|x|, |y|, |x - y|), residual)``, each (B, C), for an integer label.

        With y one-hot, |y|^p is 1 on the pixels labelled c, so |y| is a pixel count
        and |x - y|^p is (1 - x)^p there and x^p elsewhere. For p = 1 that gives
        |x - y| = |x| + |y| - 2 * sum over the pixels labelled c of x: no one-hot
        float label is ever built.
        """
        xp = self.xp
        axes = spatial_axes(prob.ndim, class_axis)
        is_class = class_mask(xp, label, keep, class_axis, prob.shape[class_axis])
        # A float sum: count_nonzero is several times slower in PyTorch.
        label_card = xp.sum(xp.astype(is_class, prob.dtype), axis=axes)
        x_p = power(prob, norm)
        if keep is not None:
            x_p = xp.where(xp.expand_dims(keep, axis=class_axis), x_p, 0.0)
        prob_card = xp.sum(x_p, axis=axes)
        if norm == 1:
            overlap = xp.sum(xp.where(is_class, prob, 0.0), axis=axes)
            diff_card = prob_card + label_card - 2 * overlap
        else:
            diff_card = xp.sum(xp.where(is_class, (1 - prob) ** norm, x_p), axis=axes)
        return (prob_card, label_card, diff_card), None

    def hard_statistics_vjp(
        self,
        prob: Array,
        label: Array,
        keep: Array | None,
        class_axis: int,
        norm: float,
        g_prob_card: Array,
        g_diff_card: Array,
        *,
        residual: Residual = None,
        overwrite: bool = False,
    ) -> Array:
        """The logits' gradient of sum(g_prob_card |x|) + sum(g_diff_card |x - y|) for
        an integer label, in the dtype of ``prob``.

        ``residual`` is what ``hard_statistics`` of the same arrays returned;
        ``overwrite=True`` allows writing the gradient into ``prob``'s memory.
        """
        xp, x, axis, p = self.xp, prob, class_axis, norm
        g_p = along_classes(xp, g_prob_card, x.ndim, axis)
        g_d = along_classes(xp, g_diff_card, x.ndim, axis)
        # d x^p / dx; 1 for p = 1 (kept out of the power so that 0^0 never appears).
        d_pow = 1.0 if p == 1 else p * x ** (p - 1)
        d_pow_rest = 1.0 if p == 1 else p * (1 - x) ** (p - 1)
        is_class = class_mask(xp, label, keep, axis, x.shape[axis])
        # Off-label pixels: |x - y|^p = x^p; labelled pixels: (1 - x)^p.
        g = xp.where(is_class, g_p * d_pow - g_d * d_pow_rest, (g_p + g_d) * d_pow)
        if keep is not None:
            g = xp.where(xp.expand_dims(keep, axis=axis), g, 0.0)
        return self.softmax_vjp(x, g, axis)

    # -- soft-label gradient -------------------------------------------------------

    def soft_statistics_vjp(
        self,
        prob: Array,
        label: Array,
        keep: Array | None,
        class_axis: int,
        norm: float,
        g_prob_card: Array,
        g_diff_card: Array,
    ) -> Array:
        """The logits' gradient of sum(g_prob_card |x|) + sum(g_diff_card |x - y|) for
        a soft label ``label`` (in the dtype of ``prob``), 0 at dropped pixels."""
        g = soft_cardinalities_grad(self.xp, prob, label, keep, class_axis, norm,
                                    g_prob_card, g_diff_card)  # fmt: skip
        return self.softmax_vjp(prob, g, class_axis)

    # -- sorting and running sums (the Lovasz losses) -------------------------------

    def cumulative_sum(self, x: Array, axis: int) -> Array:
        """The cumulative sum along ``axis``."""
        return self.xp.cumulative_sum(x, axis=axis)

    def argsort_descending(self, x: Array) -> Array:
        """The stable descending order along the last axis (ties keep their order)."""
        return self.xp.argsort(x, axis=-1, descending=True, stable=True)

    # -- checks and metrics ----------------------------------------------------------

    def value_range(self, values: Array) -> tuple[Array, Array]:
        """(min, max) of ``values``."""
        return self.xp.min(values), self.xp.max(values)

    def class_counts(self, ids: Array, num_classes: int) -> Array:
        """(B, C) counts of each class id in (B, N) ids in [0, C] (C: no class), in
        the default integer dtype."""
        xp = self.xp
        classes = xp.arange(num_classes, dtype=ids.dtype, device=device(ids))
        is_class = xp.expand_dims(ids, axis=1) == xp.reshape(classes, (1, -1, 1))
        return xp.count_nonzero(is_class, axis=2)

    def byte_pair_counts(
        self, label: Array, pred: Array, label_map: Array, pred_map: Array, shape: tuple
    ) -> Array | None:
        """(B, R, K) counts of the pairs (``label_map[l]``, ``pred_map[p]``) over the
        pixels of (B, N) one-byte integer ``label`` and ``pred``, where the (256,) maps
        (ids in [0, R) and [0, K), ``shape`` = (R, K)) are indexed by the pixels'
        bytes (an int8 -1 is byte 255); or None where this does not pay.

        One count of all 65,536 byte pairs per image, regrouped by the maps, replaces
        every per-pixel pass of the metric's id handling; it pays for integer maps
        of one byte with enough pixels per image, where a library counts in one pass.
        The generic code has no such count: None.
        """
        return None

    def pair_counts(self, label_ids: Array, pred_ids: Array, num_classes: int) -> Array:
        """(B, C + 1, C + 1) counts of each (label id, predicted id) pair in two (B, N)
        id arrays in [0, C] (C: no class), in the default integer dtype."""
        xp = self.xp
        size = (num_classes + 1) ** 2
        code = xp.astype(label_ids, xp.int64) * (num_classes + 1)
        code = code + xp.astype(pred_ids, xp.int64)
        counts = self.class_counts(code, size)
        return xp.reshape(counts, (code.shape[0], num_classes + 1, num_classes + 1))

    def pair_table_pays(self, pixels: int, num_classes: int) -> bool:
        """Whether one table of (label, prediction) pairs beats class-by-class counts:
        with a one-pass ``pair_counts``, while the (C + 1)^2 bins of an image do not
        outnumber its pixels."""
        size = (num_classes + 1) ** 2
        return self.counts_pairs_in_one_pass and size <= max(pixels, 1024)

    def pixel_counts(
        self, label_ids: Array, pred_ids: Array, counted: Array, num_classes: int
    ) -> tuple[Array, Array, Array]:
        """(B, C) counts over counted pixels of |pred = label = c|, |pred = c| and
        |label = c|, from (B, N) ids where C is no class (``label_ids`` is C where
        not counted)."""
        xp, C = self.xp, num_classes
        if self.pair_table_pays(label_ids.shape[1], C):
            pairs = self.pair_counts(label_ids, pred_ids, C)  # row C: uncounted pixels
            flat = xp.reshape(pairs, (pairs.shape[0], (C + 1) ** 2))
            # (the default integer dtype: JAX without x64 has no int64)
            diagonal = xp.arange(C, device=device(label_ids)) * (C + 2)
            return (
                xp.take(flat, diagonal, axis=1),
                xp.sum(pairs[:, :C, :C], axis=1),
                xp.sum(pairs[:, :C, :], axis=2),
            )
        pred_ids = xp.where(counted, pred_ids, C)
        hit = xp.where(pred_ids == label_ids, label_ids, C)
        return tuple(self.class_counts(ids, C) for ids in (hit, pred_ids, label_ids))

    # -- gradients -------------------------------------------------------------------

    def value_and_grad(
        self,
        loss_fn: Callable,
        logits: Array,
        label: Array,
        options: dict,
        *,
        hand_gradient: Callable[[Callable], Callable],
    ) -> tuple[Array, Array]:
        """``(loss, d loss / d logits)``: the hand-derived gradient of ``loss_fn``
        (``hand_gradient(loss_fn)``) for libraries without autodiff."""
        return hand_gradient(loss_fn)(logits, label, **options)


class HardL1(Generic):
    """The base of native kernels whose hard-label statistics and gradient cover the
    common case, the L1 norm with channels first (B, C, ...): they implement
    ``hard_l1_statistics`` and ``hard_l1_vjp``, and every other case goes to the
    generic code."""

    def hard_statistics(self, prob, label, keep, class_axis, norm):
        if norm != 1 or class_axis != 1 or not self.hard_l1_applies(prob):
            return super().hard_statistics(prob, label, keep, class_axis, norm)
        return self.hard_l1_statistics(prob, label, keep)

    def hard_statistics_vjp(
        self, prob, label, keep, class_axis, norm, g_prob_card, g_diff_card, *,
        residual=None, overwrite=False,
    ):  # fmt: skip
        grads = (g_prob_card, g_diff_card)
        native = self.hard_l1_applies(prob) and self.hard_l1_vjp_applies(prob, *grads)
        if norm != 1 or class_axis != 1 or not native:
            return super().hard_statistics_vjp(
                prob, label, keep, class_axis, norm, *grads, residual=residual,
                overwrite=overwrite,
            )  # fmt: skip
        return self.hard_l1_vjp(
            prob, label, keep, *grads, residual=residual, overwrite=overwrite
        )

    def hard_l1_statistics(self, prob, label, keep):
        """:meth:`hard_statistics` for norm 1 and channels first."""
        raise NotImplementedError

    def hard_l1_vjp(self, prob, label, keep, g_prob_card, g_diff_card, *, residual,
                    overwrite):  # fmt: skip
        """:meth:`hard_statistics_vjp` for norm 1 and channels first."""
        raise NotImplementedError

    def hard_l1_applies(self, prob) -> bool:
        """Whether the native hard-label kernels may run on ``prob`` at all."""
        return True

    def hard_l1_vjp_applies(self, prob, g_prob_card, g_diff_card) -> bool:
        """Whether ``hard_l1_vjp`` may run on these arrays."""
        return True
