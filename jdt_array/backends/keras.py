"""Keras 3 adapter: the losses as ``keras.losses.Loss`` and the fine-grained metrics as
``keras.metrics.Metric``, for Keras' JAX and PyTorch backends.

On those backends Keras' tensors are JAX arrays and torch tensors, which the core
handles directly: a loss here is the functional form called on them (the JDT losses
through the lean backward of :mod:`jdt_array.backends.jax` / ``.torch``), so it runs
inside ``model.fit``, compiled or not. The TensorFlow backend has no array-API
namespace; there the constructors raise.

Keras conventions: ``call(y_true, y_pred)`` with ``y_pred`` the logits (or
probabilities with ``activation=None``), channels last (``class_axis=-1``), hard labels
(B, *spatial) or (B, *spatial, 1) as ``SparseCategoricalCrossentropy`` takes them, and
the labels' dtype kept (Keras' own losses cast labels to floats, which would turn class
ids into a soft label).

Example::

    import keras
    from jdt_array.backends.keras import CEJDTLoss, FineGrainedMeanIoU

    model.compile(optimizer="adam", loss=CEJDTLoss(ignore_index=255),
                  metrics=[FineGrainedMeanIoU(19, level="I", ignore_index=255)])
    model.fit(images, labels, epochs=2)      # images (B, H, W, 3), labels (B, H, W)
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

try:
    import keras
except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
    if err.name != "keras":  # Keras is there, its configured backend is not
        raise ImportError(
            f"Keras could not load its backend ({err.name} is missing); "
            f"jdt_array.backends.keras runs on Keras' JAX and PyTorch backends: set "
            f"KERAS_BACKEND=jax or KERAS_BACKEND=torch before importing keras",
            name=err.name,
        ) from err
    raise ImportError(
        "jdt_array.backends.keras needs Keras 3: pip install 'jdt-array[keras]'",
        name="keras",
    ) from err

import numpy as np

from ..compound import ce_jdt_loss
from ..jdt import JDTOptions, jdt_loss
from ..lovasz import lovasz_softmax_loss
from ..metrics import batch_statistics
from ..metrics._batch import MetricOptions

__all__ = [
    "CEJDTLoss",
    "DiceLoss",
    "FineGrainedMeanAccuracy",
    "FineGrainedMeanDice",
    "FineGrainedMeanIoU",
    "FineGrainedMetric",
    "JDTLoss",
    "JaccardLoss",
    "LovaszSoftmaxLoss",
    "TverskyLoss",
]

BACKENDS = ("jax", "torch", "numpy")
_PACKAGE = "jdt_array"
# Arguments of the functional forms that are arrays per call, not options.
_PER_CALL = ("logits", "label", "keep_mask", "reduce", "misplaced", "jdt_options")


def check_backend(owner: str) -> str:
    """The Keras backend, if the core can run on its tensors."""
    backend = keras.backend.backend()
    if backend not in BACKENDS:
        raise RuntimeError(
            f"{owner} runs on Keras' {', '.join(BACKENDS)} backends, whose tensors are "
            f"array-API arrays; the {backend!r} backend has none. Set KERAS_BACKEND=jax "
            f"or KERAS_BACKEND=torch before importing keras"
        )
    return backend


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
        from .torch import jdt_loss as torch_jdt_loss

        return torch_jdt_loss
    if backend == "jax":
        from .jax import jdt_loss as jax_jdt_loss

        return jax_jdt_loss
    return jdt_loss


_JDT_OPTIONS = _keyword_options(jdt_loss)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class JDTLoss(_ArrayAPILoss):
    """:func:`jdt_array.jdt_loss` as a Keras loss, with every option of it as a
    keyword argument (``class_axis=-1`` by default).

    ``call(y_true, y_pred)``: ``y_pred`` the logits (B, *spatial, C); ``y_true`` hard
    labels (B, *spatial) or (B, *spatial, 1), or a soft label shaped like ``y_pred``;
    with ``activation="sigmoid"`` 0/1 masks shaped like ``y_pred``. Returns the batch's
    loss (a scalar; ``sample_weight`` is refused). Example::

        model.compile(loss=JDTLoss(mIoUI=1.0, ignore_index=255), optimizer="adam")
    """

    _parameters = _JDT_OPTIONS

    def _check(self, config):
        JDTOptions.of({**config, **self._fixed})

    def _function(self):
        return _jdt_function()


@keras.saving.register_keras_serializable(package=_PACKAGE)
class JaccardLoss(JDTLoss):
    """The Jaccard metric loss (:func:`jdt_array.jaccard_loss`) as a Keras loss."""

    _parameters = MappingProxyType(
        {k: v for k, v in _JDT_OPTIONS.items() if k not in ("alpha", "beta")}
    )
    _fixed = MappingProxyType({"alpha": 1.0, "beta": 1.0})


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DiceLoss(JDTLoss):
    """The Dice semimetric loss (:func:`jdt_array.dice_loss`) as a Keras loss."""

    _parameters = JaccardLoss._parameters
    _fixed = MappingProxyType({"alpha": 0.5, "beta": 0.5})


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TverskyLoss(JDTLoss):
    """The Tversky loss (:func:`jdt_array.tversky_loss`): ``alpha`` and ``beta``
    required."""

    _parameters = MappingProxyType({
        k: v.replace(default=inspect.Parameter.empty) if k in ("alpha", "beta") else v
        for k, v in _JDT_OPTIONS.items()
    })  # fmt: skip


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LovaszSoftmaxLoss(_ArrayAPILoss):
    """:func:`jdt_array.lovasz_softmax_loss` as a Keras loss (hard labels only)."""

    _parameters = _keyword_options(lovasz_softmax_loss)

    def _function(self):
        return lovasz_softmax_loss


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CEJDTLoss(_ArrayAPILoss):
    """:func:`jdt_array.ce_jdt_loss` (0.25 CE + 0.75 JDT by default, the FAQ's ratio;
    binary cross-entropy with ``activation="sigmoid"``) as a Keras loss, with the
    options of both parts."""

    _parameters = _keyword_options(ce_jdt_loss, jdt_loss)

    def _check(self, config):
        JDTOptions.of(config)

    def _function(self):
        return ce_jdt_loss


# ---------------------------------------------------------------- metrics

LEVELS = ("D", "I", "C")
SCORES = ("IoU", "Dice", "Acc")


@keras.saving.register_keras_serializable(package=_PACKAGE)
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

    Example::

        model.compile(..., metrics=[FineGrainedMeanIoU(19, level="C", ignore_index=255)])
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
        config = super().get_config()
        del config["score"]  # the class fixes it
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FineGrainedMeanIoU(_OneScore):
    """mIoUD, mIoUI or mIoUC (``level``) as a Keras metric, in percent; see
    :class:`FineGrainedMetric`. Example::

        metrics=[FineGrainedMeanIoU(19, level="I", ignore_index=255)]
    """

    _score = "IoU"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FineGrainedMeanDice(_OneScore):
    """mDiceD, mDiceI or mDiceC (``level``); see :class:`FineGrainedMetric`."""

    _score = "Dice"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FineGrainedMeanAccuracy(_OneScore):
    """mAccD, mAccI or mAccC (``level``); see :class:`FineGrainedMetric`."""

    _score = "Acc"
