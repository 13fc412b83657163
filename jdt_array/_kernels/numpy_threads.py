"""Pixel-chunked, multi-threaded loops for the NumPy kernels.

NumPy runs each operation on one core and over the whole array, so a chain of
operations streams every intermediate through main memory. The kernels here split the
pixels into chunks of about ``CHUNK_ELEMENTS`` values (all classes of a pixel in the
same chunk), run the whole chain on one chunk while it sits in the cache, and run the
chunks on a small thread pool: NumPy releases the GIL inside its loops, so the chunks
run in parallel.

Threads: ``JDT_ARRAY_NUMPY_THREADS`` (read once, at the first call), else the cores
this process may use, at most 8; 1 runs every chunk in the calling thread.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

# Values per chunk: 512 KiB of float32, a few such arrays fit in a core's L2 cache;
# but at least MIN_CHUNK_PIXELS pixels, so that many classes and images do not turn
# into thousands of tiny chunks whose Python overhead outweighs the cache.
CHUNK_ELEMENTS = 1 << 17
MIN_CHUNK_PIXELS = 256
_MAX_THREADS = 8


def each_chunk(fn: Callable[[slice], None], pixels: int, per_pixel: int) -> None:
    """Call ``fn(chunk)`` for slices covering ``range(pixels)``, in parallel; each
    pixel holds ``per_pixel`` values. Calls must write disjoint memory."""
    step = max(MIN_CHUNK_PIXELS, CHUNK_ELEMENTS // max(per_pixel, 1), 1)
    chunks = [slice(s, min(s + step, pixels)) for s in range(0, pixels, step)]
    chunks = chunks or [slice(0, 0)]  # no pixels: one empty call, for its zero results
    pool = _pool(os.getpid())
    if pool is None or len(chunks) < 2:
        for chunk in chunks:
            fn(chunk)
        return
    for _ in pool.map(fn, chunks):  # re-raises an exception of any chunk
        pass


def each_block_of_rows(fn: Callable[[slice], None], rows: int) -> None:
    """Call ``fn(block)`` for one slice of ``range(rows)`` per thread, in parallel (for
    row-wise work such as sorting, where each row is long)."""
    pool = _pool(os.getpid())
    parts = 1 if pool is None else max(1, min(rows, threads()))
    step = -(-rows // parts) if rows else 1
    blocks = [slice(s, min(s + step, rows)) for s in range(0, rows, step)] or [slice(0, 0)]
    if pool is None or len(blocks) < 2:
        for block in blocks:
            fn(block)
        return
    for _ in pool.map(fn, blocks):
        pass


def threads() -> int:
    """The number of threads the NumPy kernels use."""
    setting = os.environ.get("JDT_ARRAY_NUMPY_THREADS")
    if setting is not None:
        try:
            count = int(setting)
        except ValueError:
            count = 0
        if count < 1:
            raise ValueError(
                f"JDT_ARRAY_NUMPY_THREADS must be a positive integer, got {setting!r}"
            )
        return count
    cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    return min(len(cores) if cores else (os.cpu_count() or 1), _MAX_THREADS)


@functools.lru_cache(maxsize=1)
def _pool(pid: int) -> ThreadPoolExecutor | None:
    """The pool of process ``pid``: a forked child (a data loader worker, say) gets
    a pool of its own, since the parent's threads do not exist in it."""
    count = threads()
    if count == 1:
        return None
    return ThreadPoolExecutor(count, thread_name_prefix="jdt-array-numpy")
