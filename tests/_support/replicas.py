"""Harness of the distributed tests: threads standing for data-parallel replicas in
this process, ``torch.distributed`` ranks as spawned processes talking over gloo on
this machine, and a script run under JAX with several forced CPU devices. The
processes write their results to files that the tests then compare; the harness stops
every process it starts, also on failure or timeout.
"""

from __future__ import annotations

import datetime
import functools
import json
import operator
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest


class Replicas:
    """``n`` threads standing for data-parallel replicas, with an all-reduce (sum)."""

    def __init__(self, n):
        self.barrier = threading.Barrier(n, timeout=30)
        self.slots = [None] * n

    def reduce_for(self, rank):
        def reduce(value):
            self.slots[rank] = value
            self.barrier.wait()
            # The same order on every replica, so every replica gets the same sum.
            total = functools.reduce(operator.add, self.slots)
            self.barrier.wait()
            return total

        return reduce

    def run(self, fn, parts):
        """``fn(part, reduce)`` on every replica; the results in replica order."""
        results, errors = [None] * len(parts), []

        def work(rank):
            try:
                results[rank] = fn(parts[rank], self.reduce_for(rank))
            except BaseException as error:
                errors.append(error)
                self.barrier.abort()

        threads = [threading.Thread(target=work, args=(r,)) for r in range(len(parts))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results


def save_results(results: dict, path) -> None:
    """``results`` in ``path``: arrays by name in an ``.npz``, plain data in a ``.json``."""
    path = Path(path)
    if path.suffix == ".npz":
        np.savez(path, **results)
    elif path.suffix == ".json":
        path.write_text(json.dumps(results))
    else:
        raise ValueError(f"results go to an .npz or a .json file, not {path.name}")


def load_results(path) -> dict:
    """What ``save_results`` saved in ``path``."""
    path = Path(path)
    if path.suffix == ".npz":
        return dict(np.load(path))
    return json.loads(path.read_text())


# ---------------------------------------------------------------- torch.distributed


def init_gloo(rank: int, rendezvous: str, world: int, timeout_s: float) -> None:
    """Join the default process group of ``world`` ranks (in a worker process)."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world,
        timeout=datetime.timedelta(seconds=timeout_s),
    )  # fmt: skip


def _rank_process(rank, compute, rendezvous, out_dir, world, timeout_s, suffix):
    """One rank: join the group, save ``compute(rank)`` as ``rank<r><suffix>``, leave."""
    import torch.distributed as dist

    init_gloo(rank, rendezvous, world, timeout_s)
    try:
        save_results(compute(rank), Path(out_dir) / f"rank{rank}{suffix}")
    finally:
        dist.destroy_process_group()


def run_torch_ranks(
    compute, out_dir: Path, *, world: int, timeout_s: float, suffix: str = ".npz"
) -> list[dict]:
    """``compute(rank)`` in ``world`` spawned processes that joined one gloo group.

    ``compute`` is a module-level function (the processes import it) that returns the
    rank's results for ``save_results``; they come back as one dict per rank, in rank
    order. Skips the test without ``torch.distributed``; fails it if a process fails
    (``join`` raises) or they outlive ``timeout_s``.
    """
    if not pytest.importorskip("torch.distributed").is_available():
        pytest.skip("torch.distributed is not available")
    mp = pytest.importorskip("torch.multiprocessing")
    rendezvous = str(out_dir / "rendezvous")
    context = mp.start_processes(
        _rank_process, args=(compute, rendezvous, str(out_dir), world, timeout_s, suffix),
        nprocs=world, join=False, start_method="spawn",
    )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    try:
        while not context.join(timeout=1.0):
            if time.monotonic() > deadline:
                pytest.fail(f"the {world} processes did not finish in {timeout_s} s")
    finally:
        for process in context.processes:
            if process.is_alive():
                process.kill()
            process.join()
    return [load_results(out_dir / f"rank{r}{suffix}") for r in range(world)]


# ---------------------------------------------------------------- JAX devices


def run_with_cpu_devices(
    script: str, out_dir: Path, *, devices: int, timeout_s: float, suffix: str = ".npz"
) -> dict:
    """The results that ``python script <out_dir>/results<suffix>`` saved, run with JAX
    on ``devices`` forced CPU devices, in float64.

    ``script`` is a test module whose ``__main__`` block saves its results there with
    ``save_results(..., sys.argv[1])``. XLA fixes the number of devices when JAX
    starts, and other test modules start it first in this process, hence the
    subprocess.
    """
    pytest.importorskip("jax")
    out = out_dir / f"results{suffix}"
    # The package of this checkout, also where another one is installed in the venv.
    root = str(Path(__file__).resolve().parents[2])
    env = dict(
        os.environ, JAX_PLATFORMS="cpu", JAX_ENABLE_X64="1",
        XLA_FLAGS=f"{os.environ.get('XLA_FLAGS', '')} "
        f"--xla_force_host_platform_device_count={devices}",
        PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]),
    )  # fmt: skip
    done = subprocess.run(
        [sys.executable, script, str(out)], env=env, capture_output=True, text=True,
        timeout=timeout_s, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return load_results(out)


def batch_mesh(jax, devices: int):
    """The one-axis mesh ``("batch",)`` over this process's JAX devices, which must be
    the ``devices`` that ``run_with_cpu_devices`` asked for."""
    from jax.sharding import Mesh

    assert jax.device_count() == devices, jax.devices()
    return Mesh(np.array(jax.devices()), ("batch",))


def shard_map_of(jax):
    """``jax.shard_map``, or its experimental form before JAX 0.6."""
    shard_map = getattr(jax, "shard_map", None)
    if shard_map is None:
        from jax.experimental.shard_map import shard_map
    return shard_map
