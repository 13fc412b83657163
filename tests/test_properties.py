"""Properties the papers prove, checked with hypothesis on NumPy and PyTorch."""

import numpy as np
import pytest
from _support.reference import softmax
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import jdt_array

LOGITS = arrays(
    np.float64,
    st.tuples(st.integers(1, 3), st.integers(2, 4), st.integers(1, 4), st.integers(1, 4)),
    elements=st.floats(-6, 6),
)
LEVELS = st.sampled_from(
    [{"mIoUD": 1.0}, {"mIoUD": 0.0, "mIoUI": 1.0}, {"mIoUD": 0.0, "mIoUC": 1.0}]
)
FAST = settings(max_examples=60, deadline=None)


@pytest.fixture(scope="module", params=["numpy", "torch"])
def lib(request):
    if request.param == "torch":
        torch = pytest.importorskip("torch")
        return lambda a: torch.asarray(np.asarray(a))
    return np.asarray


def value(loss):
    return float(np.asarray(loss.detach() if hasattr(loss, "detach") else loss))


def triple(shape):
    return st.tuples(*[arrays(np.float64, shape, elements=st.floats(-6, 6))] * 3)


@FAST
@given(logits=LOGITS, levels=LEVELS, norm=st.sampled_from([1, 2, 3]),
       ab=st.sampled_from([(1.0, 1.0), (0.5, 0.5), (0.2, 0.8)]))  # fmt: skip
def test_zero_when_soft_label_equals_prediction(lib, logits, levels, norm, ab):
    label = softmax(logits, 1)
    loss = jdt_array.jdt_loss(
        lib(logits), lib(label), norm=norm, alpha=ab[0], beta=ab[1], **levels
    )
    assert abs(value(loss)) < 1e-9


@FAST
@given(
    logits=LOGITS,
    levels=st.fixed_dictionaries(
        {"mIoUD": st.floats(0, 1), "mIoUI": st.floats(0, 1), "mIoUC": st.floats(0.01, 1)}
    ),
    gamma=st.floats(1, 3),
    smooth=st.sampled_from([0.0, 1e-3, 1.0]),
    hard=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_bounded_in_unit_interval(lib, logits, levels, gamma, smooth, hard, seed):
    rng = np.random.default_rng(seed)
    shape = (logits.shape[0],) + logits.shape[2:]
    label = (
        rng.integers(0, logits.shape[1], size=shape)
        if hard
        else softmax(rng.normal(size=logits.shape), 1)
    )
    loss = value(
        jdt_array.jdt_loss(lib(logits), lib(label), gamma=gamma, smooth=smooth, **levels)
    )
    total = sum(levels.values())
    assert -1e-12 <= loss <= total * (1 + 1e-12)


@FAST
@given(data=st.data(), shape=st.sampled_from([(1, 2, 3, 3), (2, 3, 2, 4), (2, 4, 1, 5)]))
def test_jaccard_triangle_inequality(lib, data, shape):
    """The L1 Jaccard metric loss is a metric on soft labels (Wang et al., NeurIPS 2023)."""
    lx, ly, lz = data.draw(triple(shape))

    def dist(a, b):
        return value(
            jdt_array.jaccard_loss(
                lib(a), lib(softmax(b, 1)), smooth=0.0, active_classes_mode_soft="ALL"
            )
        )

    assert dist(lx, lz) <= dist(lx, ly) + dist(ly, lz) + 1e-12


@FAST
@given(data=st.data(), shape=st.sampled_from([(1, 2, 3, 3), (2, 3, 2, 4)]))
def test_symmetric(lib, data, shape):
    lx, ly, _ = data.draw(triple(shape))
    for fn in (jdt_array.jaccard_loss, jdt_array.dice_loss):
        xy = value(fn(lib(lx), lib(softmax(ly, 1)), smooth=0.0))
        yx = value(fn(lib(ly), lib(softmax(lx, 1)), smooth=0.0))
        assert xy == pytest.approx(yx, rel=1e-12, abs=1e-14)


@FAST
@given(logits=LOGITS, seed=st.integers(0, 2**16), levels=LEVELS)
def test_equals_soft_jaccard_for_hard_labels(lib, logits, seed, levels):
    """For hard labels the metric loss is the usual soft Jaccard, |x.y| / |x + y - x.y|."""
    rng = np.random.default_rng(seed)
    B, C = logits.shape[:2]
    label = rng.integers(0, C, size=(B,) + logits.shape[2:])
    loss = value(
        jdt_array.jaccard_loss(
            lib(logits), lib(label), smooth=0.0, active_classes_mode_hard="ALL",
            **levels,
        )
    )  # fmt: skip
    x = softmax(logits, 1).reshape(B, C, -1)
    y = np.moveaxis(np.eye(C)[label], -1, 1).reshape(B, C, -1)
    axes = 2 if "mIoUD" not in levels or levels["mIoUD"] == 0 else (0, 2)
    inter = np.sum(x * y, axis=axes)
    union = np.sum(x + y - x * y, axis=axes)
    per = 1 - inter / union
    expected = per.mean()  # with "ALL" every class and image is active
    assert loss == pytest.approx(expected, rel=1e-10, abs=1e-12)


@FAST
@given(logits=LOGITS, seed=st.integers(0, 2**16), levels=LEVELS, hard=st.booleans())
def test_ignored_pixels_never_change_value(lib, logits, seed, levels, hard):
    rng = np.random.default_rng(seed)
    B, C = logits.shape[:2]
    spatial = (B,) + logits.shape[2:]
    keep = rng.random(spatial) < 0.6
    if hard:
        label = rng.integers(0, C, size=spatial)
        other = np.where(keep, label, rng.integers(0, C, size=spatial))
    else:
        label = softmax(rng.normal(size=logits.shape), 1)
        other = np.where(keep[:, None], label, softmax(rng.normal(size=logits.shape), 1))
    noise = np.where(keep[:, None], 0.0, rng.normal(scale=5, size=logits.shape))
    a = jdt_array.jdt_loss(lib(logits), lib(label), keep_mask=lib(keep), **levels)
    b = jdt_array.jdt_loss(lib(logits + noise), lib(other), keep_mask=lib(keep), **levels)
    assert value(a) == pytest.approx(value(b), rel=1e-12, abs=1e-14)


@FAST
@given(logits=LOGITS, seed=st.integers(0, 2**16), hard=st.booleans(),
       levels=st.fixed_dictionaries({"mIoUD": st.floats(0.1, 1), "mIoUI": st.floats(0, 1),
                                     "mIoUC": st.floats(0, 1)}))  # fmt: skip
def test_batch_permutation_invariance(lib, logits, seed, hard, levels):
    rng = np.random.default_rng(seed)
    B, C = logits.shape[:2]
    label = (
        rng.integers(0, C, size=(B,) + logits.shape[2:])
        if hard
        else softmax(rng.normal(size=logits.shape), 1)
    )
    order = rng.permutation(B)
    a = jdt_array.jdt_loss(lib(logits), lib(label), **levels)
    b = jdt_array.jdt_loss(lib(logits[order]), lib(label[order]), **levels)
    assert value(a) == pytest.approx(value(b), rel=1e-12, abs=1e-14)
