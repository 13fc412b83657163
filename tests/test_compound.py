"""ce_jdt_loss and generalized_dice_loss against the float64 formulas on every backend."""

import numpy as np
import pytest
from _support.backends import run
from _support.family_reference import cross_entropy_reference, generalized_dice_reference
from _support.gradients import GRADIENT_CHECKS
from _support.inputs import (
    IGNORE,
    make_hard_label,
    make_keep_mask,
    make_logits,
    make_soft_label,
)
from _support.reference import jdt_loss_reference, softmax
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import jdt_array

SHAPE = (3, 4, 5, 6)
FAST = settings(max_examples=40, deadline=None)


MIXTURES = {
    "faq-default": {},
    "dice-per-image": {
        "ce_weight": 1.0,
        "jdt_weight": 1.0,
        "alpha": 0.5,
        "beta": 0.5,
        "mIoUD": 0.0,
        "mIoUI": 1.0,
    },
    "ce-only": {"ce_weight": 1.0, "jdt_weight": 0.0},
}


@pytest.mark.parametrize("options", MIXTURES.values(), ids=MIXTURES.keys())
@pytest.mark.parametrize("hard", [True, False], ids=["hard", "soft"])
def test_ce_jdt_is_the_weighted_sum(backend, options, hard):
    rng = np.random.default_rng(0)
    logits = make_logits(rng, SHAPE)
    keep = make_keep_mask(rng, SHAPE)
    if hard:
        label = make_hard_label(rng, SHAPE, absent=(2,), ignore_fraction=0.1)
        options = dict(options, ignore_index=IGNORE)
    else:
        label = make_soft_label(rng, SHAPE)
    jdt_options = {k: v for k, v in options.items() if not k.endswith("_weight")}
    ce = cross_entropy_reference(logits, label, keep_mask=keep, ignore_index=IGNORE)
    jdt = jdt_loss_reference(logits, label, keep_mask=keep, **jdt_options)
    expected = options.get("ce_weight", 0.25) * ce + options.get("jdt_weight", 0.75) * jdt
    run(backend, jdt_array.ce_jdt_loss, [logits, label, keep], expected, **options)


GDL_OPTIONS = {
    "batch": {},
    "per-image": {"per_image": True},
    "no-smooth": {"smooth": 0.0, "per_image": True},
}


@pytest.mark.parametrize("options", GDL_OPTIONS.values(), ids=GDL_OPTIONS.keys())
def test_generalized_dice_hard_label_matches_sudre(backend, options):
    rng = np.random.default_rng(1)
    logits = make_logits(rng, SHAPE)
    label = make_hard_label(rng, SHAPE, absent=(3,), ignore_fraction=0.1)
    label[0] = np.where(label[0] == 2, 0, label[0])  # zero volume in image 0
    label[1] = IGNORE  # an image with nothing kept
    options = dict(options, ignore_index=IGNORE)
    expected = generalized_dice_reference(logits, label, **options)
    run(backend, jdt_array.generalized_dice_loss, [logits, label], expected, **options)


@pytest.mark.parametrize("options", GDL_OPTIONS.values(), ids=GDL_OPTIONS.keys())
def test_generalized_dice_soft_label_matches_sudre(backend, options):
    rng = np.random.default_rng(2)
    shape = (2, 3, 4, 2, 3)  # 3D, channels last
    logits = make_logits(rng, shape)
    label = make_soft_label(rng, shape, class_axis=-1)
    keep = make_keep_mask(rng, shape, class_axis=-1)
    options = dict(options, class_axis=-1)
    expected = generalized_dice_reference(logits, label, keep_mask=keep, **options)
    run(
        backend, jdt_array.generalized_dice_loss, [logits, label, keep], expected, **options
    )


def test_generalized_dice_with_nothing_kept_is_zero(backend):
    rng = np.random.default_rng(3)
    logits = make_logits(rng, SHAPE)
    label = np.full(SHAPE[:1] + SHAPE[2:], IGNORE)
    for per_image in (False, True):
        run(
            backend,
            jdt_array.generalized_dice_loss,
            [logits, label],
            0.0,
            ignore_index=IGNORE,
            per_image=per_image,
        )


