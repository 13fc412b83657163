"""``torch.nn.Module`` forms of every loss (re-exported by
:mod:`jdt_array.backends.torch`). Each module checks and stores its options and calls
the functional form; the JDT modules have the hand-derived backward by default, the
others autograd. The JDT and per-image Lovasz losses can be synchronised over
``torch.distributed`` (``sync_stats=True``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ...compound import CE_WEIGHT, JDT_WEIGHT, ce_jdt_loss, generalized_dice_loss
from ...cross_entropy import cross_entropy, kl_div
from ...jdt import JDTOptions
from ...lovasz import check_syncable, lovasz_hinge_loss, lovasz_softmax_loss
from ...named_losses import refuse_weights, weights_among
from .functional import check_backward, check_sync, loss_with, replica_sum


def _tensors_only(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    """A forward pre-hook: every array argument must be a tensor (a NumPy or JAX array
    would fail deep inside with an error about some attribute)."""
    named = [*zip(module.argument_names, args, strict=False), *kwargs.items()]
    for name, value in named:
        if value is not None and not isinstance(value, torch.Tensor):
            raise TypeError(
                f"{type(module).__name__} is a torch.nn.Module and takes torch.Tensor "
                f"arguments, but {name} is a {type(value).__module__}."
                f"{type(value).__qualname__}; convert it with torch.as_tensor, or call "
                f"the functional loss of jdt_array, which takes arrays of any library"
            )


class _TensorModule(torch.nn.Module):
    """A loss module whose ``forward`` checks that its arguments are tensors."""

    argument_names: tuple[str, ...] = ("logits", "label", "keep_mask")

    def __init__(self) -> None:
        super().__init__()
        self.register_forward_pre_hook(_tensors_only, with_kwargs=True)


def _buffer_of(weights: Any) -> torch.Tensor | None:
    """Class weights as a tensor for a buffer (so they follow the module's device)."""
    return None if weights is None else torch.as_tensor(weights)


def _on_device_of(weights: torch.Tensor | None, logits: torch.Tensor):
    return None if weights is None else weights.to(device=logits.device)


class JDTLoss(_TensorModule):
    """Drop-in replacement for the reference ``JDTLoss`` module (Wang et al. 2023).

    Same constructor and ``forward(logits, label, keep_mask=None)``; the options mean
    what they mean in :func:`jdt_array.jdt_loss`. Extra keyword-only arguments:
    ``class_axis`` (1 or -1), ``class_agnostic``, ``activation`` ("softmax",
    "sigmoid" for binary / multi-label, None for probabilities), ``classes`` (the
    class ids that enter the means), ``reduction`` ("mean", or "none" for the (B, C)
    per-image losses of the image level), ``backward`` ("vjp" or "autodiff"),
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
        activation: str | None = "softmax",
        classes: Sequence[int] | None = None,
        reduction: str = "mean",
        backward: str = "vjp",
        sync_stats: bool = False,
        process_group: Any = None,
    ) -> None:
        super().__init__()
        # The options are checked now rather than at the first batch.
        self.options = JDTOptions.of(locals())
        self.backward = check_backward(backward)
        check_sync(sync_stats, process_group)
        # A plain attribute, not a buffer: a process group is no state to save.
        self.sync = {"sync_stats": sync_stats, "process_group": process_group}
        self.register_buffer("class_weights", _buffer_of(class_weights))

    def forward(
        self,
        logits: torch.Tensor,
        label: torch.Tensor,
        keep_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The loss of ``logits`` against the label or target: a 0-d tensor."""
        sync_stats, group = self.sync["sync_stats"], self.sync["process_group"]
        return loss_with(
            logits, label, self.options, keep_mask=keep_mask,
            class_weights=_on_device_of(self.class_weights, logits),
            backward=self.backward, reduce=replica_sum(group) if sync_stats else None,
        )  # fmt: skip

    def extra_repr(self) -> str:
        shown = {**self.options.as_dict(), "sync_stats": self.sync["sync_stats"]}
        return ", ".join(f"{k}={v!r}" for k, v in shown.items())


class JaccardLoss(JDTLoss):
    """The Jaccard metric loss module: :class:`JDTLoss` with ``alpha = beta = 1``."""

    def __init__(self, **options: Any) -> None:
        refuse_weights("JaccardLoss", weights_among(options))
        super().__init__(alpha=1.0, beta=1.0, **options)


class DiceLoss(JDTLoss):
    """The Dice semimetric loss module: :class:`JDTLoss` with ``alpha = beta = 0.5``."""

    def __init__(self, **options: Any) -> None:
        refuse_weights("DiceLoss", weights_among(options))
        super().__init__(alpha=0.5, beta=0.5, **options)


class TverskyLoss(JDTLoss):
    """The Tversky loss module: :class:`JDTLoss` with required ``alpha`` and ``beta``."""

    def __init__(self, *, alpha: float, beta: float, **options: Any) -> None:
        super().__init__(alpha=alpha, beta=beta, **options)


class _Loss(_TensorModule):
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
        """The loss of ``logits`` against the label or target: a 0-d tensor."""
        return cross_entropy(logits, label, keep_mask=keep_mask, **self.options)


class KLDivLoss(_Loss):
    """:func:`jdt_array.kl_div`: T^2 KL(teacher || softmax(logits / T)) for distillation."""

    def __init__(self, *, temperature: float = 1.0, class_axis: int = 1) -> None:
        super().__init__(temperature=temperature, class_axis=class_axis)

    argument_names = ("logits", "target_prob", "keep_mask")

    def forward(self, logits, target_prob, keep_mask=None):
        """The loss of ``logits`` against the label or target: a 0-d tensor."""
        return kl_div(logits, target_prob, keep_mask=keep_mask, **self.options)


class CEJDTLoss(_Loss):
    """:func:`jdt_array.ce_jdt_loss`: CE + JDT, 0.25 : 0.75 by default (the FAQ's ratio).

    ``jdt_options`` are those of :func:`jdt_array.jdt_loss`; ``class_weights`` is a
    buffer, so it follows the module's device.
    """

    def __init__(
        self,
        *,
        ce_weight: float = CE_WEIGHT,
        jdt_weight: float = JDT_WEIGHT,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        **jdt_options: Any,
    ) -> None:
        super().__init__(ce_weight=ce_weight, jdt_weight=jdt_weight, **jdt_options)
        self.register_buffer("class_weights", _buffer_of(class_weights))

    def forward(self, logits, label, keep_mask=None):
        """The loss of ``logits`` against the label or target: a 0-d tensor."""
        weights = _on_device_of(self.class_weights, logits)
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
        activation: str | None = "softmax",
        weight_type: str = "square",
        classes: Sequence[int] | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__(
            ignore_index=ignore_index,
            class_axis=class_axis,
            per_image=per_image,
            smooth=smooth,
            activation=activation,
            weight_type=weight_type,
            classes=classes,
            reduction=reduction,
        )

    def forward(self, logits, label, keep_mask=None):
        """The loss of ``logits`` against the label or target: a 0-d tensor."""
        return generalized_dice_loss(logits, label, keep_mask=keep_mask, **self.options)


class _SyncedLoss(_Loss):
    """A loss module whose batch statistics can be summed over ``torch.distributed``."""

    def __init__(self, *, sync_stats: bool, process_group: Any, **options: Any) -> None:
        super().__init__(**options)
        check_sync(sync_stats, process_group)
        check_syncable(
            type(self).__name__, per_image=options["per_image"], synced=sync_stats
        )
        # A plain attribute, not a buffer: a process group is no state to save.
        self.sync = {"sync_stats": sync_stats, "process_group": process_group}

    def reduce(self):
        """The ``reduce`` hook of the core loss: None, or the sum over the ranks."""
        if not self.sync["sync_stats"]:
            return None
        return replica_sum(self.sync["process_group"])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, sync_stats={self.sync['sync_stats']!r}"


class LovaszSoftmaxLoss(_SyncedLoss):
    """:func:`jdt_array.lovasz_softmax_loss` (hard labels only).

    ``sync_stats=True`` (needs ``per_image=True``) sums the per-image losses and the
    image counts over the ranks of ``process_group`` (the default group for ``None``),
    so every rank returns the mean over the global batch. As with
    :class:`~jdt_array.backends.torch.JDTLoss`, each rank's gradient is ``world_size``
    times its slice of the global-batch gradient, and ``DistributedDataParallel``'s
    average makes the step that of one process on the global batch. The pooled loss
    (``per_image=False``) sorts over the whole global batch and cannot be synchronised
    cheaply: with ``sync_stats=True`` the constructor raises ``ValueError``.
    """

    def __init__(
        self,
        *,
        classes: str | Sequence[int] = "present",
        per_image: bool = False,
        ignore_index: int | None = None,
        class_axis: int = 1,
        sync_stats: bool = False,
        process_group: Any = None,
    ) -> None:
        super().__init__(
            classes=classes,
            per_image=per_image,
            ignore_index=ignore_index,
            class_axis=class_axis,
            sync_stats=sync_stats,
            process_group=process_group,
        )

    def forward(self, logits, label, keep_mask=None):
        """The loss of ``logits`` against the label or target: a 0-d tensor."""
        return lovasz_softmax_loss(
            logits, label, keep_mask=keep_mask, reduce=self.reduce(), **self.options
        )


class LovaszHingeLoss(_SyncedLoss):
    """:func:`jdt_array.lovasz_hinge_loss`: binary, one score per pixel.

    ``sync_stats`` and ``process_group`` as in :class:`LovaszSoftmaxLoss` (the default
    ``per_image=True`` syncs; ``per_image=False`` with ``sync_stats=True`` raises).
    """

    def __init__(
        self,
        *,
        per_image: bool = True,
        ignore_index: int | None = None,
        sync_stats: bool = False,
        process_group: Any = None,
    ) -> None:
        super().__init__(
            per_image=per_image,
            ignore_index=ignore_index,
            sync_stats=sync_stats,
            process_group=process_group,
        )

    def forward(self, logits, label, keep_mask=None):
        """The loss of ``logits`` against the label or target: a 0-d tensor."""
        return lovasz_hinge_loss(
            logits, label, keep_mask=keep_mask, reduce=self.reduce(), **self.options
        )
