"""Boundary IoU counts (``jdt_array.metrics._boundary``) against the definition.

The reference: for each image and class, the mask is the counted pixels of the class
and its band the mask minus its binary erosion by the full 3^N cube, d iterations,
with background outside the image (``scipy.ndimage.binary_erosion``,
``border_value=0``). That reference is itself checked against two other statements
of the definition: a loop over every pixel's window, and the paper's reference
procedure (``mask_to_boundary`` in boundary-iou-api: one pixel of background around
the mask, then d erosions by the 3 x 3 square with ``cv2.erode``'s default border,
which never erodes).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from _support.boundary_reference import (
    band_as_in_reference_implementation,
    band_by_erosion,
    band_by_windows,
    counted_of,
    reference_counts,
)
from _support.inputs import IGNORE
from array_api_compat import numpy as np_xp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from jdt_array.metrics import _boundary, batch_statistics
from jdt_array.metrics._boundary import boundary_counts, boundary_width


def compute(backend, label, pred, counted, num_classes, d):
    """boundary_counts on ``backend`` (under jax.jit for the jitted ones), as NumPy."""
    xp = backend.xp

    def fn(label, pred, counted):
        return boundary_counts(xp, label, pred, counted, num_classes, d)

    args = [backend.asarray(a) for a in (label, pred, counted)]
    result = backend.call(fn, *args)
    assert len(result) == 3
    for r in result:
        assert tuple(r.shape) == (label.shape[0], num_classes)
        assert xp.isdtype(r.dtype, "integral")
    return np.stack([backend.to_numpy(r) for r in result])


def assert_reference(backend, label, pred, counted, num_classes, d):
    got = compute(backend, label, pred, counted, num_classes, d)
    want = reference_counts(label, pred, counted, num_classes, d)
    np.testing.assert_array_equal(got, want)
    return want


# -- the cases ------------------------------------------------------------------------


def blobs(rng, shape, num_classes, cell=4):
    """Class ids in blocks of side ``cell`` (smooth maps, like segmentations)."""
    coarse = rng.integers(
        0, num_classes, size=(shape[0], *(-(-n // cell) for n in shape[1:]))
    )
    for axis in range(1, len(shape)):
        coarse = np.repeat(coarse, cell, axis=axis)
    return coarse[tuple(slice(0, n) for n in shape)]


def _random(rng):
    label = rng.integers(0, 3, size=(2, 7, 9))
    return label, rng.integers(0, 3, size=label.shape), 3, 1, None


def _blobs(rng):
    label = blobs(rng, (2, 16, 20), 4)
    pred = np.roll(label, 1, axis=2)
    pred[:, 5:7, 3:12] = 3
    return label, pred, 4, 2, None


def _thin(rng):
    label = np.zeros((2, 12, 13), dtype=np.int64)
    label[:, 4, 1:11] = 1  # a horizontal line
    label[:, 1:10, 8] = 2  # a vertical line crossing it
    label[0, 10, 2] = label[1, 0, 0] = 1  # single pixels, one in a corner
    label[:, 7, 4] = 2
    pred = np.roll(label, 1, axis=1)
    pred[1, 7, 4] = 1
    return label, pred, 3, 1, None


def _thin_wide_band(rng):
    label, pred, C, _, keep = _thin(rng)
    return label, pred, C, 2, keep


def _edges(rng):
    label = np.zeros((1, 10, 11), dtype=np.int64)
    label[0, :3, :4] = 1  # a corner
    label[0, 4:7, 8:] = 2  # the right edge
    label[0, 9, :] = 3  # the whole last row
    pred = label.copy()
    pred[0, :4, :3] = 1
    pred[0, 5:8, 7:] = 2
    return label, pred, 4, 2, None


def _d_beyond_objects(rng):
    label = np.zeros((2, 14, 14), dtype=np.int64)
    label[:, 3:5, 3:6] = 1
    label[:, 8:11, 7:10] = 2
    pred = np.roll(label, (1, 1), axis=(1, 2))
    return label, pred, 3, 3, None


def _d_beyond_image(rng):
    label = blobs(rng, (2, 5, 6), 3, cell=2)
    return label, rng.integers(0, 3, size=label.shape), 3, 4, None


def _window_just_fits(rng):
    # sides 2d + 1: only the centre's window lies inside the image
    label = np.zeros((2, 7, 7), dtype=np.int64)
    label[1, 0, 0] = 1
    return label, label.copy(), 2, 3, None


def _empty_classes(rng):
    label = 2 * blobs(rng, (2, 9, 10), 2, cell=3)
    pred = np.where(label == 2, 4, label)
    return label, pred, 6, 1, None


def _volume(rng):
    label = blobs(rng, (2, 6, 7, 8), 3, cell=3)
    pred = np.roll(label, 1, axis=3)
    return label, pred, 3, 1, None


def _volume_wide_band(rng):
    label, pred, C, _, keep = _volume(rng)
    return label, pred, C, 2, keep


def _line(rng):
    label = blobs(rng, (3, 30), 3, cell=5)
    return label, np.roll(label, 2, axis=1), 3, 2, None


def _ignored(rng):
    label = blobs(rng, (2, 12, 12), 3, cell=4)
    label[:, 5:7, :] = IGNORE  # a void seam through the objects
    label[0, 0, :] = IGNORE
    pred = blobs(rng, label.shape, 3, cell=4)
    return label, pred, 3, 1, None


def _keep_mask(rng):
    label = blobs(rng, (2, 12, 12), 3, cell=4)
    keep = rng.random(label.shape) < 0.8
    keep[1, :, 6:] = False
    return label, np.roll(label, 1, axis=1), 3, 2, keep


def _pred_outside_classes(rng):
    label = blobs(rng, (2, 10, 11), 3, cell=3)
    pred = label.copy()
    pred[0, 2:5, 2:6] = -1
    pred[0, 6, :] = 3
    pred[1, 4:8, 4:8] = 1000
    pred[1, 0, 0] = -7
    return label, pred, 3, 1, None


def _one_wide(rng):
    label = rng.integers(0, 2, size=(2, 9, 1))
    return label, rng.integers(0, 2, size=label.shape), 2, 1, None


def _one_high(rng):
    label = rng.integers(0, 2, size=(2, 1, 9))
    return label, rng.integers(0, 2, size=label.shape), 2, 1, None


def _three_high(rng):
    label = blobs(rng, (2, 3, 40), 2, cell=5)
    return label, np.roll(label, 3, axis=2), 2, 1, None


def _many_classes(rng):
    label = blobs(rng, (2, 12, 12), 300, cell=3)
    pred = np.where(label % 2 == 0, label, 299 - label)
    return label, pred, 300, 1, None


def _narrow_ids(rng):
    # uint8 labels with C beyond their range, int8 predictions with negative ids
    label = blobs(rng, (2, 10, 10), 3, cell=3).astype(np.uint8)
    label[0, 1, :] = IGNORE
    pred = np.roll(label, 1, axis=2).astype(np.int8)
    pred[1, :2, :2] = -2
    return label, pred, 300, 1, None


def _wide_ids(rng):
    # int64 ids beyond int32 and uint8: none may wrap into a class when narrowed
    label = blobs(rng, (2, 8, 9), 3, cell=3)
    pred = label.copy()
    pred[0, :3, :3] = 2**32 + 1
    pred[1, 4:, 4:] = 256 + 2
    return label, pred, 3, 1, None


def _mixed(rng):
    # the smoke case: ignored seams, a keep mask and predictions outside the classes
    label = blobs(rng, (2, 12, 13), 3, cell=4)
    label[:, 5:7, :] = IGNORE
    keep = rng.random(label.shape) < 0.9
    pred = np.roll(label, 1, axis=2)
    pred[0, 1:4, 2:6] = -1
    pred[1, 8:, 8:] = 7
    return label, pred, 3, 1, keep


def _mixed_narrow(rng):
    label, pred, C, d, keep = _mixed(rng)
    return label.astype(np.uint8), pred.astype(np.int8), C, d, keep


CASES = {
    "random": _random,
    "blobs": _blobs,
    "thin-lines-and-points": _thin,
    "thin-lines-and-points-d2": _thin_wide_band,
    "objects-on-the-image-edge": _edges,
    "d-beyond-the-objects": _d_beyond_objects,
    "d-beyond-the-image": _d_beyond_image,
    "window-just-fits": _window_just_fits,
    "empty-classes": _empty_classes,
    "volume-3d": _volume,
    "volume-3d-d2": _volume_wide_band,
    "line-1d": _line,
    "ignored-pixels": _ignored,
    "keep-mask": _keep_mask,
    "prediction-outside-the-classes": _pred_outside_classes,
    "width-1": _one_wide,
    "height-1": _one_high,
    "height-3": _three_high,
    "300-classes": _many_classes,
    "narrow-ids": _narrow_ids,
    "wide-ids": _wide_ids,
    "mixed": _mixed,
    "mixed-narrow-ids": _mixed_narrow,
}


def make_case(name):
    label, pred, num_classes, d, keep = CASES[name](np.random.default_rng(7))
    return label, pred, counted_of(label, num_classes, keep), num_classes, d


# -- the reference is the paper's band --------------------------------------------


@pytest.mark.parametrize("shape", [(6, 7), (1, 8), (5, 1), (4, 5, 6)], ids=str)
@pytest.mark.parametrize("d", [1, 2, 3])
def test_reference_band_is_the_window_definition_and_the_papers_procedure(shape, d):
    rng = np.random.default_rng(d)
    for fraction in (0.5, 0.8, 0.95, 1.0):
        mask = rng.random(shape) < fraction
        want = band_by_windows(mask, d)
        np.testing.assert_array_equal(band_by_erosion(mask, d), want)
        np.testing.assert_array_equal(band_as_in_reference_implementation(mask, d), want)


# -- boundary_width -------------------------------------------------------------------


def test_width_rounds_as_the_reference_implementation():
    # int(round(dilation_ratio * np.sqrt(h**2 + w**2))): half to even
    for h, w in itertools.product((1, 3, 5, 37, 256, 480, 512, 1024, 2048), repeat=2):
        for ratio in (0.005, 0.01, 0.02, 0.05, 0.1, 0.5):
            want = max(1, int(round(ratio * np.sqrt(h**2 + w**2))))  # noqa: RUF046
            assert boundary_width((h, w), dilation_ratio=ratio) == want
    assert boundary_width((3, 4), dilation_ratio=0.5) == 2  # 2.5 to even
    assert boundary_width((5, 12), dilation_ratio=0.5) == 6  # 6.5 to even
    assert boundary_width((512, 1024)) == 23  # 0.02 * 1144.9
    assert boundary_width((1, 1)) == 1  # never below 1


def test_width_of_a_volume_uses_the_cube_diagonal():
    assert boundary_width((3, 4, 12), dilation_ratio=1.0) == 13
    assert boundary_width((128, 128, 128)) == round(0.02 * math.sqrt(3 * 128**2))
    assert boundary_width((100,), dilation_ratio=0.1) == 10


def test_absolute_width_replaces_the_ratio():
    assert boundary_width((512, 1024), boundary_width=3) == 3
    assert boundary_width((8, 8), boundary_width=50) == 50  # beyond the image: all band
    assert boundary_width((8, 8), dilation_ratio=None, boundary_width=2) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dilation_ratio": 0.0}, ValueError, "dilation_ratio must be a finite number > 0"),
        ({"dilation_ratio": -0.1}, ValueError, "dilation_ratio"),
        ({"dilation_ratio": float("nan")}, ValueError, "dilation_ratio.*nan"),
        ({"dilation_ratio": float("inf")}, ValueError, "dilation_ratio.*inf"),
        ({"dilation_ratio": True}, TypeError, "dilation_ratio must be a real number"),
        ({"dilation_ratio": "0.02"}, TypeError, "dilation_ratio"),
        ({"dilation_ratio": None}, ValueError, "both are None"),
        ({"boundary_width": 0}, ValueError, "boundary_width must be >= 1, got 0"),
        ({"boundary_width": 1.5}, TypeError, "boundary_width must be an int"),
        ({"boundary_width": True}, TypeError, "boundary_width must be an int"),
        ({"dilation_ratio": 0.05, "boundary_width": 3}, ValueError, "not both"),
    ],
)
def test_width_options_are_checked(kwargs, error, match):
    with pytest.raises(error, match=match):
        boundary_width((64, 64), **kwargs)


@pytest.mark.parametrize(
    ("shape", "error", "match"),
    [((), ValueError, "at least one axis"), ((4, -1), ValueError, r"\(4, -1\)"),
     ((4, 2.0), ValueError, "ints"), (5, TypeError, "sequence of ints")],
)  # fmt: skip
def test_width_spatial_shape_is_checked(shape, error, match):
    with pytest.raises(error, match=match):
        boundary_width(shape)


# -- boundary_counts against the reference --------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_counts_match_the_reference(grid_backend, case):
    want = assert_reference(grid_backend, *make_case(case))
    if case not in ("d-beyond-the-image", "window-just-fits"):
        assert want[0].sum() > 0 and (want[1] != want[0]).any()  # a case with content


# One 2-D shape and one 3-D one: eager JAX compiles every operation once per shape.
SMOKE = ("mixed", "mixed-narrow-ids", "volume-3d")


@pytest.mark.parametrize("case", SMOKE)
def test_counts_match_the_reference_on_every_backend(backend, case):
    assert_reference(backend, *make_case(case))


LONG_WINDOW_CASES = ("random", "blobs", "thin-lines-and-points-d2", "volume-3d-d2",
                     "line-1d", "keep-mask", "height-3")  # fmt: skip


@pytest.mark.parametrize("case", LONG_WINDOW_CASES)
def test_long_windows_by_cumulative_sums_match_the_reference(
    grid_backend, case, monkeypatch
):
    # windows longer than 2**MAX_DOUBLINGS flags take the cumulative sums
    monkeypatch.setattr(_boundary, "MAX_DOUBLINGS", 0)
    assert_reference(grid_backend, *make_case(case))


def test_a_band_wider_than_the_doubling_limit_matches_the_reference():
    label = np.zeros((2, 1300), dtype=np.int64)
    label[:, :50], label[:, 1250:] = 1, 2
    label[1, 500:510] = 2
    pred = np.roll(label, 40, axis=1)
    d = 2**_boundary.MAX_DOUBLINGS // 2 + 30  # 2d flags per window: the sums
    assert 2 * d > 2**_boundary.MAX_DOUBLINGS
    want = assert_reference(_NumPy, label, pred, counted_of(label, 3), 3, d)
    assert want[2, 0, 0] < (label[0] == 0).sum()  # some pixels of image 0 are no band


class _NumPy:
    """The NumPy backend, for tests that need no fixture."""

    xp = np_xp
    jit = False
    asarray = staticmethod(np.asarray)
    to_numpy = staticmethod(np.asarray)

    @staticmethod
    def call(fn, *args):
        return fn(*args)


# -- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"label_ids": np.zeros((2, 4, 4))}, TypeError, "label_ids must be an integer"),
        ({"pred_ids": np.zeros((2, 4, 4))}, TypeError, "pred_ids must be an integer"),
        ({"counted": np.ones((2, 4, 4), dtype=np.int64)}, TypeError, "counted must be"),
        ({"pred_ids": np.zeros((2, 4, 5), dtype=np.int64)}, ValueError,
         r"one shape.*'pred_ids': \(2, 4, 5\)"),
        ({"label_ids": np.zeros((2,), dtype=np.int64), "pred_ids": np.zeros((2,), np.int64),
          "counted": np.ones((2,), dtype=bool)}, ValueError, "at least one spatial axis"),
        ({"num_classes": 0}, ValueError, "num_classes must be >= 1"),
        ({"width": 0}, ValueError, "width must be >= 1"),
        ({"width": 1.0}, TypeError, "width must be an int"),
    ],
)  # fmt: skip
def test_bad_input_is_named(change, error, match):
    ids = np.zeros((2, 4, 4), dtype=np.int64)
    args = {"label_ids": ids, "pred_ids": ids, "counted": np.ones((2, 4, 4), dtype=bool),
            "num_classes": 3, "width": 1}  # fmt: skip
    args.update(change)
    with pytest.raises(error, match=match):
        boundary_counts(np_xp, **args)


# -- properties -----------------------------------------------------------------------


@st.composite
def maps(draw, max_classes=4, max_side=7, max_axes=3):
    """(label, pred, counted, C, d): small maps with ids -1 .. C (no class at both ends)
    and dropped pixels."""
    C = draw(st.integers(1, max_classes))
    ndim = draw(st.integers(1, max_axes))
    spatial = draw(st.lists(st.integers(1, max_side), min_size=ndim, max_size=ndim))
    shape = (draw(st.integers(1, 2)), *spatial)
    ids = hnp.arrays(np.int64, shape, elements=st.integers(-1, C))
    label, pred = draw(ids), draw(ids)
    keep = draw(hnp.arrays(np.bool_, shape, elements=st.booleans()))
    d = draw(st.integers(1, 4))
    return label, pred, counted_of(label, C, keep | draw(st.booleans())), C, d


def counts(label, pred, counted, C, d):
    return np.stack(
        [np.asarray(r) for r in boundary_counts(np_xp, label, pred, counted, C, d)]
    )


def region_counts(label, pred, counted, C):
    """(|L = P = c|, |P = c|, |L = c|) over counted pixels, (3, B, C)."""
    axes = tuple(range(1, label.ndim))
    per_class = [[((label == c) & (pred == c) & counted).sum(axis=axes),
                  ((pred == c) & counted).sum(axis=axes),
                  ((label == c) & counted).sum(axis=axes)] for c in range(C)]  # fmt: skip
    return np.transpose(np.array(per_class), (1, 2, 0))


PROPERTY = settings(max_examples=60, deadline=None)


@PROPERTY
@given(maps())
def test_property_counts_match_the_reference(case):
    np.testing.assert_array_equal(counts(*case), reference_counts(*case))


def windows_not_uniform(ids, d):
    """Per pixel: its window leaves the image or holds two ids (a loop per pixel)."""
    out = np.zeros(ids.shape, dtype=bool)
    for p in itertools.product(*map(range, ids.shape)):
        b, spatial = p[0], p[1:]
        inside = all(d <= j < n - d for j, n in zip(spatial, ids.shape[1:], strict=True))
        window = (b, *(slice(j - d, j + d + 1) for j in spatial))
        out[p] = not (inside and (ids[window] == ids[p]).all())
    return out


@PROPERTY
@given(maps(max_classes=3))
def test_property_pixel_flags_are_the_window_definition(case):
    ids, _, _, C, d = case
    ids = np.where(ids < 0, C, ids).astype(np.uint8)  # as the class maps: ids 0 .. C
    got = _boundary._not_uniform(np_xp, ids, d)
    np.testing.assert_array_equal(got, windows_not_uniform(ids, d))


@PROPERTY
@given(maps())
def test_property_a_band_lies_inside_its_mask(case):
    label, pred, counted, C, _ = case
    both, pred_band, label_band = counts(*case)
    region = region_counts(label, pred, counted, C)
    assert (label_band <= region[2]).all() and (pred_band <= region[1]).all()
    assert (both <= np.minimum(pred_band, label_band)).all()
    assert (both <= region[0]).all()  # a pixel in both bands has label = pred = c


@PROPERTY
@given(maps(max_side=4), st.integers(2, 6))
def test_property_a_mask_within_d_of_the_edge_is_all_band(case, d):
    label, pred, counted, C, _ = case
    assert min(label.shape[1:]) <= 2 * d  # every pixel is within d of an edge
    np.testing.assert_array_equal(
        counts(label, pred, counted, C, d), region_counts(label, pred, counted, C)
    )


@PROPERTY
@given(maps(), st.data())
def test_property_dropped_pixels_change_nothing_and_agreement_scores_one(case, data):
    label, pred, counted, C, d = case
    want = counts(*case)
    # whatever the prediction holds at dropped pixels (ids, classes or not)
    noise = data.draw(hnp.arrays(np.int64, label.shape, elements=st.integers(-2, C + 1)))
    np.testing.assert_array_equal(counts(label, np.where(counted, pred, noise),
                                         counted, C, d), want)  # fmt: skip
    # a prediction that agrees with the label on every counted pixel: BIoU 1
    agree = np.where(counted, label, noise)
    both, pred_band, label_band = counts(label, agree, counted, C, d)
    np.testing.assert_array_equal(both, label_band)
    np.testing.assert_array_equal(pred_band, label_band)


@PROPERTY
@given(maps(), st.data())
def test_property_counts_ignore_flips_and_axis_order(case, data):
    label, pred, counted, C, d = case
    want = counts(*case)
    spatial = list(range(1, label.ndim))
    flips = tuple(a for a in spatial if data.draw(st.booleans()))
    order = (0, *data.draw(st.permutations(spatial)))
    for move in (lambda a: np.flip(a, flips), lambda a: np.transpose(a, order)):
        moved = [np.ascontiguousarray(move(a)) for a in (label, pred, counted)]
        np.testing.assert_array_equal(counts(*moved, C, d), want)


@PROPERTY
@given(maps(), st.permutations(range(4)))
def test_property_relabelling_the_classes_permutes_the_counts(case, permutation):
    label, pred, counted, C, d = case
    perm = np.array([p for p in permutation if p < C])

    def relabel(ids):
        return np.where((ids >= 0) & (ids < C), perm[np.clip(ids, 0, C - 1)], ids)

    got = counts(relabel(label), relabel(pred), counted, C, d)
    np.testing.assert_array_equal(got[:, :, perm], counts(*case))


@PROPERTY
@given(maps())
def test_property_bands_grow_with_d(case):
    label, pred, counted, C, d = case
    narrow = counts(*case)
    wide = counts(label, pred, counted, C, d + 1)
    assert (narrow[1:] <= wide[1:]).all()


@PROPERTY
@given(maps(max_axes=2), st.integers(1, 3))
def test_property_wide_bands_are_the_region_counts_of_batch_statistics(case, extra):
    label, pred, _, C, _ = case
    label = np.abs(label) % C  # a class at every pixel
    d = max(label.shape[1:]) // 2 + extra  # every window crosses the edge
    region = batch_statistics(pred, label, num_classes=C)
    got = counts(label, pred, counted_of(label, C), C, d)
    want = np.stack([np.asarray(a) for a in region[:3]])
    np.testing.assert_array_equal(got, want)
