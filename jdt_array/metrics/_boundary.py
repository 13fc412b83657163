"""Boundary IoU counts: the inner bands of width d of all classes' masks at once.

Boundary IoU (Cheng, Girshick, Dollar, Berg and Kirillov, "Boundary IoU: Improving
Object-Centric Image Segmentation Evaluation", CVPR 2021) compares the inner boundary
bands of two masks: G_d, the pixels of the label's mask of a class within d of the
mask's outside, and P_d, the same for the prediction's mask, scored as
``|G_d & P_d| / |G_d | P_d|``. :func:`boundary_counts` gives the three counts behind
that ratio for every image and class of a batch; :func:`boundary_width` gives d.

The band of a mask M is M minus its erosion by the cube of side 2d + 1 (d erosions by
the 3 x 3 square in 2-D), with the image surrounded by background, so that the pixels
of M within d of the image edge belong to the band. This is the reference
implementation's band (``mask_to_boundary`` in the authors' boundary-iou-api: a one-
pixel border of background, then ``cv2.erode`` with a 3 x 3 kernel, d iterations),
for 2-D images and N-D volumes alike.

Everything is plain array-API code with static shapes and no value-dependent Python
branch, so it runs eagerly on any backend and under ``jax.jit``, with nothing read back
to the host.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .. import _checks as checks
from .. import _kernels
from .._array import device

__all__ = ["DEFAULT_DILATION_RATIO", "boundary_counts", "boundary_width"]

Array = Any

DEFAULT_DILATION_RATIO = 0.02
# Windows of up to 2**MAX_DOUBLINGS flags are ORed by doubling, longer ones by sums.
MAX_DOUBLINGS = 10


def boundary_width(
    spatial_shape: Sequence[int],
    *,
    dilation_ratio: float | None = DEFAULT_DILATION_RATIO,
    boundary_width: int | None = None,
) -> int:
    """d, the width in pixels of the boundary bands of images of ``spatial_shape``.

    ``d = max(1, round(dilation_ratio * diagonal))`` with the diagonal
    ``sqrt(sum of n_k^2)`` over all spatial axes (a cube's for N-D volumes) and
    Python's ``round`` (half to even), exactly as the reference implementation
    computes ``int(round(dilation_ratio * img_diag))``; or ``boundary_width`` itself
    when given. A width beyond the image is allowed: every pixel is then in the band.

    Args:
        spatial_shape: the spatial sizes of one image, (H, W) or (D, H, W), ...
        dilation_ratio: d as a fraction of the image diagonal, a finite number > 0;
            the paper's 0.02 by default. Leave it at its default (or None) when giving
            ``boundary_width``.
        boundary_width: d in pixels, a positive int, in place of ``dilation_ratio``.

    Returns:
        d, an int >= 1.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a negative size, no spatial axis, a ratio or width out of range,
            or both a non-default ``dilation_ratio`` and ``boundary_width``.

    Example:
        >>> boundary_width((512, 1024))  # 0.02 * 1144.9 = 22.9
        23
        >>> boundary_width((512, 1024), boundary_width=3)
        3
    """
    shape = _check_spatial_shape(spatial_shape)
    if boundary_width is not None:
        if dilation_ratio is not None and dilation_ratio != DEFAULT_DILATION_RATIO:
            raise ValueError(
                "give the band width either as dilation_ratio or as boundary_width, "
                f"not both: got dilation_ratio={dilation_ratio!r} and "
                f"boundary_width={boundary_width!r}"
            )
        return checks.check_int("boundary_width", boundary_width, low=1)
    if dilation_ratio is None:
        raise ValueError(
            "give the band width as dilation_ratio (a fraction of the image diagonal) "
            "or as boundary_width (pixels); both are None"
        )
    ratio = checks.check_real("dilation_ratio", dilation_ratio, low=0.0, strict=True)
    # sqrt of the exact integer sum of squares: the reference's np.sqrt(h**2 + w**2)
    diagonal = math.sqrt(sum(n * n for n in shape))
    return max(1, round(ratio * diagonal))


def _check_spatial_shape(spatial_shape: Any) -> tuple[int, ...]:
    try:
        shape = tuple(spatial_shape)
    except TypeError:
        raise TypeError(
            f"spatial_shape must be a sequence of ints, got {spatial_shape!r}"
        ) from None
    if not shape:
        raise ValueError("spatial_shape must have at least one axis, got ()")
    for n in shape:
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(
                f"spatial_shape must hold sizes >= 0 (ints), got {spatial_shape!r}"
            )
    return shape


def boundary_counts(
    xp: Any,
    label_ids: Array,
    pred_ids: Array,
    counted: Array,
    num_classes: int,
    width: int,
) -> tuple[Array, Array, Array]:
    """Per image and class, the boundary counts ``|G_d & P_d|``, ``|P_d|``, ``|G_d|``.

    For image b and class c, G_d is the band of width d of the label's mask of c and
    P_d the band of the prediction's mask of c (see the module docstring: the mask
    minus its erosion by a (2d + 1)^N cube, the image surrounded by background). The
    boundary tp, fp and fn of the class are ``|G_d & P_d|``, ``|P_d| - |G_d & P_d|``
    and ``|G_d| - |G_d & P_d|``, its boundary IoU ``tp / (tp + fp + fn)``.

    **Which pixels shape a band.** The mask of class c in a map is the set of *counted*
    pixels whose id is c: a pixel that is not counted (``ignore_index``, dropped by a
    keep mask, a label that is no class id) belongs to no class's mask in either map,
    and so does a prediction outside [0, C). Dropped pixels therefore shape the bands
    only by where they are, never by what they hold: the counted pixels play the part
    of the image and the dropped ones the part of the outside, which the reference
    implementation fills with background. Three reasons. (1) Nothing a dropped pixel
    holds, in the label or in the prediction, changes a count, as everywhere else in
    this package. (2) A prediction that agrees with the label on every counted pixel
    scores a boundary IoU of 1, as it scores a region IoU of 1: were the prediction
    taken as given at void pixels, an object whose annotation ends at a void seam (the
    5-pixel void outlines of Pascal VOC, say) would be cut there in the label but not
    in a perfect prediction, and the two bands would differ. (3) At the edge of the
    image, where nothing is known beyond, it is the reference's own rule: an edge
    against the unknown is an edge of the mask. The price: an object that a void
    region cuts has a band along the cut, in both maps alike.

    **O(pixels), whatever d and C.** A counted pixel p with id c lies in the band of
    c's mask exactly when its window W(p), the cube of side 2d + 1 centred at p,
    crosses the image edge or holds a pixel whose id is not c (erosion by the cube
    with background outside: p survives iff W(p) lies inside the image and inside the
    mask). Since p's own id is c, that is: W(p) is *not uniform*, where uniform means
    inside the image with one id throughout; and p lies in no other class's band (a
    band lies inside its mask). So one flag per pixel, for all classes at once, gives
    every band: the band of c is {p : id(p) = c, W(p) not uniform}. Uniformity is
    found axis by axis from the last. Let U_k(p) say that the part of W(p) over axes
    k .. N-1 (the other coordinates held at p's) is uniform, and U_N(p) = true. Then
    U_k(p) holds iff (a) the window's range along axis k lies in the image, (b)
    U_{k+1} holds at every point q of that range on the line through p along axis k,
    and (c) the ids on that range are all equal: each slice of the window through
    such a q is uniform with q's id, and (c) makes these ids one id; the converse is
    immediate. (b) and (c) ask that no flag be set in a window of 2d + 1 pixels of
    the line, the flags being "not U_{k+1}" and "the id differs from the previous
    one" (the latter inside the window only). An OR over a window of L flags takes
    ceil(log2 L) + 1 passes by doubling (ORs of windows of 1, 2, 4, ... flags), at
    most 11 for windows up to 1024 flags (d <= 512), and beyond that one cumulative
    sum differenced at the windows' ends (``xp.cumulative_sum``), which is O(1)
    passes but much slower on CPU. So: a bounded number of passes per axis over
    boolean arrays the size of the batch, whatever d is, and no loop over classes;
    the per-class counts then come from the library's class-count hot spot on the ids
    masked by the flags. Only arrays shaped like the maps are made, never a
    (B, C, ...) array.

    Args:
        xp: the array namespace of the inputs.
        label_ids: (B, *spatial) integer class ids of the label, at least one spatial
            axis; values outside [0, C) and uncounted pixels belong to no class.
        pred_ids: (B, *spatial) integer predicted class ids; values outside [0, C)
            belong to no class (and make a band at the counted pixels next to them).
        counted: (B, *spatial) booleans, the pixels that count: not ``ignore_index``,
            not dropped by a keep mask, a label that is a class id.
        num_classes: C.
        width: d, the band width in pixels (see :func:`boundary_width`).

    Returns:
        ``(intersection, pred_band, label_band)``, each (B, C) in the default integer
        dtype of the library's counts: ``|G_d & P_d|``, ``|P_d|`` and ``|G_d|``.

    Raises:
        TypeError: ids that are not integers, ``counted`` that is not boolean, an
            option of the wrong type.
        ValueError: arrays of different shapes or without a spatial axis, options out
            of range.
    """
    checks.check_int("num_classes", num_classes, low=1)
    checks.check_int("width", width, low=1)
    _check_maps(xp, label_ids, pred_ids, counted)
    C = num_classes
    dtype = _id_dtype(xp, C)
    label_map = _class_map(xp, label_ids, counted, C, dtype)
    pred_map = _class_map(xp, pred_ids, counted, C, dtype)
    flat = (label_ids.shape[0], math.prod(label_ids.shape[1:]))
    label_band = xp.where(_not_uniform(xp, label_map, width), label_map, C)
    pred_band = xp.where(_not_uniform(xp, pred_map, width), pred_map, C)
    return _band_counts(xp, xp.reshape(label_band, flat), xp.reshape(pred_band, flat), C)


def _check_maps(xp: Any, label_ids: Array, pred_ids: Array, counted: Array) -> None:
    for name, ids in (("label_ids", label_ids), ("pred_ids", pred_ids)):
        if not xp.isdtype(ids.dtype, "integral"):
            raise TypeError(
                f"{name} must be an integer array of class ids, got {ids.dtype}"
            )
    if counted.dtype != xp.bool:
        raise TypeError(f"counted must be a boolean array, got {counted.dtype}")
    named = (("label_ids", label_ids), ("pred_ids", pred_ids), ("counted", counted))
    shapes = {name: tuple(a.shape) for name, a in named}
    if len(set(shapes.values())) != 1 or len(shapes["label_ids"]) < 2:
        raise ValueError(
            "label_ids, pred_ids and counted must have one shape (B, *spatial) with at "
            f"least one spatial axis, got {shapes}"
        )


def _id_dtype(xp: Any, num_classes: int) -> Any:
    """The narrowest dtype that holds the ids 0 .. C (C: no class): the band passes
    read and compare these maps many times, so their width is most of the time."""
    if num_classes <= xp.iinfo(xp.uint8).max:
        return xp.uint8
    if num_classes <= xp.iinfo(xp.int16).max:
        return xp.int16
    return xp.int32


def _class_map(xp: Any, ids: Array, counted: Array, num_classes: int, dtype: Any) -> Array:
    """``ids`` in ``dtype`` where counted and a class id, C elsewhere.

    The range test runs in the ids' own dtype, and only where C fits it (a uint8 map
    holds no id >= 256, say): no comparison with an unrepresentable scalar, and a
    wide id outside [0, C) never wraps into the range when narrowed.
    """
    info = xp.iinfo(ids.dtype)
    ok = counted
    if info.min < 0:
        ok = ok & (ids >= 0)
    if num_classes <= info.max:
        ok = ok & (ids < num_classes)
    narrow = ids if ids.dtype == dtype else xp.astype(ids, dtype)
    return xp.where(ok, narrow, num_classes)


def _not_uniform(xp: Any, ids: Array, d: int) -> Array:
    """(B, *spatial) booleans: the window of side 2d + 1 around the pixel crosses the
    image edge or holds more than one id (not U_1 in :func:`boundary_counts`).

    Axis by axis from the last, on the flattened map: the neighbours along an axis are
    ``step`` apart in the flat order, so every pass is one contiguous operation over
    the whole batch (no per-row loop inside the library). A window that runs off its
    line there reads the next line or image instead; that only happens for pixels
    within d of an edge, which the edge mask sets at the end.
    """
    shape = tuple(ids.shape)
    where = device(ids)
    if math.prod(shape) == 0 or any(n <= 2 * d for n in shape[1:]):
        return xp.ones(shape, dtype=xp.bool, device=where)  # every window crosses an edge
    flat = xp.reshape(ids, (-1,))
    size = flat.shape[0]
    flags = None  # not U_{k+1} at each flat position (exact away from the edges)
    for axis in range(len(shape) - 1, 0, -1):
        step = math.prod(shape[axis + 1 :])
        # at position q: the id changes from q to q + step, or the window over the
        # later axes at q + step is not uniform
        flag = flat[step:] != flat[: size - step]
        if flags is not None:
            flag = flag | flags[step:]
        # the window of the pixel at q + d * step holds these flags at q .. q +
        # (2d - 1) step, and not U_{k+1} at q itself
        found = _window_any(xp, flag, step, 2 * d, shape[axis])
        if flags is not None:
            found = found | flags[: size - 2 * d * step]
        margin = xp.zeros((d * step,), dtype=xp.bool, device=where)  # set by the edge mask
        flags = xp.concat((margin, found, margin))
    return xp.reshape(flags, shape) | _near_edge(xp, shape[1:], d, where)


def _near_edge(xp: Any, spatial: tuple[int, ...], d: int, where: Any) -> Array:
    """(1, *spatial) booleans: within d of the image edge along some axis."""
    edge = None
    for axis, n in enumerate(spatial):
        j = xp.arange(n, device=where)
        along = (j < d) | (j >= n - d)
        view = [1] * (len(spatial) + 1)
        view[axis + 1] = n
        along = xp.reshape(along, tuple(view))
        edge = along if edge is None else edge | along
    return edge


def _window_any(xp: Any, flag: Array, step: int, length: int, line: int) -> Array:
    """``flag[q] | flag[q + step] | ... | flag[q + (length - 1) step]`` for each q, of
    a flat array whose lines along the axis are ``line`` long (ends cut off).

    Up to ``2**MAX_DOUBLINGS`` flags by doubling: the OR over windows of 1, 2, 4, ...
    flags, each from two shifted halves, and the window of ``length`` as two
    overlapping power-of-two windows: at most ``MAX_DOUBLINGS + 1`` contiguous passes
    over booleans. On CPU that measured from a few times (NumPy, along the last axis)
    to two orders of magnitude (NumPy along an inner axis, XLA) faster than one
    cumulative sum of the same flags. Longer windows take the cumulative sum, so the
    cost stays a bounded number of passes whatever d.
    """
    if length > 2**MAX_DOUBLINGS:
        return _window_any_by_sums(xp, flag, step, length, line)
    covered = 1  # flag[q] is now the OR over ``covered`` flags from q on
    while 2 * covered <= length:
        flag = _or_shifted(flag, covered * step)
        covered *= 2
    if covered < length:  # two windows of ``covered`` that overlap, one at each end
        flag = _or_shifted(flag, (length - covered) * step)
    return flag


def _or_shifted(flag: Array, shift: int) -> Array:
    """``flag[q] | flag[q + shift]`` (``shift`` shorter)."""
    return flag[: flag.shape[0] - shift] | flag[shift:]


def _window_any_by_sums(xp: Any, flag: Array, step: int, length: int, line: int) -> Array:
    """:func:`_window_any` by one cumulative sum along the lines, differenced at the
    windows' ends: the sum over flags j .. j + length - 1 of a line is
    ``S[j + length - 1] - S[j] + flag[j]`` with S the inclusive sum."""
    where = device(flag)
    size = flag.shape[0] + step  # the flags of all lines, the last one cut short
    tail = xp.zeros((step,), dtype=xp.bool, device=where)
    lines = xp.reshape(xp.concat((flag, tail)), (size // (line * step), line, step))
    dtype = xp.int32 if line < 2**31 else xp.int64  # exact: a sum counts <= line flags
    total = xp.cumulative_sum(xp.astype(lines, dtype), axis=1, dtype=dtype)
    stop = line - length + 1
    found = (total[:, length - 1 :, :] != total[:, :stop, :]) | lines[:, :stop, :]
    rest = xp.zeros((found.shape[0], length - 1, step), dtype=xp.bool, device=where)
    found = xp.reshape(xp.concat((found, rest), axis=1), (-1,))
    return found[: size - length * step]


def _band_counts(
    xp: Any, label_band: Array, pred_band: Array, num_classes: int
) -> tuple[Array, Array, Array]:
    """(B, C) counts of |label = pred = c|, |pred = c|, |label = c| of (B, N) band ids
    (C: in no band), by the library's class-count hot spot.

    Not ``_kernels.pixel_counts``: that takes a label id of C for an uncounted pixel
    and leaves its prediction out, whereas here a counted pixel outside the label's
    band still counts in the prediction's band.
    """
    C = num_classes
    kernels = _kernels.kernels_for(xp)
    if kernels.pair_table_pays(label_band.shape[1], C):
        pairs = kernels.pair_counts(label_band, pred_band, C)  # (B, C + 1, C + 1)
        flat = xp.reshape(pairs, (pairs.shape[0], (C + 1) ** 2))
        diagonal = xp.arange(C, device=device(label_band)) * (C + 2)
        return (
            xp.take(flat, diagonal, axis=1),
            xp.sum(pairs[:, :, :C], axis=1),
            xp.sum(pairs[:, :C, :], axis=2),
        )
    hit = xp.where(pred_band == label_band, label_band, C)
    return tuple(kernels.class_counts(ids, C) for ids in (hit, pred_band, label_band))
