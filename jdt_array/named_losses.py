"""The named JDT losses: the Jaccard metric loss (alpha = beta = 1), the Dice
semimetric loss (alpha = beta = 0.5) and the Tversky loss (alpha, beta given), each
:func:`jdt_array.jdt_loss` with its options listed in its signature.

References:
    Zifu Wang, Xuefei Ning, Matthew B. Blaschko. Jaccard Metric Losses: Optimizing the
    Jaccard Index with Soft Labels. NeurIPS 2023.
    Zifu Wang, Teodora Popordanoska, Jeroen Bertels, Robin Lemmens, Matthew B. Blaschko.
    Dice Semimetric Losses: Optimizing the Dice Score with Soft Labels. MICCAI 2023.
    Seyed Sadegh Mohseni Salehi, Deniz Erdogmus, Ali Gholipour. Tversky Loss Function
    for Image Segmentation Using 3D Fully Convolutional Deep Networks. MLMI 2017.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import _checks as checks
from ._array import Array
from .jdt import JDTOptions, jdt_value_and_grad, loss_of, prepare_jdt

__all__ = [
    "dice_loss",
    "dice_value_and_grad",
    "jaccard_loss",
    "jaccard_value_and_grad",
    "refuse_weights",
    "tversky_loss",
    "weights_among",
]


def jaccard_loss(
    logits: Array,
    label: Array,
    *,
    keep_mask: Array | None = None,
    class_axis: int = 1,
    mIoUD: float = 1.0,
    mIoUI: float = 0.0,
    mIoUC: float = 0.0,
    gamma: float = 1.0,
    smooth: float = 1e-3,
    threshold: float = 0.01,
    norm: float = 1,
    log_loss: bool = False,
    ignore_index: int | None = None,
    class_weights: Any = None,
    active_classes_mode_hard: str = "PRESENT",
    active_classes_mode_soft: str = "ALL",
    class_agnostic: bool = False,
    activation: str | None = "softmax",
    classes: Sequence[int] | None = None,
    reduction: str = "mean",
    reduce: Callable[[Array], Array] | None = None,
    **misplaced: Any,
) -> Array:
    """The Jaccard metric loss: :func:`jdt_loss` with ``alpha = beta = 1``; optimizes
    the IoU. Every option means what it means there.

    Examples:
        >>> import numpy as np
        >>> import jdt_array
        >>> logits = np.zeros((1, 2, 2, 2))  # (B, C, H, W): 0.5 for each class
        >>> label = np.array([[[0, 1], [1, 255]]])  # class ids; 255: unlabelled
        >>> loss = jdt_array.jaccard_loss(logits, label, ignore_index=255, smooth=0.0)
        >>> round(float(loss), 4)  # 1 - mean(IoU 0.25, IoU 0.4)
        0.675

    Raises:
        TypeError: ``alpha`` or ``beta`` (fixed here; use :func:`tversky_loss`), an
            unknown option; as :func:`jdt_loss` otherwise.
    """
    refuse_weights("jaccard_loss", misplaced)
    return _named(locals(), alpha=1.0, beta=1.0)


def dice_loss(
    logits: Array,
    label: Array,
    *,
    keep_mask: Array | None = None,
    class_axis: int = 1,
    mIoUD: float = 1.0,
    mIoUI: float = 0.0,
    mIoUC: float = 0.0,
    gamma: float = 1.0,
    smooth: float = 1e-3,
    threshold: float = 0.01,
    norm: float = 1,
    log_loss: bool = False,
    ignore_index: int | None = None,
    class_weights: Any = None,
    active_classes_mode_hard: str = "PRESENT",
    active_classes_mode_soft: str = "ALL",
    class_agnostic: bool = False,
    activation: str | None = "softmax",
    classes: Sequence[int] | None = None,
    reduction: str = "mean",
    reduce: Callable[[Array], Array] | None = None,
    **misplaced: Any,
) -> Array:
    """The Dice semimetric loss: :func:`jdt_loss` with ``alpha = beta = 0.5``;
    optimizes the Dice score. Every option means what it means there.

    Examples:
        >>> import numpy as np
        >>> import jdt_array
        >>> logits = np.zeros((1, 1, 2, 2))  # one channel: sigmoid(0) = 0.5
        >>> mask = np.array([[[1, 0], [0, 0]]])  # binary foreground mask (B, H, W)
        >>> loss = jdt_array.dice_loss(logits, mask, activation="sigmoid", smooth=0.0)
        >>> round(float(loss), 4)  # 1 - 2 * 0.5 / (2 + 1)
        0.6667

    Raises:
        TypeError: ``alpha`` or ``beta`` (fixed here; use :func:`tversky_loss`), an
            unknown option; as :func:`jdt_loss` otherwise.
    """
    refuse_weights("dice_loss", misplaced)
    return _named(locals(), alpha=0.5, beta=0.5)


def tversky_loss(
    logits: Array,
    label: Array,
    *,
    alpha: float,
    beta: float,
    keep_mask: Array | None = None,
    class_axis: int = 1,
    mIoUD: float = 1.0,
    mIoUI: float = 0.0,
    mIoUC: float = 0.0,
    gamma: float = 1.0,
    smooth: float = 1e-3,
    threshold: float = 0.01,
    norm: float = 1,
    log_loss: bool = False,
    ignore_index: int | None = None,
    class_weights: Any = None,
    active_classes_mode_hard: str = "PRESENT",
    active_classes_mode_soft: str = "ALL",
    class_agnostic: bool = False,
    activation: str | None = "softmax",
    classes: Sequence[int] | None = None,
    reduction: str = "mean",
    reduce: Callable[[Array], Array] | None = None,
) -> Array:
    """The Tversky loss: :func:`jdt_loss` with required ``alpha`` (false positives)
    and ``beta`` (false negatives) weights; every other option as there.

    Examples:
        >>> import numpy as np
        >>> import jdt_array
        >>> logits = np.zeros((1, 2, 2, 2))  # 0.5 for each class
        >>> label = np.array([[[0, 1], [1, 1]]])
        >>> misses_cost_more = jdt_array.tversky_loss(logits, label, alpha=0.3, beta=0.7)
        >>> alarms_cost_more = jdt_array.tversky_loss(logits, label, alpha=0.7, beta=0.3)
        >>> bool(misses_cost_more > alarms_cost_more)  # the prediction misses more
        True
    """
    return _named(locals(), alpha=alpha, beta=beta)


def _named(arguments: Mapping[str, Any], *, alpha: float, beta: float) -> Array:
    """A named JDT loss from its function's ``locals()`` and its fixed weights."""
    options = JDTOptions.of({**arguments, "alpha": alpha, "beta": beta})
    inputs = prepare_jdt(
        arguments["logits"], arguments["label"], arguments["keep_mask"], options,
        arguments["class_weights"],
    )  # fmt: skip
    return loss_of(inputs, options, reduce=checks.check_reduce(arguments["reduce"]))


