"""``torch.nn.Module`` forms of the rest of the loss family (re-exported by
:mod:`jdt_array.backends.torch`). Each module stores its options and calls the
array-API function; gradients come from autograd."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..compound import ce_jdt_loss, generalized_dice_loss
from ..cross_entropy import cross_entropy, kl_div
from ..lovasz import lovasz_hinge_loss, lovasz_softmax_loss


class _Loss(torch.nn.Module):
    """A loss module: keyword options fixed at construction, arrays at ``forward``."""

    def __init__(self, **options: Any) -> None:
        super().__init__()
        self.options = options

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items())


class CrossEntropyLoss(_Loss):
    """:func:`jdt_array.cross_entropy` (hard or soft labels; ``gamma`` > 0: focal)."""

    def __init__(
        self, *, ignore_index: int | None = None, class_axis: int = 1, gamma: float = 0.0
    ) -> None:
        super().__init__(ignore_index=ignore_index, class_axis=class_axis, gamma=gamma)

    def forward(self, logits, label, keep_mask=None):
        return cross_entropy(logits, label, keep_mask=keep_mask, **self.options)


class KLDivLoss(_Loss):
    """:func:`jdt_array.kl_div`: T^2 KL(teacher || softmax(logits / T)) for distillation."""

    def __init__(self, *, temperature: float = 1.0, class_axis: int = 1) -> None:
        super().__init__(temperature=temperature, class_axis=class_axis)

    def forward(self, logits, target_prob, keep_mask=None):
        return kl_div(logits, target_prob, keep_mask=keep_mask, **self.options)


class CEJDTLoss(_Loss):
    """:func:`jdt_array.ce_jdt_loss`: CE + JDT, 0.25 : 0.75 by default (the FAQ's ratio).

    ``jdt_options`` are those of :func:`jdt_array.jdt_loss`; ``class_weights`` is a
    buffer, so it follows the module's device.
    """

    def __init__(
        self,
        *,
        ce_weight: float = 0.25,
        jdt_weight: float = 0.75,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        **jdt_options: Any,
    ) -> None:
        super().__init__(ce_weight=ce_weight, jdt_weight=jdt_weight, **jdt_options)
        weights = None if class_weights is None else torch.as_tensor(class_weights)
        self.register_buffer("class_weights", weights)

    def forward(self, logits, label, keep_mask=None):
        weights = self.class_weights
        if weights is not None:
            weights = weights.to(device=logits.device)
        return ce_jdt_loss(
            logits, label, keep_mask=keep_mask, class_weights=weights, **self.options
        )


class GeneralizedDiceLoss(_Loss):
    """:func:`jdt_array.generalized_dice_loss` (Sudre et al. 2017)."""

    def __init__(
        self,
        *,
        ignore_index: int | None = None,
        class_axis: int = 1,
        per_image: bool = False,
        smooth: float = 1e-3,
    ) -> None:
        super().__init__(
            ignore_index=ignore_index,
            class_axis=class_axis,
            per_image=per_image,
            smooth=smooth,
        )

    def forward(self, logits, label, keep_mask=None):
        return generalized_dice_loss(logits, label, keep_mask=keep_mask, **self.options)


class LovaszSoftmaxLoss(_Loss):
    """:func:`jdt_array.lovasz_softmax_loss` (hard labels only)."""

    def __init__(
        self,
        *,
        classes: str | Sequence[int] = "present",
        per_image: bool = False,
        ignore_index: int | None = None,
        class_axis: int = 1,
    ) -> None:
        super().__init__(
            classes=classes,
            per_image=per_image,
            ignore_index=ignore_index,
            class_axis=class_axis,
        )

    def forward(self, logits, label, keep_mask=None):
        return lovasz_softmax_loss(logits, label, keep_mask=keep_mask, **self.options)


class LovaszHingeLoss(_Loss):
    """:func:`jdt_array.lovasz_hinge_loss`: binary, one score per pixel."""

    def __init__(self, *, per_image: bool = True, ignore_index: int | None = None) -> None:
        super().__init__(per_image=per_image, ignore_index=ignore_index)

    def forward(self, logits, label, keep_mask=None):
        return lovasz_hinge_loss(logits, label, keep_mask=keep_mask, **self.options)


__all__ = [
    "CEJDTLoss",
    "CrossEntropyLoss",
    "GeneralizedDiceLoss",
    "KLDivLoss",
    "LovaszHingeLoss",
    "LovaszSoftmaxLoss",
]
