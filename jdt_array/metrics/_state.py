"""The state of the fine-grained metrics: the arrays it holds, how batches, shards and
processes combine, and its form on the host.

Two layouts, both tables of :class:`Field` (shape, integer or float, one row per
image or summed) from which every adapter derives its state instead of listing names:

* **per image** (the default): the fields of :class:`~jdt_array.metrics.BatchStatistics`,
  one row of counts per image (``intersection``, ``pred_count``, ``label_count`` (C,),
  ``bad_label``, ``bad_prediction``, ``kept_count``; with calibration ``ece_gap`` (K,)
  and ``sce_image``), concatenated over batches and processes, and the per-class
  calibration gaps ``sce_gap`` summed. Every metric, worst cases included.
* **compact** (``compact=True``): :class:`CompactStatistics`, sums of O(C) size whatever
  the number of images, added over batches and processes. Every key but the worst
  cases.

A *count set* (:data:`COUNT_SETS`) is three per-image count fields (intersection,
predicted, labelled) from which one family of scores is computed and reported under
the keys ``m{prefix}{score}{level}``. Another family (boundary counts, say) is one more
entry there, its three fields in ``BatchStatistics`` and in the table of
:func:`batch_fields`: the compact layout, the summary, the adapters and the
collectives follow from the tables.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from array_api_compat import to_device

from .._array import device, namespace_of
from ._options import MetricOptions
from ._scores import SCORES, float_dtype, masked_sum, pair_levels
from ._statistics import BatchStatistics

__all__ = [
    "COUNT_SETS",
    "CompactStatistics",
    "CountSet",
    "Field",
    "StateLayout",
    "append_part",
    "is_per_image",
    "same_place",
]

Array = Any
State = Any  # a BatchStatistics or a CompactStatistics


class Field(NamedTuple):
    """One array of a metric state."""

    shape: tuple[int, ...]  # trailing shape (after the image axis of a per-image field)
    exact: bool  # integer counts (int64 on the host) or float sums (float64)
    per_image: bool  # one row per image, concatenated; or summed over images


class CountSet(NamedTuple):
    """Three per-image count fields and the scores computed from them."""

    prefix: str  # keys m{prefix}{score}{level}, per_class keys {prefix}{score}{level}
    fields: tuple[str, str, str]  # |pred = label = c|, |pred = c|, |label = c| (B, C)
    keys: tuple[str, ...]  # the scores (of SCORES) reported
    option: str | None  # the MetricOptions flag that turns it on; None: always


COUNT_SETS = (
    CountSet("", ("intersection", "pred_count", "label_count"), SCORES, None),
    # boundary IoU (Cheng et al., CVPR 2021): the IoU of the classes' boundary bands
    CountSet(
        "B",
        ("boundary_intersection", "boundary_pred_count", "boundary_label_count"),
        ("IoU",),
        "boundary",
    ),
)


def count_sets(options: MetricOptions) -> tuple[CountSet, ...]:
    """The count sets these options compute."""
    return tuple(s for s in COUNT_SETS if s.option is None or getattr(options, s.option))


class CompactStatistics(NamedTuple):
    """The compact state: sums over images, O(C) whatever their number; P count sets,
    S = 3 scores (Acc, IoU, Dice), C classes, K bins. Everything adds up over batches,
    shards and processes."""

    counts: Array  # (P, 3, C) |pred = label = c|, |pred = c|, |label = c| over images
    bad_label: Array  # () kept pixels whose label is no class id
    bad_prediction: Array  # () pixels with no valid prediction
    kept_count: Array  # () kept pixels (multi-label: entries)
    images: Array  # () images seen
    evaluated: Array  # () images with a kept pixel
    image_sums: Array  # (P, S) sum over the images of level I of each image's mean
    image_counts: Array  # (P,) images of level I
    class_sums: Array  # (P, S, C) sum of the scores of the present (image, class) pairs
    class_counts: Array  # (P, C) images where each class is present
    seen_sums: Array  # (P, S, C) the same over pairs where label or prediction has it
    seen_counts: Array  # (P, C) (a false alarm scoring 0)
    ece_gap: Array | None = None  # (K,) #correct - sum of confidences, per bin
    sce_gap: Array | None = None  # (C', K) the same per class
    ece_image_sum: Array | None = None  # () sum of the images' expected calibration errors
    sce_image_sum: Array | None = None  # () sum of the images' static calibration errors
    sce_images: Array | None = None  # () images of SCEI (a scored class in the label)


# The fields of BatchStatistics summed over images; all others have one row per image.
_BATCH_SUMMED = frozenset({"sce_gap"})


def is_per_image(state: State, name: str) -> bool:
    """Whether field ``name`` of ``state`` has one row per image (concatenated over
    batches and processes) or is summed over them."""
    return isinstance(state, BatchStatistics) and name not in _BATCH_SUMMED


def batch_fields(o: MetricOptions) -> dict[str, Field | None]:
    """The fields of :class:`BatchStatistics` under ``o`` (None: not computed)."""
    C, K, calibration = o.num_classes, o.num_bins, o.calibration
    count, one = ((C,), True), ((), True)
    table = {
        "intersection": count,
        "pred_count": count,
        "label_count": count,
        "bad_label": one,
        "bad_prediction": one,
        "ece_gap": ((K,), False) if calibration else None,
        "sce_image": ((), False) if calibration else None,
        "sce_gap": ((o.calibration_classes, K), False) if calibration else None,
        "kept_count": one,
    }
    for name in COUNT_SETS[1].fields:  # the boundary counts
        table[name] = count if o.boundary else None
    return {
        name: None if spec is None else Field(*spec, name not in _BATCH_SUMMED)
        for name, spec in table.items()
    }


def compact_fields(o: MetricOptions) -> dict[str, Field | None]:
    """The fields of :class:`CompactStatistics` under ``o`` (None: not computed)."""
    C, K, P, S = o.num_classes, o.num_bins, len(count_sets(o)), len(SCORES)
    counts, sums, one, total = (True, False), (False, False), ((), True, False), \
        ((), False, False)  # fmt: skip
    table = {
        "counts": Field((P, 3, C), *counts),
        "bad_label": Field(*one),
        "bad_prediction": Field(*one),
        "kept_count": Field(*one),
        "images": Field(*one),
        "evaluated": Field(*one),
        "image_sums": Field((P, S), *sums),
        "image_counts": Field((P,), *counts),
        "class_sums": Field((P, S, C), *sums),
        "class_counts": Field((P, C), *counts),
        "seen_sums": Field((P, S, C), *sums),
        "seen_counts": Field((P, C), *counts),
        "ece_gap": Field((K,), *sums),
        "sce_gap": Field((o.calibration_classes, K), *sums),
        "ece_image_sum": Field(*total),
        "sce_image_sum": Field(*total),
        "sce_images": Field(*one),
    }
    calibration = ("ece_gap", "sce_gap", "ece_image_sum", "sce_image_sum", "sce_images")
    return {
        name: None if name in calibration and not o.calibration else field
        for name, field in table.items()
    }


def compact_of(
    xp: Any, stats: BatchStatistics, options: MetricOptions
) -> CompactStatistics:
    """The compact state of the images of ``stats``: their per-image scores summed.

    Array-API code without host reads or data-dependent shapes: it runs on the
    batch's device, under ``jax.jit`` and inside Keras' compiled steps.
    """
    evaluated = stats.kept_count > 0
    sets = count_sets(options)
    levels = [
        pair_levels(xp, *(getattr(stats, f) for f in s.fields), evaluated, options)
        for s in sets
    ]
    dtype = float_dtype(xp, stats.intersection)

    def stacked(fn):
        return xp.stack([fn(level) for level in levels])

    compact = CompactStatistics(
        counts=xp.stack(
            [xp.stack([xp.sum(getattr(stats, f), axis=0) for f in s.fields]) for s in sets]
        ),
        bad_label=xp.sum(stats.bad_label),
        bad_prediction=xp.sum(stats.bad_prediction),
        kept_count=xp.sum(stats.kept_count),
        images=xp.asarray(
            evaluated.shape[0], dtype=stats.kept_count.dtype, device=device(evaluated)
        ),
        evaluated=xp.count_nonzero(evaluated),
        image_sums=stacked(lambda v: masked_sum(xp, v.image_values, v.image_in, 1)),
        image_counts=stacked(lambda v: xp.count_nonzero(v.image_in)),
        class_sums=stacked(lambda v: masked_sum(xp, v.scores, v.present, 1)),
        class_counts=stacked(lambda v: xp.count_nonzero(v.present, axis=0)),
        # where only the prediction has the class, IoU and Dice are 0 and Acc, NaN in
        # the multi-class rule, counts as a miss (0)
        seen_sums=stacked(
            lambda v: masked_sum(xp, xp.where(xp.isnan(v.scores), 0.0, v.scores), v.seen, 1)
        ),
        seen_counts=stacked(lambda v: xp.count_nonzero(v.seen, axis=0)),
    )
    if not options.calibration:
        return compact
    return _with_calibration_sums(xp, compact, stats, evaluated, levels[0], dtype, options)


def _with_calibration_sums(xp, compact, stats, evaluated, region, dtype, options):
    """``compact`` with the sums of the calibration fields of ``stats``."""
    pixels = xp.astype(stats.kept_count, dtype)
    ece_gap = xp.astype(stats.ece_gap, dtype)
    ece_image = xp.sum(xp.abs(ece_gap), axis=1) / xp.where(evaluated, pixels, 1.0)
    # SCEI averages the images whose label has a scored class (binary: every image)
    sce_in = evaluated & xp.any(region.present | options.binary, axis=1)
    return compact._replace(
        ece_gap=xp.sum(ece_gap, axis=0),
        sce_gap=xp.astype(stats.sce_gap, dtype),
        ece_image_sum=masked_sum(xp, ece_image, evaluated, 0),
        sce_image_sum=masked_sum(xp, xp.astype(stats.sce_image, dtype), sce_in, 0),
        sce_images=xp.count_nonzero(sce_in),
    )


class StateLayout:
    """What a metric state holds under ``options`` (per image, or compact) and how its
    parts combine. The core metric and every adapter take their state from here:
    ``fields`` to declare it, ``empty`` for a process without images, ``of_batch`` for
    what one batch adds, ``combine`` for batches, shards and processes.
    """

    def __init__(self, options: MetricOptions, *, compact: bool) -> None:
        self.options, self.compact = options, compact
        self.type = CompactStatistics if compact else BatchStatistics
        table = (compact_fields if compact else batch_fields)(options)
        #: The fields this state holds, in the order of its type.
        self.fields: dict[str, Field] = {
            name: field for name, field in table.items() if field is not None
        }

    def empty(self) -> State:
        """The state of no image, in NumPy: int64 counts, float64 sums; per-image fields
        with 0 rows, e.g. (0, C), so that a process without images gathers like the
        others."""
        return self.type(
            **{
                name: np.zeros(
                    ((0,) if f.per_image else ()) + f.shape,
                    dtype=np.int64 if f.exact else np.float64,
                )
                for name, f in self.fields.items()
            }
        )

    def of_batch(self, stats: BatchStatistics) -> State:
        """What the batch ``stats`` adds to the state, on its device."""
        if not self.compact:
            return stats
        xp = namespace_of(intersection=stats.intersection)
        return compact_of(xp, stats, self.options)

    def combine(self, parts: list[State]) -> State:
        """One state from parts on one device: per-image fields concatenated, the rest
        added."""
        if len(parts) == 1:
            return parts[0]
        xp = namespace_of(first=_first(parts[0]))
        values = {}
        for name in self.type._fields:
            column = [getattr(p, name) for p in parts]
            if column[0] is None:
                values[name] = None
            elif is_per_image(parts[0], name):
                values[name] = xp.concat(column, axis=0)
            else:
                values[name] = sum(column[1:], column[0])
        return self.type(**values)

    def to_host(self, state: State) -> State:
        """``state`` as NumPy arrays: int64 counts, float64 sums."""
        return self.type(*(None if v is None else _numpy(v) for v in state))

    def rows(self, state: State) -> int:
        """Images held one row each (0 for a compact state)."""
        return 0 if self.compact else int(state.intersection.shape[0])

    def check(self, state: Any, what: str = "stats") -> None:
        """Raise unless ``state`` is a state of this layout (trailing shapes included)."""
        kind = self.type.__name__
        if not isinstance(state, self.type):
            raise TypeError(f"{what} must be a {kind}, got {type(state).__name__}")
        o = self.options
        if not self.compact and state.ece_gap is not None and not o.calibration:
            raise ValueError(
                f"{what} were computed with calibration=True, this metric has "
                "calibration=False"
            )
        for name, field in self.fields.items():
            value = getattr(state, name)
            if value is None:
                if name == "ece_gap":
                    raise ValueError(
                        f"{what} were computed with calibration=False, this metric has "
                        "calibration=True"
                    )
                raise ValueError(
                    f"{what} lack the field {name!r}; compute them with this metric's "
                    "statistics()"
                )
            shape, lead = tuple(value.shape), int(field.per_image)
            if len(shape) != lead + len(field.shape) or shape[lead:] != field.shape:
                raise ValueError(
                    f"{what} hold {name} of shape {shape}, but this metric needs "
                    f"{_shape_text(field)} (num_classes={o.num_classes}, num_bins="
                    f"{o.num_bins}, binary={o.binary}); compute them with this "
                    "metric's statistics()"
                )


def _shape_text(field: Field) -> str:
    """The shape a field must have, (B, C) for a per-image (C,) field."""
    dims = (("B",) if field.per_image else ()) + tuple(map(str, field.shape))
    return f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"  # () too


def append_part(
    parts: list, part: Any, rows: Callable[[Any], int], combine: Callable[[list], Any]
) -> None:
    """Append ``part`` to ``parts`` and merge the tail like a binary counter: while the
    last part holds at least as many rows as the one before, the two become one. The
    list stays O(log n) long and each row is copied O(log n) times, whatever the
    number of batches (a compact state, 0 rows, is one running sum). Parts that
    ``combine`` cannot merge (other libraries or devices) are left side by side."""
    parts.append(part)
    while len(parts) > 1 and rows(parts[-1]) >= rows(parts[-2]):
        if not same_place(parts[-2], parts[-1]):
            break
        last = parts.pop()
        parts[-1] = combine([parts[-1], last])


def _first(part: Any) -> Array:
    return part[0] if isinstance(part, tuple) else part


def same_place(a: Any, b: Any) -> bool:
    """Whether two parts share a library and device (and so can be combined)."""
    x, y = _first(a), _first(b)
    return type(x) is type(y) and device(x) == device(y)


def _numpy(x: Array) -> np.ndarray:
    """``x`` copied to a NumPy array, from any array library and device."""
    try:
        host = np.from_dlpack(x)  # zero-copy for arrays already in host memory
    except (BufferError, RuntimeError, TypeError, ValueError, AttributeError):
        # On an accelerator: let the library copy it (array-api-compat knows "cpu" for
        # PyTorch and CuPy); JAX arrays convert through NumPy's array protocol.
        try:
            host = np.asarray(to_device(x, "cpu"))
        except (RuntimeError, TypeError, ValueError, AttributeError):
            host = np.asarray(x)
    dtype = np.int64 if host.dtype.kind in "iub" else np.float64
    return host.astype(dtype)
