"""The fine-grained metrics in float64 NumPy, written straight from their definitions.

Wang et al., "Revisiting Evaluation Metrics for Semantic Segmentation", NeurIPS 2023,
and the reference code's conventions. Deliberately naive and independent of the
package: one image at a time, one class at a time, Python lists and sorted(), the
weighted-bin form of the calibration errors. Tests compare the package with it.
"""

from __future__ import annotations

import math

import numpy as np

QS = range(10, 101, 10)


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
) -> dict[str, float]:
    """All metrics of one dataset (every image in one array), values in percent."""
    images = list(_images(prob_or_pred, label, num_classes, ignore_index, class_axis))
    classes = [1] if binary else list(range(num_classes))
    results = _dataset_level(images, classes, binary)
    for level, reduce in (("I", _image_values), ("C", _class_values)):
        for score in ("Acc", "IoU", "Dice"):

            def mean_of(qq, score=score, reduce=reduce):
                return 100 * reduce(images, classes, binary, score, qq)

            results[f"m{score}{level}"] = mean_of(None)
            results[f"m{score}{level}Q"] = sum(mean_of(qq) for qq in QS) / len(QS)
            results[f"m{score}{level}{q:g}"] = mean_of(q)
    if calibration:
        results.update(_calibration(images, classes, binary, num_bins))
    return results


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


def _counts(pred_c, label_c):
    tp = int(np.sum(pred_c & label_c))
    return tp, int(np.sum(pred_c & ~label_c)), int(np.sum(~pred_c & label_c))


def _score(score, tp, fp, fn, binary):
    """Acc = tp / (tp + fn), IoU = tp / (tp + fp + fn), Dice = 2tp / (2tp + fp + fn).

    Binary conventions: all scores 1 when label and prediction are empty; Acc 0 when
    only the prediction has foreground. Multi-class callers only ask where defined.
    """
    if binary and tp + fp + fn == 0:
        return 1.0
    if score == "Acc":
        return tp / (tp + fn) if tp + fn > 0 else 0.0
    if score == "IoU":
        return tp / (tp + fp + fn)
    return 2 * tp / (2 * tp + fp + fn)


def _present(image, c, binary):
    tp, fp, fn = image["counts"][c]
    return tp + fp + fn > 0 if binary else tp + fn > 0


def _dataset_level(images, classes, binary):
    pooled = {
        c: tuple(sum(im["counts"][c][i] for im in images) for i in range(3))
        for c in classes
    }
    out = {}
    for score, key in (("Acc", "mAccD"), ("IoU", "mIoUD"), ("Dice", "mDiceD")):
        values = []
        for c in classes:
            tp, fp, fn = pooled[c]
            defined = tp + fn > 0 if score == "Acc" else tp + fp + fn > 0
            if binary or defined:
                values.append(_score(score, tp, fp, fn, binary))
        out[key] = 100 * sum(values) / len(values)
    if binary:
        out["Acc"] = out["mAccD"]
    else:
        correct = sum(int(np.sum(im["pred"] == im["label"])) for im in images)
        out["Acc"] = 100 * correct / sum(im["label"].size for im in images)
    return {k: out[k] for k in ("Acc", "mAccD", "mIoUD", "mDiceD")}


def _worst(values, q):
    values = sorted(values)
    n = len(values) if q is None else max(1, math.floor(q * len(values) / 100))
    return sum(values[:n]) / n


def _image_values(images, classes, binary, score, q):
    per_image = []
    for im in images:
        if binary:
            per_image.append(_score(score, *im["counts"][1], True))
            continue
        present = [c for c in classes if _present(im, c, False)]
        per_image.append(
            sum(_score(score, *im["counts"][c], False) for c in present) / len(present)
        )
    return _worst(per_image, q)


def _class_values(images, classes, binary, score, q):
    per_class = []
    for c in classes:
        values = [
            _score(score, *im["counts"][c], binary)
            for im in images
            if _present(im, c, binary)
        ]
        if values:  # a class present in no image is left out
            per_class.append(_worst(values, q))
    if not per_class:  # binary, no foreground anywhere: every image is empty/empty
        return 1.0
    return sum(per_class) / len(per_class)


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


def _calibration(images, classes, binary, num_bins):
    def max_conf(im):
        return im["prob"].max(axis=1), im["pred"] == im["label"]

    def class_conf(im, c):
        return im["prob"][:, c], (im["label"] == c) & (im["pred"] == c)

    def pooled(pairs):
        return tuple(np.concatenate(parts) for parts in zip(*pairs, strict=True))

    eced = _ece(*pooled(max_conf(im) for im in images), num_bins)
    ecei = np.mean([_ece(*max_conf(im), num_bins) for im in images])
    sced = np.mean(
        [_ece(*pooled(class_conf(im, c) for im in images), num_bins) for c in classes]
    )
    per_image = []
    for im in images:
        used = classes if binary else [c for c in classes if _present(im, c, False)]
        per_image.append(np.mean([_ece(*class_conf(im, c), num_bins) for c in used]))
    return {
        "ECED": 100 * eced,
        "ECEI": 100 * ecei,
        "SCED": 1000 * sced,
        "SCEI": 1000 * float(np.mean(per_image)),
    }
