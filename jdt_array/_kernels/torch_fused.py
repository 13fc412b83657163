"""The fused Triton statistics of PyTorch tensors: :class:`TritonFused`, the
:class:`~jdt_array._kernels.fused.FusedKernel` of the kernel set
``JDT_ARRAY_TORCH_KERNEL=triton``, and the PyTorch custom operators it wraps.

CUDA tensors run the compiled kernels (``triton_jdt.py``, launched by
``triton_launch.py``); CPU tensors run them in Triton's interpreter when
``TRITON_INTERPRET=1`` (the tests) and raise otherwise.

The operators ``jdt_array::fused_statistics`` and ``jdt_array::fused_statistics_grad``
have fake (shape-only) implementations, so the meta device and
``torch.compile(fullgraph=True)`` go through them, and the first has an autograd
formula that launches the second pass: nothing pixel-sized is saved between the
passes. A backward that is itself differentiated (``create_graph=True``) takes its
gradient from autograd through the array-API form of the same statistics instead
(``fused.reference_statistics``), so second derivatives are exact; the second pass
has no derivative of its own.
"""

from __future__ import annotations

import math

import torch
from array_api_compat import torch as torch_namespace

from .._array import in_torch_func
from . import triton_launch
from .fused import FusedCase, FusedKernel, FusedStatistics, reference_statistics
from .torch import TorchKernels

__all__ = ["TritonFused", "TritonKernels"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32)
_INTEGERS = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


class TritonFused(FusedKernel):
    """The JDT statistics and the cross-entropy sums in two Triton passes."""

    name = "triton"

    def covers(self, case: FusedCase) -> bool:
        """Half and single precision logits (float64 stays with the native kernels,
        which accumulate in it), the class axis first or last, images of fewer than
        2^31 elements, an integer label of at most 64 bits or a soft label of a half or
        single precision, outside ``torch.func`` (no batching rule) and without a
        gradient for a soft label (the passes give the logits' gradient only)."""
        logits, label = case.logits, case.label
        b = logits.shape[0]
        image = math.prod(logits.shape) // b if b else 0
        return (
            logits.dtype in _FLOATS
            and case.class_axis in (1, logits.ndim - 1)
            and image <= triton_launch.MAX_IMAGE_ELEMENTS
            and label.dtype in (_INTEGERS if case.hard else _FLOATS)
            and (case.ignore_index is None or -(2**63) <= case.ignore_index < 2**63)
            and not in_torch_func(logits)
            and not (label.requires_grad and torch.is_grad_enabled())
        )

    def statistics(self, case: FusedCase) -> FusedStatistics:
        return FusedStatistics(*torch.ops.jdt_array.fused_statistics(
            case.logits, case.label, case.keep, case.class_axis, float(case.norm),
            case.ignore_index,
        ))  # fmt: skip

    def statistics_vjp(self, case, g_prob_card, g_diff_card, g_ce=None):
        return torch.ops.jdt_array.fused_statistics_grad(
            case.logits, case.label, case.keep, g_prob_card, g_diff_card, g_ce,
            case.class_axis, float(case.norm), case.ignore_index,
        )  # fmt: skip


class TritonKernels(TorchKernels):
    """The native PyTorch kernels with the JDT statistics (and, for ``ce_jdt_loss``,
    the cross-entropy) fused into two Triton passes over the logits."""

    fused = TritonFused()


# -- the custom operators --------------------------------------------------------------


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
    class_axis, norm, ignore_index = ctx.options
    shape = (logits.shape[0], logits.shape[class_axis])
    zeros = logits.new_zeros(shape, dtype=torch.float32)
    g_prob = zeros if g_prob is None else g_prob
    g_diff = zeros if g_diff is None else g_diff
    case = FusedCase(logits, label, keep, class_axis, norm, ignore_index,
                     not label.is_floating_point())  # fmt: skip
    if torch.is_grad_enabled():
        # create_graph=True: this backward will be differentiated. Its value and its
        # derivative come from autograd through the array-API form of the statistics.
        # (The cotangents as grad_outputs: their own history, through the loss back to
        # this operator, is not the statistics' and is not followed.)
        stats = reference_statistics(_NATIVE, case)
        outputs, cotangents = [stats.prob_card, stats.diff_card], [g_prob, g_diff]
        if g_ce is not None:
            outputs.append(stats.ce_sum)
            cotangents.append(g_ce)
        (grad,) = torch.autograd.grad(outputs, logits, cotangents, create_graph=True)
    else:
        grad = TritonFused().statistics_vjp(case, g_prob, g_diff, g_ce)
    return grad, None, None, None, None, None


_NATIVE = TorchKernels(torch_namespace)
_fused_statistics.register_autograd(_backward, setup_context=_setup_context)
