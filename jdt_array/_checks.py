"""Every argument check, with errors that name the argument and the shapes involved."""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Callable, Iterable
from numbers import Integral, Real
from typing import Any

from . import _kernels
from ._array import eager_any, is_traced, on_accelerator
from ._pixels import kept_pixels

MODES = ("ALL", "PRESENT")


def caller_stacklevel() -> int:
    """The ``stacklevel`` of a warning that names the first frame outside the package
    (the user's call), wherever in the package it is raised."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("jdt_array"):
        frame, level = frame.f_back, level + 1
    return level


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value


def check_int(name: str, value: Any, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return value


def arguments(fn: Callable, logits: Any, label: Any, options: dict) -> dict[str, Any]:
    """The arguments ``fn(logits, label, **options)`` would see, defaults filled in:
    how a hand gradient takes exactly the options of its loss."""
    try:
        bound = inspect.signature(fn).bind(logits, label, **options)
    except TypeError as err:
        raise TypeError(f"{fn.__name__}: {err}") from None
    bound.apply_defaults()
    return bound.arguments


def check_reduce(reduce: Any) -> Callable | None:
    """The data-parallel ``reduce`` hook: None or a callable."""
    if reduce is not None and not callable(reduce):
        raise TypeError(
            f"reduce must be None or a callable that sums an array over the replicas, "
            f"got {reduce!r}"
        )
    return reduce


def check_real(name: str, value: Any, *, low: float, strict: bool = False) -> float:
    """``value`` as a float, checked to be a finite real number >= ``low`` (> if strict)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value < low or (strict and value == low):
        op = ">" if strict else ">="
        raise ValueError(f"{name} must be a finite number {op} {low}, got {value!r}")
    return value


def check_mode(name: str, value: Any) -> str:
    if value not in MODES:
        raise ValueError(f"{name} must be one of {MODES}, got {value!r}")
    return value


def check_classes(classes: Any) -> tuple[int, ...] | None:
    """``classes`` (None: every class) as a tuple of distinct non-negative class ids;
    whether they are below C is checked where C is known (:func:`check_class_ids`)."""
    if classes is None:
        return None
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable):
        raise TypeError(f"classes must be None or a sequence of class ids, got {classes!r}")
    ids = tuple(classes)
    for c in ids:
        if isinstance(c, bool) or not isinstance(c, Integral):
            raise TypeError(f"classes must hold int class ids, got {c!r} in {classes!r}")
    ids = tuple(int(c) for c in ids)
    if not ids:
        raise ValueError("classes must name at least one class id, got an empty sequence")
    if len(set(ids)) != len(ids):
        raise ValueError(
            f"classes must hold distinct class ids (no id may repeat), got {classes!r}"
        )
    if min(ids) < 0:
        raise ValueError(f"classes must hold class ids >= 0, got {classes!r}")
    return ids


def class_count(logits: Any, class_axis: int) -> int:
    """The number of classes along ``class_axis`` of ``logits``, after checking the
    axis (with the error of :func:`normalize_class_axis`)."""
    shape = tuple(logits.shape)
    return shape[normalize_class_axis(class_axis, len(shape), shape)]


def check_class_ids(classes: tuple[int, ...] | None, num_classes: int) -> None:
    """Raise when a class id of ``classes`` (checked by :func:`check_classes`) is not
    below ``num_classes``."""
    outside = [c for c in classes or () if c >= num_classes]
    if outside:
        raise ValueError(
            f"classes must be ids in [0, {num_classes}), got {outside} in "
            f"{list(classes)} (there are {num_classes} classes)"
        )


REDUCTIONS = ("mean", "none")


