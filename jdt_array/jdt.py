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

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import _checks as checks
from ._activation import check_activation
from ._array import Array, namespace_of
from ._cardinalities import Statistics, statistics, statistics_vjp
from ._inputs import Prepared, prepare, with_probabilities
from ._kernels.fused import FusedCase
from ._tversky import levels, loss_from_levels, statistics_grad

__all__ = [
    "JDTOptions",
    "jdt_loss",
    "jdt_statistics",
    "jdt_value_and_grad",
    "loss_from_statistics",
    "loss_of",
    "prepare_jdt",
    "statistics_of",
]


@dataclass(frozen=True)
class JDTOptions:
    """The checked scalar options of :func:`jdt_loss` (see there for their meaning).

    The one definition of the options, their defaults and their checks: the functional
    forms, the PyTorch modules and the JAX forms all build one of these. Frozen and
    hashable, so it can key compiled functions.
    """

    class_axis: int = 1
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
    ignore_index: int | None = None
    active_classes_mode_hard: str = "PRESENT"
    active_classes_mode_soft: str = "ALL"
    class_agnostic: bool = False
    activation: str | None = "softmax"
    classes: tuple[int, ...] | None = None
    reduction: str = "mean"

    def __post_init__(self) -> None:
        checks.check_class_axis(self.class_axis)
        check_activation(self.activation)
        # A tuple, whatever sequence was given: the options key compiled functions.
        object.__setattr__(self, "classes", checks.check_classes(self.classes))
        checks.check_reduction(self.reduction, mIoUD=self.mIoUD, mIoUC=self.mIoUC)
        for name in ("mIoUD", "mIoUI", "mIoUC", "alpha", "beta", "smooth", "threshold"):
            checks.check_real(name, getattr(self, name), low=0.0)
        if self.threshold >= 1:
            raise ValueError(
                f"threshold must be in [0, 1): a class is present where its label "
                f"exceeds it, and labels are at most 1; got {self.threshold!r}"
            )
        if self.mIoUD + self.mIoUI + self.mIoUC == 0:
            raise ValueError("at least one of mIoUD, mIoUI and mIoUC must be positive")
        checks.check_real("gamma", self.gamma, low=1.0)
        checks.check_real("norm", self.norm, low=1.0)
        checks.check_ignore_index(self.ignore_index)
        checks.check_mode("active_classes_mode_hard", self.active_classes_mode_hard)
        checks.check_mode("active_classes_mode_soft", self.active_classes_mode_soft)
        checks.check_bool("log_loss", self.log_loss)
        checks.check_bool("class_agnostic", self.class_agnostic)

    @classmethod
    def of(cls, arguments: Mapping[str, Any]) -> JDTOptions:
        """The options among ``arguments`` (a function's ``locals()``, say), checked."""
        return cls(**{name: arguments[name] for name in FIELDS if name in arguments})

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = tuple(f.name for f in dataclasses.fields(JDTOptions))


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
    activation: str | None = "softmax",
    classes: Sequence[int] | None = None,
    reduction: str = "mean",
    reduce: Callable[[Array], Array] | None = None,
) -> Array:
    r"""The JDT (Jaccard, Dice, Tversky) loss of softmax(logits) (or sigmoid(logits),
    or given probabilities) against a hard or soft label.

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
        activation: ``"softmax"`` (one class per pixel); ``"sigmoid"`` (binary and
            multi-label segmentation: every class an independent foreground
            probability sigmoid(z), the label shaped like ``logits`` holding 0/1
            integers or bools (hard) or probabilities (soft); a single channel
            (B, 1, *spatial) also takes a (B, *spatial) 0/1 label, and an integer
            label equal to ``ignore_index`` drops that pixel of that class only); or
            ``None``: ``logits`` already holds probabilities (checked to lie in [0, 1]
            and, with more than one class, to sum to 1 over the classes; labels as for
            the softmax, or as for the sigmoid with one channel), and gradients are
            with respect to them.
        classes: the class ids whose losses enter the means (None: every class), e.g.
            ``range(1, C)`` to leave the background out as MONAI's
            ``include_background=False`` does. The other classes still shape the
            probabilities (a pixel predicted as a left-out class is a false negative
            of its labelled class); with ``class_agnostic`` only these are pooled.
        reduction: ``"mean"`` (the loss above, a 0-d array) or ``"none"``: the
            per-image, per-class losses of the image level, shape (B, C) ((B, 1) with
            ``class_agnostic``), ``mIoUI`` times the class loss, 0 where a class is
            not active in the image (for hard-example mining, per-sample weights,
            logging). The dataset and class levels are not per image, so ``"none"``
            needs ``mIoUD=0`` and ``mIoUC=0``; averaging each row over the image's
            active classes and then over the images that have one gives the
            ``"mean"`` loss. No ``reduce`` with ``"none"`` (nothing is summed over
            images), and no hand gradient (:func:`value_and_grad` needs a scalar).
        reduce: the hook for data-parallel training: a function that takes a 1-d
            array and returns its sum over all replicas (processes or devices), the
            same on every replica. Everything the loss sums or counts over the batch
            passes through it: the dataset-level tp, fp, fn and present-class counts,
            the image counts in the image- and class-level means, and the sum of the
            image-level terms with a check for NaN (at most three calls). Every
            replica then returns the loss of the global batch, and gradients flow
            back through ``reduce``.
            ``None`` (the default): this call's batch only. The adapters build it from
            the frameworks' collectives: ``sync_stats=True`` in
            :mod:`jdt_array.backends.torch`, ``axis_name=`` in
            :mod:`jdt_array.backends.jax`.

    Returns:
        A 0-d array in the namespace and on the device of ``logits``, float64 for
        float64 logits and float32 otherwise (with ``reduction="none"``, the (B, C)
        losses). With ``reduce``, the global-batch loss.

    Examples:
        >>> import numpy as np
        >>> from jdt_array import jdt_loss
        >>> logits = np.zeros((1, 3, 2, 2))  # (B, C, H, W): every probability 1/3
        >>> label = np.array([[[0, 1], [2, 1]]])  # (B, H, W) class ids
        >>> round(float(jdt_loss(logits, label, smooth=0.0)), 4)
        0.8056
        >>> jdt_loss(logits, label, mIoUD=0.0, mIoUI=1.0, smooth=0.0,
        ...          reduction="none").round(4)  # (B, C), per image and class
        array([[0.8333, 0.75  , 0.8333]])

    Raises:
        TypeError: mixed array libraries, non-floating logits, a label that is neither
            integer nor floating, a non-boolean ``keep_mask``.
        ValueError: shapes that do not match, options out of range, different devices,
            hard labels outside [0, C) that are not ``ignore_index``, soft labels
            outside [0, 1]. Value checks read the label, so they are skipped for traced
            arrays (inside ``jax.jit``); there, out-of-range class ids count as pixels
            of no class.
    """
    options = JDTOptions.of(locals())
    inputs = prepare_jdt(logits, label, keep_mask, options, class_weights)
    return loss_of(inputs, options, reduce=checks.check_reduce(reduce))


