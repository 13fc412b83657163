"""What one batch contributes to the fine-grained metrics, computed on the batch's device.

Everything here is plain array-API code without value-dependent Python branches, so
:func:`batch_statistics` runs eagerly on any backend and under ``jax.jit``. Its result
holds integer pixel counts per (image, class) and, for calibration, per-bin gaps per
image; per-image fields concatenate across batches and the per-class calibration gaps
add up, which is all :class:`~jdt_array.metrics.FineGrainedMetrics` needs.
"""

from __future__ import annotations

import math
from typing import Any

from .. import _checks as checks
from .. import _kernels
from .._array import compute_dtype, device, namespace_of
from .._pixels import is_class_id, masked_mean, not_ignored
from ._boundary import boundary_counts
from ._byte_table import byte_table_statistics
from ._options import MetricOptions, scored_mask
from ._statistics import BatchStatistics

__all__ = ["BatchStatistics", "MetricOptions", "batch_statistics", "scored_mask"]

Array = Any


def batch_statistics(
    prob_or_pred: Array,
    label: Array,
    *,
    num_classes: int,
    ignore_index: int | None = None,
    binary: bool = False,
    num_bins: int = 10,
    calibration: bool = False,
    multilabel: bool = False,
    threshold: float = 0.5,
    activation: str | None = None,
    classes: Any = None,
    boundary: bool = False,
    dilation_ratio: float | None = 0.02,
    boundary_width: int | None = None,
    class_axis: int = 1,
) -> BatchStatistics:
    """Per-image pixel counts of a batch; a pure function that also runs under ``jax.jit``.

    The prediction of a pixel is the argmax over the class axis of ``prob_or_pred``
    (the first of tied classes), or ``prob_or_pred`` itself for an integer array. For
    each image b and class c it counts, over kept pixels, the pixels where pred = c,
    where label = c and where both hold, using comparisons with ``arange(C)`` instead
    of one-hot arrays. Nothing is read back to the host: out-of-range labels are counted in
    ``bad_label`` and out-of-range integer predictions (or, with calibration,
    probabilities outside [0, 1]) in ``bad_prediction``, to be reported by the caller.

    Multi-label (``multilabel=True``): ``prob_or_pred`` and ``label`` both have the
    class axis, every class is a binary problem. An entry (pixel, class) is predicted
    positive where its probability exceeds ``threshold`` (with
    ``activation="sigmoid"``: where sigmoid(logit) > threshold, i.e. logit > log(t /
    (1 - t))), or where an integer (or boolean) prediction is 1; its label is 0 or 1,
    and ``ignore_index`` drops that entry only (the other classes of the pixel still
    count). Probabilities outside [0, 1], NaN logits and integer predictions other
    than 0 and 1 are counted in ``bad_prediction``, labels other than 0, 1 and
    ``ignore_index`` in ``bad_label``.

    Calibration (Wang et al., NeurIPS 2023, following Guo et al. 2017 and Nixon et al.
    2019) sorts confidences into ``num_bins`` equal-width bins [k/K, (k+1)/K), the last
    one closed. With n pixels in an image, the expected calibration error is
    ``sum_k |#correct_k - sum conf_k| / n`` for the max-probability confidence and
    argmax correctness; the static calibration error does the same per class c with
    confidence p_c and "correct" meaning label = prediction = c, averaged over the
    classes in the image's label (among ``classes``; the foreground class only if
    ``binary``).

    Args:
        prob_or_pred: probabilities or scores (B, C, *spatial) with ``class_axis=1``, or
            (B, *spatial, C) with ``class_axis=-1``; or integer predictions (B, *spatial)
            (multi-label: (B, C, *spatial) or (B, *spatial, C) 0/1 predictions).
            Only the argmax of scores is used unless ``calibration`` is on, which needs
            probabilities (e.g. a softmax).
        label: integer class ids (B, *spatial); ``ignore_index`` marks dropped pixels.
            Multi-label: 0/1 integers or booleans shaped like ``prob_or_pred``.
        num_classes: C; class ids are 0 .. C - 1.
        ignore_index: label value whose pixels (multi-label: entries) are dropped, or
            None.
        binary: two classes, only the foreground class 1 is scored.
        num_bins: K, the number of confidence bins.
        calibration: also collect the calibration fields (needs probabilities).
        multilabel: (B, C, *spatial) 0/1 labels, every class a binary problem.
        threshold: multi-label: the probability above which an entry is positive.
        activation: multi-label: ``"sigmoid"`` for logits, None for probabilities.
        classes: the class ids the scores average (only the per-image static
            calibration error depends on it here); None for all.
        boundary: also count the boundary bands of every class (boundary IoU, see
            ``jdt_array.metrics._boundary``): the ``boundary_*`` fields.
        dilation_ratio, boundary_width: the width d of the bands, as a fraction of
            the image diagonal (0.02, the paper's) or in pixels.
        class_axis: the class axis of probabilities (and multi-label labels).

    Returns:
        A :class:`BatchStatistics` in the namespace and on the device of the inputs;
        counts in the default integer dtype, gaps in float32 (float64 for float64 input).

    Raises:
        TypeError: mixed array libraries, a non-integer label, integer predictions with
            ``calibration``, an option of the wrong type.
        ValueError: shapes that do not fit, a class axis with another number of classes
            than ``num_classes``, options out of range, different devices.
    """
    options = MetricOptions(
        num_classes, ignore_index, binary, num_bins, calibration, multilabel, threshold,
        activation, classes, boundary, dilation_ratio, boundary_width,
    )  # fmt: skip
    return statistics_of(prob_or_pred, label, options, class_axis)


