"""The soft-label makers against per-pixel float64 constructions on every backend, and
their use as jdt_loss labels."""

import numpy as np
import pytest
from _support.family_reference import (
    average_annotators_reference,
    label_smoothing_reference,
)
from _support.inputs import IGNORE, make_logits
from _support.reference import softmax
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import jdt_array
from jdt_array import soft_labels

FAST = settings(max_examples=40, deadline=None)


def made(backend, fn, label, **options):
    """``fn(label, **options)`` on ``backend`` in its float dtype, as NumPy."""
    dtype = getattr(backend.xp, backend.float_dtype)
    out = backend.call(fn, backend.asarray(label), dtype=dtype, **options)
    assert out.dtype == dtype
    return backend.to_numpy(out)


def close(backend, actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=backend.rtol, atol=backend.atol)


@pytest.mark.parametrize("window", [None, 1, 3, 5])
def test_label_smoothing_matches_window_scan(backend, window):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, size=(2, 6, 7))
    label[0, :3, :3] = 1  # a uniform block: interior pixels stay one-hot
    label[1, 2, 2:5] = IGNORE
    options = {"epsilon": 0.2, "boundary_window": window, "ignore_index": IGNORE}
    expected = label_smoothing_reference(label, 4, **options)
    close(
        backend,
        made(backend, soft_labels.label_smoothing, label, num_classes=4, **options),
        expected,
    )


def test_label_smoothing_3d_channels_last(backend):
    rng = np.random.default_rng(1)
    label = rng.integers(0, 2, size=(2, 4, 3, 5))
    label[:, :2] = 0
    options = {"epsilon": 0.3, "boundary_window": 3}
    expected = np.moveaxis(label_smoothing_reference(label, 2, **options), 1, -1)
    actual = made(
        backend, soft_labels.label_smoothing, label, num_classes=2, class_axis=-1, **options
    )
    close(backend, actual, expected)


def test_ignore_index_inside_the_class_range_gives_zero_vectors(backend):
    label = np.array([[[0, 1, 2], [2, 2, 1]]])
    expected = label_smoothing_reference(label, 3, epsilon=0.1, ignore_index=0)
    actual = made(
        backend, soft_labels.label_smoothing, label, num_classes=3, ignore_index=0
    )
    close(backend, actual, expected)
    assert np.all(actual[0, :, 0, 0] == 0)


@pytest.mark.parametrize("ignore_index", [None, IGNORE])
def test_average_annotators_matches_vote_count(backend, ignore_index):
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 4, size=(3, 2, 4, 5))  # (A, B, H, W)
    if ignore_index is not None:
        labels[0, 0, 0] = IGNORE
        labels[:, 1, 1, 1] = IGNORE  # nobody labelled this pixel
    expected = average_annotators_reference(labels, 4, ignore_index=ignore_index)
    actual = made(
        backend,
        soft_labels.average_annotators,
        labels,
        num_classes=4,
        ignore_index=ignore_index,
    )
    close(backend, actual, expected)
    moved = made(
        backend,
        soft_labels.average_annotators,
        np.moveaxis(labels, 0, -1),
        num_classes=4,
        annotator_axis=-1,
        class_axis=-1,
        ignore_index=ignore_index,
    )
    close(backend, moved, np.moveaxis(expected, 1, -1))


@pytest.mark.parametrize("temperature", [1.0, 3.0])
def test_teacher_probabilities_are_the_tempered_softmax(backend, temperature):
    logits = make_logits(np.random.default_rng(3), (2, 5, 3, 4))
    out = backend.call(
        soft_labels.teacher_probabilities, backend.asarray(logits), temperature=temperature
    )
    close(backend, backend.to_numpy(out), softmax(logits / temperature, 1))


