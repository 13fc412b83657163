"""PyTorch adapter: autograd for ``value_and_grad``, a lean backward, ``nn.Module``s.

The loss math stays in the core; this module only connects it to autograd.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from .. import jdt as core
from .._validation import check_ignore_index
from ..jdt_grad import jdt_value_and_grad

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


class _JDTFunction(torch.autograd.Function):
    """The JDT loss with the hand-derived backward.

    Saves only the inputs and recomputes the softmax in the backward pass, instead of
    keeping the probabilities and every intermediate on the autograd tape.
    """

    @staticmethod
    def forward(ctx, logits, label, keep_mask, class_weights, options):
        ctx.save_for_backward(logits, label, keep_mask, class_weights)
        ctx.options = options
        return core.jdt_loss(
            logits, label, keep_mask=keep_mask, class_weights=class_weights, **options
        )

    @staticmethod
    def backward(ctx, grad_output):
        logits, label, keep_mask, class_weights = ctx.saved_tensors
        _, grad = jdt_value_and_grad(
            logits, label, keep_mask=keep_mask, class_weights=class_weights, **ctx.options
        )
        return grad * grad_output.to(grad.dtype), None, None, None, None


def jdt_loss(
    logits: torch.Tensor,
    label: torch.Tensor,
    *,
    keep_mask: torch.Tensor | None = None,
    class_weights: torch.Tensor | Sequence[float] | None = None,
    backward: str = "vjp",
    **options: Any,
) -> torch.Tensor:
    """:func:`jdt_array.jdt_loss` with a choice of backward pass.

    ``backward="vjp"`` uses the hand-derived gradient (saves only the inputs);
    ``"autodiff"`` lets autograd record the forward pass.
    """
    if backward not in BACKWARDS:
        raise ValueError(f"backward must be one of {BACKWARDS}, got {backward!r}")
    if backward == "autodiff" or not logits.requires_grad:
        return core.jdt_loss(
            logits, label, keep_mask=keep_mask, class_weights=class_weights, **options
        )
    if class_weights is not None and not isinstance(class_weights, torch.Tensor):
        class_weights = torch.as_tensor(class_weights, device=logits.device)
    return _JDTFunction.apply(logits, label, keep_mask, class_weights, options)


class JDTLoss(torch.nn.Module):
    """Drop-in replacement for the reference ``JDTLoss`` module (Wang et al. 2023).

    Same constructor and ``forward(logits, label, keep_mask=None)``; the options mean
    what they mean in :func:`jdt_array.jdt_loss`. Extra keyword-only arguments:
    ``class_axis`` (1 or -1), ``class_agnostic`` and ``backward`` ("vjp" or "autodiff").
    ``class_weights`` is a buffer, so it follows the module's device.
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
        self.backward = backward
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
            backward=self.backward, **self.options,
        )  # fmt: skip

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


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
