"""The fine-grained metrics as ``keras.metrics.Metric`` with a fixed-size state (see
:mod:`jdt_array.backends.keras`)."""

from __future__ import annotations

from typing import Any

from ...metrics import batch_statistics
from ...metrics._batch import MetricOptions
from ._library import PACKAGE, check_backend, keras

__all__ = [
    "FineGrainedMeanAccuracy",
    "FineGrainedMeanDice",
    "FineGrainedMeanIoU",
    "FineGrainedMetric",
]

LEVELS = ("D", "I", "C")
SCORES = ("IoU", "Dice", "Acc")


@keras.saving.register_keras_serializable(package=PACKAGE)
class FineGrainedMetric(keras.metrics.Metric):
    r"""One fine-grained score of Wang et al. (NeurIPS 2023) as a Keras metric, in
    percent, equal to the key ``m{score}{level}`` of
    :class:`jdt_array.metrics.FineGrainedMetrics` on the same images.

    * ``level="D"`` (dataset): per-class pixel counts summed over every image, one
      score per class, averaged over the classes that occur;
    * ``"I"`` (image): per image the mean score over the classes in its label, averaged
      over the images that have a kept pixel;
    * ``"C"`` (class): per class the mean score over the images whose label has it,
      averaged over classes.

    The state has a fixed size (C-vectors and two scalars), so ``update_state`` runs
    under ``jit``; worst-case (``mIoUI1``) and calibration metrics need every image's
    counts and live in the core class. The prediction of a pixel is the argmax of
    ``y_pred`` over ``class_axis`` (logits or probabilities), or ``y_pred`` itself for
    integer predictions (B, *spatial). Labels: class ids (B, *spatial) or
    (B, *spatial, 1); pixels of ``ignore_index``, and ids outside [0, C) (which the
    core class reports as errors but a compiled step cannot), are not counted.
    Counts are accumulated in the metric's float dtype (float32: exact up to 2^24
    pixels per class, within 1e-7 relative after that).

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
        class_axis: int = -1,
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        check_backend(type(self).__name__)
        self._metric_options = MetricOptions(num_classes, ignore_index, binary)
        if score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {score!r}")
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        super().__init__(name=name or f"m{score}{level}", dtype=dtype)
        self.num_classes, self.score, self.level = num_classes, score, level
        self.ignore_index, self.binary, self.class_axis = ignore_index, binary, class_axis
        vector = dict(shape=(num_classes,), initializer="zeros", dtype=self.dtype)
        scalar = dict(shape=(), initializer="zeros", dtype=self.dtype)
        self.intersection = self.add_variable(name="intersection", **vector)
        self.pred_count = self.add_variable(name="pred_count", **vector)
        self.label_count = self.add_variable(name="label_count", **vector)
        self.image_sum = self.add_variable(name="image_sum", **scalar)
        self.image_count = self.add_variable(name="image_count", **scalar)
        self.class_sum = self.add_variable(name="class_sum", **vector)
        self.class_count = self.add_variable(name="class_count", **vector)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        """Add a batch: ``y_true`` the labels, ``y_pred`` the logits or probabilities."""
        if sample_weight is not None:
            raise ValueError(f"{type(self).__name__} takes no sample_weight")
        ops = keras.ops
        y_pred, y_true = ops.convert_to_tensor(y_pred), ops.convert_to_tensor(y_true)
        if len(y_true.shape) == len(y_pred.shape) and y_true.shape[self.class_axis] == 1:
            y_true = ops.squeeze(y_true, axis=self.class_axis)
        stats = batch_statistics(
            y_pred, y_true, num_classes=self.num_classes, ignore_index=self.ignore_index,
            binary=self.binary, class_axis=self.class_axis,
        )  # fmt: skip
        tp, pred, label = (ops.cast(v, self.dtype) for v in stats[:3])
        for variable, value in ((self.intersection, tp), (self.pred_count, pred),
                                (self.label_count, label)):  # fmt: skip
            variable.assign(variable + ops.sum(value, axis=0))
        scores, present = _pair_scores(tp, pred, label, self.score, self.binary)
        evaluated = ops.sum(label, axis=1) > 0  # images with a kept pixel
        count = ops.sum(ops.cast(present, self.dtype), axis=1)
        total = ops.sum(ops.where(present, scores, 0.0), axis=1)
        per_image = ops.where(count > 0, total / ops.maximum(count, 1.0), 1.0)
        image_total = ops.sum(ops.where(evaluated, per_image, 0.0))
        self.image_sum.assign(self.image_sum + image_total)
        self.image_count.assign(self.image_count + ops.sum(ops.cast(evaluated, self.dtype)))
        present = present & evaluated[:, None]
        self.class_sum.assign(self.class_sum + ops.sum(ops.where(present, scores, 0.0), 0))
        self.class_count.assign(
            self.class_count + ops.sum(ops.cast(present, self.dtype), axis=0)
        )

    def result(self) -> Any:
        """The metric over every batch since the last reset, in percent."""
        ops = keras.ops
        if self.level == "D":
            scores, occurs = _pair_scores(
                self.intersection[None], self.pred_count[None], self.label_count[None],
                self.score, self.binary, dataset=True,
            )  # fmt: skip
            value = _mean_where(scores[0], occurs[0])
        elif self.level == "I":
            value = self.image_sum / self.image_count  # NaN before any image
        else:
            seen = self.class_count > 0
            value = _mean_where(self.class_sum / ops.maximum(self.class_count, 1.0), seen)
            if self.binary:  # no foreground anywhere: every image scores 1
                value = ops.where(ops.any(seen), value, 1.0)
        return 100.0 * value

    def get_config(self) -> dict[str, Any]:
        """The constructor's arguments, for saving the metric with a model."""
        return {
            "num_classes": self.num_classes, "score": self.score, "level": self.level,
            "ignore_index": self.ignore_index, "binary": self.binary,
            "class_axis": self.class_axis, "name": self.name, "dtype": self.dtype,
        }  # fmt: skip


def _pair_scores(tp, pred, label, score, binary, *, dataset=False):
    """(B, C') scores and where they count, by the rules of
    :class:`jdt_array.metrics.FineGrainedMetrics`: multi-class, a class counts where
    its label has it (at level D: where the score's denominator is not 0); binary,
    only the foreground, every score defined (both empty: 1, a false alarm: 0), counted
    where label or prediction has it (at level D: always)."""
    ops = keras.ops
    if binary:
        tp, pred, label = tp[:, 1:], pred[:, 1:], label[:, 1:]
    num, den = {
        "IoU": (tp, pred + label - tp),
        "Dice": (2.0 * tp, pred + label),
        "Acc": (tp, label),
    }[score]
    has = den > 0
    value = num / ops.where(has, den, 1.0)
    if not binary:
        return value, has if dataset else label > 0
    both_empty = (pred == 0) & (label == 0)
    value = ops.where(both_empty, 1.0, ops.where(has, value, 0.0))
    return value, ops.ones_like(has) if dataset else (pred > 0) | (label > 0)


def _mean_where(values, mask):
    """Mean of ``values`` where ``mask`` (NaN where nothing is)."""
    ops = keras.ops
    count = ops.sum(ops.cast(mask, values.dtype))
    return ops.sum(ops.where(mask, values, 0.0)) / count


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
        class_axis: int = -1,
        name: str | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__(
            num_classes, score=self._score, level=level, ignore_index=ignore_index,
            binary=binary, class_axis=class_axis, name=name, dtype=dtype,
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
