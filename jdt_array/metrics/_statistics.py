"""The counts one batch contributes to the fine-grained metrics (one definition, shared
by the per-pixel path, the byte-pair table and the metric state)."""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = ["BatchStatistics"]

Array = Any


class BatchStatistics(NamedTuple):
    """Pixel counts of one batch; B images, C classes, K confidence bins.

    Per-image fields (leading axis B) concatenate across batches; ``sce_gap`` adds up
    (``jdt_array.metrics._state`` lists each field's kind and shape). A pixel counts
    only where its label is kept (not ``ignore_index``) and a class id. Multi-label: an
    entry (pixel, class) counts where its label is kept and 0 or 1, and the class
    counts are those of the class's own binary problem.
    """

    intersection: Array  # (B, C) pixels predicted c and labelled c
    pred_count: Array  # (B, C) pixels predicted c
    label_count: Array  # (B, C) pixels labelled c
    bad_label: Array  # (B,) kept pixels whose label is no class id
    bad_prediction: Array  # (B,) pixels with no valid prediction (see batch_statistics)
    ece_gap: Array | None = None  # (B, K) per bin of max-confidence: #correct - sum conf
    sce_image: Array | None = None  # (B,) static calibration error of each image, in [0, 1]
    sce_gap: Array | None = None  # (C', K) per class and bin, summed over the batch
    kept_count: Array | None = None  # (B,) kept pixels (multi-label: kept entries)
    # boundary=True: the counts of the bands of width d of each class's masks (B, C)
    boundary_intersection: Array | None = None  # |G_d & P_d|
    boundary_pred_count: Array | None = None  # |P_d|, the predicted band
    boundary_label_count: Array | None = None  # |G_d|, the labelled band