def refuse_weights(name: str, misplaced: Mapping[str, Any]) -> None:
    """The error for options a named loss does not take: ``alpha`` and ``beta`` are
    fixed by the name (and belong to :func:`tversky_loss`)."""
    if not misplaced:
        return
    weights = sorted(set(misplaced) & {"alpha", "beta"})
    if weights:
        raise TypeError(
            f"{name} fixes alpha and beta (got {', '.join(weights)}); for other weights "
            f"of false positives and negatives use tversky_loss(logits, label, "
            f"alpha=..., beta=...)"
        )
    raise TypeError(
        f"{name} got unexpected keyword arguments {sorted(misplaced)}; its options are "
        f"those of jdt_loss"
    )


def jaccard_value_and_grad(
    logits: Array, label: Array, **options: Any
) -> tuple[Array, Array]:
    """:func:`jaccard_loss` and its gradient, by hand (see :func:`jdt_value_and_grad`)."""
    refuse_weights("jaccard_loss", weights_among(options))
    return jdt_value_and_grad(logits, label, alpha=1.0, beta=1.0, **options)


def dice_value_and_grad(logits: Array, label: Array, **options: Any) -> tuple[Array, Array]:
    """:func:`dice_loss` and its gradient, by hand (see :func:`jdt_value_and_grad`)."""
    refuse_weights("dice_loss", weights_among(options))
    return jdt_value_and_grad(logits, label, alpha=0.5, beta=0.5, **options)


def weights_among(options: Mapping[str, Any]) -> dict[str, Any]:
    """The ``alpha`` and ``beta`` among ``options`` (for :func:`refuse_weights`)."""
    return {k: v for k, v in options.items() if k in ("alpha", "beta")}