def check_reduction(reduction: Any, *, mIoUD: float, mIoUC: float) -> str:
    """``reduction`` checked: "mean", or "none" (the per-image losses of the image
    level, which needs the dataset and class levels off)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if reduction == "none" and (mIoUD > 0 or mIoUC > 0):
        raise ValueError(
            f"reduction='none' returns the per-image losses of the image level (B, C); "
            f"the dataset and class levels are not per image: set mIoUD=0 and mIoUC=0 "
            f"(got mIoUD={mIoUD!r}, mIoUC={mIoUC!r}) and mIoUI > 0"
        )
    return reduction


def check_ignore_index(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"ignore_index must be an int or None, got {value!r}")
    return value


def check_class_axis(class_axis: Any) -> int:
    if isinstance(class_axis, bool) or not isinstance(class_axis, int):
        raise TypeError(f"class_axis must be an int, got {class_axis!r}")
    return class_axis


def normalize_class_axis(
    class_axis: Any, ndim: int, logits_shape: tuple, *, name: str = "logits"
) -> int:
    """``class_axis`` as a non-negative axis of the array ``name``; axis 0 is the batch."""
    check_class_axis(class_axis)
    axis = class_axis + ndim if class_axis < 0 else class_axis
    if not 1 <= axis < ndim:
        raise ValueError(
            f"class_axis={class_axis} is not a non-batch axis of {name} with shape "
            f"{logits_shape}; use 1 for (B, C, ...) or -1 for (B, ..., C)"
        )
    return axis


def check_logits(xp: Any, logits: Any) -> None:
    if logits.ndim < 2:
        raise ValueError(
            f"logits must have shape (B, C, ...) with at least 2 axes, got shape "
            f"{tuple(logits.shape)}"
        )
    if not xp.isdtype(logits.dtype, "real floating"):
        raise TypeError(f"logits must be a floating array, got dtype {logits.dtype}")


def label_kind(xp: Any, logits: Any, label: Any, class_axis: int) -> bool:
    """Check the label against the logits; True for a hard (integer) label."""
    shape = tuple(logits.shape)
    hard_shape = shape[:class_axis] + shape[class_axis + 1 :]
    got = tuple(label.shape)
    if xp.isdtype(label.dtype, "integral"):
        if got != hard_shape:
            raise ValueError(
                f"a hard (integer) label must have the shape of logits without the "
                f"class axis: logits {shape} with class_axis={class_axis} needs label "
                f"{hard_shape}, got {got}{_class_axis_hint(shape, got, class_axis)}"
            )
        return True
    if xp.isdtype(label.dtype, "real floating"):
        if got == hard_shape:
            raise TypeError(
                f"label has the shape of logits {shape} without the class axis, "
                f"{got}, as class ids do, but a floating dtype {label.dtype}, which "
                f"means per-class probabilities shaped like the logits: cast class ids "
                f"to an integer dtype (label.long() in PyTorch, label.astype(int) in "
                f"NumPy and JAX)"
            )
        if got != shape:
            raise ValueError(
                f"a soft (floating) label must have the shape of logits {shape}, got "
                f"{got}{_class_axis_hint(shape, got, class_axis)}"
            )
        return False
    raise TypeError(
        f"label must be an integer array (hard label) or a floating array (soft "
        f"label), got dtype {label.dtype}"
    )


def _class_axis_hint(shape: tuple, label_shape: tuple, class_axis: int) -> str:
    """A hint when the label fits the logits with the other usual class axis."""
    last = len(shape) - 1
    for axis, value in ((last, -1), (1, 1)):
        if axis == class_axis:
            continue
        if label_shape == shape[:axis] + shape[axis + 1 :]:
            layout = "(B, ..., C)" if value == -1 else "(B, C, ...)"
            return (
                f"; the label fits logits with their classes on axis {value}: for "
                f"{layout} logits pass class_axis={value}"
            )
    return ""


def refuse_soft_label(xp: Any, label: Any, fn_name: str) -> None:
    """Raise for a floating label given to a loss defined for hard labels only."""
    if xp.isdtype(label.dtype, "real floating"):
        raise TypeError(
            f"{fn_name} needs a hard label (integer class ids), got a floating "
            f"{label.dtype} label: the Lovasz extension is defined for hard labels and "
            f"is not compatible with soft labels; use jdt_loss (e.g. jaccard_loss) for "
            f"soft labels"
        )


def check_keep_mask(xp: Any, keep_mask: Any, logits: Any, class_axis: int) -> None:
    shape = tuple(logits.shape)
    want = shape[:class_axis] + shape[class_axis + 1 :]
    if keep_mask.dtype != xp.bool:
        raise TypeError(f"keep_mask must be a boolean array, got dtype {keep_mask.dtype}")
    if tuple(keep_mask.shape) != want:
        raise ValueError(
            f"keep_mask must have the shape of logits {shape} without the class axis "
            f"{class_axis}, i.e. {want}, got {tuple(keep_mask.shape)}"
        )


def check_hard_label_values(
    xp: Any,
    label: Any,
    num_classes: int,
    ignore_index: int | None,
    keep: Any,
    kernels: Any = None,
) -> None:
    """Raise when a used pixel holds a class id outside [0, num_classes); ``kernels``
    is the kernel set of ``xp`` when the caller has it already."""
    if _within(xp, label, 0, num_classes, kernels or _kernels.kernels_for(xp)):
        return  # two reductions instead of a mask over every pixel: the common case
    bad = (label < 0) | (label >= num_classes)
    kept = kept_pixels(xp, label, ignore_index, keep)
    if kept is not None:
        bad = bad & kept
    # One channel under the softmax is a probability of 1 everywhere.
    hint = (" (a single-channel logit is binary segmentation: use "
            "activation='sigmoid')" if num_classes == 1 else "")  # fmt: skip
    message = (
        f"label holds class ids outside [0, {num_classes}) that are not "
        f"ignore_index={ignore_index!r}; pass ignore_index or keep_mask to drop those "
        f"pixels{hint}"
    )
    if eager_any(xp, bad, message):
        raise ValueError(
            f"label holds class ids outside [0, {num_classes}) that are not "
            f"ignore_index={ignore_index!r} (label min {int(xp.min(label))}, max "
            f"{int(xp.max(label))}); pass ignore_index or keep_mask to drop those "
            f"pixels{hint}"
        )


def _within(xp: Any, values: Any, low: int, stop: int, kernels: Any) -> bool:
    """Whether every value lies in [low, stop); False when that cannot be read
    (traced, or no values), which sends the caller to its elementwise check."""
    if None in values.shape or math.prod(values.shape) == 0:
        return False
    if on_accelerator(values):  # no reads there: the elementwise check
        return False
    lowest, highest = kernels.value_range(values)
    if is_traced(lowest):  # under jit even a concrete label's reductions are traced
        return False
    return int(lowest) >= low and int(highest) < stop


def check_soft_label_values(
    xp: Any, label: Any, keep: Any = None, class_axis: int = 1, *, name: str = "label"
) -> None:
    """Raise when a kept pixel of a soft label holds a value outside [0, 1] or NaN."""
    bad = ~((label >= 0) & (label <= 1))  # NaN compares False: bad
    if keep is not None:
        bad = bad & xp.expand_dims(keep, axis=class_axis)
    message = f"a soft {name} must hold probabilities in [0, 1] at every kept pixel"
    if eager_any(xp, bad, message):
        count = int(xp.sum(xp.astype(bad, xp.int64)))
        nans = int(xp.sum(xp.astype(bad & xp.isnan(label), xp.int64)))
        raise ValueError(
            f"a soft {name} must hold probabilities in [0, 1] at every kept pixel; "
            f"{count} values of the {name} with shape {tuple(label.shape)} are not "
            f"({nans} of them NaN)"
        )


def class_weights_array(
    xp: Any, class_weights: Any, num_classes: int, dtype: Any, dev: Any
):
    """``class_weights`` as an array of shape (C,), or None.

    Python numbers and sequences are checked as such, also while tracing (they are
    concrete); arrays only where they can be read.
    """
    if class_weights is None:
        return None
    if isinstance(class_weights, (Real, list, tuple)):
        _check_weight_values(class_weights)
    weights = xp.asarray(class_weights, dtype=dtype, device=dev)
    if tuple(weights.shape) != (num_classes,):
        raise ValueError(
            f"class_weights must have one weight per class, shape ({num_classes},), "
            f"got shape {tuple(weights.shape)}"
        )
    message = "class_weights must be finite and non-negative"
    if eager_any(xp, ~(xp.isfinite(weights) & (weights >= 0)), message):
        raise ValueError(message)
    return weights


def _check_weight_values(values: Any) -> None:
    flat = values if isinstance(values, (list, tuple)) else [values]
    for value in flat:
        if isinstance(value, bool) or not isinstance(value, Real):
            raise TypeError(f"class_weights must hold real numbers, got {value!r}")
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(
                f"class_weights must be finite and non-negative, got {value!r} in "
                f"{values!r}"
            )
