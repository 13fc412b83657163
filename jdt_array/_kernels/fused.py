"""The fused-kernel protocol: what a kernel that takes the JDT statistics straight from
the logits (softmax included, in two passes over them) answers, whichever library it
is written for.

A kernel set (``kernels_for(xp)``) has an attribute ``fused``: a :class:`FusedKernel`
or ``None``. The Triton kernels of PyTorch tensors (``torch_fused.TritonFused``) and
the Pallas kernels of JAX arrays (``jax_pallas.PallasFused``) implement it the same
way:

* :meth:`FusedKernel.covers` is the one place that decides which cases it takes (the
  caller runs the softmax and the statistics step by step for the others);
* :meth:`FusedKernel.statistics` (pass 1) returns :class:`FusedStatistics` and is
  differentiable with respect to the logits through the framework (a PyTorch custom
  operator's autograd formula, a JAX ``custom_vjp``), whose backward is
* :meth:`FusedKernel.statistics_vjp` (pass 2), which recomputes the softmax: the
  residuals are the inputs only, nothing pixel-sized is kept between the passes.

A derivative of that backward (``create_graph=True``, ``jax.grad`` of ``jax.grad``)
is the derivative of :func:`reference_statistics`, the same statistics in array-API
code, by the framework's autodiff: the kernels compute values, the array code their
higher derivatives.

Nothing here imports a framework.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .._array import Array, compute_dtype
from .._pixels import class_mask, kept_pixels, power, spatial_axes

__all__ = ["FusedCase", "FusedKernel", "FusedStatistics", "reference_statistics",
           "reference_vjp_total"]  # fmt: skip


class FusedCase(NamedTuple):
    """The checked inputs of one fused call."""

    logits: Array  # (B, C, *spatial) or (B, *spatial, C), floating
    label: Array  # integer class ids (B, *spatial), or a soft label like the logits
    keep: Array | None  # the keep mask only (B, *spatial); the kernel drops ignore_index
    class_axis: int  # non-negative
    norm: float
    ignore_index: int | None
    hard: bool  # the label holds class ids

    @property
    def num_classes(self) -> int:
        return self.logits.shape[self.class_axis]


class FusedStatistics(NamedTuple):
    """What a fused pass 1 returns, in the accumulation dtype (float32 for float16,
    bfloat16 and float32 logits)."""

    prob_card: Array  # (B, C): sum over kept pixels of |x|^p
    label_card: Array  # (B, C): |y|^p
    diff_card: Array  # (B, C): |x - y|^p
    label_max: Array  # (B, C): max over kept pixels of y (0 where none is kept)
    ce_sum: Array  # (B,): sum over kept pixels of -sum_c y_c log x_c
    count: Array  # (B,): the number of kept pixels


class FusedKernel:
    """A fused kernel of the JDT statistics; this base covers nothing."""

    name = "none"

    def covers(self, case: FusedCase) -> bool:
        """Whether :meth:`statistics` computes this case."""
        return False

    def statistics(self, case: FusedCase) -> FusedStatistics:
        """Pass 1, differentiable with respect to ``case.logits`` (its backward is
        :meth:`statistics_vjp`)."""
        raise NotImplementedError

    def statistics_vjp(
        self,
        case: FusedCase,
        g_prob_card: Array,
        g_diff_card: Array,
        g_ce: Array | None = None,
    ) -> Array:
        """Pass 2: the gradient with respect to the logits (their dtype and shape) of
        sum(g_prob_card |x|) + sum(g_diff_card |x - y|) + sum(g_ce ce_sum); 0 at
        dropped pixels."""
        raise NotImplementedError


def reference_statistics(kernels: Any, case: FusedCase) -> FusedStatistics:
    """:class:`FusedStatistics` in array-API code with the kernel set ``kernels``'
    softmax and hard-label statistics: the values the fused kernels compute, for
    autodiff to differentiate (the derivatives of their backward).

    Dropped pixels count as logits 0 (so nothing non-finite there reaches a
    derivative); the cross-entropy is y (lse - z) summed where y is not 0, the
    kernels' arithmetic.
    """
    xp, axis, p = kernels.xp, case.class_axis, case.norm
    acc = compute_dtype(xp, case.logits.dtype)
    z = xp.astype(case.logits, acc)
    keep = case.keep
    if case.hard:
        keep = kept_pixels(xp, case.label, case.ignore_index, case.keep)
    if keep is not None:
        z = xp.where(xp.expand_dims(keep, axis=axis), z, 0.0)
    prob = kernels.softmax(z, axis)
    top = xp.max(z, axis=axis, keepdims=True)
    lse = top + xp.log(xp.sum(xp.exp(z - top), axis=axis, keepdims=True))
    axes = spatial_axes(z.ndim, axis)
    if case.hard:
        (prob_card, label_card, diff_card), _ = kernels.hard_statistics(
            prob, case.label, keep, axis, p
        )
        label_max = xp.astype(label_card > 0, acc)
        y = xp.astype(class_mask(xp, case.label, keep, axis, case.num_classes), acc)
    else:
        y = xp.astype(case.label, acc)
        x = prob
        if keep is not None:
            kept = xp.expand_dims(keep, axis=axis)
            x, y = xp.where(kept, prob, 0.0), xp.where(kept, y, 0.0)
        prob_card = xp.sum(power(x, p), axis=axes)
        label_card = xp.sum(power(y, p), axis=axes)
        diff_card = xp.sum(power(xp.abs(x - y), p), axis=axes)
        label_max = xp.max(y, axis=axes) if _pixels_of(z, axes) else xp.sum(y, axis=axes)
    b, pixels = z.shape[0], _pixels_of(z, axes)
    terms = xp.where(y != 0, y * (lse - z), 0.0)
    ce_sum = xp.sum(xp.reshape(xp.sum(terms, axis=axis), (b, pixels)), axis=1)
    if keep is None:
        count = xp.ones_like(ce_sum) * float(pixels)
    else:
        count = xp.sum(xp.reshape(xp.astype(keep, acc), (b, pixels)), axis=1)
    return FusedStatistics(prob_card, label_card, diff_card, label_max, ce_sum, count)


def reference_vjp_total(
    kernels: Any, case: FusedCase, g_prob_card: Array, g_diff_card: Array, g_ce: Array
) -> Array:
    """sum(g_prob_card |x|) + sum(g_diff_card |x - y|) + sum(g_ce ce_sum) of
    :func:`reference_statistics`: the function whose gradient a fused backward is."""
    xp = kernels.xp
    stats = reference_statistics(kernels, case)
    total = xp.sum(g_prob_card * stats.prob_card) + xp.sum(g_diff_card * stats.diff_card)
    return total + xp.sum(g_ce * stats.ce_sum)


def _pixels_of(z: Array, axes: tuple[int, ...]) -> int:
    pixels = 1
    for a in axes:
        pixels *= z.shape[a]
    return pixels
