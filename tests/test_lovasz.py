"""Lovasz-Softmax and Lovasz hinge against their definition, on every backend, and the
properties of the Lovasz extension (tight on vertices, piecewise linear, convex).

What they share with the rest of the family (result with the logits, half precision,
zero gradient where nothing is kept) is tested in test_loss_family.py.
"""

import numpy as np
import pytest
from _support.backends import run
from _support.family_reference import (
    jaccard_set_loss,
    lovasz_hinge_reference,
    lovasz_softmax_reference,
)
from _support.gradients import GRADIENT_CHECKS
from _support.inputs import (
    IGNORE,
    make_hard_label,
    make_keep_mask,
    make_logits,
    make_soft_label,
)
from _support.tiers import tiered_dict
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import jdt_array

SHAPE = (3, 4, 5, 6)
FAST = settings(max_examples=40, deadline=None)

SOFTMAX_OPTIONS = {
    "present-batch": {},
    "present-per-image": {"per_image": True},
    "all-batch": {"classes": "all"},
    "all-per-image": {"classes": "all", "per_image": True},
    "listed-absent-class": {"classes": (0, 3)},
    "listed-repeated": {"classes": (2, 2, 1), "per_image": True},
}


def binary_inputs(rng, shape, ignore_fraction=0.0):
    logits = rng.normal(scale=1.5, size=shape)
    label = rng.integers(0, 2, size=shape)
    return logits, np.where(rng.random(shape) < ignore_fraction, IGNORE, label)


@pytest.mark.parametrize(
    "options", tiered_dict(SOFTMAX_OPTIONS, smoke={"present-per-image", "listed-repeated"})
)
def test_softmax_matches_definition(backend, options):
    rng = np.random.default_rng(0)
    logits = make_logits(rng, SHAPE)
    label = make_hard_label(rng, SHAPE, absent=(3,), ignore_fraction=0.15)
    label[1] = np.where(label[1] == 2, 0, label[1])  # class 2 absent from image 1
    options = dict(options, ignore_index=IGNORE)
    expected = lovasz_softmax_reference(logits, label, **options)
    run(backend, jdt_array.lovasz_softmax_loss, [logits, label], expected, **options)


def test_softmax_channels_last_3d_with_keep_mask(backend):
    rng = np.random.default_rng(1)
    shape = (2, 3, 4, 2, 3)  # (B, D, H, W, C): the reference port handles 2D only
    logits = make_logits(rng, shape)
    label = make_hard_label(rng, shape, class_axis=-1)
    keep = make_keep_mask(rng, shape, class_axis=-1)
    options = {"class_axis": -1, "per_image": True}
    expected = lovasz_softmax_reference(logits, label, keep_mask=keep, **options)
    run(backend, jdt_array.lovasz_softmax_loss, [logits, label, keep], expected, **options)


@pytest.mark.parametrize("per_image", [True, False], ids=["per-image", "batch"])
def test_hinge_matches_definition(backend, per_image):
    rng = np.random.default_rng(2)
    logits, label = binary_inputs(rng, (3, 5, 4), ignore_fraction=0.2)
    options = {"per_image": per_image, "ignore_index": IGNORE}
    expected = lovasz_hinge_reference(logits, label, **options)
    run(backend, jdt_array.lovasz_hinge_loss, [logits, label], expected, **options)


def test_hinge_with_keep_mask_and_boolean_label(backend):
    rng = np.random.default_rng(3)
    logits, label = binary_inputs(rng, (2, 3, 4, 5))
    keep = rng.random(label.shape) < 0.7
    expected = lovasz_hinge_reference(logits, label, keep_mask=keep, per_image=False)
    arrays = [logits, label.astype(bool), keep]
    run(backend, jdt_array.lovasz_hinge_loss, arrays, expected, per_image=False)


