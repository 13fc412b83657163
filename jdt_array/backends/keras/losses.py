"""The losses of the package as ``keras.losses.Loss`` (see
:mod:`jdt_array.backends.keras`)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

import numpy as np

from ...compound import ce_jdt_loss
from ...jdt import JDTOptions, jdt_loss
from ...lovasz import lovasz_softmax_loss
from ._library import PACKAGE, check_backend, keras

__all__ = [
    "CEJDTLoss",
    "DiceLoss",
    "JDTLoss",
    "JaccardLoss",
    "LovaszSoftmaxLoss",
    "TverskyLoss",
    "keras_label",
]

# Arguments of the functional forms that are arrays per call, not options.
_PER_CALL = ("logits", "label", "keep_mask", "reduce", "misplaced", "jdt_options")


def _keyword_options(*functions: Callable) -> Mapping[str, inspect.Parameter]:
    """The keyword options of the functional forms, in order, first one wins."""
    found: dict[str, inspect.Parameter] = {}
    for fn in functions:
        for name, p in inspect.signature(fn).parameters.items():
            if name not in _PER_CALL and name not in found:
                found[name] = p
    return MappingProxyType(found)


def _serializable(value: Any) -> Any:
    """Class weights given as an array, as a list (for ``get_config``)."""
    if value is None or isinstance(value, (bool, int, float, str, list, tuple)):
        return value
    return np.asarray(keras.ops.convert_to_numpy(value)).tolist()


class _ArrayAPILoss(keras.losses.Loss):
    """A loss of the package as a Keras loss: keyword options at construction."""

    # The option names and defaults of the functional form (set per subclass).
    _parameters: Mapping[str, inspect.Parameter] = MappingProxyType({})
    # Options the class fixes (Jaccard: alpha = beta = 1).
    _fixed: Mapping[str, Any] = MappingProxyType({})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # help() and IDEs see every option (the constructor takes **options).
        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY,
                            default=-1 if p.name == "class_axis" else p.default)
                  for p in cls._parameters.values()]  # fmt: skip
        params += [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=None)
                   for n in ("name", "dtype")]  # fmt: skip
        cls.__signature__ = inspect.Signature(params)

    def __init__(self, *, name: str | None = None, dtype: Any = None, **options: Any):
        check_backend(type(self).__name__)
        unknown = sorted(set(options) - set(self._parameters))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unknown options {unknown}; it takes "
                f"{sorted(self._parameters)}"
            )
        config = {}
        for option, p in self._parameters.items():
            default = -1 if option == "class_axis" else p.default
            if option not in options and default is inspect.Parameter.empty:
                raise TypeError(f"{type(self).__name__} needs the option {option}")
            config[option] = _serializable(options.get(option, default))
        self._check(config)
        super().__init__(name=name or _snake(type(self).__name__), dtype=dtype)
        self.options = config
        self._dtype_argument = dtype

    def _check(self, config: dict[str, Any]) -> None:
        """Check the scalar options now rather than at the first batch."""

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        if sample_weight is not None:
            raise ValueError(
                f"{type(self).__name__} is one value for the whole batch and takes no "
                f"sample_weight; weight classes with class_weights=, drop pixels with "
                f"ignore_index="
            )
        y_pred = keras.ops.convert_to_tensor(y_pred, dtype=self.dtype)
        y_true = keras.ops.convert_to_tensor(y_true)  # its own dtype: class ids stay
        return self.call(y_true, y_pred)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        label = keras_label(y_true, y_pred, self.options)
        return self._function()(y_pred, label, **self._fixed, **self.options)

    def _function(self) -> Callable:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self._dtype_argument, **self.options}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> _ArrayAPILoss:
        return cls(**{k: v for k, v in config.items() if k != "reduction"})


def keras_label(y_true: Any, y_pred: Any, options: dict[str, Any]) -> Any:
    """Hard labels (B, *spatial, 1), as Keras' sparse losses take them, without their
    size-1 class axis; anything else as it is."""
    integral = "int" in str(y_true.dtype) or "bool" in str(y_true.dtype)
    axis = options.get("class_axis", -1) % len(y_pred.shape)
    one_channel_kept = options.get("activation", "softmax") != "softmax" and (
        y_pred.shape[axis] == 1
    )  # a sigmoid channel takes a label shaped like the logits anyway
    if (integral and len(y_true.shape) == len(y_pred.shape) and y_true.shape[axis] == 1
            and not one_channel_kept):  # fmt: skip
        return keras.ops.squeeze(y_true, axis=axis)
    return y_true


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
    return jdt_loss


_JDT_OPTIONS = _keyword_options(jdt_loss)


@keras.saving.register_keras_serializable(package=PACKAGE)
class JDTLoss(_ArrayAPILoss):
    """:func:`jdt_array.jdt_loss` as a Keras loss, with every option of it as a
    keyword argument (``class_axis=-1`` by default).

    ``call(y_true, y_pred)``: ``y_pred`` the logits (B, *spatial, C); ``y_true`` hard
    labels (B, *spatial) or (B, *spatial, 1), or a soft label shaped like ``y_pred``;
    with ``activation="sigmoid"`` 0/1 masks shaped like ``y_pred``. Returns the batch's
    loss (a scalar; ``sample_weight`` is refused).

    Examples:
        >>> import numpy as np
        >>> from jdt_array.backends.keras import JDTLoss
        >>> loss = JDTLoss(mIoUD=0.0, mIoUI=1.0, ignore_index=255, smooth=0.0)
        >>> logits = np.zeros((1, 2, 2, 2), "float32")  # (B, H, W, C): 0.5 each
        >>> labels = np.array([[[0, 1], [1, 255]]])
        >>> round(float(loss(labels, logits)), 4)  # model.compile(loss=loss, ...)
        0.675
    """

    _parameters = _JDT_OPTIONS

    def _check(self, config):
        JDTOptions.of({**config, **self._fixed})

    def _function(self):
        return _jdt_function()


@keras.saving.register_keras_serializable(package=PACKAGE)
class JaccardLoss(JDTLoss):
    """The Jaccard metric loss (:func:`jdt_array.jaccard_loss`) as a Keras loss."""

    _parameters = MappingProxyType(
        {k: v for k, v in _JDT_OPTIONS.items() if k not in ("alpha", "beta")}
    )
    _fixed = MappingProxyType({"alpha": 1.0, "beta": 1.0})


@keras.saving.register_keras_serializable(package=PACKAGE)
class DiceLoss(JDTLoss):
    """The Dice semimetric loss (:func:`jdt_array.dice_loss`) as a Keras loss."""

    _parameters = JaccardLoss._parameters
    _fixed = MappingProxyType({"alpha": 0.5, "beta": 0.5})


@keras.saving.register_keras_serializable(package=PACKAGE)
class TverskyLoss(JDTLoss):
    """The Tversky loss (:func:`jdt_array.tversky_loss`): ``alpha`` and ``beta``
    required."""

    _parameters = MappingProxyType({
        k: v.replace(default=inspect.Parameter.empty) if k in ("alpha", "beta") else v
        for k, v in _JDT_OPTIONS.items()
    })  # fmt: skip


@keras.saving.register_keras_serializable(package=PACKAGE)
class LovaszSoftmaxLoss(_ArrayAPILoss):
    """:func:`jdt_array.lovasz_softmax_loss` as a Keras loss (hard labels only)."""

    _parameters = _keyword_options(lovasz_softmax_loss)

    def _function(self):
        return lovasz_softmax_loss


@keras.saving.register_keras_serializable(package=PACKAGE)
class CEJDTLoss(_ArrayAPILoss):
    """:func:`jdt_array.ce_jdt_loss` (0.25 CE + 0.75 JDT by default, the FAQ's ratio;
    binary cross-entropy with ``activation="sigmoid"``) as a Keras loss, with the
    options of both parts."""

    _parameters = _keyword_options(ce_jdt_loss, jdt_loss)

    def _check(self, config):
        JDTOptions.of(config)

    def _function(self):
        return ce_jdt_loss
