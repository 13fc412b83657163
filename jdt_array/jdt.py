"""Jaccard, Dice and Tversky losses that stay correct for soft labels ("JDT losses").

References:
    Zifu Wang, Xuefei Ning, Matthew B. Blaschko. Jaccard Metric Losses: Optimizing the
    Jaccard Index with Soft Labels. NeurIPS 2023.
    Zifu Wang, Teodora Popordanoska, Jeroen Bertels, Robin Lemmens, Matthew B. Blaschko.
    Dice Semimetric Losses: Optimizing the Dice Score with Soft Labels. MICCAI 2023.
    Zifu Wang, Maxim Berman, Amal Rannen-Triki, Philip H.S. Torr, Devis Tuia, Tinne
    Tuytelaars, Luc Van Gool, Jiaqian Yu, Matthew B. Blaschko. Revisiting Evaluation
    Metrics for Semantic Segmentation: Optimization and Evaluation of Fine-grained
    Intersection over Union. NeurIPS 2023.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from . import _validation as check
from ._namespace import compute_dtype, device, namespace_of
from ._reduction import check_reduce, levels, loss_from_levels
from ._statistics import Statistics, hard_statistics, soft_statistics, softmax

__all__ = [
    "JDTOptions",
    "dice_loss",
    "jaccard_loss",
    "jdt_loss",
    "jdt_statistics",
    "loss_from_statistics",
    "tversky_loss",
]

Array = Any


@dataclass(frozen=True)
class JDTOptions:
    """The checked scalar options of :func:`jdt_loss` (see there for their meaning)."""

    mIoUD: float = 1.0
    mIoUI: float = 0.0
    mIoUC: float = 0.0
    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0
    smooth: float = 1e-3
    threshold: float = 0.01
    norm: float = 1
    log_loss: bool = False
    active_classes_mode_hard: str = "PRESENT"
    active_classes_mode_soft: str = "ALL"
    class_agnostic: bool = False

    def __post_init__(self) -> None:
        for name in ("mIoUD", "mIoUI", "mIoUC", "alpha", "beta", "smooth", "threshold"):
            check.check_real(name, getattr(self, name), low=0.0)
        if self.mIoUD + self.mIoUI + self.mIoUC == 0:
            raise ValueError("at least one of mIoUD, mIoUI and mIoUC must be positive")
        check.check_real("gamma", self.gamma, low=1.0)
        check.check_real("norm", self.norm, low=1.0)
        check.check_mode("active_classes_mode_hard", self.active_classes_mode_hard)
        check.check_mode("active_classes_mode_soft", self.active_classes_mode_soft)
        for name in ("log_loss", "class_agnostic"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")


def jdt_loss(
    logits: Array,
    label: Array,
    *,
    keep_mask: Array | None = None,
    class_axis: int = 1,
    mIoUD: float = 1.0,
    mIoUI: float = 0.0,
    mIoUC: float = 0.0,
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    smooth: float = 1e-3,
    threshold: float = 0.01,
    norm: float = 1,
    log_loss: bool = False,
    ignore_index: int | None = None,
    class_weights: Any = None,
    active_classes_mode_hard: str = "PRESENT",
    active_classes_mode_soft: str = "ALL",
    class_agnostic: bool = False,
    reduce: Callable[[Array], Array] | None = None,
) -> Array:
    r"""The JDT (Jaccard, Dice, Tversky) loss of softmax(logits) against a hard or soft
    label.

    For each image b and class c, with x the probabilities and y the label over the
    kept pixels, the cardinalities are :math:`|v| = \sum_i |v_i|^p` (p = ``norm``) and

    .. math::
        tp = (|x| + |y| - |x - y|) / 2, \quad fp = |x| - tp, \quad fn = |y| - tp,

        T = \frac{tp + s}{tp + \alpha fp + \beta fn + s}, \quad
        \ell = w_c \, (1 - T)^\gamma \ \text{or}\ w_c (-\log T)^\gamma.

    With ``alpha = beta = 1`` this is the Jaccard metric loss, with 0.5 the Dice
    semimetric loss; both equal the soft Jaccard / Dice losses for hard labels and stay
    zero exactly when a soft label equals the prediction (Wang et al., NeurIPS 2023,
    MICCAI 2023). The loss is ``mIoUD * L_D + mIoUI * L_I + mIoUC * L_C``:

    * ``L_D`` sums tp, fp, fn over the batch, then averages over active classes;
    * ``L_I`` averages over each image's active classes, then over images that have one;
    * ``L_C`` averages over the images where each class is active, then over classes;

    matching the dataset-, image- and class-level mIoU of Wang et al. (NeurIPS 2023).
    A class is active in "ALL" mode always, in "PRESENT" mode where the label's largest
    value over the reduced pixels exceeds ``threshold``. With nothing active (e.g.
    every pixel ignored) the loss is 0 with a zero gradient; where a ratio is 0 / 0
    (``smooth=0``, class empty in both) T is 1, the limit for ``smooth`` -> 0.

    Args:
        logits: (B, C, *spatial) with ``class_axis=1``, or (B, *spatial, C) with
            ``class_axis=-1``; any number of spatial axes. float16/bfloat16 inputs are
            accumulated in float32.
        label: hard label, an integer array (B, *spatial) of class ids; or soft label,
            a floating array shaped like ``logits`` holding per-class probabilities.
        keep_mask: optional boolean (B, *spatial); False drops a pixel everywhere.
        class_axis: the axis of ``logits`` (and of a soft label) holding the classes.
        mIoUD, mIoUI, mIoUC: non-negative weights of the three levels.
        alpha, beta: weights of false positives and false negatives (>= 0).
        gamma: focal exponent (>= 1) on each class loss.
        smooth: added to the numerator and denominator of T (>= 0).
        threshold: a class is "PRESENT" where the label exceeds it.
        norm: p >= 1 of the cardinalities (1, the L1 norm, by default; see the FAQ).
        log_loss: use -log T instead of 1 - T.
        ignore_index: hard-label value whose pixels are dropped (soft labels: unused).
        class_weights: optional sequence or array of C non-negative weights.
        active_classes_mode_hard, active_classes_mode_soft: "PRESENT" or "ALL", for
            hard and soft labels.
        class_agnostic: pool tp, fp and fn over all classes (weighted by
            ``class_weights``) before the ratio, one pooled class per image.
        reduce: the hook for data-parallel training: a function that takes a 1-d
            array and returns its sum over all replicas (processes or devices), the
            same on every replica. Everything the loss sums or counts over the batch
            passes through it: the dataset-level tp, fp, fn and present-class counts,
            the image counts in the image- and class-level means, and the sum of the
            image-level terms (at most three calls). Every replica then returns the
            loss of the global batch, and gradients flow back through ``reduce``.
            ``None`` (the default): this call's batch only. The adapters build it from
            the frameworks' collectives: ``sync_stats=True`` in
            :mod:`jdt_array.backends.torch`, ``axis_name=`` in
            :mod:`jdt_array.backends.jax`.

    Returns:
        A 0-d array in the namespace and on the device of ``logits``, float64 for
        float64 logits and float32 otherwise. With ``reduce``, the global-batch loss.

    Raises:
        TypeError: mixed array libraries, non-floating logits, a label that is neither
            integer nor floating, a non-boolean ``keep_mask``.
        ValueError: shapes that do not match, options out of range, different devices,
            hard labels outside [0, C) that are not ``ignore_index``, soft labels
            outside [0, 1]. Value checks read the label, so they are skipped for traced
            arrays (inside ``jax.jit``); there, out-of-range class ids count as pixels
            of no class.
    """
    options = JDTOptions(
        mIoUD=mIoUD, mIoUI=mIoUI, mIoUC=mIoUC, alpha=alpha, beta=beta, gamma=gamma,
        smooth=smooth, threshold=threshold, norm=norm, log_loss=log_loss,
        active_classes_mode_hard=active_classes_mode_hard,
        active_classes_mode_soft=active_classes_mode_soft, class_agnostic=class_agnostic,
    )  # fmt: skip
    inputs = prepare(logits, label, keep_mask, class_axis, norm, ignore_index)
    weights = check.class_weights_array(
        inputs.xp, class_weights, inputs.prob.shape[inputs.class_axis], inputs.prob.dtype,
        device(logits),
    )  # fmt: skip
    stats = inputs.statistics()
    return loss_from_statistics(
        stats, options, hard=inputs.hard, class_weights=weights, reduce=reduce
    )


def jaccard_loss(logits: Array, label: Array, **options: Any) -> Array:
    """The Jaccard metric loss: :func:`jdt_loss` with ``alpha = beta = 1``.

    Takes every other option of :func:`jdt_loss`; optimizes the IoU.
    """
    return jdt_loss(logits, label, alpha=1.0, beta=1.0, **options)


def dice_loss(logits: Array, label: Array, **options: Any) -> Array:
    """The Dice semimetric loss: :func:`jdt_loss` with ``alpha = beta = 0.5``.

    Takes every other option of :func:`jdt_loss`; optimizes the Dice score.
    """
    return jdt_loss(logits, label, alpha=0.5, beta=0.5, **options)


def tversky_loss(
    logits: Array, label: Array, *, alpha: float, beta: float, **options: Any
) -> Array:
    """The Tversky loss: :func:`jdt_loss` with explicit ``alpha`` (false positives)
    and ``beta`` (false negatives) weights; every other option as there."""
    return jdt_loss(logits, label, alpha=alpha, beta=beta, **options)


def jdt_statistics(
    logits: Array,
    label: Array,
    *,
    keep_mask: Array | None = None,
    class_axis: int = 1,
    norm: float = 1,
    ignore_index: int | None = None,
) -> tuple[Statistics, bool]:
    """Checked (B, C) statistics of softmax(logits) against ``label``, and whether the
    label is hard. Arguments as in :func:`jdt_loss`.

    Statistics of several batches stack (along the batch axis) into those of their
    union; for losses over batches spread across replicas, pass ``reduce`` to
    :func:`jdt_loss` or :func:`loss_from_statistics`.
    """
    inputs = prepare(logits, label, keep_mask, class_axis, norm, ignore_index)
    return inputs.statistics(), inputs.hard


class Prepared(NamedTuple):
    """Checked inputs of a JDT loss, with the probabilities computed."""

    xp: Any
    prob: Array  # softmax(logits) in the accumulation dtype
    label: Array
    keep: Array | None  # keep_mask and the pixels that are not ignore_index
    class_axis: int  # non-negative
    norm: float
    hard: bool
    # Pixel-level values a native kernel may keep from the statistics for the gradient
    # (see ``jdt_array._kernels``); valid while ``prob`` is unchanged.
    scratch: dict | None = None

    def statistics(self) -> Statistics:
        args = (self.xp, self.prob, self.label, self.keep, self.class_axis, self.norm)
        if self.hard:
            return hard_statistics(*args, scratch=self.scratch)
        return soft_statistics(*args)


def prepare(
    logits, label, keep_mask, class_axis, norm, ignore_index, *, check_values=True
) -> Prepared:
    """Check the inputs of a JDT loss and compute the probabilities.

    ``check_values=False`` skips reading the label (for a backward pass, whose forward
    pass checked the same arrays).
    """
    xp = namespace_of(logits=logits, label=label, keep_mask=keep_mask)
    check.check_logits(xp, logits)
    axis = check.normalize_class_axis(class_axis, logits.ndim, tuple(logits.shape))
    norm = check.check_real("norm", norm, low=1.0)
    ignore_index = check.check_ignore_index(ignore_index)
    hard = check.label_kind(xp, logits, label, axis)
    if keep_mask is not None:
        check.check_keep_mask(xp, keep_mask, logits, axis)

    keep = keep_mask
    if hard:
        if check_values:
            check.check_hard_label_values(
                xp, label, logits.shape[axis], ignore_index, keep_mask
            )
        if ignore_index is not None:
            kept = label != ignore_index
            keep = kept if keep is None else keep & kept
    elif check_values:
        check.check_soft_label_values(xp, label)
    prob = softmax(xp, logits, axis, compute_dtype(xp, logits.dtype))
    return Prepared(xp, prob, label, keep, axis, norm, hard, scratch={})


def jdt_loss_with_statistics(
    statistics: Callable[..., tuple],
    logits: Array,
    label: Array,
    *,
    keep_mask: Array | None = None,
    class_axis: int = 1,
    ignore_index: int | None = None,
    class_weights: Any = None,
    reduce: Callable[[Array], Array] | None = None,
    **options: Any,
) -> Array:
    """:func:`jdt_loss` with the (B, C) statistics computed by ``statistics(logits,
    label, keep_mask, setup)``, ``setup = (class_axis, norm, ignore_index)``.

    For the adapters: their ``statistics`` wraps ``prepare(...).statistics()`` in a
    function with a hand-derived backward, and the rest of the loss (collectives
    included) stays with the framework's autodiff.
    """
    opts = JDTOptions(**options)  # option errors first, as in jdt_loss
    stats = Statistics(
        *statistics(logits, label, keep_mask, (class_axis, opts.norm, ignore_index))
    )
    xp = namespace_of(logits=logits)
    weights = check.class_weights_array(
        xp, class_weights, stats.prob_card.shape[1], stats.prob_card.dtype, device(logits)
    )
    hard = xp.isdtype(label.dtype, "integral")  # ``statistics`` has checked the label
    return loss_from_statistics(
        stats, opts, hard=hard, class_weights=weights, reduce=reduce
    )


def loss_from_statistics(
    stats: Statistics,
    options: JDTOptions,
    *,
    hard: bool,
    class_weights: Array | None = None,
    reduce: Callable[[Array], Array] | None = None,
) -> Array:
    """The JDT loss from (B, C) statistics; ``class_weights`` an array of shape (C,).

    ``reduce`` sums over data-parallel replicas, as in :func:`jdt_loss`.
    """
    xp = namespace_of(prob_card=stats.prob_card)
    reduce = check_reduce(reduce)
    parts = levels(stats, options, hard, class_weights, reduce)
    return loss_from_levels(xp, parts, options, class_weights, reduce)
