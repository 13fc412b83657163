"""Half precision and extreme logits: float32 accumulation, no overflow, no NaN."""

import numpy as np
import pytest
from _support.inputs import make_hard_label, make_logits, make_soft_label
from _support.reference import jdt_loss_reference

import jdt_array

SHAPE = (2, 5, 8, 8)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("module", ["torch", "jax"])
def test_half_precision_accumulates_in_float32(module, dtype):
    from jdt_array._tools.libraries import ArrayLibrary

    lib = ArrayLibrary(module)
    if not lib.installed():
        pytest.skip(f"{module} is not installed")
    rng = np.random.default_rng(0)
    logits = make_logits(rng, SHAPE)
    label = make_hard_label(rng, SHAPE)
    half = lib.from_numpy(logits, dtype)
    loss = jdt_array.jdt_loss(half, lib.from_numpy(label), mIoUI=1.0)
    assert str(loss.dtype).endswith("float32")
    # The reference sees the same rounded logits, so only accumulation error remains.
    rounded = lib.to_numpy(half)
    expected = jdt_loss_reference(rounded, label, mIoUI=1.0)
    np.testing.assert_allclose(lib.to_numpy(loss), expected, rtol=1e-5)


@pytest.mark.parametrize("scale", [1e2, 1e4, 1e30])
def test_extreme_logits_stay_finite(backend, scale):
    rng = np.random.default_rng(1)
    logits = np.sign(make_logits(rng, SHAPE)) * scale
    for label in (make_hard_label(rng, SHAPE), make_soft_label(rng, SHAPE)):
        loss = backend.call(
            jdt_array.jdt_loss, backend.asarray(logits), backend.asarray(label),
            mIoUI=1.0, mIoUC=1.0, gamma=1.5, log_loss=True,
        )  # fmt: skip
        value = backend.to_numpy(loss)
        assert np.isfinite(value)
        expected = jdt_loss_reference(
            logits.astype(backend.float_dtype), label, mIoUI=1.0, mIoUC=1.0, gamma=1.5,
            log_loss=True,
        )  # fmt: skip
        np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-6)


def test_perfect_prediction_zero_loss(backend):
    rng = np.random.default_rng(2)
    label = make_hard_label(rng, SHAPE)
    logits = np.moveaxis(np.eye(SHAPE[1])[label], -1, 1) * 50.0
    loss = backend.call(
        jdt_array.jdt_loss, backend.asarray(logits), backend.asarray(label),
        mIoUD=1.0, mIoUI=1.0, mIoUC=1.0, gamma=1.5,
    )  # fmt: skip
    np.testing.assert_allclose(backend.to_numpy(loss), 0.0, atol=1e-4)
