"""cross_entropy (with the focal variant) and kl_div against the float64 formulas on every
backend, and against PyTorch's own implementations.

What they share with the rest of the family (result with the logits, half precision,
zero gradient where nothing is kept) is tested in test_loss_family.py.
"""

import numpy as np
import pytest
from _support.backends import run
from _support.family_reference import cross_entropy_reference, kl_div_reference
from _support.gradients import GRADIENT_CHECKS
from _support.inputs import (
    IGNORE,
    make_hard_label,
    make_keep_mask,
    make_logits,
    make_soft_label,
)
from _support.reference import softmax
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import jdt_array

SHAPE = (3, 4, 5, 6)
FAST = settings(max_examples=40, deadline=None)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_hard_label_matches_formula(backend, gamma):
    rng = np.random.default_rng(0)
    logits = make_logits(rng, SHAPE)
    label = make_hard_label(rng, SHAPE, ignore_fraction=0.2)
    keep = make_keep_mask(rng, SHAPE)
    options = {"ignore_index": IGNORE, "gamma": gamma}
    expected = cross_entropy_reference(logits, label, keep_mask=keep, **options)
    run(backend, jdt_array.cross_entropy, [logits, label, keep], expected, **options)


@pytest.mark.parametrize("gamma", [0.0, 1.5])
def test_soft_label_matches_formula(backend, gamma):
    rng = np.random.default_rng(1)
    logits = make_logits(rng, SHAPE)
    label = make_soft_label(rng, SHAPE)
    keep = make_keep_mask(rng, SHAPE)
    expected = cross_entropy_reference(logits, label, keep_mask=keep, gamma=gamma)
    run(backend, jdt_array.cross_entropy, [logits, label, keep], expected, gamma=gamma)


def test_channels_last_3d(backend):
    rng = np.random.default_rng(2)
    shape = (2, 3, 2, 4, 3)
    logits = make_logits(rng, shape)
    label = make_hard_label(rng, shape, class_axis=-1)
    expected = cross_entropy_reference(logits, label, class_axis=-1, gamma=1.0)
    run(
        backend,
        jdt_array.cross_entropy,
        [logits, label],
        expected,
        class_axis=-1,
        gamma=1.0,
    )


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_kl_div_matches_formula(backend, temperature):
    rng = np.random.default_rng(3)
    logits = make_logits(rng, SHAPE)
    target = make_soft_label(rng, SHAPE)
    target[0, :, 0, 0] = [1.0, 0.0, 0.0, 0.0]  # 0 log 0 = 0
    keep = make_keep_mask(rng, SHAPE)
    expected = kl_div_reference(logits, target, keep_mask=keep, temperature=temperature)
    run(
        backend, jdt_array.kl_div, [logits, target, keep], expected, temperature=temperature
    )


def test_nothing_kept_gives_zero(backend):
    rng = np.random.default_rng(4)
    logits = make_logits(rng, SHAPE)
    label = np.full(SHAPE[:1] + SHAPE[2:], IGNORE)
    run(backend, jdt_array.cross_entropy, [logits, label], 0.0, ignore_index=IGNORE)
    nothing = np.zeros(label.shape, dtype=bool)
    target = make_soft_label(rng, SHAPE)
    run(backend, jdt_array.kl_div, [logits, target, nothing], 0.0)
    run(backend, jdt_array.cross_entropy, [logits, target, nothing], 0.0, gamma=2.0)


def test_agrees_with_torch_functional():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    logits = torch.asarray(make_logits(rng, SHAPE))
    label = torch.asarray(make_hard_label(rng, SHAPE, ignore_fraction=0.2))
    soft = torch.asarray(make_soft_label(rng, SHAPE))
    torch.testing.assert_close(
        jdt_array.cross_entropy(logits, label, ignore_index=IGNORE),
        F.cross_entropy(logits, label, ignore_index=IGNORE),
    )
    torch.testing.assert_close(
        jdt_array.cross_entropy(logits, soft), F.cross_entropy(logits, soft)
    )
    t = 3.0
    student = F.log_softmax(logits / t, dim=1)
    pixels = SHAPE[0] * SHAPE[2] * SHAPE[3]
    expected = F.kl_div(student, soft, reduction="sum") / pixels * t**2
    torch.testing.assert_close(jdt_array.kl_div(logits, soft, temperature=t), expected)


