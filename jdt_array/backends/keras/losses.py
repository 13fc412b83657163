"""The losses of the package as ``keras.losses.Loss`` (see
:mod:`jdt_array.backends.keras`).

Each class implements ``call(y_true, y_pred)``; Keras' own ``__call__`` converts the
inputs to the loss's dtype, applies a Keras mask and reduces. Every loss here is one
value per batch (the JDT losses average over classes and images the way the metrics
do, not over samples), so Keras' reductions leave it as it is and a ``sample_weight``
has no meaning: it is refused with a message naming what to use instead
(``class_weights`` for classes, ``ignore_index`` for pixels). Keras hands the labels
over as floats; class ids and 0/1 masks are turned back into integers (see
``keras_label``), so that they keep the meaning of a hard label.
"""

from __future__ import annotations

from typing import Any

from ...compound import ce_jdt_loss, generalized_dice_loss
from ...jdt import JDTOptions
from ...lovasz import lovasz_hinge_loss, lovasz_softmax_loss
from ._base import JDTFamily, PackageLoss, Reduction, keras_label, loss_options
from ._library import PACKAGE, keras

__all__ = [
    "CEJDTLoss",
    "DiceLoss",
    "GeneralizedDiceLoss",
    "JDTLoss",
    "JaccardLoss",
    "LovaszHingeLoss",
    "LovaszSoftmaxLoss",
    "TverskyLoss",
    "keras_label",
]


