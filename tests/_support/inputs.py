"""Shared random inputs: logits, hard and soft labels, masks (NumPy, float64)."""

from __future__ import annotations

import numpy as np

IGNORE = 255


def make_logits(rng, shape, scale=2.0):
    return rng.normal(scale=scale, size=shape)


def make_hard_label(rng, logits_shape, *, class_axis=1, absent=(), ignore_fraction=0.0):
    """Integer labels; classes in ``absent`` never occur; some pixels set to IGNORE."""
    shape = list(logits_shape)
    num_classes = shape.pop(class_axis)
    allowed = [c for c in range(num_classes) if c not in absent]
    label = rng.choice(allowed, size=shape).astype(np.int64)
    ignored = rng.random(shape) < ignore_fraction
    return np.where(ignored, IGNORE, label)


def make_soft_label(rng, logits_shape, *, class_axis=1, sharpness=1.5):
    """Per-class probabilities shaped like the logits (a softmax of random scores)."""
    z = rng.normal(scale=sharpness, size=logits_shape)
    z = np.exp(z - z.max(axis=class_axis, keepdims=True))
    return z / z.sum(axis=class_axis, keepdims=True)


def make_keep_mask(rng, logits_shape, *, class_axis=1, fraction=0.8):
    shape = list(logits_shape)
    shape.pop(class_axis)
    return rng.random(shape) < fraction