def jdt_value_and_grad(
    logits: Array,
    label: Array,
    *,
    keep_mask: Array | None = None,
    class_weights: Any = None,
    reduce: Callable[[Array], Array] | None = None,
    **options: Any,
) -> tuple[Array, Array]:
    """:func:`jdt_loss` and its gradient with respect to ``logits``, derived by hand.

    Takes the arguments of ``jdt_loss``; returns ``(loss, grad)`` with ``grad`` shaped
    and typed like ``logits``. Pure array-API code: NumPy, CuPy and array-api-strict
    train with it, and the adapters' lean backward passes use its pixel-level half
    (:func:`jdt_array._cardinalities.statistics_vjp`). The chain: class losses -> tp,
    fp, fn -> |x| and |x - y| -> the probabilities x -> the logits.

    With ``reduce`` (a sum over data-parallel replicas, see ``jdt_loss``) the loss is
    the global-batch loss and ``grad`` is this replica's slice of its gradient: the
    derivative with respect to this replica's logits, with no factor for the number of
    replicas. ``reduce`` is only called in the forward direction.
    """
    opts = JDTOptions(**options)
    if opts.reduction != "mean":
        raise ValueError(
            "the hand-derived gradient is that of a scalar loss: value_and_grad needs "
            "reduction='mean'; with reduction='none', differentiate a reduction of "
            "the per-image losses with PyTorch or JAX"
        )
    reduce = checks.check_reduce(reduce)
    inputs = with_probabilities(prepare_jdt(logits, label, keep_mask, opts, class_weights))
    xp, weights = inputs.xp, inputs.class_weights
    stats, residual = statistics(inputs)
    parts = levels(stats, opts, inputs.hard, weights, reduce, xp=xp)
    loss = loss_from_levels(xp, stats, parts, opts, weights, reduce)
    g_prob_card, g_diff_card = statistics_grad(xp, parts, opts, weights, inputs.loss_shape)
    # The probabilities are this function's own and not needed after: reuse them.
    grad = statistics_vjp(
        inputs, g_prob_card, g_diff_card, residual=residual, overwrite=True
    )
    return loss, xp.astype(grad, logits.dtype, copy=False)


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
    options = JDTOptions(class_axis=class_axis, norm=norm, ignore_index=ignore_index)
    inputs = prepare_jdt(logits, label, keep_mask, options)
    return statistics_of(inputs)[0], inputs.hard


