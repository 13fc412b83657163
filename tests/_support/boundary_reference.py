"""Boundary IoU from its definition in float64 / boolean NumPy: the band of a mask is
the mask minus its binary erosion by the full 3^N cube, d iterations, background
outside the image (``scipy.ndimage.binary_erosion``, ``border_value=0``); checked in
tests/test_boundary.py against a loop over every pixel's window and the paper's
reference procedure."""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy import ndimage

from _support.inputs import IGNORE


def band_width(spatial_shape, dilation_ratio=0.02, boundary_width=None) -> int:
    """d = max(1, round(ratio x the diagonal over all spatial axes)), or the width."""
    if boundary_width is not None:
        return boundary_width
    diagonal = math.sqrt(sum(n * n for n in spatial_shape))
    return max(1, round(dilation_ratio * diagonal))


def band_by_erosion(mask: np.ndarray, d: int) -> np.ndarray:
    """The mask minus its erosion by the (2d + 1)^N cube, background outside."""
    cube = np.ones((3,) * mask.ndim, dtype=bool)
    return mask & ~ndimage.binary_erosion(mask, cube, iterations=d, border_value=0)


def band_by_windows(mask: np.ndarray, d: int) -> np.ndarray:
    """A pixel of the mask whose window of side 2d + 1 leaves the image or the mask."""
    band = np.zeros_like(mask)
    for p in itertools.product(*map(range, mask.shape)):
        inside = all(d <= j < n - d for j, n in zip(p, mask.shape, strict=True))
        window = tuple(slice(max(j - d, 0), j + d + 1) for j in p)
        band[p] = mask[p] and not (inside and mask[window].all())
    return band


def band_as_in_reference_implementation(mask: np.ndarray, d: int) -> np.ndarray:
    """boundary-iou-api's mask_to_boundary: pad one pixel of background, erode d times
    by the 3^N cube with a border that never erodes (cv2.erode's default), crop."""
    padded = np.pad(mask, 1, constant_values=False)
    cube = np.ones((3,) * mask.ndim, dtype=bool)
    eroded = ndimage.binary_erosion(padded, cube, iterations=d, border_value=1)
    return mask & ~eroded[(slice(1, -1),) * mask.ndim]


def reference_counts(label, pred, counted, num_classes, d):
    """(|G_d & P_d|, |P_d|, |G_d|), each (B, C) int64, from the definition."""
    B = label.shape[0]
    out = np.zeros((3, B, num_classes), dtype=np.int64)
    for b, c in itertools.product(range(B), range(num_classes)):
        g = band_by_erosion((label[b] == c) & counted[b], d)
        p = band_by_erosion((pred[b] == c) & counted[b], d)
        out[:, b, c] = (g & p).sum(), p.sum(), g.sum()
    return out


def counted_of(label, num_classes, keep=None):
    """The counted pixels: a label that is a class id and not IGNORE, and kept."""
    counted = (label >= 0) & (label < num_classes) & (label != IGNORE)
    return counted if keep is None else counted & keep
