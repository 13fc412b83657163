"""The fine-grained metrics in float64 NumPy, written straight from their definitions.

Wang et al., "Revisiting Evaluation Metrics for Semantic Segmentation", NeurIPS 2023,
and the reference code's conventions; ``classes`` as MONAI's
``include_background=False``; multi-label as every class a binary problem. Deliberately
naive and independent of the package: one image at a time, one class at a time, Python
lists and sorted(), the weighted-bin form of the calibration errors. Tests compare the
package with it.
"""

from __future__ import annotations

import math

import numpy as np

from _support.boundary_reference import band_by_erosion, band_width

QS = range(10, 101, 10)
NAN = float("nan")


def fine_grained_reference(
    prob_or_pred,
    label,
    *,
    num_classes,
    ignore_index=None,
    binary=False,
    q=1,
    num_bins=10,
    calibration=False,
    class_axis=1,
    classes=None,
    multilabel=False,
    threshold=0.5,
    activation=None,
    boundary=False,
    dilation_ratio=0.02,
    boundary_width=None,
    worst=True,
) -> dict[str, float]:
    """All metrics of one dataset (every image in one array), values in percent; no
    worst-case keys if not ``worst`` (the compact mode's keys). With ``boundary``, the
    boundary IoU keys ``mBIoU*``: the IoU keys of the classes' boundary bands
    (Cheng et al., CVPR 2021) in place of their masks."""
    images, scored, either = _setup(
        prob_or_pred, label, num_classes, ignore_index, class_axis, classes, binary,
        multilabel, threshold, activation,
    )  # fmt: skip
    results = _dataset_level(images, scored, either)
    for level, reduce in (("I", _image_values), ("C", _class_values)):
        for score in ("Acc", "IoU", "Dice"):

            def mean_of(qq, score=score, reduce=reduce):
                return 100 * reduce(images, scored, either, score, qq)

            results[f"m{score}{level}"] = mean_of(None)
            if worst:
                results[f"m{score}{level}Q"] = sum(mean_of(qq) for qq in QS) / len(QS)
                results[f"m{score}{level}{q:g}"] = mean_of(q)
    if boundary:
        d = band_width(np.shape(label)[1:], dilation_ratio, boundary_width)
        bands = list(_band_images(prob_or_pred, label, num_classes, ignore_index,
                                  class_axis, d))  # fmt: skip
        results.update(_boundary_keys(bands, scored, either, q, worst))
    if calibration:
        results.update(_calibration(images, scored, binary, num_bins))
    return results


def per_class_reference(prob_or_pred, label, *, num_classes, **options) -> dict:
    """The per-class scores in percent, (C,) arrays, NaN where a class is not scored
    or has nothing to average: D pooled counts; I over images where label or
    prediction has the class; C over images where it is present."""
    keys = ("ignore_index", "class_axis", "classes", "binary", "multilabel",
            "threshold", "activation")  # fmt: skip
    args = {k: options.get(k) for k in keys}
    args["class_axis"] = args["class_axis"] or 1
    args["threshold"] = args["threshold"] or 0.5
    images, scored, either = _setup(
        prob_or_pred, label, num_classes, args["ignore_index"], args["class_axis"],
        args["classes"], bool(args["binary"]), bool(args["multilabel"]),
        args["threshold"], args["activation"],
    )  # fmt: skip
    table = {}
    for level, scores in (("D", ("IoU", "Dice", "Acc")), ("I", ("IoU", "Dice")),
                          ("C", ("IoU", "Dice", "Acc"))):  # fmt: skip
        for score in scores:
            row = []
            for c in range(num_classes):
                row.append(
                    100 * _class_value(images, c, score, level, either)
                    if c in scored else NAN
                )  # fmt: skip
            table[f"{score}{level}"] = np.array(row)
    return table


def _class_value(images, c, score, level, either):
    if level == "D":
        tp, fp, fn = (sum(im["counts"][c][i] for im in images) for i in range(3))
        if either:
            return _score(score, tp, fp, fn, True) if tp + fp + fn > 0 else NAN
        den = tp + fn if score == "Acc" else tp + fp + fn
        return _score(score, tp, fp, fn, False) if den > 0 else NAN
    if level == "I":  # label or prediction has it; a false alarm scores 0
        values = [_score(score, *im["counts"][c], True) for im in images
                  if sum(im["counts"][c]) > 0]  # fmt: skip
    else:
        values = [_score(score, *im["counts"][c], either) for im in images
                  if _present(im, c, either)]  # fmt: skip
    return sum(values) / len(values) if values else NAN


