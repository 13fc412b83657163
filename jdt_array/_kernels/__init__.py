"""The one point where the array-API core reaches a library's native code.

The loss and metric maths is written once in array-API code; a few hot spots have a
faster form in some libraries: the softmax, the argmax and the (label, prediction) pair
counts of the metrics, the label range check, the hard-label statistics (a per-class
sum over the pixels of each class, which the array API can only write as a one-hot
comparison over all C classes) and its gradient, and ``value_and_grad`` (autodiff
where the library has it). ``kernels_for(xp)`` gives the kernel set of a namespace:
``generic.Generic`` (complete array-API bodies), or a subclass of it with native
overrides (``numpy.py``, ``torch.py``, ``jax.py``) that must return the same values,
and whose attribute ``fused`` is a fused kernel of the JDT statistics (``fused.py``:
Triton in ``torch_fused.py``, Pallas in ``jax_pallas.py``) or None. JAX keeps the
generic array code, which XLA fuses.

The functions below are what the core calls, one per hot spot.
"""

from __future__ import annotations

from typing import Any

from array_api_compat import is_numpy_namespace

from . import choice
from .generic import Array, Generic, Residual

__all__ = [
    "Generic",
    "Residual",
    "argmax",
    "argsort_descending",
    "byte_pair_counts",
    "cumulative_sum",
    "hard_statistics",
    "hard_statistics_vjp",
    "kernels_for",
    "pixel_counts",
    "soft_statistics_vjp",
    "softmax",
    "softmax_vjp",
    "value_and_grad",
    "value_range",
]


def kernels_for(xp: Any) -> Generic:
    """The kernel set of the array namespace ``xp``: the one place that decides which
    kernels run.

    For PyTorch and JAX it reads and checks the library's setting
    (``JDT_ARRAY_TORCH_KERNEL``, ``JDT_ARRAY_JAX_KERNEL``; see :mod:`.choice`) once per
    call; a kernel set's ``fused`` attribute is its fused kernel of the JDT statistics
    (``fused.FusedKernel``: Triton for ``triton``, Pallas for ``pallas``) or None. One
    instance per namespace and choice.
    """
    # By the namespace's name and a dict, not array_api_compat's is_*_namespace and
    # functools.cache: torch.compile warns about tracing an lru_cache (it does not
    # cache there), and cannot compare namespaces (modules) as keys.
    name = getattr(xp, "__name__", str(id(xp)))
    library = _LIBRARIES.get(name)
    setting = library and choice.resolved(library)
    key = (name, library, setting)
    kernels = _KERNEL_SETS.get(key)
    if kernels is None:
        kernels = _KERNEL_SETS.setdefault(key, _kernel_set(xp, library, setting))
    return kernels


_KERNEL_SETS: dict[tuple, Generic] = {}
# The namespaces of the libraries with a kernel setting, by name.
_LIBRARIES = {"torch": "torch", "array_api_compat.torch": "torch", "jax.numpy": "jax"}


def _kernel_set(xp: Any, library: str | None, setting: str | None) -> Generic:
    if library == "torch":
        if setting == "triton":
            from .torch_fused import TritonKernels

            return TritonKernels(xp)
        if setting == "native":
            from .torch import TorchKernels

            return TorchKernels(xp)
        return Generic(xp)
    if library == "jax":
        if setting == "pallas":
            from .jax_pallas import PallasKernels

            return PallasKernels(xp)
        from .jax import JaxKernels

        return JaxKernels(xp)
    if is_numpy_namespace(xp):
        from .numpy import NumPyKernels

        return NumPyKernels(xp)
    return Generic(xp)


def softmax(xp: Any, logits: Array, axis: int, dtype: Any, keep: Any = None) -> Array:
    """Softmax over ``axis`` computed in ``dtype``; dropped pixels (not ``keep``) count
    as logits 0."""
    x = logits if logits.dtype == dtype else xp.astype(logits, dtype)
    return kernels_for(xp).softmax(x, axis, keep)


def softmax_vjp(xp: Any, prob: Array, g_prob: Array, axis: int) -> Array:
    """Gradient through x = softmax(z) along ``axis``."""
    return kernels_for(xp).softmax_vjp(prob, g_prob, axis)


def argmax(xp: Any, x: Array, axis: int) -> Array:
    """The first index of the maximum along ``axis`` (the first NaN if any)."""
    return kernels_for(xp).argmax(x, axis)


def cumulative_sum(xp: Any, x: Array, axis: int) -> Array:
    """The cumulative sum of ``x`` along ``axis`` (the first element included)."""
    return kernels_for(xp).cumulative_sum(x, axis)


def argsort_descending(xp: Any, x: Array) -> Array:
    """The stable descending order of ``x`` along its last axis."""
    return kernels_for(xp).argsort_descending(x)


def hard_statistics(xp: Any, *args: Any) -> tuple[tuple[Array, Array, Array], Residual]:
    """``((|x|, |y|, |x - y|), residual)`` of probabilities against an integer label;
    arguments as :meth:`Generic.hard_statistics`."""
    return kernels_for(xp).hard_statistics(*args)


def hard_statistics_vjp(xp: Any, *args: Any, **options: Any) -> Array:
    """The logits' gradient of sum(g_prob_card |x|) + sum(g_diff_card |x - y|);
    arguments as :meth:`Generic.hard_statistics_vjp`."""
    return kernels_for(xp).hard_statistics_vjp(*args, **options)


def soft_statistics_vjp(xp: Any, *args: Any) -> Array:
    """The logits' gradient of sum(g_prob_card |x|) + sum(g_diff_card |x - y|) for a
    soft label; arguments as :meth:`Generic.soft_statistics_vjp`."""
    return kernels_for(xp).soft_statistics_vjp(*args)


def value_range(xp: Any, values: Array) -> tuple[Array, Array]:
    """(min, max) of ``values``, in one pass where the library can."""
    return kernels_for(xp).value_range(values)


def byte_pair_counts(
    xp: Any, label: Array, pred: Array, label_map: Array, pred_map: Array, shape: tuple
) -> Array | None:
    """(B, R, K) counts of mapped one-byte id pairs, or None where the kernel set has
    no fast form; arguments as :meth:`Generic.byte_pair_counts`."""
    return kernels_for(xp).byte_pair_counts(label, pred, label_map, pred_map, shape)


def pixel_counts(
    xp: Any, label_ids: Array, pred_ids: Array, counted: Array, num_classes: int
) -> tuple[Array, Array, Array]:
    """(B, C) counts of |pred = label = c|, |pred = c| and |label = c|."""
    return kernels_for(xp).pixel_counts(label_ids, pred_ids, counted, num_classes)


def value_and_grad(
    xp: Any, loss_fn: Any, logits: Array, label: Array, options: dict, *, hand_gradient
) -> tuple[Array, Array]:
    """``(loss, d loss / d logits)`` by the library's autodiff, or by hand."""
    return kernels_for(xp).value_and_grad(
        loss_fn, logits, label, options, hand_gradient=hand_gradient
    )
