"""The JDT loss in float64 NumPy, written straight from the papers' formulas.

Deliberately naive and independent of the package: explicit one-hot labels, explicit
loops over images and classes, the textbook softmax. Tests compare the package with it.
"""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    z = logits.astype(np.float64)
    z = np.exp(z - z.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(np.asarray(logits, dtype=np.float64) / 2.0))


def activate(logits: np.ndarray, axis: int, activation) -> np.ndarray:
    if activation == "softmax":
        return softmax(logits, axis)
    return sigmoid(logits) if activation == "sigmoid" else logits.astype(np.float64)


def to_channels_first(a: np.ndarray, class_axis: int) -> np.ndarray:
    return np.moveaxis(a, class_axis, 1)


def jdt_loss_reference(
    logits,
    label,
    *,
    keep_mask=None,
    class_axis=1,
    mIoUD=1.0,
    mIoUI=0.0,
    mIoUC=0.0,
    alpha=1.0,
    beta=1.0,
    gamma=1.0,
    smooth=1e-3,
    threshold=0.01,
    norm=1,
    log_loss=False,
    ignore_index=None,
    class_weights=None,
    active_classes_mode_hard="PRESENT",
    active_classes_mode_soft="ALL",
    class_agnostic=False,
    activation="softmax",
    classes=None,
    reduction="mean",
):
    """The loss (a float), or with ``reduction="none"`` the (B, K) image-level class
    losses times mIoUI (0 where inactive). ``classes``: the class ids in the means
    (with ``class_agnostic``, the ones pooled)."""
    logits = np.asarray(logits, dtype=np.float64)
    prob = to_channels_first(activate(logits, class_axis, activation), class_axis)
    B, C = prob.shape[:2]
    prob = prob.reshape(B, C, -1)
    label = np.asarray(label)
    hard = label.dtype.kind in "iub"
    # Which (image, class, pixel) entries count.
    keep = np.ones(prob.shape, dtype=bool)
    if keep_mask is not None:
        keep &= np.asarray(keep_mask).reshape(B, 1, -1)
    independent = activation == "sigmoid" or (activation is None and C == 1)
    if independent:  # every class its own 0/1 (or soft) label
        if label.ndim == logits.ndim - 1:
            label = np.expand_dims(label, class_axis)
        flat = to_channels_first(label, class_axis).reshape(B, C, -1)
        if hard and ignore_index is not None:
            keep &= flat != ignore_index
        y = flat.astype(np.float64)
        mode = active_classes_mode_hard if hard else active_classes_mode_soft
    elif hard:
        flat = label.reshape(B, -1)
        if ignore_index is not None:
            keep &= (flat != ignore_index)[:, None]
        y = np.zeros_like(prob)
        for c in range(C):
            y[:, c] = flat == c
        mode = active_classes_mode_hard
    else:
        y = to_channels_first(label.astype(np.float64), class_axis).reshape(B, C, -1)
        mode = active_classes_mode_soft
    # Dropped pixels are left out by selection: whatever they hold (NaN too) is inert.
    x = np.where(keep, prob, 0.0)
    y = np.where(keep, y, 0.0)

    def card(v):
        return np.sum(np.abs(v) ** norm, axis=2)

    tp = (card(x) + card(y) - card(x - y)) / 2
    fp = card(x) - tp
    fn = card(y) - tp
    label_max = y.max(axis=2)
    w = np.ones(C) if class_weights is None else np.asarray(class_weights, np.float64)
    chosen = np.ones(C, bool) if classes is None else np.isin(np.arange(C), list(classes))

    if class_agnostic:
        tp, fp, fn = ((v * w * chosen).sum(axis=1, keepdims=True) for v in (tp, fp, fn))
        label_max = np.where(chosen, label_max, 0.0).max(axis=1, keepdims=True)
        w, chosen = np.ones(1), np.ones(1, bool)
    K = tp.shape[1]

    def class_loss(tp_, fp_, fn_, k):
        den = tp_ + alpha * fp_ + beta * fn_ + smooth
        t = 1.0 if den == 0 else (tp_ + smooth) / den
        value = -np.log(t) if log_loss else 1.0 - t
        # The focal power keeps the sign of its base, for every gamma.
        return w[k] * np.sign(value) * np.abs(value) ** gamma

    def mean(values):
        return float(np.mean(values)) if values else 0.0

    total = 0.0
    if mIoUD > 0:
        losses = []
        for k in range(K):
            active = mode == "ALL" or label_max[:, k].max() > threshold
            if active and chosen[k]:
                losses.append(class_loss(tp[:, k].sum(), fp[:, k].sum(), fn[:, k].sum(), k))
        total += mIoUD * mean(losses)
    active = np.ones((B, K), bool) if mode == "ALL" else label_max > threshold
    active &= chosen
    matrix = np.zeros((B, K))
    for b in range(B):
        for k in range(K):
            matrix[b, k] = class_loss(tp[b, k], fp[b, k], fn[b, k], k)
    if reduction == "none":
        nan = np.isnan(x).any(axis=(1, 2))[:, None]
        return np.where(nan, np.nan, mIoUI * np.where(active, matrix, 0.0))
    if mIoUI > 0:
        per_image = [mean(list(matrix[b][active[b]])) for b in range(B) if active[b].any()]
        total += mIoUI * mean(per_image)
    if mIoUC > 0:
        per_class = [
            mean(list(matrix[:, k][active[:, k]])) for k in range(K) if active[:, k].any()
        ]
        total += mIoUC * mean(per_class)
    # A NaN probability at a kept pixel (a NaN or +inf logit) makes the loss NaN.
    return float("nan") if np.isnan(x).any() else total