@keras.saving.register_keras_serializable(package=PACKAGE)
class JDTLoss(JDTFamily):
    """:func:`jdt_array.jdt_loss` as a Keras loss, with every option of it as a
    keyword argument (``class_axis=-1`` by default: channels last).

    ``call(y_true, y_pred)``: ``y_pred`` the logits (B, *spatial, C); ``y_true`` hard
    labels (B, *spatial) or (B, *spatial, 1), or a soft label shaped like ``y_pred``;
    with ``activation="sigmoid"`` 0/1 masks shaped like ``y_pred`` (see
    ``keras_label`` and ``hard_label``). Returns the batch's loss, a scalar
    (``sample_weight`` is refused: see the module).

    Examples:
        >>> import numpy as np
        >>> from jdt_array.backends.keras import JDTLoss
        >>> loss = JDTLoss(mIoUD=0.0, mIoUI=1.0, ignore_index=255, smooth=0.0)
        >>> logits = np.zeros((1, 2, 2, 2), "float32")  # (B, H, W, C): 0.5 each
        >>> labels = np.array([[[0, 1], [1, 255]]])
        >>> round(float(loss(labels, logits)), 4)  # model.compile(loss=loss, ...)
        0.675
    """

    def __init__(
        self,
        *,
        class_axis: int = -1,
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
        class_weights: Any = None,
        active_classes_mode_hard: str = "PRESENT",
        active_classes_mode_soft: str = "ALL",
        class_agnostic: bool = False,
        activation: str | None = "softmax",
        classes: list[int] | None = None,
        hard_label: bool | None = None,
        reduction: Reduction = "sum_over_batch_size",
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        options = loss_options(locals())
        super().__init__(
            options, hard_label=hard_label, reduction=reduction, name=name, dtype=dtype
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class JaccardLoss(JDTFamily):
    """The Jaccard metric loss (:func:`jdt_array.jaccard_loss`: alpha = beta = 1) as a
    Keras loss; options as :class:`JDTLoss`."""

    _fixed = {"alpha": 1.0, "beta": 1.0}  # noqa: RUF012 (read only)

    def __init__(
        self,
        *,
        class_axis: int = -1,
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
        classes: list[int] | None = None,
        hard_label: bool | None = None,
        reduction: Reduction = "sum_over_batch_size",
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        options = loss_options(locals())
        super().__init__(
            options, hard_label=hard_label, reduction=reduction, name=name, dtype=dtype
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class DiceLoss(JDTFamily):
    """The Dice semimetric loss (:func:`jdt_array.dice_loss`: alpha = beta = 0.5) as a
    Keras loss; options as :class:`JDTLoss`."""

    _fixed = {"alpha": 0.5, "beta": 0.5}  # noqa: RUF012 (read only)

    def __init__(
        self,
        *,
        class_axis: int = -1,
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
        classes: list[int] | None = None,
        hard_label: bool | None = None,
        reduction: Reduction = "sum_over_batch_size",
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        options = loss_options(locals())
        super().__init__(
            options, hard_label=hard_label, reduction=reduction, name=name, dtype=dtype
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class TverskyLoss(JDTFamily):
    """The Tversky loss (:func:`jdt_array.tversky_loss`) as a Keras loss: ``alpha``
    (false positives) and ``beta`` (false negatives) required; options as
    :class:`JDTLoss`."""

    def __init__(
        self,
        *,
        alpha: float,
        beta: float,
        class_axis: int = -1,
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
        classes: list[int] | None = None,
        hard_label: bool | None = None,
        reduction: Reduction = "sum_over_batch_size",
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        options = loss_options(locals())
        super().__init__(
            options, hard_label=hard_label, reduction=reduction, name=name, dtype=dtype
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class CEJDTLoss(PackageLoss):
    """:func:`jdt_array.ce_jdt_loss` (0.25 CE + 0.75 JDT by default, the FAQ's ratio;
    binary cross-entropy with ``activation="sigmoid"``) as a Keras loss, with the
    options of both parts (those of :class:`JDTLoss` and the two weights)."""

    def __init__(
        self,
        *,
        ce_weight: float = 0.25,
        jdt_weight: float = 0.75,
        class_axis: int = -1,
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
        class_weights: Any = None,
        active_classes_mode_hard: str = "PRESENT",
        active_classes_mode_soft: str = "ALL",
        class_agnostic: bool = False,
        activation: str | None = "softmax",
        classes: list[int] | None = None,
        hard_label: bool | None = None,
        reduction: Reduction = "sum_over_batch_size",
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        options = loss_options(locals())
        super().__init__(
            options, hard_label=hard_label, reduction=reduction, name=name, dtype=dtype
        )

    def _check(self, options):
        JDTOptions.of(options)

    def _function(self):
        return ce_jdt_loss


@keras.saving.register_keras_serializable(package=PACKAGE)
class GeneralizedDiceLoss(PackageLoss):
    """:func:`jdt_array.generalized_dice_loss` (Sudre et al. 2017) as a Keras loss."""

    def __init__(
        self,
        *,
        class_axis: int = -1,
        ignore_index: int | None = None,
        per_image: bool = False,
        smooth: float = 1e-3,
        activation: str | None = "softmax",
        weight_type: str = "square",
        classes: list[int] | None = None,
        hard_label: bool | None = None,
        reduction: Reduction = "sum_over_batch_size",
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        options = loss_options(locals())
        super().__init__(
            options, hard_label=hard_label, reduction=reduction, name=name, dtype=dtype
        )

    def _function(self):
        return generalized_dice_loss


@keras.saving.register_keras_serializable(package=PACKAGE)
class LovaszSoftmaxLoss(PackageLoss):
    """:func:`jdt_array.lovasz_softmax_loss` as a Keras loss (hard labels only)."""

    def __init__(
        self,
        *,
        class_axis: int = -1,
        classes: str | list[int] = "present",
        per_image: bool = False,
        ignore_index: int | None = None,
        reduction: Reduction = "sum_over_batch_size",
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        options = loss_options(locals())
        super().__init__(
            options, hard_label=True, reduction=reduction, name=name, dtype=dtype
        )

    def get_config(self):
        config = super().get_config()
        del config["hard_label"]  # always hard: not an option of this class
        return config

    def _function(self):
        return lovasz_softmax_loss


@keras.saving.register_keras_serializable(package=PACKAGE)
class LovaszHingeLoss(PackageLoss):
    """:func:`jdt_array.lovasz_hinge_loss` (binary: one score per pixel, ``y_pred``
    and ``y_true`` of one shape, 0/1 labels) as a Keras loss."""

    def __init__(
        self,
        *,
        per_image: bool = True,
        ignore_index: int | None = None,
        reduction: Reduction = "sum_over_batch_size",
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        options = loss_options(locals())
        super().__init__(
            options, hard_label=True, reduction=reduction, name=name, dtype=dtype
        )

    def call(self, y_true, y_pred):
        # One score per pixel: the label has the scores' shape, no class axis to drop.
        label = keras.ops.cast(y_true, "int32")
        return lovasz_hinge_loss(y_pred, label, **self.options)

    def get_config(self):
        config = super().get_config()
        del config["hard_label"]
        return config
