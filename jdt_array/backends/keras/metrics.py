"""The fine-grained metrics as ``keras.metrics.Metric`` with a fixed-size state (see
:mod:`jdt_array.backends.keras`).

The state is the core metric's compact state (:class:`jdt_array.metrics.CompactStatistics`,
O(C) sums), one ``add_variable`` per field of its layout; ``update_state`` adds what the
core's ``batch_state`` gives for the batch and ``result`` is the core's
``level_results`` on the variables, both array-API code that runs inside Keras'
compiled steps. No score is computed here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from array_api_compat import array_namespace

from ...metrics import CompactStatistics
from ...metrics import FineGrainedMetrics as _CoreMetrics
from ...metrics._summary import level_results, per_class_results
from ._library import PACKAGE, check_backend, keras

__all__ = [
    "FineGrainedMeanAccuracy",
    "FineGrainedMeanBoundaryIoU",
    "FineGrainedMeanDice",
    "FineGrainedMeanIoU",
    "FineGrainedMetric",
]

LEVELS = ("D", "I", "C")
SCORES = ("IoU", "Dice", "Acc", "BIoU")  # BIoU: boundary IoU (the core's mBIoU keys)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FineGrainedMetric(keras.metrics.Metric):
    r"""One fine-grained score of Wang et al. (NeurIPS 2023) as a Keras metric, in
    percent, equal to the key ``m{score}{level}`` of
    :class:`jdt_array.metrics.FineGrainedMetrics` on the same images and options.

    * ``level="D"`` (dataset): per-class pixel counts summed over every image, one
      score per class, averaged over the classes that occur;
    * ``"I"`` (image): per image the mean score over the classes in its label, averaged
      over the images that have a kept pixel;
    * ``"C"`` (class): per class the mean score over the images whose label has it,
      averaged over classes.

    ``classes``, ``binary`` and ``multilabel`` (with ``threshold`` and
    ``activation``) as in the core class. ``score="BIoU"`` is boundary IoU (the core's
    ``boundary=True``, keys ``mBIoU{level}``), its band width ``dilation_ratio`` of the
    image diagonal or ``boundary_width`` pixels. The state is the core's compact state:
    O(C) sums in ``add_variable``\ s (integer counts in int64, or int32 where the
    backend has no int64: JAX without x64, exact up to 2^31 - 1 pixels per class;
    sums of per-image scores in float64, float32 there), so ``update_state`` and
    ``result`` run under ``jit``; the worst cases (``mIoUI1``) and calibration need
    every image's counts and live in the core class. ``per_class()`` gives the core's
    per-class scores, (C,) tensors.

    The prediction of a pixel is the argmax of ``y_pred`` over ``class_axis`` (logits
    or probabilities), or ``y_pred`` itself for integer predictions (B, *spatial).
    Labels: class ids (B, *spatial) or, beside scores or integer predictions without
    that axis, (B, *spatial, 1) (multi-label: shaped like ``y_pred``). Pixels of
    ``ignore_index``, and ids outside [0, C) (which the core class reports as errors
    but a compiled step cannot), are not counted. ``sample_weight`` is refused.

    Examples:
        >>> import numpy as np
        >>> from jdt_array.backends.keras import FineGrainedMeanIoU
        >>> metric = FineGrainedMeanIoU(3, level="C", ignore_index=255)
        >>> pred = np.array([[[0, 1], [2, 2]]])  # class ids (B, H, W), or logits
        >>> metric.update_state(np.array([[[0, 1], [2, 1]]]), pred)
        >>> round(float(metric.result()), 2)  # classes 0, 1, 2: IoU 1, 0.5, 0.5
        66.67
    """

    def __init__(
        self,
        num_classes: int,
        *,
        score: str = "IoU",
        level: str = "D",
        ignore_index: int | None = None,
        binary: bool = False,
        classes: Iterable[int] | None = None,
        multilabel: bool = False,
        threshold: float = 0.5,
        activation: str | None = None,
        dilation_ratio: float | None = 0.02,
        boundary_width: int | None = None,
        class_axis: int = -1,
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        check_backend(type(self).__name__)
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        self._core = _CoreMetrics(
            num_classes, ignore_index=ignore_index, binary=binary, classes=classes,
            multilabel=multilabel, threshold=threshold, activation=activation,
            compact=True, boundary=score == "BIoU", dilation_ratio=dilation_ratio,
            boundary_width=boundary_width,
        )  # fmt: skip
        self.dilation_ratio, self.boundary_width = dilation_ratio, boundary_width
        super().__init__(name=name or f"m{score}{level}", dtype=dtype)
        self.num_classes, self.score, self.level = num_classes, score, level
        self.ignore_index, self.binary, self.class_axis = ignore_index, binary, class_axis
        self.classes = None if classes is None else [int(c) for c in classes]
        self.multilabel, self.threshold, self.activation = multilabel, threshold, activation
        counts, sums = _state_dtypes()
        self._state = {
            name: self.add_variable(
                shape=field.shape,
                initializer="zeros",
                name=name,
                dtype=counts if field.exact else sums,
            )
            for name, field in self._core.layout.fields.items()
        }

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Add a batch: ``y_true`` the labels, ``y_pred`` the logits or probabilities."""
        if sample_weight is not None:
            raise ValueError(f"{type(self).__name__} takes no sample_weight")
        ops = keras.ops
        y_pred, y_true = ops.convert_to_tensor(y_pred), ops.convert_to_tensor(y_true)
        y_pred, y_true = self._shapes(y_pred, y_true)
        part = self._core.batch_state(y_pred, y_true, class_axis=self.class_axis)
        for name, variable in self._state.items():
            variable.assign(variable + ops.cast(getattr(part, name), variable.dtype))

    def _shapes(self, y_pred: Any, y_true: Any) -> tuple[Any, Any]:
        """Drop the singleton class axis of a Keras-style (B, *spatial, 1) label (or of
        such integer predictions): only where the other array lacks that axis, so that
        integer predictions and labels of width-1 images, both (B, H, 1), stay as
        they are."""
        if self.multilabel:
            return y_pred, y_true
        pred_ndim = len(y_pred.shape) - (0 if _is_integer(y_pred) else 1)
        if len(y_true.shape) == pred_ndim + 1:
            y_true = _squeezed(y_true, self.class_axis, "y_true")
        elif _is_integer(y_pred) and len(y_pred.shape) == len(y_true.shape) + 1:
            y_pred = _squeezed(y_pred, self.class_axis, "y_pred")
        return y_pred, y_true

    def _variables_state(self) -> CompactStatistics:
        ops = keras.ops
        return CompactStatistics(
            **{name: ops.convert_to_tensor(v) for name, v in self._state.items()}
        )

    def result(self) -> Any:
        """The score of the images so far, in percent (NaN before any image)."""
        state = self._variables_state()
        xp = array_namespace(state.counts)
        value = level_results(xp, state, self._core.options)[f"m{self.score}{self.level}"]
        return keras.ops.cast(value, self.dtype)  # NaN before any image

    def per_class(self) -> dict[str, Any]:
        """The core's per-class scores of the images so far (see
        :meth:`jdt_array.metrics.FineGrainedMetrics.per_class`), (C,) tensors in percent."""
        state = self._variables_state()
        xp = array_namespace(state.counts)
        return per_class_results(xp, state, self._core.options)

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, for saving the metric with a model."""
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, score=self.score, level=self.level,
            ignore_index=self.ignore_index, binary=self.binary, classes=self.classes,
            multilabel=self.multilabel, threshold=self.threshold,
            activation=self.activation, dilation_ratio=self.dilation_ratio,
            boundary_width=self.boundary_width, class_axis=self.class_axis,
        )  # fmt: skip
        return config


def _state_dtypes() -> tuple[str, str]:
    """The dtypes of the counts and of the float sums: int64 and float64, unless the
    backend lacks them (JAX without x64)."""
    if keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            return "int32", "float32"
    return "int64", "float64"


def _is_integer(x: Any) -> bool:
    return keras.backend.standardize_dtype(x.dtype).startswith(("int", "uint", "bool"))


def _squeezed(x: Any, axis: int, name: str) -> Any:
    """``x`` without its singleton ``axis``."""
    if x.shape[axis] != 1:
        raise ValueError(
            f"{name} with shape {tuple(x.shape)} has one axis more than the other input, "
            f"which must be a class axis of size 1 at class_axis={axis}"
        )
    return keras.ops.squeeze(x, axis=axis)


class _OneScore(FineGrainedMetric):
    """A :class:`FineGrainedMetric` of one fixed score."""

    _score = "IoU"

    def __init__(
        self,
        num_classes: int,
        *,
        level: str = "D",
        ignore_index: int | None = None,
        binary: bool = False,
        classes: Iterable[int] | None = None,
        multilabel: bool = False,
        threshold: float = 0.5,
        activation: str | None = None,
        dilation_ratio: float | None = 0.02,
        boundary_width: int | None = None,
        class_axis: int = -1,
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            num_classes, score=self._score, level=level, ignore_index=ignore_index,
            binary=binary, classes=classes, multilabel=multilabel, threshold=threshold,
            activation=activation, dilation_ratio=dilation_ratio,
            boundary_width=boundary_width, class_axis=class_axis, name=name, dtype=dtype,
        )  # fmt: skip

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, for saving the metric with a model."""
        config = super().get_config()
        del config["score"]  # the class fixes it
        return config


