"""The gradient of the JDT losses, derived by hand in array-API code.

NumPy, CuPy and array-api-strict have no autodiff; this vector-Jacobian product lets
their users train and gradient-check with the package, and serves PyTorch and JAX as a
lean backward that keeps the probabilities alone instead of a tape.

The chain: class losses -> tp, fp, fn (see ``_reduction``) -> the cardinalities
|x| and |x - y| -> the probabilities x -> the logits through the softmax.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from . import _validation as check
from ._kernels import kernels_for
from ._namespace import device
from ._reduction import check_reduce, levels, loss_from_levels, statistics_grad
from ._statistics import class_mask
from .jdt import JDTOptions, Prepared, prepare

Array = Any


def jdt_value_and_grad(
    logits: Array,
    label: Array,
    *,
    keep_mask: Array | None = None,
    class_axis: int = 1,
    ignore_index: int | None = None,
    class_weights: Any = None,
    reduce: Callable[[Array], Array] | None = None,
    **options: Any,
) -> tuple[Array, Array]:
    """:func:`jdt_array.jdt_loss` and its gradient with respect to ``logits``.

    Takes the arguments of ``jdt_loss``; returns ``(loss, grad)`` with ``grad`` shaped
    and typed like ``logits``. Pure array-API code: no autodiff is involved.

    With ``reduce`` (a sum over data-parallel replicas, see ``jdt_loss``) the loss is
    the global-batch loss and ``grad`` is this replica's slice of its gradient: the
    derivative with respect to this replica's logits, with no factor for the number of
    replicas. ``reduce`` is only called in the forward direction.
    """
    reduce = check_reduce(reduce)
    opts = JDTOptions(**options)
    inputs = prepare(logits, label, keep_mask, class_axis, opts.norm, ignore_index)
    xp, prob = inputs.xp, inputs.prob
    weights = check.class_weights_array(
        xp, class_weights, prob.shape[inputs.class_axis], prob.dtype, device(logits)
    )
    parts = levels(inputs.statistics(), opts, inputs.hard, weights, reduce)
    loss = loss_from_levels(xp, parts, opts, weights, reduce)
    g_prob_card, g_diff_card = statistics_grad(xp, parts, opts, weights, loss_shape(inputs))
    # The probabilities are this function's own and not needed after: reuse them.
    grad = statistics_vjp(inputs, g_prob_card, g_diff_card, overwrite=True)
    return loss, xp.astype(grad, logits.dtype, copy=False)


def statistics_vjp(
    inputs: Prepared, g_prob_card: Array, g_diff_card: Array, *, overwrite: bool = False
) -> Array:
    """The gradient with respect to the logits of ``sum(g_prob_card * |x|) +
    sum(g_diff_card * |x - y|)``, both (B, C), in the accumulation dtype.

    ``overwrite=True`` lets a native kernel write the gradient into ``inputs.prob``
    (for a caller that owns the probabilities and needs them no more).

    The pixel-level half of the chain, which the adapters' lean backward passes use:
    everything after the (B, C) statistics is left to the framework's autodiff.
    """
    if inputs.hard and inputs.norm == 1 and inputs.class_axis == 1:
        native = kernels_for(inputs.xp).hard_l1_vjp(
            inputs.prob,
            inputs.label,
            inputs.keep,
            g_prob_card,
            g_diff_card,
            overwrite=overwrite,
            scratch=inputs.scratch,
        )
        if native is not None:
            return native
    g_prob = _probability_grad(inputs, g_prob_card, g_diff_card)
    return softmax_vjp(inputs.xp, inputs.prob, g_prob, inputs.class_axis)


def softmax_vjp(xp: Any, prob: Array, g_prob: Array, axis: int) -> Array:
    """Gradient through x = softmax(z): x * (g - sum(x * g)) along ``axis``."""
    return prob * (g_prob - xp.sum(prob * g_prob, axis=axis, keepdims=True))


def loss_shape(inputs: Prepared) -> tuple[int, int]:
    return (inputs.prob.shape[0], inputs.prob.shape[inputs.class_axis])


def _probability_grad(inputs: Prepared, g_prob_card: Array, g_diff_card: Array) -> Array:
    """Chain d loss / d |x| and d loss / d |x - y| (B, C) to every probability."""
    xp, x, axis, p = inputs.xp, inputs.prob, inputs.class_axis, inputs.norm
    g_p = _along(xp, g_prob_card, x.ndim, axis)
    g_d = _along(xp, g_diff_card, x.ndim, axis)
    kept = None if inputs.keep is None else xp.expand_dims(inputs.keep, axis=axis)
    # d x^p / dx; 1 for p = 1 (kept out of the power so that 0^0 never appears).
    d_pow = 1.0 if p == 1 else p * x ** (p - 1)
    if inputs.hard:
        is_class = class_mask(xp, inputs.label, inputs.keep, axis, x.shape[axis])
        # Off-label pixels: |x - y|^p = x^p; labelled pixels: (1 - x)^p.
        d_off = (g_p + g_d) * d_pow
        d_pow_rest = 1.0 if p == 1 else p * (1 - x) ** (p - 1)
        grad = xp.where(is_class, g_p * d_pow - g_d * d_pow_rest, d_off)
    else:
        y = (
            inputs.label
            if inputs.label.dtype == x.dtype
            else xp.astype(inputs.label, x.dtype)
        )
        diff = x - y
        d_diff = xp.sign(diff) if p == 1 else p * xp.abs(diff) ** (p - 1) * xp.sign(diff)
        grad = g_p * d_pow + g_d * d_diff
    return grad if kept is None else xp.where(kept, grad, 0.0)


def _along(xp: Any, values: Array, ndim: int, class_axis: int) -> Array:
    """(B, C) values reshaped to broadcast against (B, ..., C at class_axis, ...)."""
    shape = [1] * ndim
    shape[0], shape[class_axis] = values.shape
    return xp.reshape(values, tuple(shape))