# ---------------------------------------------------------------- properties

LOGITS = arrays(
    np.float64,
    st.tuples(st.integers(1, 2), st.integers(2, 4), st.integers(1, 3), st.integers(1, 3)),
    elements=st.floats(-6, 6),
)


@FAST
@given(logits=LOGITS, per_image=st.booleans(), smooth=st.sampled_from([0.0, 1e-3]))
def test_generalized_dice_is_zero_when_the_label_is_the_prediction(
    logits, per_image, smooth
):
    label = softmax(logits, 1)
    loss = jdt_array.generalized_dice_loss(
        logits, label, per_image=per_image, smooth=smooth
    )
    assert abs(float(loss)) < 1e-9


@FAST
@given(logits=LOGITS, seed=st.integers(0, 2**31), per_image=st.booleans())
def test_generalized_dice_lies_in_unit_interval(logits, seed, per_image):
    label = make_hard_label(np.random.default_rng(seed), logits.shape)
    loss = float(jdt_array.generalized_dice_loss(logits, label, per_image=per_image))
    assert 0.0 <= loss <= 1.0


@st.composite
def equal_volumes(draw):
    """Logits (B, C, C * k) and a label in which every class covers k pixels per image."""
    b, c, k = draw(st.integers(1, 2)), draw(st.integers(2, 4)), draw(st.integers(1, 3))
    logits = draw(arrays(np.float64, (b, c, c * k), elements=st.floats(-6, 6)))
    label = np.stack([draw(st.permutations(np.repeat(np.arange(c), k))) for _ in range(b)])
    return logits, label


@FAST
@given(case=equal_volumes(), per_image=st.booleans())
def test_generalized_dice_with_equal_volumes_is_the_pooled_dice(case, per_image):
    # Equal class volumes make the weights uniform: the class-agnostic Dice loss.
    logits, label = case
    loss = float(
        jdt_array.generalized_dice_loss(logits, label, smooth=0.0, per_image=per_image)
    )
    levels = {"mIoUD": 0.0, "mIoUI": 1.0} if per_image else {}
    pooled = jdt_loss_reference(
        logits, label, alpha=0.5, beta=0.5, smooth=0.0, class_agnostic=True, **levels
    )
    assert loss == pytest.approx(pooled, abs=1e-10)


# ---------------------------------------------------------------- gradients


def gradient_inputs(hard):
    rng = np.random.default_rng(4)
    shape = (2, 3, 3, 2)
    logits = make_logits(rng, shape)
    if hard:
        label = make_hard_label(rng, shape, absent=(1,), ignore_fraction=0.2)
        return logits, label, {"ignore_index": IGNORE}
    return logits, make_soft_label(rng, shape), {}


@GRADIENT_CHECKS
@pytest.mark.parametrize("hard", [True, False], ids=["hard", "soft"])
def test_gradients_match_finite_differences(check, hard):
    logits, label, options = gradient_inputs(hard)
    check(jdt_array.ce_jdt_loss, logits, label, mIoUI=1.0, **options)
    check(jdt_array.generalized_dice_loss, logits, label, **options)
    check(jdt_array.generalized_dice_loss, logits, label, per_image=True, **options)


# ---------------------------------------------------------------- bad input

X = np.zeros((2, 3, 4, 5))
Y = np.zeros((2, 4, 5), dtype=np.int64)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="at least one of ce_weight and jdt_weight"):
        jdt_array.ce_jdt_loss(X, Y, ce_weight=0.0, jdt_weight=0.0)
    with pytest.raises(ValueError, match="ce_weight must be a finite number >= 0"):
        jdt_array.ce_jdt_loss(X, Y, ce_weight=-0.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'alpah'"):
        jdt_array.ce_jdt_loss(X, Y, alpah=0.5)
    with pytest.raises(ValueError, match="smooth must be a finite number >= 0"):
        jdt_array.generalized_dice_loss(X, Y, smooth=-1.0)
    with pytest.raises(TypeError, match="per_image must be a bool"):
        jdt_array.generalized_dice_loss(X, Y, per_image="yes")
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        jdt_array.generalized_dice_loss(X, Y - 1)
