"""Metric counts of one-byte integer maps from one table of their 65,536 byte pairs.

A (label, prediction) pair of one-byte ids has 65,536 possible values: one count of
them per image (``_kernels.byte_pair_counts``), regrouped by the ids the bytes stand
for, gives every count of the per-pixel path at the cost of one pass over the bytes.
A byte can stand for an id through a table (``jdt-array evaluate``'s id map), so a
raw 8-bit label image needs no per-pixel mapping either.
"""

from __future__ import annotations

from typing import Any

from .. import _kernels
from .._array import device, namespace_of
from .._pixels import is_class_id, not_ignored
from ._options import MetricOptions
from ._statistics import BatchStatistics

__all__ = ["byte_map_statistics", "byte_table_statistics"]

Array = Any


def byte_map_statistics(
    label: Array,
    pred: Array,
    options: MetricOptions,
    *,
    label_values: Array | None = None,
    pred_values: Array | None = None,
) -> BatchStatistics | None:
    """The counts of :func:`statistics_of` for (B, N) one-byte integer ``label`` and
    ``pred`` whose bytes stand for the ids in the (256,) tables ``label_values`` and
    ``pred_values`` (byte b holds id ``values[b]``; None: the bytes' own values), from
    one table of their byte pairs; None where the kernel set has no such table or it
    does not pay (small images), or with boundary or calibration counts.

    An id map through a value table costs nothing per pixel: ``jdt-array evaluate``
    counts 8-bit raw label images this way, without mapping each pixel first.
    """
    if options.boundary or options.calibration or options.multilabel:
        return None
    xp = namespace_of(label=label, pred=pred)
    for name, values in (("label_values", label_values), ("pred_values", pred_values)):
        if values is not None and (
            tuple(values.shape) != (256,) or not xp.isdtype(values.dtype, "signed integer")
        ):
            raise ValueError(
                f"{name} must be a (256,) signed integer table, one id per byte value; "
                f"got shape {tuple(values.shape)} and dtype {values.dtype}"
            )
    return byte_table_statistics(xp, label, pred, options, label_values, pred_values)


def byte_table_statistics(
    xp, label, pred, options: MetricOptions, label_values=None, pred_values=None
):
    """The statistics of (B, N) one-byte integer labels and predictions from one table
    of their (label, prediction) pairs (``_kernels.byte_pair_counts``), or None where
    that does not run. Each byte's value (its own, or from the value tables) gets the
    id the per-pixel path gives it (``_label_ids``, ``is_class_id``): label rows
    0 .. C - 1 for counted classes, C for ignored pixels, C + 1 for kept labels of no
    class; prediction columns 0 .. C - 1, and C for no class."""
    one_byte = (xp.isdtype(a.dtype, "integral") and xp.iinfo(a.dtype).bits == 8
                for a in (label, pred))  # fmt: skip
    if not all(one_byte):
        return None
    C = options.num_classes
    values = _byte_values(xp, label.dtype, label) if label_values is None else label_values
    kept = not_ignored(xp, values, options.ignore_index)
    valid = is_class_id(xp, values, C)
    label_map = xp.where(valid, values, C + 1)
    if kept is not None:
        label_map = xp.where(kept, label_map, C)
    values = _byte_values(xp, pred.dtype, pred) if pred_values is None else pred_values
    pred_map = xp.where(is_class_id(xp, values, C), values, C)
    table = _kernels.byte_pair_counts(xp, label, pred, label_map, pred_map, (C + 2, C + 1))
    if table is None:
        return None
    flat = xp.reshape(table, (table.shape[0], (C + 2) * (C + 1)))
    label_count = xp.sum(table[:, :C, :], axis=2)
    return BatchStatistics(
        intersection=xp.take(flat, xp.arange(C, device=device(table)) * (C + 2), axis=1),
        pred_count=xp.sum(table[:, :C, :C], axis=1),
        label_count=label_count,
        bad_label=xp.sum(table[:, C + 1, :], axis=1),
        bad_prediction=xp.sum(table[:, :C, C], axis=1),
        kept_count=xp.sum(label_count, axis=1),
    )


def _byte_values(xp, dtype, like: Array) -> Array:
    """The values of the 256 bytes of a one-byte integer ``dtype``, in byte order
    (int8: 0 .. 127, then -128 .. -1), as int32."""
    byte = xp.arange(256, dtype=xp.int32, device=device(like))
    if xp.iinfo(dtype).min < 0:
        return byte - xp.astype(byte >= 128, xp.int32) * 256
    return byte
