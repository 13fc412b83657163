"""Inputs and comparisons of the metrics tests: softmax probabilities, labels that
agree with their argmax on a fraction of pixels, and the tolerances by which a
backend's metrics match the float64 reference."""

from __future__ import annotations

import numpy as np

from _support.inputs import IGNORE

CALIBRATION_KEYS = ("ECED", "ECEI", "SCED", "SCEI")


def make_prob(rng, shape, *, class_axis=1, sharpness=2.0):
    """Softmax probabilities of random scores."""
    z = rng.normal(scale=sharpness, size=shape)
    z = np.exp(z - z.max(axis=class_axis, keepdims=True))
    return z / z.sum(axis=class_axis, keepdims=True)


def make_label(rng, prob, *, class_axis=1, agree=0.6, ignore_fraction=0.0, absent=()):
    """Labels that agree with the argmax on a fraction of pixels, so scores are not ~0."""
    num_classes = prob.shape[class_axis]
    pred = np.argmax(prob, axis=class_axis)
    allowed = [c for c in range(num_classes) if c not in absent]
    noise = rng.choice(allowed, size=pred.shape)
    label = np.where(rng.random(pred.shape) < agree, pred, noise)
    label = np.where(np.isin(label, absent), noise, label)
    return np.where(rng.random(pred.shape) < ignore_fraction, IGNORE, label)


def make_multilabel_label(rng, prob, *, ignore_fraction=0.0):
    """0/1 labels of each class's channel, positive where a random number falls below
    the probability + 0.2 (so that scores are not ~0); some entries IGNORE."""
    label = (rng.random(prob.shape) < prob + 0.2).astype(np.int64)
    return np.where(rng.random(prob.shape) < ignore_fraction, IGNORE, label)


def as_backend_float(backend, x):
    """``x`` rounded to the backend's float dtype, so both sides see the same argmax."""
    x = np.asarray(x)
    return x.astype(backend.float_dtype).astype(np.float64) if x.dtype.kind == "f" else x


def assert_matches(backend, results, expected):
    assert list(results) == list(expected)
    assert all(isinstance(v, float) for v in results.values())
    for key, want in expected.items():
        # Counts are exact on every backend; calibration sums confidences in the
        # backend's float dtype.
        rtol, atol = (
            (backend.rtol * 10, backend.atol * 1e3)
            if key in CALIBRATION_KEYS
            else (1e-12, 1e-9)
        )
        np.testing.assert_allclose(results[key], want, rtol=rtol, atol=atol, err_msg=key)
