"""The chunked, multi-threaded loops of the NumPy kernels."""

import threading

import numpy as np
import pytest

from jdt_array._kernels import numpy_threads as numpy_parallel
from jdt_array._kernels.numpy import NumPyKernels


def test_each_chunk_covers_every_pixel_exactly_once(monkeypatch):
    monkeypatch.setattr(numpy_parallel, "MIN_CHUNK_PIXELS", 1)
    monkeypatch.setattr(numpy_parallel, "CHUNK_ELEMENTS", 12)
    seen = np.zeros(1000, dtype=int)
    lock = threading.Lock()

    def mark(chunk):
        with lock:
            seen[chunk] += 1

    numpy_parallel.each_chunk(mark, 1000, per_pixel=5)  # chunks of 2 pixels
    np.testing.assert_array_equal(seen, 1)


def test_many_classes_still_make_chunks_of_many_pixels():
    chunks = []
    numpy_parallel.each_chunk(chunks.append, 10_000, per_pixel=10**6)
    assert len(chunks) == -(-10_000 // numpy_parallel.MIN_CHUNK_PIXELS)
    assert sum(c.stop - c.start for c in chunks) == 10_000


def test_no_pixels_still_calls_once():
    calls = []
    numpy_parallel.each_chunk(calls.append, 0, per_pixel=3)
    assert calls == [slice(0, 0)]


def test_an_error_in_a_chunk_reaches_the_caller(monkeypatch):
    monkeypatch.setattr(numpy_parallel, "MIN_CHUNK_PIXELS", 1)
    monkeypatch.setattr(numpy_parallel, "CHUNK_ELEMENTS", 4)

    def fail(chunk):
        if chunk.start >= 40:
            raise ArithmeticError(f"chunk {chunk}")

    with pytest.raises(ArithmeticError, match="chunk"):
        numpy_parallel.each_chunk(fail, 100, per_pixel=1)


@pytest.mark.parametrize("setting, count", [("1", 1), ("3", 3)])
def test_thread_count_follows_the_environment(monkeypatch, setting, count):
    monkeypatch.setenv("JDT_ARRAY_NUMPY_THREADS", setting)
    assert numpy_parallel.threads() == count


@pytest.mark.parametrize("setting", ["0", "-2", "many"])
def test_a_bad_thread_count_names_the_variable(monkeypatch, setting):
    monkeypatch.setenv("JDT_ARRAY_NUMPY_THREADS", setting)
    with pytest.raises(ValueError, match="JDT_ARRAY_NUMPY_THREADS"):
        numpy_parallel.threads()


def test_default_thread_count_is_the_usable_cores_capped(monkeypatch):
    monkeypatch.delenv("JDT_ARRAY_NUMPY_THREADS", raising=False)
    assert 1 <= numpy_parallel.threads() <= 8


@pytest.mark.parametrize("axis", [1, -1], ids=["channels-first", "channels-last"])
def test_chunked_softmax_equals_the_formula(monkeypatch, axis):
    monkeypatch.setattr(numpy_parallel, "MIN_CHUNK_PIXELS", 1)
    monkeypatch.setattr(numpy_parallel, "CHUNK_ELEMENTS", 16)  # many chunks
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 7, 3)) * 30  # large logits: the max shift matters
    x = np.moveaxis(x, 1, axis)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    want = e / e.sum(axis=axis, keepdims=True)
    got = NumPyKernels(np).softmax(x, axis)
    assert got.shape == x.shape and got.dtype == x.dtype
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


def _softmax_in_child(queue):
    x = np.random.default_rng(1).standard_normal((1, 3, 5000))
    queue.put(float(NumPyKernels(np).softmax(x, 1).sum()))


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="no fork here")
def test_a_forked_child_gets_threads_of_its_own(monkeypatch):
    """After fork the parent's pool threads do not exist in the child; reusing that
    pool would hang the child's first chunked call."""
    import multiprocessing

    monkeypatch.setattr(numpy_parallel, "MIN_CHUNK_PIXELS", 1)
    monkeypatch.setattr(numpy_parallel, "CHUNK_ELEMENTS", 64)
    monkeypatch.setenv("JDT_ARRAY_NUMPY_THREADS", "2")
    numpy_parallel._pool.cache_clear()
    try:
        NumPyKernels(np).softmax(np.ones((1, 3, 5000)), 1)  # the parent's pool now runs
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_softmax_in_child, args=(queue,))
        child.start()
        child.join(timeout=60)
        hung = child.is_alive()
        if hung:
            child.kill()
        assert not hung, "the forked child hung in the chunked softmax"
        assert queue.get(timeout=5) == pytest.approx(5000.0)
    finally:
        numpy_parallel._pool.cache_clear()
