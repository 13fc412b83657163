"""JAX kernels: the generic array code (XLA fuses it), with JAX's autodiff for
``value_and_grad``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from .generic import Generic


def autodiff_value_and_grad(
    loss_fn: Callable, logits: jax.Array, label: jax.Array, **options: Any
) -> tuple[jax.Array, jax.Array]:
    """``(loss, d loss / d logits)`` by ``jax.value_and_grad`` (works inside ``jit``)."""
    return jax.value_and_grad(lambda z: loss_fn(z, label, **options))(logits)


class JaxKernels(Generic):
    def value_and_grad(self, loss_fn, logits, label, options, *, hand_gradient):
        return autodiff_value_and_grad(loss_fn, logits, label, **options)
