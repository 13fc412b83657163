"""The fine-grained metrics from gathered pixel counts, in float64 NumPy on the host.

This is the one place that sorts (for the worst-case metrics) and divides. It only
sees O(images x classes) counts, never pixels. Scores are fractions here and become
percent (calibration errors: percent and permille) in :func:`summarize`.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

import numpy as np

__all__ = ["HostStatistics", "q_label", "summarize", "worst_count"]

WORST_CASE_QS = tuple(range(10, 101, 10))  # the q averaged by mIoUIQ, mIoUCQ, ...
SCORES = ("Acc", "IoU", "Dice")


class HostStatistics(NamedTuple):
    """Counts of the evaluated images (at least one kept pixel each), in NumPy."""

    intersection: np.ndarray  # (N, C) int64
    pred_count: np.ndarray  # (N, C) int64
    label_count: np.ndarray  # (N, C) int64
    ece_gap: np.ndarray | None = None  # (N, K) float64
    sce_image: np.ndarray | None = None  # (N,) float64
    sce_gap: np.ndarray | None = None  # (C', K) float64, summed over all images


def q_label(q: float) -> str:
    """The q in a key such as ``mIoUI1``: ``1`` for 1 or 1.0, ``2.5`` for 2.5."""
    return f"{q:g}"


def worst_count(n: int, q: float) -> int:
    """How many of n values the worst q% holds: max(1, floor(q n / 100)).

    q is taken as the decimal the user wrote (0.3 is 3/10, not the nearest double), so
    that 0.3% of 1000 images is exactly 3.
    """
    exact = Fraction(q) if isinstance(q, int) else Fraction(repr(float(q)))
    return max(1, math.floor(exact * n / 100))


def summarize(stats: HostStatistics, *, binary: bool, q: float) -> dict[str, float]:
    """All metrics of the evaluated images, as Python floats in percent.

    The keys, in order: Acc, mAccD, mIoUD, mDiceD; then for level I and C and score
    Acc, IoU, Dice: m{score}{level}, m{score}{level}Q (mean over q = 10, 20, ..., 100
    of the worst-q% values) and m{score}{level}{q}; then, with calibration, ECED and
    ECEI (percent), SCED and SCEI (permille).
    """
    results = {key: 100 * value for key, value in _dataset_level(stats, binary).items()}
    per_pair, present = _pair_scores(stats, binary)
    results.update(_level_results("I", _image_level, per_pair, present, q))
    results.update(_level_results("C", _class_level, per_pair, present, q))
    if stats.ece_gap is not None:
        results.update(_calibration(stats))
    return results


def _level_results(level: str, reduce, per_pair, present, q: float) -> dict[str, float]:
    """The plain, Q-averaged and worst-q% means of one level, for each score."""
    results = {}
    for name in SCORES:
        scores = per_pair[name]
        worst = [reduce(scores, present, qq) for qq in WORST_CASE_QS]
        results[f"m{name}{level}"] = 100 * reduce(scores, present, None)
        results[f"m{name}{level}Q"] = 100 * sum(worst) / len(worst)
        results[f"m{name}{level}{q_label(q)}"] = 100 * reduce(scores, present, q)
    return results


def _ratio(num: np.ndarray, den: np.ndarray, empty: float | np.ndarray) -> np.ndarray:
    """num / den, and ``empty`` where den is 0 (the 0 / 0 cases handled by the caller)."""
    out = np.broadcast_to(np.asarray(empty, dtype=np.float64), np.shape(num)).copy()
    return np.divide(num, den, out=out, where=den > 0)


def _scores(tp, pred, label):
    """Acc (recall), IoU and Dice of counts; ``nan`` where a denominator is 0."""
    tp, pred, label = (np.asarray(v, dtype=np.float64) for v in (tp, pred, label))
    return {
        "Acc": _ratio(tp, label, np.nan),
        "IoU": _ratio(tp, pred + label - tp, np.nan),
        "Dice": _ratio(2 * tp, pred + label, np.nan),
    }


def _binary_scores(tp, pred, label):
    """Foreground scores with the empty cases filled in.

    Where label and prediction are both empty every score is 1. Where only the
    prediction has foreground, IoU and Dice are 0 and so is Acc (recall, 0 / 0 there):
    a false alarm counts as a miss, so no score is NaN.
    """
    scores = _scores(tp, pred, label)
    both_empty = (np.asarray(pred) == 0) & (np.asarray(label) == 0)
    return {
        name: np.where(both_empty, 1.0, np.where(np.isnan(v), 0.0, v))
        for name, v in scores.items()
    }


def _dataset_level(stats: HostStatistics, binary: bool) -> dict[str, float]:
    """Acc, mAccD, mIoUD, mDiceD from the counts summed over the dataset."""
    tp, pred, label = (np.sum(v, axis=0) for v in stats[:3])
    if binary:
        s = _binary_scores(tp[1], pred[1], label[1])
        acc = float(s["Acc"])
        return {
            "Acc": acc,
            "mAccD": acc,
            "mIoUD": float(s["IoU"]),
            "mDiceD": float(s["Dice"]),
        }
    s = _scores(tp, pred, label)
    # A class never in the label (Acc) or in neither label nor prediction (IoU, Dice)
    # has no score; it is left out of the mean, where the reference code gives NaN.
    return {
        "Acc": float(np.sum(tp) / np.sum(label)),
        "mAccD": float(np.nanmean(s["Acc"])),
        "mIoUD": float(np.nanmean(s["IoU"])),
        "mDiceD": float(np.nanmean(s["Dice"])),
    }


def _pair_scores(stats: HostStatistics, binary: bool):
    """Scores per (image, class) and where each class is present, both (N, C').

    Multi-class: a class is present in an image where its label has it. Binary: only
    the foreground, present where label or prediction has it.
    """
    tp, pred, label = stats[:3]
    if binary:
        tp, pred, label = tp[:, 1:], pred[:, 1:], label[:, 1:]
        return _binary_scores(tp, pred, label), (pred > 0) | (label > 0)
    return _scores(tp, pred, label), label > 0


def _image_level(scores: np.ndarray, present: np.ndarray, q: float | None) -> float:
    """Mean over images of the mean over present classes; worst q% of images if q.

    In binary mode an image without foreground in label and prediction scores 1.
    """
    count = np.sum(present, axis=1)
    total = np.sum(np.where(present, scores, 0.0), axis=1)
    per_image = _ratio(total, count, 1.0)
    return _worst_mean(per_image, q)


def _class_level(scores: np.ndarray, present: np.ndarray, q: float | None) -> float:
    """Mean over classes of the mean over images where each is present (worst q% if q).

    Classes present in no image are left out of the mean (the reference gives NaN).
    With none present at all, which only happens in binary mode when no image has
    foreground in label or prediction, every image is empty in both and scores 1.
    """
    if not np.any(present):
        return 1.0
    sorted_scores = np.sort(np.where(present, scores, np.inf), axis=0)
    n_present = np.sum(present, axis=0)
    seen = n_present > 0
    kept = np.array([_kept_count(int(n), q) for n in n_present[seen]], dtype=np.int64)
    rows = np.arange(scores.shape[0])[:, None] < kept
    worst = np.where(rows, sorted_scores[:, seen], 0.0)
    return float(np.mean(np.sum(worst, axis=0) / kept))


def _kept_count(n: int, q: float | None) -> int:
    return n if q is None else worst_count(n, q)


def _worst_mean(values: np.ndarray, q: float | None) -> float:
    n = _kept_count(values.shape[0], q)
    return float(np.mean(np.sort(values)[:n]))


def _calibration(stats: HostStatistics) -> dict[str, float]:
    """ECE (percent) and SCE (permille), at dataset (D) and image (I) level.

    With gaps g_k = #correct_k - sum of confidences in bin k over n pixels, the error
    is sum_k (n_k / n) |acc_k - conf_k| = sum_k |g_k| / n.
    """
    pixels = np.sum(stats.label_count, axis=1).astype(np.float64)
    eced = np.sum(np.abs(np.sum(stats.ece_gap, axis=0))) / np.sum(pixels)
    ecei = np.mean(np.sum(np.abs(stats.ece_gap), axis=1) / pixels)
    sced = np.mean(np.sum(np.abs(stats.sce_gap), axis=1) / np.sum(pixels))
    return {
        "ECED": 100 * float(eced),
        "ECEI": 100 * float(ecei),
        "SCED": 1000 * float(sced),
        "SCEI": 1000 * float(np.mean(stats.sce_image)),
    }