def prepare_jdt(
    logits: Array,
    label: Array,
    keep_mask: Array | None,
    options: JDTOptions,
    class_weights: Any = None,
    *,
    check_values: bool = True,
) -> Prepared:
    """:func:`jdt_array._inputs.prepare` with the options of a JDT loss: the one input
    preparation of the loss, its hand gradient and the adapters' lean backward."""
    checks.check_class_ids(options.classes, checks.class_count(logits, options.class_axis))
    return prepare(
        logits, label, keep_mask, class_axis=options.class_axis,
        ignore_index=options.ignore_index, activation=options.activation,
        norm=options.norm, class_weights=class_weights, check_values=check_values,
    )  # fmt: skip


CEParts = tuple[Array, Array]  # the cross-entropy sum and kept pixels of each image


def statistics_of(
    inputs: Prepared, *, unfused: Callable[[Prepared], tuple] | None = None
) -> tuple[Statistics, CEParts | None]:
    """The (B, C) statistics of prepared inputs, and the cross-entropy sum and number
    of kept pixels of each image (B,) where a fused kernel covers the inputs (it takes
    the softmax itself and gives these on the way; ``None`` otherwise).

    ``unfused(inputs)``, if given, computes the four statistics where no fused kernel
    runs: the adapters wrap the pixel-level part in a function with a hand-derived
    backward, and the rest of the loss (collectives included) stays with the
    framework's autodiff.
    """
    fused = inputs.kernels.fused if inputs.activation.fusable else None
    if fused is not None:
        case = FusedCase(
            inputs.logits, inputs.label, inputs.keep_mask, inputs.class_axis,
            inputs.norm, inputs.ignore_index, inputs.class_ids,
        )  # fmt: skip
        if fused.covers(case):
            stats = fused.statistics(case)
            return Statistics(*stats[:4]), (stats.ce_sum, stats.count)
    if unfused is not None:
        return Statistics(*unfused(inputs)), None
    return statistics(with_probabilities(inputs))[0], None


def loss_of(
    inputs: Prepared,
    options: JDTOptions,
    *,
    reduce: Callable[[Array], Array] | None = None,
    stats: Statistics | None = None,
) -> Array:
    """The JDT loss of prepared inputs (from their ``stats`` if already computed);
    ``reduce`` checked by the caller."""
    if reduce is not None and options.reduction == "none":
        raise ValueError(
            "reduction='none' returns this batch's per-image losses, which no reduce "
            "(sync_stats, axis_name) sums over replicas; use reduction='mean'"
        )
    if stats is None:
        stats = statistics_of(inputs)[0]
    xp, weights = inputs.xp, inputs.class_weights
    parts = levels(stats, options, inputs.hard, weights, reduce, xp=xp)
    return loss_from_levels(xp, stats, parts, options, weights, reduce)


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
    reduce = checks.check_reduce(reduce)
    parts = levels(stats, options, hard, class_weights, reduce)
    return loss_from_levels(xp, stats, parts, options, class_weights, reduce)