def _setup(x, label, num_classes, ignore_index, class_axis, classes, binary,
           multilabel, threshold, activation):  # fmt: skip
    if multilabel:
        images = list(_multilabel_images(x, label, num_classes, ignore_index, class_axis,
                                         threshold, activation))  # fmt: skip
    else:
        images = list(_images(x, label, num_classes, ignore_index, class_axis))
    if binary:
        scored = [1]
    else:
        scored = sorted(classes) if classes is not None else list(range(num_classes))
    return images, scored, binary or multilabel


def _images(prob_or_pred, label, num_classes, ignore_index, class_axis):
    """Per image with a kept pixel: kept labels, predictions and probabilities (N, C)."""
    x = np.asarray(prob_or_pred)
    label = np.asarray(label)
    prob = None
    if x.dtype.kind == "f":
        prob = np.moveaxis(x.astype(np.float64), class_axis, -1)
        pred = np.argmax(prob, axis=-1)
    else:
        pred = x
    for b in range(label.shape[0]):
        lab = label[b].reshape(-1).astype(np.int64)
        prd = pred[b].reshape(-1).astype(np.int64)
        keep = (
            np.ones(lab.shape, dtype=bool) if ignore_index is None else lab != ignore_index
        )
        if not keep.any():
            continue  # an image with every pixel ignored is not evaluated
        image = {"label": lab[keep], "pred": prd[keep]}
        if prob is not None:
            image["prob"] = prob[b].reshape(-1, num_classes)[keep]
        image["counts"] = {
            c: _counts(image["pred"] == c, image["label"] == c) for c in range(num_classes)
        }
        yield image


def _band_images(prob_or_pred, label, num_classes, ignore_index, class_axis, d):
    """Per image with a kept pixel: the counts of the classes' boundary bands of width
    d, the masks being the kept pixels of each class (dropped pixels in no mask)."""
    x, label = np.asarray(prob_or_pred), np.asarray(label)
    pred = np.argmax(x, axis=class_axis) if x.dtype.kind == "f" else x
    for b in range(label.shape[0]):
        kept = (label[b] >= 0) & (label[b] < num_classes)
        if ignore_index is not None:
            kept &= label[b] != ignore_index
        if not kept.any():
            continue
        counts = {}
        for c in range(num_classes):
            g = band_by_erosion((label[b] == c) & kept, d)
            p = band_by_erosion((pred[b] == c) & kept, d)
            counts[c] = _counts(p.reshape(-1), g.reshape(-1))
        yield {"counts": counts}


def _boundary_keys(images, scored, either, q, worst) -> dict[str, float]:
    """The keys mBIoU*: the IoU means of the band counts, in the package's order."""
    results = {"mBIoUD": _dataset_level(images, scored, either)["mIoUD"]}
    for level, reduce in (("I", _image_values), ("C", _class_values)):
        results[f"mBIoU{level}"] = 100 * reduce(images, scored, either, "IoU", None)
        if worst:
            values = [100 * reduce(images, scored, either, "IoU", qq) for qq in QS]
            results[f"mBIoU{level}Q"] = sum(values) / len(QS)
            results[f"mBIoU{level}{q:g}"] = 100 * reduce(images, scored, either, "IoU", q)
    return results


def _multilabel_images(x, label, num_classes, ignore_index, class_axis, threshold,
                       activation):  # fmt: skip
    """Per image with a kept entry: the counts of each class's binary problem."""
    x = np.moveaxis(np.asarray(x), class_axis, 1)
    label = np.moveaxis(np.asarray(label), class_axis, 1).astype(np.int64)
    if x.dtype.kind == "f":
        p = 1 / (1 + np.exp(-x.astype(np.float64))) if activation == "sigmoid" else x
        positive = p > threshold
    else:
        positive = x == 1
    for b in range(label.shape[0]):
        counts, kept_any = {}, False
        for c in range(num_classes):
            lab = label[b, c].reshape(-1)
            keep = np.ones(lab.shape, bool) if ignore_index is None else lab != ignore_index
            kept_any |= bool(keep.any())
            counts[c] = _counts(positive[b, c].reshape(-1)[keep], lab[keep] == 1)
        if kept_any:
            yield {"counts": counts}


def _counts(pred_c, label_c):
    tp = int(np.sum(pred_c & label_c))
    return tp, int(np.sum(pred_c & ~label_c)), int(np.sum(~pred_c & label_c))


