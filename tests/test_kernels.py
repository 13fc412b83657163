"""The native kernels (PyTorch, NumPy, JAX) give what the generic array-API code gives.

The losses' tests check every backend against the float64 reference; these check the
kernels on their own, on the cases that take different branches inside them: every
pixel kept, a keep mask, a label with several classes absent, float32 and float64.
"""

import numpy as np
import pytest
from _support.tiers import tiered

from jdt_array._kernels import Generic, argmax, kernels_for

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


def _overrides(kernels, name):
    """Whether ``kernels`` has a native form of the hot spot ``name``."""
    return getattr(type(kernels), name) is not getattr(Generic, name)


@pytest.mark.parametrize("chunk", [None, 10], ids=["one-chunk", "many-chunks"])
@pytest.mark.parametrize("reuse", [False, True], ids=["gather-again", "reuse-scratch"])
# Overwriting a buffer in place is the NumPy and PyTorch kernels' own branch (JAX
# arrays are immutable): the grid backends run it.
@pytest.mark.parametrize(
    "overwrite",
    tiered([pytest.param(False, id="new-buffer"), pytest.param(True, id="overwrite")],
           smoke={"new-buffer"}),
)  # fmt: skip
@pytest.mark.parametrize("shape, drop", CASES)
def test_native_statistics_and_gradient_equal_generic(
    backend, monkeypatch, shape, drop, overwrite, reuse, chunk
):
    xp = backend.xp
    hot_spots = ("softmax", "softmax_vjp", "hard_statistics", "hard_statistics_vjp")
    if not any(_overrides(kernels_for(xp), name) for name in hot_spots):
        pytest.skip(f"{backend.name} uses the generic code (no native kernels)")
    if chunk is not None:
        if backend.name != "numpy":
            pytest.skip("only the NumPy kernels work in pixel chunks")
        from jdt_array._kernels import numpy_threads

        # A few pixels per chunk: the tiny arrays run as many chunks on the threads.
        monkeypatch.setattr(numpy_threads, "MIN_CHUNK_PIXELS", 1)
        monkeypatch.setattr(numpy_threads, "CHUNK_ELEMENTS", chunk)
    logits, label, keep = _inputs(backend, shape, drop)
    rng = np.random.default_rng(1)
    g_prob = backend.asarray(rng.standard_normal(shape[:2]))
    g_diff = backend.asarray(rng.standard_normal(shape[:2]))

    def compute(kernels):
        prob = kernels.softmax(logits, 1)
        stats, _ = kernels.hard_statistics(prob, label, keep, 1, 1.0)
        # A probabilities buffer of its own, which overwrite=True may reuse.
        own = kernels.softmax(logits, 1)
        # As in a training step: the gradient may use the statistics' residual.
        residual = kernels.hard_statistics(own, label, keep, 1, 1.0)[1] if reuse else None
        grad = kernels.hard_statistics_vjp(
            own, label, keep, 1, 1.0, g_prob, g_diff, residual=residual,
            overwrite=overwrite,
        )  # fmt: skip
        return [prob, *stats, grad]

    native = compute(kernels_for(xp))
    generic = compute(Generic(xp))
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
    if not _overrides(kernels, "argmax"):
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
    if not _overrides(kernels, "pair_counts"):
        pytest.skip(f"{backend.name} uses the generic code (no native kernels)")
    rng = np.random.default_rng(3)
    lab = rng.integers(0, 6, size=(3, 50)).astype(np.int32)  # 5: no class
    prd = rng.integers(0, 6, size=(3, 50)).astype(np.int32)
    want = np.zeros((3, 6, 6), dtype=np.int64)
    np.add.at(want, (np.arange(3)[:, None], lab, prd), 1)
    lab_in, prd_in = backend.asarray(lab.astype(np.int64)), backend.asarray(prd)
    got = kernels.pair_counts(lab_in, prd_in, 5)
    np.testing.assert_array_equal(
        backend.to_numpy(got), backend.to_numpy(Generic(xp).pair_counts(lab_in, prd_in, 5))
    )
    assert backend.to_numpy(got).dtype == np.int64
    np.testing.assert_array_equal(backend.to_numpy(got), want)
    # The ids are the caller's: read, never written.
    np.testing.assert_array_equal(backend.to_numpy(lab_in), lab)
    np.testing.assert_array_equal(backend.to_numpy(prd_in), prd)
    # A table larger than an image is left to the class-by-class counts.
    assert kernels.pair_table_pays(50, 5) and not kernels.pair_table_pays(50, 40)


def _byte_ids(rng, dtype, shape, num_classes):
    """One-byte ids: classes, out-of-range ids of both signs, the dtype's extremes."""
    info = np.iinfo(dtype)
    values = [*range(num_classes + 3), info.min, info.max, *([-1, -3] if info.min else [])]
    return rng.choice(np.asarray(values, dtype=dtype), size=shape)


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(
    "label_dtype, pred_dtype", [("int8", "int8"), ("uint8", "uint8"), ("uint8", "int8")]
)
def test_one_byte_ids_counted_from_a_pair_table_equal_the_pixel_path(
    monkeypatch, label_dtype, pred_dtype, batch
):
    """Integer labels and predictions of one byte take one table of their 65,536 byte
    pairs (NumPy, large images); every count, the bad labels and predictions too,
    equals the per-pixel path's, whatever the ignore_index."""
    from jdt_array._kernels import numpy as numpy_kernels
    from jdt_array.metrics import batch_statistics

    rng = np.random.default_rng(4)
    C, shape = 5, (batch, 16, 20)
    label = _byte_ids(rng, np.dtype(label_dtype), shape, C)
    pred = _byte_ids(rng, np.dtype(pred_dtype), shape, C)
    tables = []
    counted = numpy_kernels.NumPyKernels.byte_pair_counts

    def spy(self, *args):
        tables.append(counted(self, *args))
        return tables[-1]

    monkeypatch.setattr(numpy_kernels.NumPyKernels, "byte_pair_counts", spy)
    for ignore_index in (None, -1, 255, 2, 300):
        options = {"num_classes": C, "ignore_index": ignore_index}
        monkeypatch.setattr(numpy_kernels, "BYTE_TABLE_PIXELS", 1)
        from_table = batch_statistics(pred, label, **options)
        assert tables[-1] is not None
        monkeypatch.setattr(numpy_kernels, "BYTE_TABLE_PIXELS", 10**9)
        per_pixel = batch_statistics(pred, label, **options)
        assert tables[-1] is None
        for name, want in per_pixel._asdict().items():
            got = getattr(from_table, name)
            if want is None:
                assert got is None, name
                continue
            assert got.dtype == want.dtype and got.shape == want.shape, name
            np.testing.assert_array_equal(got, want, err_msg=f"{name}, {ignore_index=}")
        assert per_pixel.bad_label.any() and per_pixel.bad_prediction.any()
