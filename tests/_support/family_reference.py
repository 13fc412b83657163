"""The rest of the loss family in float64 NumPy, written straight from the papers.

Deliberately naive and independent of the package: ignored pixels are removed with
boolean indexing, the Lovasz extension is evaluated from its definition with the
Jaccard set function (one pixel at a time), class loops and pixel loops are explicit.
"""

from __future__ import annotations

import itertools

import numpy as np

from _support.reference import softmax, to_channels_first


def jaccard_set_loss(mispredicted: np.ndarray, fg: np.ndarray) -> float:
    """Delta(M) = |M| / |G u M|: 0/1 masks M of mispredicted pixels, G of ground truth."""
    union = np.sum(fg | mispredicted)
    return float(np.sum(mispredicted) / union) if union else 0.0


def lovasz_extension(errors: np.ndarray, fg: np.ndarray) -> float:
    """sum_i e_(i) (Delta(first i) - Delta(first i - 1)) over errors sorted decreasingly."""
    order = np.argsort(-errors, kind="stable")
    fg = fg.astype(bool)
    total, previous = 0.0, 0.0
    mispredicted = np.zeros_like(fg)
    for i in order:
        mispredicted[i] = True
        current = jaccard_set_loss(mispredicted, fg)
        total += errors[i] * (current - previous)
        previous = current
    return total


def _flatten(logits, label, keep_mask, ignore_index, class_axis):
    prob = to_channels_first(
        softmax(np.asarray(logits, np.float64), class_axis), class_axis
    )
    B, C = prob.shape[:2]
    prob = prob.reshape(B, C, -1)
    label = np.asarray(label).reshape(B, -1)
    keep = np.ones(label.shape, bool)
    if keep_mask is not None:
        keep &= np.asarray(keep_mask).reshape(B, -1)
    if ignore_index is not None:
        keep &= label != ignore_index
    return prob, label, keep


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else 0.0


def lovasz_softmax_reference(
    logits,
    label,
    *,
    classes="present",
    per_image=False,
    ignore_index=None,
    keep_mask=None,
    class_axis=1,
) -> float:
    prob, label, keep = _flatten(logits, label, keep_mask, ignore_index, class_axis)
    C = prob.shape[1]

    def loss(p, lab):  # p (C, P), lab (P,): the kept pixels of one group
        if lab.size == 0:
            return 0.0
        ids = range(C) if classes in ("present", "all") else classes
        losses = []
        for c in ids:
            fg = lab == c
            if classes == "present" and not fg.any():
                continue
            losses.append(lovasz_extension(np.abs(fg - p[c]), fg))
        return _mean(losses)

    if per_image:
        return _mean(
            [loss(prob[b][:, keep[b]], label[b][keep[b]]) for b in range(len(prob))]
        )
    pooled = np.concatenate([prob[b][:, keep[b]] for b in range(len(prob))], axis=1)
    return loss(pooled, label[keep])


def lovasz_hinge_reference(
    logits, label, *, per_image=True, ignore_index=None, keep_mask=None
) -> float:
    z = np.asarray(logits, np.float64).reshape(len(logits), -1)
    label = np.asarray(label).astype(np.int64).reshape(len(z), -1)
    keep = np.ones(label.shape, bool)
    if keep_mask is not None:
        keep &= np.asarray(keep_mask).reshape(len(z), -1)
    if ignore_index is not None:
        keep &= label != ignore_index

    def loss(s, lab):
        if lab.size == 0:
            return 0.0
        errors = np.maximum(1.0 - s * (2.0 * lab - 1.0), 0.0)
        return lovasz_extension(errors, lab == 1)

    if per_image:
        return _mean([loss(z[b][keep[b]], label[b][keep[b]]) for b in range(len(z))])
    return loss(z[keep], label[keep])


def _per_pixel(logits, label, keep_mask, ignore_index, class_axis, temperature=1.0):
    """Channels-first (B, C, N) log-probabilities and label (one-hot if hard); keep."""
    z = to_channels_first(np.asarray(logits, np.float64) / temperature, class_axis)
    B, C = z.shape[:2]
    z = z.reshape(B, C, -1)
    log_p = z - z.max(axis=1, keepdims=True)
    log_p = log_p - np.log(np.exp(log_p).sum(axis=1, keepdims=True))
    label = np.asarray(label)
    keep = np.ones((B, z.shape[2]), bool)
    if keep_mask is not None:
        keep &= np.asarray(keep_mask).reshape(B, -1)
    if label.dtype.kind in "iu":
        flat = label.reshape(B, -1)
        if ignore_index is not None:
            keep &= flat != ignore_index
        y = np.stack([(flat == c).astype(np.float64) for c in range(C)], axis=1)
    else:
        y = to_channels_first(label.astype(np.float64), class_axis).reshape(B, C, -1)
    return log_p, y, keep


