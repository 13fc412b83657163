"""The score arithmetic of the fine-grained metrics, written once against the array API.

Acc, IoU and Dice of pixel counts, which (image, class) pairs a level averages, and the
per-image means of level I. The host summary (NumPy, float64, with the worst cases on
top) and the compiled steps (the compact state's update under ``jit``, the Keras
metric) call the same functions, so no adapter re-derives a score. No value-dependent
Python branch and no data-dependent shape: everything runs under ``jax.jit``.

Two rules decide where a class counts as *present* in an image:

* multi-class: where its label has it; a score whose denominator is 0 is NaN;
* binary and multi-label (``options.either``): where label *or* prediction has it,
  every class a binary problem; a false alarm (prediction only) scores 0 (recall
  too), and where label and prediction are both empty every score is 1.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .._array import device
from ._options import MetricOptions, scored_mask

__all__ = [
    "SCORES",
    "PairLevels",
    "float_dtype",
    "masked_sum",
    "mean_or",
    "pair_levels",
    "ratios",
]

Array = Any

SCORES = ("Acc", "IoU", "Dice")  # the order of the score axis of every stacked result


def float_dtype(xp: Any, counts: Array) -> Any:
    """The float dtype of scores and their sums: float64 beside int64 counts, float32
    where the library counts in int32 (JAX without x64, which has no float64)."""
    return xp.float64 if counts.dtype == xp.int64 else xp.float32


def _ratio(xp: Any, num: Array, den: Array, empty: Any) -> Array:
    """num / den, ``empty`` where den is 0 (the double where keeps 0 / 0 out)."""
    has = den > 0
    return xp.where(has, num / xp.where(has, den, 1.0), empty)


def ratios(xp: Any, tp: Array, pred: Array, label: Array, either: bool) -> Array:
    """Acc (recall), IoU and Dice of float counts, stacked on a new first axis of 3.

    tp = |pred and label|, and IoU = tp / (pred + label - tp), Dice = 2 tp / (pred +
    label), Acc = tp / label. Multi-class: NaN where a denominator is 0. Binary and
    multi-label: 1 where label and prediction are both empty, and Acc 0 where only the
    prediction has the class (a false alarm counts as a miss).
    """
    both_empty = 1.0 if either else xp.nan
    iou = _ratio(xp, tp, pred + label - tp, both_empty)
    dice = _ratio(xp, 2.0 * tp, pred + label, both_empty)
    false_alarm_or_empty = xp.astype(pred <= 0, pred.dtype)  # 0 if predicted, else 1
    acc = _ratio(xp, tp, label, false_alarm_or_empty if either else xp.nan)
    return xp.stack([acc, iou, dice])


class PairLevels(NamedTuple):
    """The per-(image, class) view of one count set, for N images and C classes."""

    scores: Array  # (3, N, C) Acc, IoU, Dice of each pair (see ratios)
    present: Array  # (N, C) the pairs of levels I and C: scored, present in the image
    seen: Array  # (N, C) scored pairs whose label or prediction has the class
    image_values: Array  # (3, N) per image the mean score over its present classes
    image_in: Array  # (N,) the images of level I


def pair_levels(
    xp: Any,
    tp: Array,
    pred: Array,
    label: Array,
    evaluated: Array,
    options: MetricOptions,
) -> PairLevels:
    """Scores and level masks of (N, C) integer counts of N images.

    ``evaluated`` (N,) marks the images with a kept pixel. Level I averages, per image,
    the scores of its present classes: an image without one is left out (multi-class,
    possible when ``classes`` leaves classes out) or scores 1 (binary, multi-label:
    nothing to find and nothing falsely found). Level C averages, per class, the
    scores of the images where it is present.
    """
    dtype = float_dtype(xp, tp)
    tp, pred, label = (xp.astype(v, dtype) for v in (tp, pred, label))
    scores = ratios(xp, tp, pred, label, options.either)
    scored = scored_mask(xp, options, device(tp))
    seen = ((label > 0) | (pred > 0)) & scored
    present = seen if options.either else (label > 0) & scored
    count = xp.sum(xp.astype(present, dtype), axis=1)
    total = xp.sum(xp.where(present, scores, 0.0), axis=2)
    image_values = _ratio(xp, total, count, 1.0)
    image_in = evaluated & (count > 0) if not options.either else evaluated
    return PairLevels(scores, present, seen, image_values, image_in)


def masked_sum(xp: Any, values: Array, mask: Array, axis: int) -> Array:
    """The sum of ``values`` where ``mask`` (NaN elsewhere does not leak in)."""
    return xp.sum(xp.where(mask, values, 0.0), axis=axis)


def mean_or(xp: Any, total: Array, count: Array, empty: Any) -> Array:
    """total / count, ``empty`` where count is 0."""
    return _ratio(xp, total, xp.astype(count, total.dtype), empty)
