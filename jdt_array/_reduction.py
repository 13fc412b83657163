"""From (B, C) statistics to one loss value, and the gradient of that step.

Given the active-class masks, the dataset-, image- and class-level means are all linear
in the per-class losses: loss = sum over levels of sum(coef * class_loss). Writing the
reduction with explicit coefficients gives the forward value and, for free, the
derivative with respect to each class loss (the coefficient), which the hand-derived
gradient for libraries without autodiff builds on.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ._namespace import device, namespace_of
from ._statistics import Statistics


class Level(NamedTuple):
    """One level of the loss: its tp, fp, fn, active mask and mean coefficients."""

    tp: Any
    fp: Any
    fn: Any
    active: Any
    coef: Any
    batch_summed: bool  # the dataset level sums the (B, C) statistics over the batch


def levels(stats: Statistics, options: Any, hard: bool, class_weights: Any) -> list[Level]:
    """The levels with non-zero weight, after pooling classes if ``class_agnostic``."""
    xp = namespace_of(prob_card=stats.prob_card)
    mode = options.active_classes_mode_hard if hard else options.active_classes_mode_soft
    present = stats.label_max > options.threshold
    tp, fp, fn = stats.tp_fp_fn()
    if options.class_agnostic:
        tp, fp, fn = (pool_classes(xp, v, class_weights) for v in (tp, fp, fn))
        present = xp.any(present, axis=1, keepdims=True)

    result = []
    if options.mIoUD > 0:
        totals = [xp.sum(v, axis=0) for v in (tp, fp, fn)]
        active = _all_like(xp, totals[0]) if mode == "ALL" else xp.any(present, axis=0)
        coef = options.mIoUD * _mean_weights(xp, active, tp.dtype)
        result.append(Level(*totals, active, coef, batch_summed=True))
    if options.mIoUI > 0 or options.mIoUC > 0:
        active = _all_like(xp, tp) if mode == "ALL" else present
        coef = 0.0
        for weight, axis in ((options.mIoUI, 1), (options.mIoUC, 0)):
            if weight > 0:
                coef = coef + weight * _nested_mean_weights(xp, active, axis, tp.dtype)
        result.append(Level(tp, fp, fn, active, coef, batch_summed=False))
    return result


def loss_from_levels(xp: Any, parts: list[Level], options: Any, class_weights: Any) -> Any:
    weights = None if options.class_agnostic else class_weights
    total = sum(
        xp.sum(lv.coef * class_losses(xp, lv.tp, lv.fp, lv.fn, lv.active, options, weights))
        for lv in parts
    )
    # NumPy turns 0-d results of arithmetic into scalars; hand back a 0-d array.
    return xp.reshape(total, ())


def statistics_grad(
    xp: Any, parts: list[Level], options: Any, class_weights: Any, shape: tuple
) -> tuple[Any, Any]:
    """d loss / d |x| and d loss / d |x - y|, both (B, C) (|y| does not depend on x)."""
    weights = None if options.class_agnostic else class_weights
    g_tp = g_fp = g_fn = 0.0
    for lv in parts:
        grads = class_losses_vjp(
            xp, lv.tp, lv.fp, lv.fn, lv.active, options, weights, lv.coef
        )
        if lv.batch_summed:
            grads = [xp.expand_dims(g, axis=0) for g in grads]
        g_tp, g_fp, g_fn = g_tp + grads[0], g_fp + grads[1], g_fn + grads[2]
    if options.class_agnostic and class_weights is not None:
        g_tp, g_fp, g_fn = (g * class_weights for g in (g_tp, g_fp, g_fn))
    # tp = (P + Y - D) / 2, fp = (P - Y + D) / 2, fn = (Y - P + D) / 2.
    g_prob = (g_tp + g_fp - g_fn) / 2
    g_diff = (g_fp + g_fn - g_tp) / 2
    zeros = xp.zeros(shape, dtype=g_prob.dtype, device=device(g_prob))
    return g_prob + zeros, g_diff + zeros


def class_losses(xp, tp, fp, fn, active, options, class_weights):
    """Per-class losses, exactly 0 (with a zero gradient) where a class is inactive."""
    tversky = _tversky(xp, tp, fp, fn, active, options)
    losses = -xp.log(tversky) if options.log_loss else 1.0 - tversky
    if options.gamma != 1:
        # Rounding can leave 1 - T a hair below zero, where a fractional power is NaN.
        losses = xp.where(losses > 0, losses, 0.0) ** options.gamma
    if class_weights is not None:
        losses = losses * class_weights
    return losses


def class_losses_vjp(xp, tp, fp, fn, active, options, class_weights, g_losses):
    """The gradient of ``sum(g_losses * class_losses(...))`` w.r.t. tp, fp and fn."""
    tversky = _tversky(xp, tp, fp, fn, active, options)
    g = g_losses if class_weights is None else g_losses * class_weights
    if options.gamma != 1:
        base = -xp.log(tversky) if options.log_loss else 1.0 - tversky
        positive = base > 0
        safe = xp.where(positive, base, 1.0)
        g = xp.where(positive, g * options.gamma * safe ** (options.gamma - 1), 0.0)
    g_t = -g / tversky if options.log_loss else -g
    den, ok = _denominator(xp, tp, fp, fn, active, options)
    num = tp + options.smooth
    scale = xp.where(ok, g_t / xp.where(ok, den, 1.0) ** 2, 0.0)
    g_tp = scale * (options.alpha * fp + options.beta * fn)
    return g_tp, -scale * options.alpha * num, -scale * options.beta * num


def _denominator(xp, tp, fp, fn, active, options):
    den = tp + options.alpha * fp + options.beta * fn + options.smooth
    return den, active & (den > 0)


def _tversky(xp, tp, fp, fn, active, options):
    den, ok = _denominator(xp, tp, fp, fn, active, options)
    # The double where keeps 0 / 0 out of both the value and the gradient.
    return xp.where(ok, (tp + options.smooth) / xp.where(ok, den, 1.0), 1.0)


def _mean_weights(xp, mask, dtype):
    """Coefficients w with sum(w * v) = mean of v over ``mask`` (0 if mask is empty)."""
    m = xp.astype(mask, dtype)
    count = xp.sum(m)
    return m / xp.where(count > 0, count, 1.0)


def _nested_mean_weights(xp, mask, axis, dtype):
    """Coefficients for the mean over ``axis`` within each group, then over groups."""
    inner = xp.astype(mask, dtype)
    count = xp.sum(inner, axis=axis, keepdims=True)
    inner = inner / xp.where(count > 0, count, 1.0)
    groups = xp.astype(count > 0, dtype)
    return inner / xp.where(xp.sum(groups) > 0, xp.sum(groups), 1.0)


def pool_classes(xp, values, class_weights):
    if class_weights is not None:
        values = values * class_weights
    return xp.sum(values, axis=1, keepdims=True)


def _all_like(xp, values):
    return xp.ones(values.shape, dtype=xp.bool, device=device(values))
