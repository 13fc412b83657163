"""What every Keras loss of the package shares (see :mod:`jdt_array.backends.keras.
losses`): the base class that checks options at construction and refuses
``sample_weight``, the label conversion, and config values Keras can serialize."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from ...jdt import JDTOptions
from ._library import check_backend, keras

__all__ = ["JDTFamily", "PackageLoss", "Reduction", "keras_label", "loss_options"]

Reduction = str | None


class PackageLoss(keras.losses.Loss):
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


class JDTFamily(PackageLoss):
    def _check(self, options):
        JDTOptions.of(options)

    def _function(self):
        return _jdt_function()


# The constructor arguments that are Keras' or this module's, not the loss's options.
_NOT_OPTIONS = ("self", "__class__", "hard_label", "reduction", "name", "dtype")


def loss_options(arguments: dict[str, Any]) -> dict[str, Any]:
    """The loss options among a constructor's ``locals()``."""
    return {k: v for k, v in arguments.items() if k not in _NOT_OPTIONS}
