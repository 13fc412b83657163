"""PyTorch adapter: autograd for ``value_and_grad``, a lean backward, ``nn.Module``s,
and statistics synchronised over ``torch.distributed`` for data-parallel training.

The loss math stays in the core; this module only connects it to autograd and to the
collectives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.distributed as dist

from .. import jdt as core
from .._validation import check_ignore_index
from ..jdt_grad import statistics_vjp
from .torch_losses import (  # noqa: F401  (re-exported: the family's modules)
    CEJDTLoss,
    CrossEntropyLoss,
    GeneralizedDiceLoss,
    KLDivLoss,
    LovaszHingeLoss,
    LovaszSoftmaxLoss,
)
from .torch_metrics import gather_statistics, sync_metrics  # noqa: F401

BACKWARDS = ("vjp", "autodiff")


def value_and_grad(
    loss_fn: Callable, logits: torch.Tensor, label: torch.Tensor, **options: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, d loss / d logits)`` by autograd; ``logits`` itself is left untouched."""
    x = logits.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(x, label, **options)
        (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


class _LeanStatistics(torch.autograd.Function):
    """The (B, C) statistics of softmax(logits) with the hand-derived backward.

    Keeps the probabilities (not the pixel-level intermediates of an autograd tape) and
    writes the gradient into their memory, so the step allocates one logits-sized
    buffer in all, the gradient; a second backward (``retain_graph=True``) recomputes
    them. The small (B, C) rest of the loss, collectives included, is left to autograd.
    """

    @staticmethod
    def forward(ctx, logits, label, keep_mask, setup):
        inputs = core.prepare(logits, label, keep_mask, *setup)
        if torch.compiler.is_compiling():  # a traced backward may not touch a dict
            inputs = inputs._replace(scratch=None)
        stats = inputs.statistics()
        ctx.save_for_backward(logits, label, keep_mask)
        ctx.setup = setup
        # An attribute, not a saved tensor: the backward releases (and overwrites) it.
        ctx.inputs = inputs
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
        inputs, ctx.inputs = ctx.inputs, None
        if inputs is None:  # a second backward: the first one used the probabilities
            inputs = core.prepare(logits, label, keep_mask, *ctx.setup, check_values=False)
        grad = statistics_vjp(inputs, g_prob_card, g_diff_card, overwrite=True)
        return grad.to(logits.dtype), None, None, None


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
    synchronisation across data-parallel processes.

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
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {BACKWARDS}, got {backward!r}")
    _check_sync(sync_stats, process_group)
    reduce = replica_sum(process_group) if sync_stats else None
    if backward == "autodiff" or not logits.requires_grad:
        return core.jdt_loss(
            logits, label, keep_mask=keep_mask, class_weights=class_weights,
            reduce=reduce, **options,
        )  # fmt: skip
    return core.jdt_loss_with_statistics(
        _LeanStatistics.apply, logits, label, keep_mask=keep_mask,
        class_weights=class_weights, reduce=reduce, **options,
    )  # fmt: skip


def _check_sync(sync_stats: Any, process_group: Any) -> None:
    if not isinstance(sync_stats, bool):
        raise TypeError(f"sync_stats must be a bool, got {sync_stats!r}")
    if process_group is not None and not sync_stats:
        raise ValueError("process_group is only used with sync_stats=True")


class JDTLoss(torch.nn.Module):
    """Drop-in replacement for the reference ``JDTLoss`` module (Wang et al. 2023).

    Same constructor and ``forward(logits, label, keep_mask=None)``; the options mean
    what they mean in :func:`jdt_array.jdt_loss`. Extra keyword-only arguments:
    ``class_axis`` (1 or -1), ``class_agnostic``, ``backward`` ("vjp" or "autodiff"),
    and ``sync_stats`` / ``process_group`` for data-parallel training (see
    :func:`jdt_loss` here: every rank gets the global-batch loss, and a
    ``DistributedDataParallel`` step equals the single-process step on the global
    batch). ``class_weights`` is a buffer, so it follows the module's device.
    """

    def __init__(
        self,
        mIoUD: float = 1.0,
        mIoUI: float = 0.0,
        mIoUC: float = 0.0,
        alpha: float = 1.0,
        beta: float = 1.0,
        gamma: float = 1.0,
        smooth: float = 1e-3,
        threshold: float = 0.01,
        norm: float = 1,
        log_loss: bool = False,
        ignore_index: int | None = None,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        active_classes_mode_hard: str = "PRESENT",
        active_classes_mode_soft: str = "ALL",
        *,
        class_axis: int = 1,
        class_agnostic: bool = False,
        backward: str = "vjp",
        sync_stats: bool = False,
        process_group: Any = None,
    ) -> None:
        super().__init__()
        self.options = dict(
            mIoUD=mIoUD, mIoUI=mIoUI, mIoUC=mIoUC, alpha=alpha, beta=beta, gamma=gamma,
            smooth=smooth, threshold=threshold, norm=norm, log_loss=log_loss,
            ignore_index=ignore_index, active_classes_mode_hard=active_classes_mode_hard,
            active_classes_mode_soft=active_classes_mode_soft, class_axis=class_axis,
            class_agnostic=class_agnostic,
        )  # fmt: skip
        # Check the options now rather than at the first batch.
        core.JDTOptions(**{k: v for k, v in self.options.items() if k in _OPTION_FIELDS})
        check_ignore_index(ignore_index)
        if backward not in BACKWARDS:
            raise ValueError(f"backward must be one of {BACKWARDS}, got {backward!r}")
        _check_sync(sync_stats, process_group)
        self.backward = backward
        # A plain attribute, not a buffer: a process group is no state to save.
        self.sync = {"sync_stats": sync_stats, "process_group": process_group}
        weights = None if class_weights is None else torch.as_tensor(class_weights)
        self.register_buffer("class_weights", weights)

    def forward(
        self,
        logits: torch.Tensor,
        label: torch.Tensor,
        keep_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        weights = self.class_weights
        if weights is not None:
            weights = weights.to(device=logits.device)
        return jdt_loss(
            logits, label, keep_mask=keep_mask, class_weights=weights,
            backward=self.backward, **self.sync, **self.options,
        )  # fmt: skip

    def extra_repr(self) -> str:
        shown = {**self.options, "sync_stats": self.sync["sync_stats"]}
        return ", ".join(f"{k}={v!r}" for k, v in shown.items())


_OPTION_FIELDS = set(core.JDTOptions.__dataclass_fields__)


class JaccardLoss(JDTLoss):
    """The Jaccard metric loss module: :class:`JDTLoss` with ``alpha = beta = 1``."""

    def __init__(self, **options: Any) -> None:
        super().__init__(alpha=1.0, beta=1.0, **options)


class DiceLoss(JDTLoss):
    """The Dice semimetric loss module: :class:`JDTLoss` with ``alpha = beta = 0.5``."""

    def __init__(self, **options: Any) -> None:
        super().__init__(alpha=0.5, beta=0.5, **options)


class TverskyLoss(JDTLoss):
    """The Tversky loss module: :class:`JDTLoss` with required ``alpha`` and ``beta``."""

    def __init__(self, *, alpha: float, beta: float, **options: Any) -> None:
        super().__init__(alpha=alpha, beta=beta, **options)
