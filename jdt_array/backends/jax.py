"""JAX adapter: ``jax.value_and_grad`` and ``custom_vjp`` forms of the JDT losses.

The core functions already work under ``jit``, ``grad`` and ``vmap``; the
``custom_vjp`` forms here swap the traced backward for the hand-derived one, which
keeps only the inputs as residuals and recomputes the softmax.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax

from .. import jdt as core
from ..jdt_grad import jdt_value_and_grad


def value_and_grad(
    loss_fn: Callable, logits: jax.Array, label: jax.Array, **options: Any
) -> tuple[jax.Array, jax.Array]:
    """``(loss, d loss / d logits)`` by ``jax.value_and_grad`` (works inside ``jit``)."""
    return jax.value_and_grad(lambda z: loss_fn(z, label, **options))(logits)


@functools.lru_cache(maxsize=128)
def _jdt_vjp(options: tuple) -> Callable:
    """A ``custom_vjp`` JDT loss of (logits, label, keep_mask, class_weights)."""
    kwargs = dict(options)

    @jax.custom_vjp
    def loss(logits, label, keep_mask, class_weights):
        return core.jdt_loss(
            logits, label, keep_mask=keep_mask, class_weights=class_weights, **kwargs
        )

    def forward(logits, label, keep_mask, class_weights):
        value = loss(logits, label, keep_mask, class_weights)
        return value, (logits, label, keep_mask, class_weights)

    def backward(residuals, g):
        logits, label, keep_mask, class_weights = residuals
        _, grad = jdt_value_and_grad(
            logits, label, keep_mask=keep_mask, class_weights=class_weights, **kwargs
        )
        return grad * g.astype(grad.dtype), None, None, None

    loss.defvjp(forward, backward)
    return loss


def jdt_loss(
    logits: jax.Array,
    label: jax.Array,
    *,
    keep_mask: jax.Array | None = None,
    class_weights: Any = None,
    **options: Any,
) -> jax.Array:
    """:func:`jdt_array.jdt_loss` with the hand-derived gradient as its ``custom_vjp``.

    Same arguments and values; works under ``jit``, ``grad`` and ``vmap``.
    """
    if class_weights is not None:
        class_weights = jax.numpy.asarray(class_weights, dtype=_float_dtype(logits))
    return _jdt_vjp(tuple(sorted(options.items())))(logits, label, keep_mask, class_weights)


def jaccard_loss(logits: jax.Array, label: jax.Array, **options: Any) -> jax.Array:
    """:func:`jdt_array.jaccard_loss` with the hand-derived ``custom_vjp``."""
    return jdt_loss(logits, label, alpha=1.0, beta=1.0, **options)


def dice_loss(logits: jax.Array, label: jax.Array, **options: Any) -> jax.Array:
    """:func:`jdt_array.dice_loss` with the hand-derived ``custom_vjp``."""
    return jdt_loss(logits, label, alpha=0.5, beta=0.5, **options)


def tversky_loss(
    logits: jax.Array, label: jax.Array, *, alpha: float, beta: float, **options: Any
) -> jax.Array:
    """:func:`jdt_array.tversky_loss` with the hand-derived ``custom_vjp``."""
    return jdt_loss(logits, label, alpha=alpha, beta=beta, **options)


def _float_dtype(logits: jax.Array) -> Any:
    return jax.numpy.float64 if logits.dtype == jax.numpy.float64 else jax.numpy.float32