def test_every_maker_gives_a_label_jdt_loss_accepts(backend):
    rng = np.random.default_rng(4)
    logits = make_logits(rng, (2, 3, 4, 5))
    label = rng.integers(0, 3, size=(2, 4, 5))
    dtype = getattr(backend.xp, backend.float_dtype)
    x = backend.asarray(logits)
    labels = [
        soft_labels.label_smoothing(
            backend.asarray(label), 3, boundary_window=3, dtype=dtype
        ),
        soft_labels.average_annotators(backend.asarray(label[None]), 3, dtype=dtype),
        soft_labels.teacher_probabilities(x, temperature=2.0),
    ]
    for soft in labels:
        value = backend.to_numpy(jdt_array.jdt_loss(x, soft))
        assert np.isfinite(value)
        assert 0 <= value <= 1
    # One annotator is the one-hot label: the same loss as the hard label.
    hard = backend.to_numpy(jdt_array.jdt_loss(x, backend.asarray(label), mIoUI=1.0))
    soft = backend.to_numpy(
        jdt_array.jdt_loss(x, labels[1], mIoUI=1.0, active_classes_mode_soft="PRESENT")
    )
    close(backend, soft, hard)


def test_default_dtype_is_float32():
    out = soft_labels.label_smoothing(np.zeros((1, 2, 2), dtype=np.int64), 2)
    assert out.dtype == np.float32


# ---------------------------------------------------------------- properties

LABELS = arrays(
    np.int64,
    st.tuples(st.integers(1, 2), st.integers(1, 5), st.integers(1, 5)),
    elements=st.integers(0, 3),
)


@FAST
@given(label=LABELS, epsilon=st.floats(0, 1), window=st.sampled_from([None, 1, 3, 5]))
def test_smoothed_labels_are_distributions_keeping_the_argmax(label, epsilon, window):
    out = soft_labels.label_smoothing(
        label, 4, epsilon=epsilon, boundary_window=window, dtype=np.float64
    )
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-12)
    assert np.all(out >= 0)
    if epsilon < 0.75:  # 1 - eps + eps/4 stays the largest entry
        assert np.all(out.argmax(axis=1) == label)


@FAST
@given(label=LABELS, window=st.sampled_from([3, 5]))
def test_only_pixels_near_another_class_are_smoothed(label, window):
    out = soft_labels.label_smoothing(
        label, 4, epsilon=0.5, boundary_window=window, dtype=np.float64
    )
    one_hot = np.moveaxis(np.eye(4)[label], -1, 1)
    smoothed = np.any(out != one_hot, axis=1)
    uniform_images = [b for b in range(len(label)) if np.all(label[b] == label[b].flat[0])]
    assert not smoothed[uniform_images].any()
    # A larger window smooths a superset of the pixels.
    if window == 5:
        small = soft_labels.label_smoothing(
            label, 4, epsilon=0.5, boundary_window=3, dtype=np.float64
        )
        assert np.all(smoothed | ~np.any(small != one_hot, axis=1))


# ---------------------------------------------------------------- bad input

LABEL = np.zeros((2, 3, 4), dtype=np.int64)


@pytest.mark.parametrize(
    ("options", "exc", "match"),
    [
        ({"epsilon": 1.5}, ValueError, r"epsilon must be in \[0, 1\]"),
        ({"epsilon": -0.1}, ValueError, "epsilon must be a finite number"),
        ({"boundary_window": 4}, ValueError, "odd window size"),
        ({"boundary_window": 0}, ValueError, "odd window size"),
        ({"boundary_window": 3.0}, TypeError, "boundary_window must be an odd int"),
        ({"class_axis": 0}, ValueError, "class_axis=0 is out of range"),
        ({"dtype": np.int32}, TypeError, "real floating dtype"),
    ],
)
def test_bad_smoothing_options(options, exc, match):
    with pytest.raises(exc, match=match):
        soft_labels.label_smoothing(LABEL, 3, **options)


def test_bad_labels_raise():
    with pytest.raises(TypeError, match="label must be an integer array"):
        soft_labels.label_smoothing(LABEL.astype(float), 3)
    with pytest.raises(ValueError, match=r"outside \[0, 3\)"):
        soft_labels.label_smoothing(LABEL + 3, 3)
    with pytest.raises(ValueError, match="num_classes must be >= 1"):
        soft_labels.label_smoothing(LABEL, 0)
    with pytest.raises(ValueError, match="annotator axis and a batch axis"):
        soft_labels.average_annotators(LABEL[0, 0], 3)
    with pytest.raises(ValueError, match="annotator_axis=3 is out of range"):
        soft_labels.average_annotators(LABEL, 3, annotator_axis=3)
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        soft_labels.teacher_probabilities(np.zeros((2, 3)), temperature=-1.0)
    with pytest.raises(TypeError, match="logits must be a floating"):
        soft_labels.teacher_probabilities(LABEL)