def statistics_of(
    prob_or_pred: Array, label: Array, options: MetricOptions, class_axis: int = 1
) -> BatchStatistics:
    """:func:`batch_statistics` with options checked already."""
    xp = namespace_of(prob_or_pred=prob_or_pred, label=label)
    if options.multilabel:
        return _multilabel_statistics(xp, prob_or_pred, label, options, class_axis)
    axis = _check_inputs(xp, prob_or_pred, label, options, class_axis)
    shape = tuple(label.shape)
    flat = (shape[0], math.prod(shape[1:]))
    C = options.num_classes
    if axis is None and not options.boundary:  # integer predictions: counts only
        stats = byte_table_statistics(
            xp, xp.reshape(label, flat), xp.reshape(prob_or_pred, flat), options
        )
        if stats is not None:
            return stats
    lab, counted, bad_label = _label_ids(xp, xp.reshape(label, flat), options)
    if axis is None:
        pred = _widen(xp, xp.reshape(prob_or_pred, flat))
        pred_ok = is_class_id(xp, pred, C)
        bad_prediction = _count(xp, counted & ~pred_ok, 1)
        prd = xp.where(pred_ok, pred, C)
    else:
        prd = xp.reshape(_kernels.argmax(xp, prob_or_pred, axis), flat)
        bad_prediction = xp.zeros_like(bad_label)

    intersection, pred_count, label_count = _kernels.pixel_counts(xp, lab, prd, counted, C)
    stats = BatchStatistics(
        intersection=intersection,
        pred_count=pred_count,
        label_count=label_count,
        bad_label=bad_label,
        bad_prediction=bad_prediction,
        # each kept pixel with a class id is labelled with exactly one class
        kept_count=xp.sum(label_count, axis=1),
    )
    if options.boundary:
        stats = _with_boundary(xp, stats, lab, prd, counted, shape, options)
    if not options.calibration:
        return stats
    hit = xp.where(prd == lab, lab, C)  # the class of correctly predicted pixels, else C
    return _with_calibration(
        xp, stats, prob_or_pred, axis, flat, lab, hit, counted, options
    )


def _with_boundary(xp, stats, lab, prd, counted, shape, options: MetricOptions):
    """``stats`` with the counts of the boundary bands, from the (B, N) ids of
    :func:`statistics_of` seen again as (B, *spatial) maps."""
    if len(shape) < 2:
        raise ValueError(
            f"boundary=True needs images with spatial axes, (B, *spatial) labels; got "
            f"label shape {shape}"
        )
    intersection, pred_band, label_band = boundary_counts(
        xp, xp.reshape(lab, shape), xp.reshape(prd, shape), xp.reshape(counted, shape),
        options.num_classes, options.width(shape[1:]),
    )  # fmt: skip
    return stats._replace(
        boundary_intersection=intersection,
        boundary_pred_count=pred_band,
        boundary_label_count=label_band,
    )


def _check_inputs(
    xp, prob_or_pred, label, options: MetricOptions, class_axis
) -> int | None:
    """Check dtypes and shapes; the class axis of probabilities, or None for predictions."""
    if not xp.isdtype(label.dtype, "integral"):
        raise TypeError(
            f"label must be an integer array of class ids, got {label.dtype}; cast class "
            "ids held in floats to an integer dtype (multi-label 0/1 masks: "
            "multilabel=True)"
        )
    if label.ndim < 1:
        raise ValueError(f"label must have shape (B, ...), got shape {tuple(label.shape)}")
    shape = tuple(prob_or_pred.shape)
    if xp.isdtype(prob_or_pred.dtype, "integral"):
        if options.calibration:
            raise TypeError(
                "calibration=True needs probabilities (B, C, ...), got integer "
                f"predictions with shape {shape}"
            )
        if shape != tuple(label.shape):
            raise ValueError(
                f"integer predictions must have the shape of label {tuple(label.shape)}, "
                f"got prob_or_pred with shape {shape}"
            )
        return None
    if not xp.isdtype(prob_or_pred.dtype, "real floating"):
        raise TypeError(
            "prob_or_pred must hold floating probabilities or integer predictions, got "
            f"dtype {prob_or_pred.dtype}"
        )
    axis = _class_axis(shape, options, class_axis)
    want = shape[:axis] + shape[axis + 1 :]
    if tuple(label.shape) != want:
        raise ValueError(
            f"label must have the shape of prob_or_pred {shape} without the class axis "
            f"{axis}, i.e. {want}, got {tuple(label.shape)}"
        )
    return axis


