"""The options of the fine-grained metrics: what a batch's statistics count and which
classes the scores average."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import _checks as checks
from ._boundary import boundary_width

__all__ = ["ACTIVATIONS", "MetricOptions", "scored_mask"]

Array = Any

ACTIVATIONS = (None, "sigmoid")


@dataclass(frozen=True)
class MetricOptions:
    """The checked options that decide what :func:`batch_statistics` counts and which
    classes the scores average (``classes``: a sorted tuple, or None for all)."""

    num_classes: int
    ignore_index: int | None = None
    binary: bool = False
    num_bins: int = 10
    calibration: bool = False
    multilabel: bool = False
    threshold: float = 0.5
    activation: str | None = None
    classes: tuple[int, ...] | None = None
    boundary: bool = False
    dilation_ratio: float | None = 0.02
    boundary_width: int | None = None

    def __post_init__(self) -> None:
        checks.check_int("num_classes", self.num_classes, low=1)
        checks.check_int("num_bins", self.num_bins, low=1)
        checks.check_ignore_index(self.ignore_index)
        for name in ("binary", "calibration", "multilabel", "boundary"):
            checks.check_bool(name, getattr(self, name))
        if self.binary and self.num_classes != 2:
            raise ValueError(
                "binary=True scores the foreground class 1 of a two-class problem; "
                f"it needs num_classes=2, got num_classes={self.num_classes}"
            )
        if self.binary and self.multilabel:
            raise ValueError(
                "binary=True and multilabel=True exclude each other: a two-class map of "
                "class ids is binary, (B, C, ...) 0/1 labels are multi-label"
            )
        threshold = checks.check_real("threshold", self.threshold, low=0.0, strict=True)
        if threshold >= 1:
            raise ValueError(f"threshold must lie in (0, 1), got {self.threshold!r}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {ACTIVATIONS}, got {self.activation!r}"
            )
        if self.activation is not None and not self.multilabel:
            raise ValueError(
                f"activation={self.activation!r} applies to multi-label scores "
                "(multilabel=True); the argmax of multi-class scores needs none"
            )
        if self.multilabel and self.calibration:
            raise ValueError(
                "calibration=True is not defined for multilabel=True: the calibration "
                "errors of Wang et al. rank the classes of a softmax"
            )
        object.__setattr__(self, "classes", _checked_classes(self))
        if self.boundary:
            if self.multilabel:
                raise ValueError(
                    "boundary=True takes maps of class ids (multi-class or binary); "
                    "the boundary bands of multi-label masks are not computed"
                )
            # the width's arguments, checked on a one-pixel image (any shape would do)
            boundary_width(
                (1,), dilation_ratio=self.dilation_ratio,
                boundary_width=self.boundary_width,
            )  # fmt: skip

    def width(self, spatial_shape: tuple[int, ...]) -> int:
        """d, the width of the boundary bands of images of ``spatial_shape``."""
        return boundary_width(
            spatial_shape, dilation_ratio=self.dilation_ratio,
            boundary_width=self.boundary_width,
        )  # fmt: skip

    @property
    def calibration_classes(self) -> int:
        """C', the classes of the static calibration error: foreground only if binary."""
        return 1 if self.binary else self.num_classes

    @property
    def scored(self) -> tuple[int, ...]:
        """The classes whose scores enter the means: ``classes``, the foreground class 1
        if binary, else all."""
        if self.binary:
            return (1,)
        return tuple(range(self.num_classes)) if self.classes is None else self.classes

    @property
    def either(self) -> bool:
        """Whether a class counts as present where label *or* prediction has it (binary
        and multi-label: every class a binary problem) rather than where its label has
        it (multi-class)."""
        return self.binary or self.multilabel


def scored_mask(xp: Any, options: MetricOptions, dev: Any) -> Array:
    """(C,) booleans: the classes whose scores enter the means."""
    scored = set(options.scored)
    flags = [c in scored for c in range(options.num_classes)]
    return xp.asarray(flags, dtype=xp.bool, device=dev)


def _checked_classes(options: MetricOptions) -> tuple[int, ...] | None:
    """``classes`` checked and sorted; None when it is None or names every class."""
    classes, num_classes = options.classes, options.num_classes
    if classes is None:
        return None
    if options.binary:
        raise ValueError(
            "classes= cannot be combined with binary=True, which scores class 1 only"
        )
    ids = checks.check_classes(classes)
    checks.check_class_ids(ids, num_classes)
    ids = tuple(sorted(ids))
    return None if ids == tuple(range(num_classes)) else ids
