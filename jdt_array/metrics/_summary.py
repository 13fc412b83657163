"""The fine-grained metrics from a metric state: the one place that divides and sorts.

:func:`level_results` and :func:`per_class_results` turn a compact state (sums over
images, see :mod:`._state`) into every mean and per-class score, in array-API code
that also runs inside a compiled step (the Keras metric). :func:`summarize` is the
host side: the per-image state reduced to its compact form on the host (so the means
come from the same functions), plus the worst cases, which sort per-image values.
Scores are fractions until the keys' percent (calibration errors: percent and
permille) are applied here.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from .._array import device
from ._options import MetricOptions, scored_mask
from ._scores import SCORES, float_dtype, mean_or, pair_levels, ratios
from ._state import CompactStatistics, StateLayout, compact_of, count_sets
from ._statistics import BatchStatistics

__all__ = [
    "level_results",
    "per_class_results",
    "q_label",
    "result_keys",
    "summarize",
    "worst_count",
]

Array = Any

WORST_CASE_QS = tuple(range(10, 101, 10))  # the q averaged by mIoUIQ, mIoUCQ, ...
LEVELS = ("I", "C")
CALIBRATION = {"ECED": 100, "ECEI": 100, "SCED": 1000, "SCEI": 1000}  # key: scale
# per_class keys per level, in this order; level I has no Acc (it would equal AccC: an
# image counts for a class's recall only where its label has the class)
PER_CLASS = {"D": ("IoU", "Dice", "Acc"), "I": ("IoU", "Dice"), "C": ("IoU", "Dice", "Acc")}


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


def result_keys(options: MetricOptions, q: float | None) -> list[str]:
    """The keys of ``compute()``, in order; without the worst cases if ``q`` is None.

    Per count set: ``Acc`` (region only), ``m{s}D`` per score s; then for level I and C
    and each score ``m{s}{level}``, ``m{s}{level}Q``, ``m{s}{level}{q}``; then, with
    calibration, ECED, ECEI, SCED, SCEI.
    """
    keys = []
    for s in count_sets(options):
        scores = [f"m{s.prefix}{score}" for score in s.keys]
        keys += (["Acc"] if not s.prefix else []) + [f"{score}D" for score in scores]
        for level in LEVELS:
            for score in scores:
                keys.append(f"{score}{level}")
                if q is not None:
                    keys += [f"{score}{level}Q", f"{score}{level}{q_label(q)}"]
    return keys + (list(CALIBRATION) if options.calibration else [])


def level_results(xp: Any, state: CompactStatistics, options: MetricOptions) -> dict:
    """Every key but the worst cases, as 0-d arrays in percent, from a compact state.

    A mean over nothing is NaN in the multi-class rule and 100 in the binary and
    multi-label ones (nothing to find and nothing falsely found); before any image
    every value is NaN. Runs under ``jit`` (no host read).
    """
    empty = 1.0 if options.either else math.nan
    scored = scored_mask(xp, options, device(state.counts))
    has_images = state.evaluated > 0
    results = {}
    for p, s in enumerate(count_sets(options)):
        tp, pred, label = (state.counts[p, i, :] for i in range(3))
        classes = _dataset_scores(xp, tp, pred, label, scored, options)  # (3, C)
        # the counts of the scored classes pooled: Acc is their recall
        pooled = [
            xp.astype(xp.sum(xp.where(scored, v, 0)), classes.dtype)
            for v in (tp, pred, label)
        ]
        values = {"Acc": ratios(xp, *pooled, options.either)[0]} if not s.prefix else {}
        for k, score in enumerate(SCORES):
            if score in s.keys:
                values[f"m{s.prefix}{score}D"] = _nanmean(xp, classes[k], empty)
        means = {
            "I": mean_or(xp, state.image_sums[p], state.image_counts[p], math.nan),
            "C": _class_means(xp, state.class_sums[p], state.class_counts[p], empty),
        }
        for level in LEVELS:
            for k, score in enumerate(SCORES):
                if score in s.keys:
                    values[f"m{s.prefix}{score}{level}"] = means[level][k]
        results.update(values)
    if options.calibration:
        results.update(_calibration(xp, state, scored, options))
    return {
        key: xp.where(has_images, CALIBRATION.get(key, 100.0) * value, math.nan)
        for key, value in results.items()
    }


def per_class_results(xp: Any, state: CompactStatistics, options: MetricOptions) -> dict:
    """Per-class scores in percent, (C,) arrays, from a compact state.

    For each count set (region: keys without prefix): ``IoUD``, ``DiceD``, ``AccD``
    from the counts pooled over the dataset; ``IoUI``, ``DiceI``, the mean over the
    images where label or prediction has the class (a false alarm scores 0);
    ``IoUC``, ``DiceC``, ``AccC``, the mean over the images where the class is present
    (the values ``mIoUC`` averages). NaN for a class that is not scored (outside
    ``classes``; class 0 if binary) or has nothing to average.
    """
    nan = math.nan
    scored = scored_mask(xp, options, device(state.counts))
    results = {}
    for p, s in enumerate(count_sets(options)):
        tp, pred, label = (state.counts[p, i, :] for i in range(3))
        by_level = {
            "D": _dataset_scores(xp, tp, pred, label, scored, options),
            "I": mean_or(xp, state.seen_sums[p], state.seen_counts[p][None, :], nan),
            "C": mean_or(xp, state.class_sums[p], state.class_counts[p][None, :], nan),
        }
        for level, names in PER_CLASS.items():
            for score in names:
                if score in s.keys:
                    value = by_level[level][SCORES.index(score)]
                    value = xp.where(scored & (state.evaluated > 0), value, nan)
                    results[f"{s.prefix}{score}{level}"] = 100.0 * value
    return results


def _dataset_scores(xp, tp, pred, label, scored, options: MetricOptions) -> Array:
    """(3, C) Acc, IoU, Dice of pooled counts; NaN where a class has no score: not
    scored, or (multi-class) a denominator of 0, or (binary, multi-label) neither label
    nor prediction has it."""
    dtype = float_dtype(xp, tp)
    tp, pred, label = (xp.astype(v, dtype) for v in (tp, pred, label))
    values = ratios(xp, tp, pred, label, options.either)
    keep = scored & (pred + label > 0) if options.either else scored
    return xp.where(keep, values, math.nan)


def _nanmean(xp, values: Array, empty: float) -> Array:
    """The mean of the non-NaN entries of ``values``, ``empty`` where there is none."""
    has = ~xp.isnan(values)
    return mean_or(xp, xp.sum(xp.where(has, values, 0.0)), xp.count_nonzero(has), empty)


def _class_means(xp, sums: Array, counts: Array, empty: float) -> Array:
    """(3,) the mean over classes with a present image of their mean over those images."""
    seen = counts > 0
    per_class = mean_or(xp, sums, counts[None, :], 0.0)
    total = xp.sum(xp.where(seen, per_class, 0.0), axis=1)
    return mean_or(xp, total, xp.count_nonzero(seen), empty)


def _calibration(xp, state: CompactStatistics, scored, options: MetricOptions) -> dict:
    """ECE and SCE (fractions) at dataset (D) and image (I) level.

    With gaps g_k = #correct_k - sum of confidences in bin k over n pixels, the error
    is sum_k (n_k / n) |acc_k - conf_k| = sum_k |g_k| / n. SCED averages the scored
    classes (class 1 only if binary).
    """
    pixels = xp.astype(state.kept_count, state.ece_gap.dtype)
    per_class = xp.sum(xp.abs(state.sce_gap), axis=1) / pixels
    rows = scored[1:2] if options.binary else scored
    return {
        "ECED": xp.sum(xp.abs(state.ece_gap)) / pixels,
        "ECEI": mean_or(xp, state.ece_image_sum, state.evaluated, math.nan),
        "SCED": mean_or(
            xp, xp.sum(xp.where(rows, per_class, 0.0)), xp.count_nonzero(rows), math.nan
        ),
        "SCEI": mean_or(xp, state.sce_image_sum, state.sce_images, math.nan),
    }


# -- the host summary ------------------------------------------------------------------


def summarize(layout: StateLayout, state: Any, q: float) -> dict[str, float]:
    """All metrics of a host (NumPy) state as Python floats in percent, keys in the
    order of :func:`result_keys` (no worst cases for a compact state)."""
    options = layout.options
    compact = state if layout.compact else compact_of(np, state, options)
    plain = {key: float(v) for key, v in level_results(np, compact, options).items()}
    if layout.compact:
        return plain
    worst = _worst_cases(state, options, q)
    keys = result_keys(options, q)
    return {key: plain[key] if key in plain else worst[key] for key in keys}


def _worst_cases(stats: BatchStatistics, options: MetricOptions, q: float) -> dict:
    """The keys m{s}{level}Q and m{s}{level}{q} of a per-image host state."""
    evaluated = stats.kept_count > 0
    empty = 1.0 if options.either else math.nan
    results = {}
    for s in count_sets(options):
        levels = pair_levels(np, *(getattr(stats, f) for f in s.fields), evaluated, options)
        for k, score in enumerate(SCORES):
            if score not in s.keys:
                continue
            images = levels.image_values[k][levels.image_in]
            for level in LEVELS:
                worst = [
                    _worst_mean(images, qq) if level == "I"
                    else _class_level(levels.scores[k], levels.present, qq, empty)
                    for qq in (*WORST_CASE_QS, q)
                ]  # fmt: skip
                name = f"m{s.prefix}{score}{level}"
                results[f"{name}Q"] = 100 * sum(worst[:-1]) / len(WORST_CASE_QS)
                results[f"{name}{q_label(q)}"] = 100 * worst[-1]
    return results


def _worst_mean(values: np.ndarray, q: float) -> float:
    """The mean of the worst q% of ``values`` (NaN for none)."""
    if values.shape[0] == 0:
        return math.nan
    n = worst_count(values.shape[0], q)
    return float(np.mean(np.sort(values)[:n]))


def _class_level(scores: np.ndarray, present: np.ndarray, q: float, empty: float) -> float:
    """Mean over classes of the mean over the worst q% of the images where each is
    present; classes present in no image are left out, ``empty`` if none is left."""
    n_present = np.sum(present, axis=0)
    seen = n_present > 0
    if not np.any(seen):
        return empty
    sorted_scores = np.sort(np.where(present, scores, np.inf), axis=0)
    kept = np.array([worst_count(int(n), q) for n in n_present[seen]], dtype=np.int64)
    rows = np.arange(scores.shape[0])[:, None] < kept
    worst = np.where(rows, sorted_scores[:, seen], 0.0)
    return float(np.mean(np.sum(worst, axis=0) / kept))
