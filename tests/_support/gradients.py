"""Gradient checks against central differences in float64: of the autodiff of JAX and
PyTorch through a loss (``check_autodiff``), and of the package's hand-derived
gradient, which ``jdt_array.value_and_grad`` uses on NumPy (``check_hand_gradient``).
"""

from __future__ import annotations

import numpy as np
import pytest

import jdt_array


def central_differences(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """The gradient of the scalar function ``f`` at ``x`` by central differences."""
    grad = np.zeros_like(x, dtype=np.float64)
    for index in np.ndindex(*x.shape):
        step = np.zeros_like(x, dtype=np.float64)
        step[index] = h
        grad[index] = (float(f(x + step)) - float(f(x - step))) / (2 * h)
    return grad


def check_autodiff(fn, x: np.ndarray, *args, **options) -> None:
    """jax.grad of ``fn(x, *args, **options)`` under jit, and torch autograd, are finite
    and match central differences in float64 (skipped for a missing library)."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    jargs = [jnp.asarray(a) for a in args]
    f = jax.jit(lambda v: fn(v, *jargs, **options))
    grad = np.asarray(jax.grad(f)(jnp.asarray(x, dtype=jnp.float64)))
    assert np.all(np.isfinite(grad))
    expected = central_differences(lambda v: f(jnp.asarray(v)), x)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)

    torch = pytest.importorskip("torch")
    t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    fn(t, *[torch.asarray(np.asarray(a)) for a in args], **options).backward()
    np.testing.assert_allclose(t.grad.numpy(), grad, rtol=1e-9, atol=1e-12)


def check_hand_gradient(fn, x: np.ndarray, label, **options) -> None:
    """The hand-derived gradient of ``fn(x, label, **options)`` (NumPy
    ``jdt_array.value_and_grad``) is finite and matches central differences in
    float64; its loss is ``fn``'s."""
    x = np.asarray(x, dtype=np.float64)
    loss, grad = jdt_array.value_and_grad(fn, x, label, **options)
    assert isinstance(grad, np.ndarray)
    assert grad.shape == x.shape
    assert grad.dtype == np.float64
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(float(loss), float(fn(x, label, **options)), rtol=1e-12)
    expected = central_differences(lambda v: fn(v, label, **options), x)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)


# Which gradient a test checks against finite differences: PyTorch/JAX autodiff of the
# forward, or the package's hand-derived gradient (NumPy value_and_grad).
GRADIENT_CHECKS = pytest.mark.parametrize(
    "check", [check_autodiff, check_hand_gradient], ids=["autodiff", "hand"]
)