def cross_entropy_reference(
    logits, label, *, ignore_index=None, keep_mask=None, class_axis=1, gamma=0.0
) -> float:
    log_p, y, keep = _per_pixel(logits, label, keep_mask, ignore_index, class_axis)
    p = np.exp(log_p)
    values = []
    for b, i in zip(*np.nonzero(keep), strict=True):
        values.append(-np.sum(y[b, :, i] * (1 - p[b, :, i]) ** gamma * log_p[b, :, i]))
    return _mean(values)


def kl_div_reference(logits, target, *, temperature=1.0, keep_mask=None, class_axis=1):
    log_p, q, keep = _per_pixel(logits, target, keep_mask, None, class_axis, temperature)
    values = []
    for b, i in zip(*np.nonzero(keep), strict=True):
        qi = q[b, :, i]
        nz = qi > 0
        values.append(np.sum(qi[nz] * (np.log(qi[nz]) - log_p[b, nz, i])))
    return temperature**2 * _mean(values)


def generalized_dice_reference(
    logits,
    label,
    *,
    keep_mask=None,
    ignore_index=None,
    class_axis=1,
    per_image=False,
    smooth=1e-3,
    weight_type="square",
    classes=None,
    reduction="mean",
):
    """1 - (2 sum_c w_c sum_i x y + 2s) / (sum_c w_c sum_i (x + y) + 2s), w_c ~ 1/|y_c|^2
    (``"simple"``: 1/|y_c|, ``"uniform"``: 1), over the ``classes`` (others weight 0).

    Zero-volume classes take the largest present weight; weights are scaled so that
    sum_c w_c |y_c| = sum_c |y_c|; a group with no label mass is skipped (0 with
    ``reduction="none"``, which returns the (B, 1) per-image losses). With soft labels
    the overlap is the soft tp (|x| + |y| - |x - y|) / 2.
    """
    log_p, y, keep = _per_pixel(logits, label, keep_mask, ignore_index, class_axis)
    x = np.exp(log_p) * keep[:, None]
    y = y * keep[:, None]
    groups = (
        [(x[b : b + 1], y[b : b + 1]) for b in range(len(x))] if per_image else [(x, y)]
    )
    chosen = np.ones(x.shape[1], bool)
    if classes is not None:
        chosen = np.isin(np.arange(x.shape[1]), list(classes))
    power = {"square": 2, "simple": 1, "uniform": 0}[weight_type]
    losses = []
    for gx, gy in groups:
        volume = np.where(chosen, gy.sum(axis=(0, 2)), 0.0)
        if volume.sum() == 0:
            losses.append(None)
            continue
        w = np.array([1 / v**power if v > 0 else 0.0 for v in volume])
        w[(volume == 0) & chosen] = w.max()
        w *= volume.sum() / np.sum(w * volume)
        tp = (gx.sum(axis=(0, 2)) + volume - np.abs(gx - gy).sum(axis=(0, 2))) / 2
        num = 2 * np.sum(w * tp) + 2 * smooth
        den = np.sum(w * (gx.sum(axis=(0, 2)) + volume)) + 2 * smooth
        losses.append(1.0 - (num / den if den > 0 else 1.0))
    if reduction == "none":
        return np.array([[0.0 if v is None else v] for v in losses])
    return _mean([v for v in losses if v is not None])


def label_smoothing_reference(
    label, num_classes, *, epsilon=0.1, boundary_window=None, ignore_index=None
) -> np.ndarray:
    """(B, C, *spatial), by visiting every pixel's window."""
    label = np.asarray(label)
    out = np.zeros((label.shape[0], num_classes, *label.shape[1:]))
    r = 0 if boundary_window is None else boundary_window // 2
    offsets = list(itertools.product(range(-r, r + 1), repeat=label.ndim - 1))
    for index in np.ndindex(*label.shape):
        c = label[index]
        if c == ignore_index:
            continue
        near = boundary_window is None
        for offset in offsets:
            other = (index[0], *(i + o for i, o in zip(index[1:], offset, strict=True)))
            inside = all(
                0 <= i < n for i, n in zip(other[1:], label.shape[1:], strict=True)
            )
            if inside and label[other] != ignore_index and label[other] != c:
                near = True
        vec = np.eye(num_classes)[c]
        out[(index[0], slice(None), *index[1:])] = (
            (1 - epsilon) * vec + epsilon / num_classes if near else vec
        )
    return out


def average_annotators_reference(labels, num_classes, *, ignore_index=None) -> np.ndarray:
    """labels (A, B, *spatial) -> (B, C, *spatial)."""
    labels = np.asarray(labels)
    out = np.zeros((labels.shape[1], num_classes, *labels.shape[2:]))
    for index in np.ndindex(*labels.shape[1:]):
        votes = [v for v in labels[(slice(None), *index)] if v != ignore_index]
        for v in votes:
            out[(index[0], v, *index[1:])] += 1 / len(votes)
    return out