def _class_axis(shape: tuple, options: MetricOptions, class_axis: Any) -> int:
    """``class_axis`` of scores with ``shape``, checked to hold ``num_classes``."""
    axis = checks.normalize_class_axis(class_axis, len(shape), shape, name="prob_or_pred")
    if shape[axis] != options.num_classes:
        raise ValueError(
            f"prob_or_pred with shape {shape} has {shape[axis]} classes along "
            f"class_axis={class_axis}, but num_classes={options.num_classes}"
        )
    return axis


def _widen(xp, ids: Array) -> Array:
    """Ids in a signed dtype that holds C and ignore_index, so that they meet signed
    class ids and predictions without mixed-kind promotion: narrow dtypes widened
    (exactly) to int32, wide unsigned ones to int64 (a uint64 beyond the int64 range,
    no class id either way, turns negative)."""
    info = xp.iinfo(ids.dtype)
    if info.bits <= 16:
        return xp.astype(ids, xp.int32)
    return xp.astype(ids, xp.int64) if info.min == 0 else ids


def _label_ids(xp, label: Array, options: MetricOptions):
    """Label ids with C for uncounted pixels, the counted mask, bad counts (B,)."""
    label = _widen(xp, label)
    kept = not_ignored(xp, label, options.ignore_index)
    valid = is_class_id(xp, label, options.num_classes)
    counted = valid if kept is None else valid & kept
    bad = ~valid if kept is None else ~valid & kept
    ids = xp.where(counted, label, options.num_classes)
    return ids, counted, _count(xp, bad, 1)


def _class_ids(xp, start: int, stop: int, like: Array) -> Array:
    """Class ids start .. stop - 1 shaped (1, C', 1), to broadcast against (B, 1, N)
    ids ``like`` (in their dtype: no mixed-kind comparison)."""
    ids = xp.arange(start, stop, dtype=like.dtype, device=device(like))
    return xp.reshape(ids, (1, -1, 1))


def _one_hot(xp, ids: Array, classes: Array) -> Array:
    """(B, C', N) booleans ids == class, by broadcasting (never a float one-hot array)."""
    return xp.expand_dims(ids, axis=1) == classes


def _count(xp, mask: Array, axis: int | tuple[int, ...]) -> Array:
    return xp.count_nonzero(mask, axis=axis)


# -- multi-label ---------------------------------------------------------------------


def _multilabel_statistics(xp, prob_or_pred, label, options: MetricOptions, class_axis):
    """The counts of every class's binary problem, from (B, C, ...) entries."""
    axis = _check_multilabel_inputs(xp, prob_or_pred, label, options, class_axis)
    x, y = (_classes_second(xp, v, axis) for v in (prob_or_pred, label))
    positive, pred_ok = _positive_predictions(xp, x, options)
    if y.dtype == xp.bool:
        label_one, counted, bad = y, xp.ones_like(y), xp.zeros_like(y)
    else:
        y = _widen(xp, y)
        kept = not_ignored(xp, y, options.ignore_index)
        valid = (y == 0) | (y == 1)
        counted = valid if kept is None else valid & kept
        bad = ~valid if kept is None else ~valid & kept
        label_one = (y == 1) & counted
    predicted = positive & counted
    return BatchStatistics(
        intersection=_count(xp, predicted & label_one, 2),
        pred_count=_count(xp, predicted, 2),
        label_count=_count(xp, label_one, 2),
        bad_label=_count(xp, bad, (1, 2)),
        bad_prediction=_count(xp, ~pred_ok & counted, (1, 2)),
        kept_count=_count(xp, counted, (1, 2)),
    )