def _score(score, tp, fp, fn, either):
    """Acc = tp / (tp + fn), IoU = tp / (tp + fp + fn), Dice = 2tp / (2tp + fp + fn).

    Binary / multi-label conventions: all scores 1 when label and prediction are
    empty; Acc 0 when only the prediction has the class. Multi-class callers only ask
    where defined.
    """
    if either and tp + fp + fn == 0:
        return 1.0
    if score == "Acc":
        return tp / (tp + fn) if tp + fn > 0 else 0.0
    if score == "IoU":
        return tp / (tp + fp + fn)
    return 2 * tp / (2 * tp + fp + fn)


def _present(image, c, either):
    tp, fp, fn = image["counts"][c]
    return tp + fp + fn > 0 if either else tp + fn > 0


def _mean(values, empty):
    return sum(values) / len(values) if values else empty


def _dataset_level(images, scored, either):
    pooled = {
        c: tuple(sum(im["counts"][c][i] for im in images) for i in range(3)) for c in scored
    }
    empty = 1.0 if either else NAN
    out = {}
    for score, key in (("Acc", "mAccD"), ("IoU", "mIoUD"), ("Dice", "mDiceD")):
        values = []
        for c in scored:
            tp, fp, fn = pooled[c]
            if either:
                defined = tp + fp + fn > 0
            else:
                defined = tp + fn > 0 if score == "Acc" else tp + fp + fn > 0
            if defined:
                values.append(_score(score, tp, fp, fn, either))
        out[key] = 100 * _mean(values, empty)
    total = [sum(pooled[c][i] for c in scored) for i in range(3)]  # tp, fp, fn
    if either:
        out["Acc"] = 100 * _score("Acc", *total, True)
    else:
        out["Acc"] = 100 * total[0] / (total[0] + total[2]) if total[0] + total[2] else NAN
    return {k: out[k] for k in ("Acc", "mAccD", "mIoUD", "mDiceD")}


def _worst(values, q):
    if not values:
        return NAN
    values = sorted(values)
    n = len(values) if q is None else max(1, math.floor(q * len(values) / 100))
    return sum(values[:n]) / n


def _image_values(images, scored, either, score, q):
    per_image = []
    for im in images:
        present = [c for c in scored if _present(im, c, either)]
        if not present:
            if either:  # nothing to find, nothing falsely found
                per_image.append(1.0)
            continue  # multi-class: no scored class in this image's label
        per_image.append(
            sum(_score(score, *im["counts"][c], either) for c in present) / len(present)
        )
    return _worst(per_image, q)


def _class_values(images, scored, either, score, q):
    per_class = []
    for c in scored:
        values = [
            _score(score, *im["counts"][c], either)
            for im in images
            if _present(im, c, either)
        ]
        if values:  # a class present in no image is left out
            per_class.append(_worst(values, q))
    return _mean(per_class, 1.0 if either else NAN)


def _ece(conf, correct, num_bins):
    """sum over bins of (n_k / n) |accuracy_k - mean confidence_k|; bins [k/K, (k+1)/K)."""
    edges = np.arange(1, num_bins) / num_bins
    bins = np.searchsorted(edges, conf, side="right")
    total = 0.0
    for k in range(num_bins):
        in_bin = bins == k
        if in_bin.any():
            gap = abs(np.mean(correct[in_bin]) - np.mean(conf[in_bin]))
            total += in_bin.sum() / conf.size * gap
    return total


def _calibration(images, scored, binary, num_bins):
    def max_conf(im):
        return im["prob"].max(axis=1), im["pred"] == im["label"]

    def class_conf(im, c):
        return im["prob"][:, c], (im["label"] == c) & (im["pred"] == c)

    def pooled(pairs):
        return tuple(np.concatenate(parts) for parts in zip(*pairs, strict=True))

    eced = _ece(*pooled(max_conf(im) for im in images), num_bins)
    ecei = np.mean([_ece(*max_conf(im), num_bins) for im in images])
    sced = np.mean(
        [_ece(*pooled(class_conf(im, c) for im in images), num_bins) for c in scored]
    )
    per_image = []
    for im in images:
        used = scored if binary else [c for c in scored if _present(im, c, False)]
        if used:  # an image whose label has no scored class is left out
            per_image.append(np.mean([_ece(*class_conf(im, c), num_bins) for c in used]))
    return {
        "ECED": 100 * eced,
        "ECEI": 100 * ecei,
        "SCED": 1000 * sced,
        "SCEI": 1000 * float(np.mean(per_image)),
    }
