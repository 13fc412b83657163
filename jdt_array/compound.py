"""Losses built from the core pieces: the cross-entropy + JDT mixture and the
generalized Dice loss.

References:
    Zifu Wang, Xuefei Ning, Matthew B. Blaschko. Jaccard Metric Losses: Optimizing the
    Jaccard Index with Soft Labels. NeurIPS 2023 (the 0.25 : 0.75 mixture).
    Carole H. Sudre, Wenqi Li, Tom Vercauteren, Sebastien Ourselin, M. Jorge Cardoso.
    Generalised Dice Overlap as a Deep Learning Loss Function for Highly Unbalanced
    Segmentations. MICCAI DLMIA Workshop 2017.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from . import _checks as checks
from ._array import Array, namespace_of, zero_d
from ._cardinalities import Statistics, statistics, statistics_vjp
from ._inputs import Prepared, with_probabilities
from ._tversky import Level, levels, loss_from_levels, selected_classes, statistics_grad
from .cross_entropy import (
    activated_cross_entropy_of,
    activated_cross_entropy_value_and_grad,
)
from .jdt import (
    JDTOptions,
    jdt_loss,
    jdt_value_and_grad,
    loss_of,
    prepare_jdt,
    statistics_of,
)

__all__ = [
    "CE_WEIGHT",
    "JDT_WEIGHT",
    "ce_jdt_loss",
    "ce_jdt_value_and_grad",
    "generalized_dice_loss",
    "generalized_dice_value_and_grad",
]

# The FAQ's mixture of cross-entropy and JDT loss.
CE_WEIGHT, JDT_WEIGHT = 0.25, 0.75


def ce_jdt_loss(
    logits: Array,
    label: Array,
    *,
    ce_weight: float = CE_WEIGHT,
    jdt_weight: float = JDT_WEIGHT,
    ignore_index: int | None = None,
    keep_mask: Array | None = None,
    class_axis: int = 1,
    activation: str | None = "softmax",
    **jdt_options: Any,
) -> Array:
    """``ce_weight * cross_entropy + jdt_weight * jdt_loss`` on the same pixels.

    The FAQ's default 0.25 : 0.75 ratio of cross-entropy to JDT loss tends to do
    better than either alone across natural, aerial and medical images (Wang et al.,
    NeurIPS 2023, MICCAI 2023). Works with hard and soft labels.

    Args:
        logits, label: as in :func:`jdt_array.jdt_loss`.
        ce_weight, jdt_weight: non-negative weights, not both 0.
        ignore_index, keep_mask, class_axis: passed to both losses.
        activation: as in :func:`jdt_array.jdt_loss`; with ``"sigmoid"`` the
            cross-entropy is the binary one of every class (see
            ``jdt_array.cross_entropy.activated_cross_entropy``).
        **jdt_options: every other option of :func:`jdt_array.jdt_loss` (e.g.
            ``alpha``, ``beta``, ``mIoUI``, ``gamma`` -- the JDT focal exponent, not
            the cross-entropy's).

    Returns:
        A 0-d array in the namespace and on the device of ``logits``.

    Raises:
        TypeError, ValueError: as the two losses; a negative or non-finite weight, both
            weights 0, an option :func:`jdt_array.jdt_loss` does not take.
    """
    weights = _mixture_weights(ce_weight, jdt_weight)
    shared = dict(ignore_index=ignore_index, keep_mask=keep_mask, class_axis=class_axis)
    args = checks.arguments(
        jdt_loss, logits, label, {**shared, "activation": activation, **jdt_options}
    )
    options = JDTOptions.of(args)
    inputs = prepare_jdt(logits, label, keep_mask, options, args["class_weights"])
    stats, ce_parts = statistics_of(inputs)
    if ce_parts is None:  # no fused kernel: the cross-entropy on its own
        ce = activated_cross_entropy_of(inputs)
    else:  # the fused kernel's sums, the mean over every kept pixel of the batch
        ce = _pooled_mean(inputs.xp, *ce_parts)
    reduce = checks.check_reduce(args["reduce"])
    jdt = loss_of(inputs, options, reduce=reduce, stats=stats)
    return _mix(inputs.xp, weights, (ce, jdt))


def _pooled_mean(xp: Any, sums: Array, counts: Array) -> Array:
    """sum(sums) / sum(counts), 0 when nothing is counted (double where: no 0 / 0)."""
    total, count = xp.sum(sums), xp.sum(counts)
    has = count > 0
    return xp.where(has, total / xp.where(has, count, 1.0), 0.0)


def ce_jdt_value_and_grad(
    logits: Array, label: Array, **options: Any
) -> tuple[Array, Array]:
    """:func:`ce_jdt_loss` (the same arguments) and its gradient with respect to
    ``logits``, by hand: the weighted sum of both parts' values and gradients."""
    args = checks.arguments(ce_jdt_loss, logits, label, options)
    weights = _mixture_weights(args["ce_weight"], args["jdt_weight"])
    shared = {k: args[k] for k in ("ignore_index", "keep_mask", "class_axis", "activation")}
    ce, g_ce = activated_cross_entropy_value_and_grad(logits, label, **shared)
    jdt, g_jdt = jdt_value_and_grad(logits, label, **shared, **args["jdt_options"])
    xp = namespace_of(logits=logits)
    return _mix(xp, weights, (ce, jdt)), _mix(xp, weights, (g_ce, g_jdt))


def _mixture_weights(ce_weight: Any, jdt_weight: Any) -> tuple[float, float]:
    ce_weight = checks.check_real("ce_weight", ce_weight, low=0.0)
    jdt_weight = checks.check_real("jdt_weight", jdt_weight, low=0.0)
    if ce_weight == 0 and jdt_weight == 0:
        raise ValueError("at least one of ce_weight and jdt_weight must be positive")
    return ce_weight, jdt_weight


def _mix(xp: Any, weights: tuple[float, float], parts: tuple[Array, Array]) -> Array:
    return zero_d(xp, weights[0] * parts[0] + weights[1] * parts[1])


def generalized_dice_loss(
    logits: Array,
    label: Array,
    *,
    keep_mask: Array | None = None,
    ignore_index: int | None = None,
    class_axis: int = 1,
    per_image: bool = False,
    smooth: float = 1e-3,
    activation: str | None = "softmax",
    weight_type: str = "square",
    classes: Sequence[int] | None = None,
    reduction: str = "mean",
) -> Array:
    r"""The generalized Dice loss of Sudre et al. (2017) with hard or soft labels.

    With x the softmax probabilities, y the label and class weights
    :math:`w_c \propto 1 / |y_c|^2` (:math:`|y_c| = \sum_i y_{ic}`, the class volume;
    ``weight_type="simple"``: :math:`1 / |y_c|`, ``"uniform"``: 1, as MONAI's
    ``GeneralizedDiceLoss(w_type=...)``),

    .. math::
        \ell = 1 - \frac{2 \sum_c w_c\, tp_c + 2s}{\sum_c w_c (|x_c| + |y_c|) + 2s},

    where tp is the soft true positive of :func:`jdt_array.jdt_loss` (the product
    :math:`\sum_i x_{ic} y_{ic}` for hard labels, and staying 0 exactly at x = y for
    soft ones). This is the core's class-agnostic Dice loss (alpha = beta = 0.5) with
    these weights, so rare classes count as much as frequent ones.

    Choices the paper leaves open, made as in common implementations:

    * a class with zero volume (absent from the kept pixels) gets the largest weight of
      the present classes, so that predicting it still costs (no inf, no NaN);
    * the weights are scaled so that :math:`\sum_c w_c |y_c| = \sum_c |y_c|`; the ratio
      does not depend on that scale, but ``smooth`` then acts on the usual pixel-count
      scale instead of being swamped or swamping the tiny :math:`1 / |y_c|^2` terms;
    * the weights are constants (computed from the label only).

    Args:
        logits, label, keep_mask, ignore_index, class_axis: as in
            :func:`jdt_array.jdt_loss`.
        per_image: False sums volumes and overlaps over the batch (one ratio per
            batch); True computes the weights and the ratio per image and averages over
            the images that have any label mass in their kept pixels.
        smooth: s >= 0; 0 / 0 (nothing to compare) counts as a perfect score.
        activation: as in :func:`jdt_array.jdt_loss` (``"sigmoid"`` for binary and
            multi-label segmentation, ``None`` for probabilities).
        weight_type: ``"square"`` (Sudre et al.), ``"simple"`` or ``"uniform"``.
        classes: the class ids that are weighted and pooled (None: all), e.g.
            ``range(1, C)`` for MONAI's ``include_background=False``; the others get
            weight 0 (their pixels still shape the softmax).
        reduction: ``"mean"``, or ``"none"`` with ``per_image=True``: the loss of each
            image, shape (B, 1) (0 for an image without label mass).

    Returns:
        A 0-d array like :func:`jdt_array.jdt_loss`; 0 with a zero gradient when no kept
        pixel has label mass.

    Raises:
        TypeError, ValueError: as :func:`jdt_array.jdt_loss`; ``smooth`` negative,
            ``per_image`` not a bool, an unknown ``weight_type``, ``reduction="none"``
            without ``per_image``.

    Examples:
        >>> import numpy as np
        >>> from jdt_array import generalized_dice_loss
        >>> logits = np.zeros((1, 3, 2, 2))  # (B, C, H, W): every probability 1/3
        >>> label = np.array([[[0, 1], [2, 1]]])
        >>> loss = generalized_dice_loss(logits, label, weight_type="simple",
        ...                              classes=[1, 2], smooth=0.0)  # no background
        >>> round(float(loss), 4)
        0.6667
    """
    return _generalized_dice(
        logits, label, keep_mask, ignore_index, class_axis, per_image, smooth, activation,
        weight_type, classes, reduction,
    ).loss  # fmt: skip


def generalized_dice_value_and_grad(
    logits: Array, label: Array, **options: Any
) -> tuple[Array, Array]:
    """:func:`generalized_dice_loss` (the same arguments) and its gradient with respect
    to ``logits``, by hand (the weights, which depend on the label only, are
    constants)."""
    args = checks.arguments(generalized_dice_loss, logits, label, options)
    if args["reduction"] != "mean":
        raise ValueError(
            "the hand-derived gradient is that of a scalar loss: value_and_grad needs "
            "reduction='mean'"
        )
    gd = _generalized_dice(**args)
    xp = gd.inputs.xp
    g_prob_card, g_diff_card = statistics_grad(
        xp, gd.parts, gd.options, gd.weights, gd.inputs.loss_shape
    )
    grad = statistics_vjp(
        gd.inputs, g_prob_card, g_diff_card, residual=gd.residual, overwrite=True
    )
    return gd.loss, xp.astype(grad, logits.dtype, copy=False)


class _GeneralizedDice(NamedTuple):
    inputs: Prepared
    residual: Any
    options: JDTOptions
    weights: Array
    parts: list[Level]
    loss: Array


WEIGHT_TYPES = ("square", "simple", "uniform")


def _generalized_dice(
    logits, label, keep_mask, ignore_index, class_axis, per_image, smooth, activation,
    weight_type, classes, reduction,
) -> _GeneralizedDice:  # fmt: skip
    """The generalized Dice loss as the core's class-agnostic Dice loss (alpha = beta =
    0.5) with Sudre's weights, and what its gradient needs."""
    checks.check_bool("per_image", per_image)
    if weight_type not in WEIGHT_TYPES:
        raise ValueError(f"weight_type must be one of {WEIGHT_TYPES}, got {weight_type!r}")
    if reduction == "none" and not per_image:
        raise ValueError(
            "reduction='none' gives the loss of each image, which needs per_image=True "
            "(per_image=False is one ratio for the whole batch)"
        )
    options = JDTOptions(
        class_axis=class_axis,
        ignore_index=ignore_index,
        mIoUD=0.0 if per_image else 1.0,
        mIoUI=1.0 if per_image else 0.0,
        alpha=0.5,
        beta=0.5,
        smooth=smooth,
        # An image (or batch) counts when its kept pixels hold any label mass.
        threshold=0.0,
        active_classes_mode_hard="PRESENT",
        active_classes_mode_soft="PRESENT",
        class_agnostic=True,
        activation=activation,
        classes=classes,
        reduction=reduction,
    )
    inputs = with_probabilities(prepare_jdt(logits, label, keep_mask, options))
    xp = inputs.xp
    stats, residual = statistics(inputs)
    chosen = selected_classes(xp, options.classes, inputs.num_classes, stats.label_card)
    weights = sudre_weights(xp, _volume(xp, stats, per_image), weight_type, chosen)
    parts = levels(stats, options, inputs.hard, weights)
    loss = zero_d(xp, loss_from_levels(xp, stats, parts, options, weights))
    return _GeneralizedDice(inputs, residual, options, weights, parts, loss)


def _volume(xp: Any, stats: Statistics, per_image: bool) -> Array:
    """The class volumes |y_c|: (B, C) per image, else (C,) over the batch."""
    return stats.label_card if per_image else xp.sum(stats.label_card, axis=0)


def sudre_weights(
    xp: Any, volume: Array, weight_type: str = "square", chosen: Array | None = None
) -> Array:
    """Weights proportional to 1 / volume**2 (``"simple"``: 1 / volume, ``"uniform"``:
    1) along the last axis, 0 for classes not ``chosen`` (see
    :func:`generalized_dice_loss` for zero volumes and the scale)."""
    has = volume > 0
    if chosen is not None:
        volume = xp.where(chosen, volume, 0.0)
        has = has & chosen
    power = {"square": 2, "simple": 1, "uniform": 0}[weight_type]
    inverse = xp.where(has, 1.0 / xp.where(has, volume, 1.0) ** power, 0.0)
    largest = xp.max(inverse, axis=-1, keepdims=True)
    weights = xp.where(has, inverse, largest)
    if chosen is not None:
        weights = xp.where(chosen, weights, 0.0)
    weighted = xp.sum(weights * volume, axis=-1, keepdims=True)
    total = xp.sum(volume, axis=-1, keepdims=True)
    ok = weighted > 0
    return weights * xp.where(ok, total / xp.where(ok, weighted, 1.0), 1.0)