def _check_multilabel_inputs(xp, prob_or_pred, label, options, class_axis) -> int:
    """Check dtypes and shapes of multi-label inputs; the class axis."""
    shape, label_shape = tuple(prob_or_pred.shape), tuple(label.shape)
    if not (xp.isdtype(label.dtype, "integral") or label.dtype == xp.bool):
        raise TypeError(
            "multi-label label must hold 0/1 integers or booleans, got dtype "
            f"{label.dtype}; cast a float mask to an integer dtype"
        )
    kind = prob_or_pred.dtype
    if not (xp.isdtype(kind, ("integral", "real floating")) or kind == xp.bool):
        raise TypeError(
            "prob_or_pred must hold probabilities, logits or 0/1 predictions, got dtype "
            f"{kind}"
        )
    if options.activation == "sigmoid" and not xp.isdtype(kind, "real floating"):
        raise TypeError(
            f"activation='sigmoid' takes floating logits, got prob_or_pred of dtype {kind}"
        )
    axis = _class_axis(shape, options, class_axis)
    if label_shape != shape:
        raise ValueError(
            f"multi-label label must have the shape of prob_or_pred {shape} (one 0/1 "
            f"channel per class), got {label_shape}"
        )
    return axis


def _classes_second(xp, x: Array, axis: int) -> Array:
    """(B, C, N) from an array with its classes on ``axis``."""
    if axis != 1:
        x = xp.permute_dims(x, (0, axis, *(a for a in range(1, x.ndim) if a != axis)))
    return xp.reshape(x, (x.shape[0], x.shape[1], math.prod(x.shape[2:])))


def _positive_predictions(xp, x: Array, options: MetricOptions):
    """(positive, valid) booleans of multi-label predictions, probabilities or logits."""
    t = options.threshold
    if x.dtype == xp.bool:
        return x, xp.ones_like(x)
    if xp.isdtype(x.dtype, "integral"):
        return x == 1, (x == 0) | (x == 1)
    if options.activation == "sigmoid":
        # sigmoid(z) > t exactly where z > log(t / (1 - t)): no exp of the logits
        return x > math.log(t / (1 - t)), ~xp.isnan(x)
    return x > t, (x >= 0) & (x <= 1)  # NaN is invalid too


# -- calibration ---------------------------------------------------------------------


def _with_calibration(xp, stats, prob, axis, flat, lab, hit, counted, options):
    """``stats`` with the calibration fields of probabilities ``prob``."""
    dtype = compute_dtype(xp, prob.dtype)
    B, N = flat
    C = options.num_classes
    perm = (0, axis, *(a for a in range(1, prob.ndim) if a != axis))
    p = xp.reshape(xp.permute_dims(prob, perm), (B, C, N))
    p = p if p.dtype == dtype else xp.astype(p, dtype)
    outside = xp.any(~((p >= 0) & (p <= 1)), axis=1) & counted  # NaN too
    bad_prediction = stats.bad_prediction + _count(xp, outside, 1)

    conf = xp.max(p, axis=1)
    ece_gap = _binned_gaps(xp, conf, hit < C, counted, options.num_bins)

    if options.binary:
        p, classes = p[:, 1:2, :], _class_ids(xp, 1, 2, hit)
    else:
        classes = _class_ids(xp, 0, C, hit)
    class_gaps = _binned_gaps(
        xp, p, _one_hot(xp, hit, classes), xp.expand_dims(counted, axis=1), options.num_bins
    )
    pixels = xp.astype(stats.kept_count, dtype)
    has_pixels = xp.expand_dims(pixels > 0, axis=1)
    per_class = xp.sum(xp.abs(class_gaps), axis=2) / xp.where(
        has_pixels, xp.expand_dims(pixels, axis=1), 1.0
    )
    if options.binary:
        sce_image = per_class[:, 0]
    else:
        present = stats.label_count > 0
        if options.classes is not None:
            present = present & scored_mask(xp, options, device(present))
        sce_image = masked_mean(xp, per_class, present, axis=1)
    return stats._replace(
        bad_prediction=bad_prediction,
        ece_gap=ece_gap,
        sce_image=sce_image,
        sce_gap=xp.sum(class_gaps, axis=0),
    )


def _binned_gaps(xp, conf: Array, correct: Array, counted: Array, num_bins: int) -> Array:
    """Per bin of ``conf`` over the last axis: #correct - sum of conf, counted pixels only.

    Bin k holds k/K <= conf < (k+1)/K (the last bin also conf = 1). The loop runs over
    the K bins, never over images or classes.
    """
    gap = xp.where(counted, xp.astype(correct, conf.dtype) - conf, 0.0)
    index_dtype = xp.int16 if num_bins < 2**15 else xp.int32
    index = xp.zeros(conf.shape, dtype=index_dtype, device=device(conf))
    for k in range(1, num_bins):
        index = index + xp.astype(conf >= k / num_bins, index_dtype)
    gaps = [xp.sum(xp.where(index == k, gap, 0.0), axis=-1) for k in range(num_bins)]
    return xp.stack(gaps, axis=-1)