@pytest.mark.parametrize("per_image", [True, False], ids=["per-image", "batch"])
@pytest.mark.parametrize("classes", ["present", "all"])
def test_nothing_kept_gives_zero(backend, per_image, classes):
    rng = np.random.default_rng(4)
    logits = make_logits(rng, SHAPE)
    label = np.full(SHAPE[:1] + SHAPE[2:], IGNORE)
    options = {"per_image": per_image, "ignore_index": IGNORE, "classes": classes}
    run(backend, jdt_array.lovasz_softmax_loss, [logits, label], 0.0, **options)
    options.pop("classes")
    run(backend, jdt_array.lovasz_hinge_loss, [logits[:, 0], label], 0.0, **options)


def test_image_with_nothing_kept_counts_as_zero_per_image(backend):
    rng = np.random.default_rng(5)
    logits = make_logits(rng, SHAPE)
    label = make_hard_label(rng, SHAPE)
    label[0] = IGNORE
    options = {"per_image": True, "ignore_index": IGNORE}
    rest = lovasz_softmax_reference(logits[1:], label[1:], **options)
    expected = rest * (SHAPE[0] - 1) / SHAPE[0]
    run(backend, jdt_array.lovasz_softmax_loss, [logits, label], expected, **options)


# ---------------------------------------------------------------- properties


@st.composite
def hard_case(draw):
    b, c, h, w = (draw(st.integers(lo, hi)) for lo, hi in ((1, 2), (2, 4), (1, 4), (1, 4)))
    label = draw(arrays(np.int64, (b, h, w), elements=st.integers(0, c - 1)))
    pred = draw(arrays(np.int64, (b, h, w), elements=st.integers(0, c - 1)))
    return label, pred, c


@FAST
@given(case=hard_case(), per_image=st.booleans())
def test_softmax_at_a_hard_prediction_is_the_jaccard_loss(case, per_image):
    label, pred, num_classes = case
    # Logits 1000 apart give a softmax that is exactly one-hot in float64.
    logits = 1000.0 * np.moveaxis(np.eye(num_classes)[pred], -1, 1)
    groups = (
        [(label[b], pred[b]) for b in range(len(label))] if per_image else [(label, pred)]
    )
    means = []
    for lab, prd in groups:
        present = [c for c in range(num_classes) if np.any(lab == c)]
        ious = [
            np.sum((lab == c) & (prd == c)) / np.sum((lab == c) | (prd == c))
            for c in present
        ]
        means.append(1.0 - np.mean(ious))
    loss = jdt_array.lovasz_softmax_loss(logits, label, per_image=per_image)
    np.testing.assert_allclose(loss, np.mean(means), rtol=1e-12, atol=1e-12)


def hinge_at(errors, fg):
    """The batch Lovasz hinge whose hinge errors are exactly ``errors`` (>= 0)."""
    signs = 2.0 * fg - 1.0
    logits = signs * (1.0 - errors)
    return float(
        jdt_array.lovasz_hinge_loss(
            logits[None], fg[None].astype(np.int64), per_image=False
        )
    )


PIXELS = st.integers(1, 12).flatmap(
    lambda n: st.tuples(
        arrays(np.bool_, n),
        arrays(np.float64, n, elements=st.floats(0, 4)),
        arrays(np.float64, n, elements=st.floats(0, 4)),
    )
)


@FAST
@given(case=PIXELS)
def test_extension_is_tight_on_vertices(case):
    fg, errors, _ = case
    mispredicted = errors > 2  # any 0/1 error vector
    expected = jaccard_set_loss(mispredicted, fg)
    assert hinge_at(mispredicted.astype(np.float64), fg) == pytest.approx(
        expected, abs=1e-12
    )


@FAST
@given(case=PIXELS, a=st.floats(0, 3), b=st.floats(0, 3))
def test_extension_is_linear_where_the_order_is_fixed(case, a, b):
    fg, e1, e2 = case
    # Sorting both by the same order makes them comonotone: one linear piece.
    order = np.argsort(-e1, kind="stable")
    e2 = np.empty_like(e2)
    e2[order] = np.sort(case[2])[::-1]
    combined = hinge_at(a * e1 + b * e2, fg)
    assert combined == pytest.approx(a * hinge_at(e1, fg) + b * hinge_at(e2, fg), abs=1e-9)


