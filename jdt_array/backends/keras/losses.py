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

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from ...compound import ce_jdt_loss, generalized_dice_loss
from ...jdt import JDTOptions
from ...lovasz import lovasz_hinge_loss, lovasz_softmax_loss
from ._library import PACKAGE, check_backend, keras

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

Reduction = str | None


class _PackageLoss(keras.losses.Loss):
    """A loss of the package as a Keras loss: keyword options at construction, the
    functional form in ``call``."""

    # Options fixed by the class (Jaccard: alpha = beta = 1), not in its config.
    _fixed: dict[str, Any] = {}  # noqa: RUF012 (read only)

    def __init__(
        self,
        options: dict[str, Any],
        *,
        hard_label: bool | None,
        reduction: Reduction,
        name: str | None,
        dtype: Any,
    ) -> None:
        check_backend(type(self).__name__)
        if hard_label is not None and not isinstance(hard_label, bool):
            raise TypeError(f"hard_label must be None or a bool, got {hard_label!r}")
        self._check({**options, **self._fixed})
        super().__init__(
            name=name or _snake(type(self).__name__), reduction=reduction, dtype=dtype
        )
        self.options = {key: _serializable(value) for key, value in options.items()}
        self.hard_label = hard_label
        self._dtype_argument = dtype

    def _check(self, options: dict[str, Any]) -> None:
        """Check the scalar options now rather than at the first batch."""

    def _function(self) -> Callable:
        raise NotImplementedError

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        if sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} is one value for the whole batch (an average "
                f"over classes and images, not over samples), so a sample_weight (or "
                f"fit's class_weight) has no meaning for it; weight classes with "
                f"class_weights=, drop pixels with ignore_index="
            )
        return super().__call__(y_true, y_pred)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        label = keras_label(y_true, y_pred, self.options, self.hard_label)
        return self._function()(y_pred, label, **self._fixed, **self.options)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(self.options)
        config.update(hard_label=self.hard_label, dtype=_serializable(self._dtype_argument))
        return config


def keras_label(
    y_true: Any, y_pred: Any, options: dict[str, Any], hard_label: bool | None = None
) -> Any:
    """The label of a Keras loss call: Keras converts ``y_true`` to the loss's float
    dtype, so a hard label (class ids, 0/1 masks) is turned back into integers.

    ``hard_label=None`` decides by shape: with the softmax, a label without the class
    axis, (B, *spatial), or with a size-1 one, (B, *spatial, 1) as Keras' sparse
    losses take it, holds class ids (the size-1 axis is dropped), and a label shaped
    like ``y_pred`` holds probabilities; with ``activation="sigmoid"`` or ``None`` the
    label holds 0/1 masks (values are checked). ``True`` / ``False`` force integers /
    probabilities.
    """
    axis = options.get("class_axis", -1) % len(y_pred.shape)
    softmax = options.get("activation", "softmax") == "softmax"
    per_pixel = len(y_true.shape) == len(y_pred.shape) - 1
    squeezable = (
        len(y_true.shape) == len(y_pred.shape)
        and y_true.shape[axis] == 1
        and y_pred.shape[axis] != 1
    )
    if squeezable and (softmax or hard_label):
        y_true = keras.ops.squeeze(y_true, axis=axis)
        per_pixel = True
    hard = (per_pixel or not softmax) if hard_label is None else hard_label
    if hard and "float" in str(y_true.dtype):
        return keras.ops.cast(y_true, "int32")
    return y_true


def _serializable(value: Any) -> Any:
    """Class weights given as an array, and dtype policies, as config values."""
    if value is None or isinstance(value, (bool, int, float, str, list)):
        return value
    if isinstance(value, (tuple, range)):  # as JSON gives them back
        return [_serializable(v) for v in value]
    if isinstance(value, keras.DTypePolicy):
        return keras.saving.serialize_keras_object(value)
    return np.asarray(keras.ops.convert_to_numpy(value)).tolist()


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z][a-z])", "_", name).lower()


def _jdt_function() -> Callable:
    """The JDT loss with the lean hand-derived backward of the Keras backend's library
    (the core form on NumPy)."""
    backend = check_backend("JDTLoss")
    if backend == "torch":
        from ..torch import jdt_loss as torch_jdt_loss

        return torch_jdt_loss
    if backend == "jax":
        from ..jax import jdt_loss as jax_jdt_loss

        return jax_jdt_loss
    from ...jdt import jdt_loss

    return jdt_loss


class _JDTFamily(_PackageLoss):
    def _check(self, options):
        JDTOptions.of(options)

    def _function(self):
        return _jdt_function()


@keras.saving.register_keras_serializable(package=PACKAGE)
class JDTLoss(_JDTFamily):
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
        options = _options(locals())
        super().__init__(
            options, hard_label=hard_label, reduction=reduction, name=name, dtype=dtype
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class JaccardLoss(_JDTFamily):
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
        options = _options(locals())
        super().__init__(
            options, hard_label=hard_label, reduction=reduction, name=name, dtype=dtype
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class DiceLoss(_JDTFamily):
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
        options = _options(locals())
        super().__init__(
            options, hard_label=hard_label, reduction=reduction, name=name, dtype=dtype
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class TverskyLoss(_JDTFamily):
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
        options = _options(locals())
        super().__init__(
            options, hard_label=hard_label, reduction=reduction, name=name, dtype=dtype
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class CEJDTLoss(_PackageLoss):
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
        options = _options(locals())
        super().__init__(
            options, hard_label=hard_label, reduction=reduction, name=name, dtype=dtype
        )

    def _check(self, options):
        JDTOptions.of(options)

    def _function(self):
        return ce_jdt_loss


@keras.saving.register_keras_serializable(package=PACKAGE)
class GeneralizedDiceLoss(_PackageLoss):
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
        options = _options(locals())
        super().__init__(
            options, hard_label=hard_label, reduction=reduction, name=name, dtype=dtype
        )

    def _function(self):
        return generalized_dice_loss


@keras.saving.register_keras_serializable(package=PACKAGE)
class LovaszSoftmaxLoss(_PackageLoss):
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
        options = _options(locals())
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
class LovaszHingeLoss(_PackageLoss):
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
        options = _options(locals())
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


# The constructor arguments that are Keras' or this module's, not the loss's options.
_NOT_OPTIONS = ("self", "__class__", "hard_label", "reduction", "name", "dtype")


def _options(arguments: dict[str, Any]) -> dict[str, Any]:
    """The loss options among a constructor's ``locals()``."""
    return {k: v for k, v in arguments.items() if k not in _NOT_OPTIONS}