def test_focal_loss_of_one_hot_soft_label_equals_hard_label(backend):
    rng = np.random.default_rng(6)
    logits = make_logits(rng, SHAPE)
    label = make_hard_label(rng, SHAPE)
    one_hot = np.moveaxis(np.eye(SHAPE[1])[label], -1, 1)
    hard = backend.call(
        jdt_array.cross_entropy, *map(backend.asarray, (logits, label)), gamma=2.0
    )
    expected = backend.to_numpy(hard)
    run(backend, jdt_array.cross_entropy, [logits, one_hot], expected, gamma=2.0)


# ---------------------------------------------------------------- properties

LOGITS = arrays(
    np.float64,
    st.tuples(st.integers(1, 2), st.integers(2, 4), st.integers(1, 3), st.integers(1, 3)),
    elements=st.floats(-8, 8),
)


@FAST
@given(logits=LOGITS, temperature=st.floats(0.5, 5))
def test_kl_div_is_zero_exactly_at_the_teacher(logits, temperature):
    target = softmax(logits / temperature, 1)
    loss = jdt_array.kl_div(logits, target, temperature=temperature)
    assert abs(float(loss)) < 1e-12


@FAST
@given(logits=LOGITS, other=st.integers(0, 2**31), gamma=st.floats(0, 3))
def test_focal_loss_is_at_most_the_cross_entropy(logits, other, gamma):
    target = make_soft_label(np.random.default_rng(other), logits.shape)
    ce = float(jdt_array.cross_entropy(logits, target))
    focal = float(jdt_array.cross_entropy(logits, target, gamma=gamma))
    assert 0 <= focal <= ce + 1e-12


@FAST
@given(logits=LOGITS, seed=st.integers(0, 2**31))
def test_soft_cross_entropy_is_kl_plus_label_entropy(logits, seed):
    target = make_soft_label(np.random.default_rng(seed), logits.shape)
    entropy = -np.mean(np.sum(target * np.log(target), axis=1))
    ce = float(jdt_array.cross_entropy(logits, target))
    assert ce == pytest.approx(float(jdt_array.kl_div(logits, target)) + entropy, abs=1e-10)


# ---------------------------------------------------------------- gradients


def cross_entropy_gradient_inputs():
    """Logits, a hard label with ignored pixels, a soft label."""
    rng = np.random.default_rng(9)
    shape = (2, 3, 3, 2)
    logits = make_logits(rng, shape)
    label = make_hard_label(rng, shape, ignore_fraction=0.2)
    return logits, label, make_soft_label(rng, shape)


def kl_div_gradient_inputs():
    rng = np.random.default_rng(10)
    shape = (2, 3, 2, 3)
    logits = make_logits(rng, shape)
    target = make_soft_label(rng, shape)
    target[0, :, 0, 0] = [0.0, 1.0, 0.0]
    return logits, target


@GRADIENT_CHECKS
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_cross_entropy_gradient_matches_finite_differences(check, gamma):
    logits, label, soft = cross_entropy_gradient_inputs()
    check(jdt_array.cross_entropy, logits, label, ignore_index=IGNORE, gamma=gamma)
    check(jdt_array.cross_entropy, logits, soft, gamma=gamma)


@GRADIENT_CHECKS
def test_kl_div_gradient_matches_finite_differences(check):
    logits, target = kl_div_gradient_inputs()
    check(jdt_array.kl_div, logits, target, temperature=2.0)


# ---------------------------------------------------------------- bad input

X = np.zeros((2, 3, 4, 5))
Y = np.zeros((2, 4, 5), dtype=np.int64)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        jdt_array.cross_entropy(X, Y, gamma=-1.0)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        jdt_array.cross_entropy(X, Y + 3)
    with pytest.raises(
        ValueError, match=r"label must have the shape of logits \(2, 3, 4, 5\)"
    ):
        jdt_array.cross_entropy(X, X[:, :2])
    with pytest.raises(ValueError, match=r"soft label must hold probabilities"):
        jdt_array.cross_entropy(X, X + 2)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        jdt_array.kl_div(X, X, temperature=0.0)
    with pytest.raises(TypeError, match=r"target_prob must be a floating.*cross_entropy"):
        jdt_array.kl_div(X, Y)
    with pytest.raises(ValueError, match="keep_mask must have the shape"):
        jdt_array.kl_div(X, X, keep_mask=np.ones((2, 4), dtype=bool))
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="one array library"):
        jdt_array.cross_entropy(torch.zeros(2, 3, 4, 5), Y)
