"""The functional PyTorch forms: ``value_and_grad`` by autograd, the JDT losses with a
lean hand-derived backward, and the ``reduce`` hook over ``torch.distributed``.

The loss math stays in the core; this module only connects it to autograd and to the
collectives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from ..._array import array_namespace, in_torch_func
from ..._cardinalities import label_vjp, statistics, statistics_vjp
from ..._kernels import kernels_for
from ..._kernels.fused import FusedCase
from ..._kernels.torch import autograd_value_and_grad as value_and_grad
from ...jdt import JDTOptions, loss_with_options, prepare

__all__ = ["BACKWARDS", "check_backward", "check_sync", "jdt_loss", "replica_sum",
           "value_and_grad"]  # fmt: skip

BACKWARDS = ("vjp", "autodiff")


class _LeanStatistics(torch.autograd.Function):
    """The (B, C) statistics of softmax(logits) with the hand-derived backward.

    Keeps the probabilities (not the pixel-level intermediates of an autograd tape) and
    writes the gradient into their memory, so the step allocates one logits-sized
    buffer in all, the gradient; a second backward (``retain_graph=True``) recomputes
    them. The small (B, C) rest of the loss, collectives included, is left to autograd.
    A soft label that requires grad gets its gradient too.
    """

    @staticmethod
    def forward(ctx, logits, label, keep_mask, options):
        inputs = prepare(logits, label, keep_mask, options)
        stats, residual = statistics(inputs)
        ctx.save_for_backward(logits, label, keep_mask)
        ctx.options = options
        # Attributes, not saved tensors: the backward releases (and overwrites) them.
        ctx.inputs, ctx.residual = inputs, residual
        if ctx.needs_input_grad[1]:  # a soft label to train: |y| depends on it
            ctx.mark_non_differentiable(stats.label_max)
        else:
            ctx.mark_non_differentiable(stats.label_card, stats.label_max)
        return tuple(stats)

    @staticmethod
    def backward(ctx, g_prob_card, g_label_card, g_diff_card, g_label_max):
        if torch.is_grad_enabled():  # create_graph=True: a derivative of this backward
            raise RuntimeError(
                "the hand-derived backward of jdt_loss(backward='vjp') (the JDTLoss "
                "modules' default) has no derivative of its own, so create_graph=True "
                "cannot give higher-order gradients; use backward='autodiff'"
            )
        logits, label, keep_mask = ctx.saved_tensors
        inputs, residual, ctx.inputs, ctx.residual = ctx.inputs, ctx.residual, None, None
        if inputs is None:  # a second backward: the first one used the probabilities
            inputs = prepare(logits, label, keep_mask, ctx.options, check_values=False)
        g_label = None
        if ctx.needs_input_grad[1]:  # before statistics_vjp overwrites the probabilities
            g_label = label_vjp(inputs, g_label_card, g_diff_card)
            # A (B, *spatial) label of one sigmoid channel was given the class axis.
            g_label = g_label.reshape(label.shape).to(label.dtype)
        grad = statistics_vjp(
            inputs, g_prob_card, g_diff_card, residual=residual, overwrite=True
        )
        return grad.to(logits.dtype), g_label, None, None


class _ReplicaSum(torch.autograd.Function):
    """``all_reduce`` (sum) that carries autograd.

    Every replica's loss depends on every replica's input, so the gradient of the
    sum is again the sum over replicas of the incoming gradients (as in the
    deprecated ``torch.distributed.nn.functional.all_reduce``).
    """

    @staticmethod
    def forward(ctx, value, group):
        ctx.group = group
        total = value.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=group)
        return total

    @staticmethod
    def backward(ctx, grad):
        total = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=ctx.group)
        return total, None


def replica_sum(process_group: Any = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The ``reduce`` hook of the core losses for ``torch.distributed``: a sum over
    the ranks of ``process_group`` (the default group for ``None``) with autograd.

    Raises:
        RuntimeError: ``torch.distributed`` is not initialised.
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "sync_stats=True sums the loss statistics over a torch.distributed process "
            "group, but torch.distributed is not initialised; call "
            "torch.distributed.init_process_group first, or use sync_stats=False"
        )
    return lambda value: _ReplicaSum.apply(value, process_group)


def jdt_loss(
    logits: torch.Tensor,
    label: torch.Tensor,
    *,
    keep_mask: torch.Tensor | None = None,
    class_weights: torch.Tensor | Sequence[float] | None = None,
    backward: str = "vjp",
    sync_stats: bool = False,
    process_group: Any = None,
    **options: Any,
) -> torch.Tensor:
    """:func:`jdt_array.jdt_loss` with a choice of backward pass and optional
    synchronisation across data-parallel processes; ``options`` are those of
    :class:`jdt_array.jdt.JDTOptions` (``class_axis``, ``mIoUD``, ... ``ignore_index``).

    ``backward="vjp"`` uses the hand-derived gradient for the pixel-level part: it keeps
    the probabilities and writes the gradient into their memory (one logits-sized
    buffer for the whole step); ``"autodiff"`` lets autograd record the forward pass.

    ``sync_stats=True`` sums the statistics over the ranks of ``process_group`` (the
    default group for ``None``) before the ratios, so every rank returns the loss of
    the global batch (the concatenation of the ranks' batches). The backward pass
    all-reduces the gradient too, so on each rank ``loss.backward()`` gives
    ``world_size`` times that rank's slice of the global-batch gradient: the gradient
    of the sum of the ranks' (equal) losses. ``DistributedDataParallel`` divides the
    summed parameter gradients by ``world_size``, so after its step the parameters move
    exactly as a single process would on the global batch; no scaling is needed, also
    when a per-rank mean loss such as cross-entropy is added. Every rank must call the
    loss (and its backward) the same number of times, as with any collective.
    """
    return loss_with(
        logits, label, JDTOptions(**options), keep_mask=keep_mask,
        class_weights=class_weights, backward=check_backward(backward),
        reduce=replica_sum(process_group) if check_sync(sync_stats, process_group)
        else None,
    )  # fmt: skip


def loss_with(
    logits: torch.Tensor,
    label: torch.Tensor,
    options: JDTOptions,
    *,
    keep_mask: torch.Tensor | None,
    class_weights: Any,
    backward: str,
    reduce: Callable | None,
) -> torch.Tensor:
    """:func:`jdt_loss` with checked arguments, its options as one :class:`JDTOptions`
    (for the modules, which check them once)."""
    # Inside torch.func transforms autograd.Function needs what the lean backward
    # cannot give (setup_context, a vmap rule): autodiff there.
    lean = backward == "vjp" and logits.requires_grad and not in_torch_func(logits)
    # The fused statistics have a lean backward of their own (a second pass).
    lean = lean and not _fused(logits, label, keep_mask, options)
    return loss_with_options(
        logits, label, options, keep_mask=keep_mask, class_weights=class_weights,
        reduce=reduce, statistics_fn=_LeanStatistics.apply if lean else None,
    )  # fmt: skip


def _fused(logits, label, keep_mask, options: JDTOptions) -> bool:
    """Whether the kernel set of these tensors computes their statistics in a fused
    kernel (``jdt.statistics_of`` asks the same)."""
    fused = kernels_for(array_namespace(logits)).fused
    if options.activation != "softmax" or fused is None:
        return False
    axis = options.class_axis % logits.ndim if logits.ndim else options.class_axis
    case = FusedCase(logits, label, keep_mask, axis, options.norm, options.ignore_index,
                     not label.is_floating_point())  # fmt: skip
    return fused.covers(case)


def check_backward(backward: Any) -> str:
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {BACKWARDS}, got {backward!r}")
    return backward


def check_sync(sync_stats: Any, process_group: Any) -> bool:
    """Check ``sync_stats`` and ``process_group``; ``sync_stats``."""
    if not isinstance(sync_stats, bool):
        raise TypeError(f"sync_stats must be a bool, got {sync_stats!r}")
    if process_group is not None and not sync_stats:
        raise ValueError("process_group is only used with sync_stats=True")
    return sync_stats
