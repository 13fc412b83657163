"""The native kernels (PyTorch, NumPy) give what the generic array-API code gives.

The losses' tests check every backend against the float64 reference; these check the
kernels on their own, on the cases that take different branches inside them: every
pixel kept, a keep mask, a label with several classes absent, float32 and float64.
"""

import numpy as np
import pytest

from jdt_array._kernels import Generic, argmax, kernels_for
from jdt_array._statistics import hard_statistics, softmax
from jdt_array.jdt import Prepared
from jdt_array.jdt_grad import statistics_vjp

CASES = [
    pytest.param((2, 5, 7, 6), None, id="all-kept"),
    pytest.param((3, 4, 9), 0.3, id="keep-mask"),
    pytest.param((1, 6, 3, 4, 5), 1.0, id="nothing-kept"),
]


def _inputs(backend, shape, drop, seed=0):
    rng = np.random.default_rng(seed)
    logits = backend.asarray(3 * rng.standard_normal(shape))
    # Classes >= 2 never appear: their counts and overlaps must come out as 0.
    label = backend.asarray(rng.integers(0, 2, size=(shape[0], *shape[2:])))
    keep = None if drop is None else backend.asarray(rng.random(label.shape) >= drop)
    return logits, label, keep


def _with_generic(monkeypatch, fn):
    import jdt_array._statistics
    import jdt_array.jdt_grad

    monkeypatch.setattr(jdt_array._statistics, "kernels_for", lambda xp: Generic)
    monkeypatch.setattr(jdt_array.jdt_grad, "kernels_for", lambda xp: Generic)
    try:
        return fn()
    finally:
        monkeypatch.undo()


@pytest.mark.parametrize("chunk", [None, 10], ids=["one-chunk", "many-chunks"])
@pytest.mark.parametrize("reuse", [False, True], ids=["gather-again", "reuse-scratch"])
@pytest.mark.parametrize("overwrite", [False, True], ids=["new-buffer", "overwrite"])
@pytest.mark.parametrize("shape, drop", CASES)
def test_native_statistics_and_gradient_equal_generic(
    backend, monkeypatch, shape, drop, overwrite, reuse, chunk
):
    xp = backend.xp
    if kernels_for(xp) is Generic:
        pytest.skip(f"{backend.name} uses the generic code (no native kernels)")
    if chunk is not None:
        if backend.name != "numpy":
            pytest.skip("only the NumPy kernels work in pixel chunks")
        from jdt_array.backends import numpy_parallel

        # A few pixels per chunk: the tiny arrays run as many chunks on the threads.
        monkeypatch.setattr(numpy_parallel, "MIN_CHUNK_PIXELS", 1)
        monkeypatch.setattr(numpy_parallel, "CHUNK_ELEMENTS", chunk)
    logits, label, keep = _inputs(backend, shape, drop)
    rng = np.random.default_rng(1)
    g_prob = backend.asarray(rng.standard_normal(shape[:2]))
    g_diff = backend.asarray(rng.standard_normal(shape[:2]))

    def compute():
        prob = softmax(xp, logits, 1, logits.dtype)
        stats = hard_statistics(xp, prob, label, keep, 1, 1.0)
        # A probabilities buffer of its own, which overwrite=True may reuse.
        own = softmax(xp, logits, 1, logits.dtype)
        inputs = Prepared(xp, own, label, keep, 1, 1.0, True, scratch={})
        if reuse:  # as in a training step: the gradient may use what this left
            inputs.statistics()
        grad = statistics_vjp(inputs, g_prob, g_diff, overwrite=overwrite)
        assert not inputs.scratch  # what the gradient used is released
        return [prob, *stats, grad]

    native = compute()
    generic = _with_generic(monkeypatch, compute)
    for got, want in zip(native, generic, strict=True):
        assert got.dtype == want.dtype and tuple(got.shape) == tuple(want.shape)
        np.testing.assert_allclose(
            backend.to_numpy(got), backend.to_numpy(want),
            rtol=backend.rtol, atol=backend.atol,
        )  # fmt: skip


@pytest.mark.parametrize("num_classes", [5, 300], ids=["5-classes", "300-classes"])
@pytest.mark.parametrize("axis", [1, -1], ids=["channels-first", "channels-last"])
def test_native_metric_kernels_equal_generic(backend, num_classes, axis):
    """argmax (ties and NaN: the first index) and per-class counts, as the metrics use
    them; 300 classes take a wider index dtype than 5."""
    xp = backend.xp
    kernels = kernels_for(xp)
    if kernels is Generic:
        pytest.skip(f"{backend.name} uses the generic code (no native kernels)")
    rng = np.random.default_rng(2)
    # Rounded scores: many ties, which must resolve to the first class as in argmax.
    # NaN scores: argmax names the first NaN; the kernels must too.
    rounded = np.round(rng.random((3, num_classes, 40)), 1)
    rounded[0, 2:4, :3] = np.nan
    rounded[1, 0, 5] = np.nan
    rounded[2, -1, 7] = np.nan
    scores = backend.asarray(np.moveaxis(rounded, 1, axis))
    want = backend.to_numpy(xp.argmax(scores, axis=axis))
    assert (backend.to_numpy(argmax(xp, scores, axis)) == want).all()

    ids = rng.integers(0, 6, size=(3, 40)).astype(np.int32)  # 5: no class
    want = np.stack([np.bincount(row, minlength=6)[:5] for row in ids])
    got = kernels.class_counts(backend.asarray(ids), 5)
    assert backend.to_numpy(got).dtype == np.int64
    np.testing.assert_array_equal(backend.to_numpy(got), want)


def test_native_pair_counts_equal_a_direct_count(backend):
    """The (label, prediction) table the metrics read their three counts from; ids C
    (no class) included, and images of their own."""
    xp = backend.xp
    kernels = kernels_for(xp)
    if kernels is Generic:
        pytest.skip(f"{backend.name} uses the generic code (no native kernels)")
    rng = np.random.default_rng(3)
    lab = rng.integers(0, 6, size=(3, 50)).astype(np.int32)  # 5: no class
    prd = rng.integers(0, 6, size=(3, 50)).astype(np.int32)
    want = np.zeros((3, 6, 6), dtype=np.int64)
    np.add.at(want, (np.arange(3)[:, None], lab, prd), 1)
    lab_in, prd_in = backend.asarray(lab.astype(np.int64)), backend.asarray(prd)
    got = kernels.pair_counts(lab_in, prd_in, 5)
    assert backend.to_numpy(got).dtype == np.int64
    np.testing.assert_array_equal(backend.to_numpy(got), want)
    # The ids are the caller's: read, never written.
    np.testing.assert_array_equal(backend.to_numpy(lab_in), lab)
    np.testing.assert_array_equal(backend.to_numpy(prd_in), prd)
    # A table larger than an image is left to the class-by-class counts.
    assert kernels.pair_counts(backend.asarray(lab), backend.asarray(prd), 40) is None