@FAST
@given(case=PIXELS, t=st.floats(0, 1))
def test_extension_is_convex(case, t):
    fg, e1, e2 = case
    mixed = hinge_at(t * e1 + (1 - t) * e2, fg)
    assert mixed <= t * hinge_at(e1, fg) + (1 - t) * hinge_at(e2, fg) + 1e-9


# ---------------------------------------------------------------- gradients


def softmax_gradient_inputs():
    rng = np.random.default_rng(8)
    shape = (2, 3, 3, 4)
    logits = make_logits(rng, shape)
    return logits, make_hard_label(rng, shape, ignore_fraction=0.2)


def hinge_gradient_inputs():
    return binary_inputs(np.random.default_rng(9), (2, 4, 4), ignore_fraction=0.2)


@GRADIENT_CHECKS
@pytest.mark.parametrize("per_image", [True, False], ids=["per-image", "batch"])
def test_softmax_gradient_matches_finite_differences(check, per_image):
    logits, label = softmax_gradient_inputs()
    check(jdt_array.lovasz_softmax_loss, logits, label, per_image=per_image,
          ignore_index=IGNORE, classes="all")  # fmt: skip


@GRADIENT_CHECKS
def test_hinge_gradient_matches_finite_differences(check):
    logits, label = hinge_gradient_inputs()
    check(jdt_array.lovasz_hinge_loss, logits, label, ignore_index=IGNORE)


# ---------------------------------------------------------------- bad input


LOGITS = np.zeros((2, 3, 4, 5))
LABEL = np.zeros((2, 4, 5), dtype=np.int64)


def test_soft_label_is_rejected_with_a_pointer_to_jdt_loss():
    soft = make_soft_label(np.random.default_rng(11), LOGITS.shape)
    with pytest.raises(TypeError, match=r"not compatible with soft labels.*jdt_loss"):
        jdt_array.lovasz_softmax_loss(LOGITS, soft)
    with pytest.raises(TypeError, match="jdt_loss"):
        jdt_array.lovasz_hinge_loss(LOGITS[:, 0], soft[:, 0])


@pytest.mark.parametrize(
    ("classes", "exc", "match"),
    [
        ("some", ValueError, '"present", "all"'),
        ((), ValueError, "empty"),
        ((0, 3), ValueError, r"class id 3.*\[0, 3\)"),
        ((0, 1.0), TypeError, "int class ids"),
        (5, TypeError, "sequence of class ids"),
    ],
)
def test_bad_classes(classes, exc, match):
    with pytest.raises(exc, match=match):
        jdt_array.lovasz_softmax_loss(LOGITS, LABEL, classes=classes)


def test_bad_softmax_inputs():
    with pytest.raises(ValueError, match=r"\(2, 4, 5\).*\(2, 4, 4\)"):
        jdt_array.lovasz_softmax_loss(LOGITS, LABEL[:, :, :4])
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        jdt_array.lovasz_softmax_loss(LOGITS, LABEL + 3)
    with pytest.raises(TypeError, match="per_image must be a bool"):
        jdt_array.lovasz_softmax_loss(LOGITS, LABEL, per_image=1)
    with pytest.raises(TypeError, match="logits must be a floating"):
        jdt_array.lovasz_softmax_loss(LOGITS.astype(int), LABEL)


def test_bad_hinge_inputs():
    with pytest.raises(ValueError, match=r"0 and 1.*ignore_index=None"):
        jdt_array.lovasz_hinge_loss(LOGITS[:, 0], LABEL + 2)
    with pytest.raises(
        ValueError, match=r"label must have the shape of logits \(2, 4, 5\)"
    ):
        jdt_array.lovasz_hinge_loss(LOGITS[:, 0], LABEL[:, :3])
    with pytest.raises(ValueError, match="boolean label"):
        jdt_array.lovasz_hinge_loss(LOGITS[:, 0], LABEL == 1, ignore_index=IGNORE)
    with pytest.raises(TypeError, match="keep_mask must be a boolean"):
        jdt_array.lovasz_hinge_loss(LOGITS[:, 0], LABEL, keep_mask=LABEL)