@keras.saving.register_keras_serializable(package=PACKAGE)
class FineGrainedMeanIoU(_OneScore):
    """mIoUD, mIoUI or mIoUC (``level``) as a Keras metric, in percent; see
    :class:`FineGrainedMetric`, e.g. in
    ``model.compile(..., metrics=[FineGrainedMeanIoU(19, level="I")])``.
    """

    _score = "IoU"


@keras.saving.register_keras_serializable(package=PACKAGE)
class FineGrainedMeanDice(_OneScore):
    """mDiceD, mDiceI or mDiceC (``level``); see :class:`FineGrainedMetric`."""

    _score = "Dice"


@keras.saving.register_keras_serializable(package=PACKAGE)
class FineGrainedMeanAccuracy(_OneScore):
    """mAccD, mAccI or mAccC (``level``); see :class:`FineGrainedMetric`."""

    _score = "Acc"


@keras.saving.register_keras_serializable(package=PACKAGE)
class FineGrainedMeanBoundaryIoU(_OneScore):
    """Boundary IoU, mBIoUD, mBIoUI or mBIoUC (``level``), its band width
    ``dilation_ratio`` of the image diagonal (or ``boundary_width`` pixels); see
    :class:`FineGrainedMetric` and the core's ``boundary=True``."""

    _score = "BIoU"
