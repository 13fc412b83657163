"""The choice of PyTorch kernels, and the fused Triton statistics as PyTorch custom
operators.

``JDT_ARRAY_TORCH_KERNEL`` (read at every call) picks the kernel set of PyTorch
tensors:

* ``auto`` (default): ``native`` for now. Triton is chosen on CUDA only once a run on
  a real GPU has verified the kernels and its figures are recorded in
  ``benchmarks/README.md``; no GPU has run them yet.
* ``triton``: the two fused Triton passes for the JDT statistics and their gradient
  (``triton_jdt.py``), the native kernels for everything else. CUDA tensors run the
  compiled kernels; CPU tensors run them in Triton's interpreter when
  ``TRITON_INTERPRET=1`` (the tests) and raise otherwise.
* ``native``: PyTorch's own operations (``torch.py``).
* ``generic``: the array-API code of every library (``generic.py``).

The operators ``jdt_array::fused_statistics`` and ``jdt_array::fused_statistics_grad``
have fake (shape-only) implementations, so the meta device and
``torch.compile(fullgraph=True)`` go through them, and an autograd formula that
launches the second pass: nothing pixel-sized is saved between the passes.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from .._array import in_torch_func
from . import triton_launch
from .generic import Generic
from .torch import TorchKernels

__all__ = ["CHOICES", "VARIABLE", "TritonKernels", "fuses", "kernel_choice",
           "torch_kernels"]  # fmt: skip

VARIABLE = "JDT_ARRAY_TORCH_KERNEL"
CHOICES = ("auto", "triton", "native", "generic")


def kernel_choice() -> str:
    """The value of ``JDT_ARRAY_TORCH_KERNEL`` (``auto`` when unset), checked."""
    choice = os.environ.get(VARIABLE, "auto")
    if choice not in CHOICES:
        raise ValueError(
            f"the environment variable {VARIABLE} must be one of {CHOICES}, got {choice!r}"
        )
    return choice


def torch_kernels(xp: Any) -> Generic:
    """The kernel set of PyTorch tensors for the current ``JDT_ARRAY_TORCH_KERNEL``."""
    choice = kernel_choice()
    key = (xp.__name__, "native" if choice == "auto" else choice)
    found = _KERNEL_SETS.get(key)
    if found is None:
        kinds = {"triton": TritonKernels, "native": TorchKernels, "generic": Generic}
        found = _KERNEL_SETS[key] = kinds[key[1]](xp)
    return found


# By namespace name and choice. A dict, not functools.cache: torch.compile warns at
# every lru_cache it traces (and cannot key a dict by a module).
_KERNEL_SETS: dict[tuple[str, str], Generic] = {}


class TritonKernels(TorchKernels):
    """The native PyTorch kernels with the JDT statistics (and, for ``ce_jdt_loss``,
    the cross-entropy) fused into two Triton passes over the logits."""

    def fused_statistics(self, logits, label, keep, class_axis, norm, ignore_index):
        if not _fuses(logits, label, class_axis):
            return super().fused_statistics(
                logits, label, keep, class_axis, norm, ignore_index
            )
        return torch.ops.jdt_array.fused_statistics(
            logits, label, keep, class_axis, float(norm), ignore_index
        )


def fuses(logits: torch.Tensor, label: torch.Tensor, class_axis: int) -> bool:
    """Whether the current kernel choice computes the statistics of these arrays in
    the fused Triton passes."""
    return kernel_choice() == "triton" and _fuses(logits, label, class_axis)


def _fuses(logits: torch.Tensor, label: torch.Tensor, class_axis: int) -> bool:
    """The cases the Triton passes cover: half and single precision logits (float64
    stays with the native kernels, which accumulate in it), up to ``MAX_CLASSES``
    classes, outside ``torch.func`` (no batching rule) and without a gradient for a
    soft label (the passes give the logits' gradient only)."""
    return (
        logits.dtype in (torch.float16, torch.bfloat16, torch.float32)
        and logits.shape[class_axis] <= triton_launch.MAX_CLASSES
        and not in_torch_func(logits)
        and not (label.requires_grad and torch.is_grad_enabled())
    )


@torch.library.custom_op("jdt_array::fused_statistics", mutates_args=())
def _fused_statistics(
    logits: torch.Tensor,
    label: torch.Tensor,
    keep: torch.Tensor | None,
    class_axis: int,
    norm: float,
    ignore_index: int | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
           torch.Tensor]:  # fmt: skip
    """(|x|, |y|, |x - y|, max y) (B, C) and the cross-entropy sum and kept pixels
    (B,) of softmax(logits) against ``label``, in float32."""
    return triton_launch.statistics(logits, label, keep, class_axis, norm, ignore_index)


@_fused_statistics.register_fake
def _(logits, label, keep, class_axis, norm, ignore_index):
    b, c = logits.shape[0], logits.shape[class_axis]
    cards = [logits.new_empty((b, c), dtype=torch.float32) for _ in range(4)]
    return (*cards, *[logits.new_empty((b,), dtype=torch.float32) for _ in range(2)])


@torch.library.custom_op("jdt_array::fused_statistics_grad", mutates_args=())
def _fused_statistics_grad(
    logits: torch.Tensor,
    label: torch.Tensor,
    keep: torch.Tensor | None,
    g_prob_card: torch.Tensor,
    g_diff_card: torch.Tensor,
    g_ce: torch.Tensor | None,
    class_axis: int,
    norm: float,
    ignore_index: int | None,
) -> torch.Tensor:
    """The logits' gradient of the statistics weighted by their cotangents."""
    return triton_launch.gradient(logits, label, keep, g_prob_card, g_diff_card, g_ce,
                                  class_axis, norm, ignore_index)  # fmt: skip


@_fused_statistics_grad.register_fake
def _(logits, label, keep, g_prob_card, g_diff_card, g_ce, class_axis, norm,
      ignore_index):  # fmt: skip
    return triton_launch.gradient_buffer(logits, class_axis)


def _setup_context(ctx, inputs, output):
    logits, label, keep, class_axis, norm, ignore_index = inputs
    ctx.save_for_backward(logits, label, keep)
    ctx.options = (class_axis, norm, ignore_index)


def _backward(ctx, g_prob, g_label, g_diff, g_max, g_ce, g_count):
    logits, label, keep = ctx.saved_tensors
    if g_prob is None:
        g_prob = torch.zeros_like(g_diff) if g_diff is not None else None
    if g_diff is None:
        g_diff = torch.zeros_like(g_prob) if g_prob is not None else None
    if g_prob is None:  # only the cross-entropy is used
        shape = (logits.shape[0], logits.shape[ctx.options[0]])
        g_prob = g_diff = logits.new_zeros(shape, dtype=torch.float32)
    grad = torch.ops.jdt_array.fused_statistics_grad(
        logits, label, keep, g_prob, g_diff, g_ce, *ctx.options
    )
    return grad, None, None, None, None, None


_fused_statistics.register_autograd(_backward, setup_context=_setup_context)
