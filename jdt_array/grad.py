"""One gradient entry point for every loss, on every array library, and the registry of
the hand-derived gradients (each lives beside its loss)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from . import _kernels
from ._array import Array, namespace_of
from ._loss_table import LOSSES

# Losses whose gradient is also derived by hand, for libraries without autodiff.
HAND_GRADIENTS: dict[Callable, Callable] = {e.function: e.hand_gradient for e in LOSSES}


def value_and_grad(
    loss_fn: Callable, logits: Array, label: Array, **options: Any
) -> tuple[Array, Array]:
    """``(loss_fn(logits, label, **options), d loss / d logits)`` on any array library.

    PyTorch uses autograd and JAX ``jax.value_and_grad`` (so this also works inside
    ``jax.jit``); NumPy, CuPy and array-api-strict use the gradient derived by hand for
    the package's losses. ``loss_fn`` is a loss of this package, or a
    ``functools.partial`` of one with keyword options.

    Returns:
        ``(loss, grad)``: a 0-d array and an array shaped and typed like ``logits``.
    """
    xp = namespace_of(logits=logits, label=label)
    if not xp.isdtype(logits.dtype, "real floating"):
        raise TypeError(
            f"value_and_grad differentiates with respect to logits, which must be a "
            f"floating array; got dtype {logits.dtype}"
        )
    return _kernels.value_and_grad(
        xp, loss_fn, logits, label, options, hand_gradient=hand_gradient
    )


def hand_gradient(loss_fn: Callable) -> Callable:
    """The hand-derived ``value_and_grad`` of ``loss_fn`` (partials unwrapped)."""
    keywords: dict = {}
    while isinstance(loss_fn, functools.partial) and not loss_fn.args:
        keywords = {**loss_fn.keywords, **keywords}
        loss_fn = loss_fn.func
    found = HAND_GRADIENTS.get(loss_fn)
    if found is None:
        name = getattr(loss_fn, "__name__", repr(loss_fn))
        known = ", ".join(sorted(f.__name__ for f in HAND_GRADIENTS))
        raise TypeError(
            f"{name} has no hand-derived gradient (known: {known}); for other functions "
            f"use a library with autodiff (PyTorch or JAX)"
        )
    return functools.partial(found, **keywords) if keywords else found
