"""Boundary IoU counts on top of the region counts: time, peak memory, the 3x target.

    python -m benchmarks.boundary                  # the target sizes on NumPy, PyTorch, JAX
    python -m benchmarks.boundary --shrink 4       # a smoke run: sides / 4, same batch
    python -m benchmarks.boundary --device cuda    # PyTorch and JAX on a GPU

What ``FineGrainedMetrics.update`` computes for integer class-id maps is the region
step, ``batch_statistics`` on integer predictions; with boundaries it also runs
``boundary_counts`` on the same maps (JAX: both in one ``jax.jit``). Both steps are
timed in one process, in interleaved rounds (the order swapped every round, so that a
noisy machine slows both alike), and the table gives the medians, the ratio of the
two and whether it meets the target: region + boundary at most 3x region. Peak extra
memory is measured once per step: for JAX the compiled step's temporary buffers
(XLA's own account, which its CPU allocator hides from the process's resident
memory); otherwise on CPU the growth of the resident memory over the step in a fresh
process (Linux), on a GPU the allocator's peak.

The inputs look like segmentation maps: cells of one class with wavy edges (a smooth
random displacement per image), a prediction whose edges are displaced differently
and with a tenth of its cells in another class, and an ignored band at the bottom of
each label (the ego vehicle of Cityscapes). I.i.d. noise would put every pixel in a
band and measure a case no model produces.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SIZES = {"cityscapes-like": (8, 19, 512, 1024), "ade20k-like": (16, 150, 512, 512)}
LIBRARIES = ("numpy", "torch", "jax")
VARIANTS = ("region", "region+boundary")
TARGET = 3.0  # region + boundary at most this many times region
IGNORE = 255


def make_maps(shape, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(label, prediction), int64 (B, H, W) class-id maps of shape (B, C, H, W), in
    cells of a quarter of the height."""
    B, C, H, W = shape
    cell = max(H // 4, 1)
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, C, size=(B, H // cell + 3, W // cell + 3))
    label = np.empty((B, H, W), dtype=np.int64)
    pred = np.empty((B, H, W), dtype=np.int64)
    wrong = rng.random(cells.shape) < 0.1
    pred_cells = np.where(wrong, rng.integers(0, C, size=cells.shape), cells)
    for b in range(B):
        label[b] = _warped(cells[b], H, W, cell, rng)
        pred[b] = _warped(pred_cells[b], H, W, cell, rng)
    label[:, H - max(1, H // 12) :, :] = IGNORE
    return label, pred


def _warped(cells: np.ndarray, H: int, W: int, cell: int, rng) -> np.ndarray:
    """The cells of ``cells`` at each pixel, read at a smoothly displaced position."""
    y = np.arange(H, dtype=np.float64)[:, None]
    x = np.arange(W, dtype=np.float64)[None, :]

    def displacement():
        waves = np.zeros((H, W))
        for _ in range(3):
            fy, fx = rng.uniform(1.0, 4.0, size=2)
            phase = rng.uniform(0.0, 2 * np.pi)
            waves += np.sin(2 * np.pi * (fy * y / H + fx * x / W) + phase)
        return waves * (cell / 6)

    rows = ((y + displacement()) // cell).astype(np.int64) + 1
    cols = ((x + displacement()) // cell).astype(np.int64) + 1
    return cells[np.clip(rows, 0, cells.shape[0] - 1), np.clip(cols, 0, cells.shape[1] - 1)]


@dataclass
class Step:
    run: Callable[[], object]
    # peak extra bytes measured in this process, or None: by a fresh process
    memory: Callable[[], int] | None = None


def make_step(library: str, variant: str, shape, device: str, maps=None) -> Step:
    """One step on the maps of ``shape`` (made here unless given)."""
    from jdt_array.metrics import batch_statistics
    from jdt_array.metrics._boundary import boundary_counts, boundary_width

    C = shape[1]
    label_np, pred_np = make_maps(shape) if maps is None else maps
    width = boundary_width(shape[2:])

    def region(xp, pred, label):
        return batch_statistics(pred, label, num_classes=C, ignore_index=IGNORE)

    def both(xp, pred, label):
        counted = (label >= 0) & (label < C)
        return region(xp, pred, label), boundary_counts(xp, label, pred, counted, C, width)

    fn = region if variant == "region" else both
    if library == "numpy":
        from array_api_compat import numpy as xp

        return Step(lambda: fn(xp, pred_np, label_np))
    if library == "torch":
        import torch
        from array_api_compat import torch as xp

        pred, label = (torch.from_numpy(a).to(device) for a in (pred_np, label_np))
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

        def run():
            out = fn(xp, pred, label)
            sync()
            return out

        return Step(run, (lambda: _torch_peak(run)) if device == "cuda" else None)
    if library == "jax":
        import jax
        import jax.numpy as jnp

        where = jax.devices("gpu" if device == "cuda" else "cpu")[0]
        pred, label = (jax.device_put(jnp.asarray(a), where) for a in (pred_np, label_np))
        jitted = jax.jit(lambda p, y: fn(jnp, p, y))

        def temp_bytes():  # XLA's buffers for the step's temporaries
            analysis = jitted.lower(pred, label).compile().memory_analysis()
            return int(analysis.temp_size_in_bytes)

        run = lambda: jax.block_until_ready(jitted(pred, label))  # noqa: E731
        return Step(run, temp_bytes)
    raise ValueError(f"unknown library {library!r}")


def _torch_peak(run) -> int:
    import torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    run()
    return torch.cuda.max_memory_allocated() - before


def _rss_peak(library: str, variant: str, shape, device: str) -> int:
    """The peak growth of the resident memory over one step, in a fresh process.

    glibc there hands every block of 64 KiB or more straight back to the system when
    freed (``MALLOC_MMAP_THRESHOLD_``), so the resident memory follows the live arrays
    of every library; the peak is reset (``/proc/self/clear_refs``) after a warm-up
    step. The maps come from a file: making them would leave freed memory behind.
    """
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/maps.npy"
        np.save(path, np.stack(make_maps(shape)))
        cmd = [sys.executable, "-m", "benchmarks.boundary", "--one", library, variant,
               ",".join(map(str, shape)), device, path]  # fmt: skip
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        done = subprocess.run(cmd, capture_output=True, text=True, check=True,
                              timeout=900, env=env)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_extra_bytes"]


def _one(library: str, variant: str, shape, device: str, path: str) -> None:
    label, pred = np.load(path)
    step = make_step(library, variant, shape, device, maps=(label, pred))
    step.run()  # compile, warm caches
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident memory
    before = _status_bytes("VmRSS")
    step.run()
    print(json.dumps({"peak_extra_bytes": max(_status_bytes("VmHWM") - before, 0)}))


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--libraries", nargs="+", default=list(LIBRARIES), choices=LIBRARIES)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--shrink", type=int, default=1, help="divide the image sides by this")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--reps", type=int, default=3, help="timed steps per round and step")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--torch-threads", type=int, help="torch.set_num_threads (CPU)")
    p.add_argument(
        "--cpu-time",
        action="store_true",
        help="process CPU time, not wall (a busy machine)",
    )
    p.add_argument("--one", nargs=5, help=argparse.SUPPRESS,
                   metavar=("LIBRARY", "VARIANT", "SHAPE", "DEVICE", "MAPS"))  # fmt: skip
    args = p.parse_args(argv)
    if args.one:
        library, variant, shape, device, path = args.one
        _one(library, variant, tuple(map(int, shape.split(","))), device, path)
        return 0
    if args.torch_threads and "torch" in args.libraries:
        import torch

        torch.set_num_threads(args.torch_threads)
    if args.device == "cuda" and "numpy" in args.libraries:
        args.libraries.remove("numpy")

    shapes = {}
    for name in args.sizes:
        B, C, H, W = SIZES[name]
        shapes[name] = (B, C, H // args.shrink, W // args.shrink)
    steps = {}
    for name, shape in shapes.items():
        for library in args.libraries:
            for variant in VARIANTS:
                step = make_step(library, variant, shape, args.device)
                step.run()  # compile and warm caches
                steps[name, library, variant] = step
    clock = time.process_time if args.cpu_time else time.perf_counter
    times: dict = {key: [] for key in steps}
    for round_ in range(args.rounds):
        for name in shapes:
            for library in args.libraries:
                order = VARIANTS if round_ % 2 == 0 else VARIANTS[::-1]
                for variant in order:
                    step = steps[name, library, variant]
                    for _ in range(args.reps):
                        start = clock()
                        step.run()
                        times[name, library, variant].append(clock() - start)
        print(f"round {round_ + 1} of {args.rounds} done", file=sys.stderr, flush=True)

    memory = {}
    if not args.no_memory:
        for (name, library, variant), step in steps.items():
            if step.memory is not None:
                memory[name, library, variant] = step.memory()
            else:
                memory[name, library, variant] = _rss_peak(library, variant, shapes[name],
                                                           args.device)  # fmt: skip

    from jdt_array.metrics._boundary import boundary_width

    print(
        f"\ndevice {args.device}; median {'CPU' if args.cpu_time else 'wall'} ms of "
        f"{args.rounds} x {args.reps} steps (peak extra MB); target: region + boundary "
        f"<= {TARGET:g} x region\n"
    )
    print("| size (B, C, H, W), d | library | region | region + boundary | ratio | "
          "target |\n|---|---|---|---|---|---|")  # fmt: skip
    for name, shape in shapes.items():
        d = boundary_width(shape[2:])
        for library in args.libraries:
            cells = []
            for variant in VARIANTS:
                ms = statistics.median(times[name, library, variant]) * 1e3
                mb = memory.get((name, library, variant))
                cells.append((ms, "" if mb is None else f" ({mb / 2**20:.0f})"))
            ratio = cells[1][0] / cells[0][0]
            verdict = "met" if ratio <= TARGET else "MISSED"
            region, both = (f"{ms:.1f}{mb}" for ms, mb in cells)
            print(f"| {name} {shape}, d={d} | {library} | {region} | {both} | "
                  f"{ratio:.2f} | {verdict} |")  # fmt: skip
    band = _band_fraction(shapes)
    print(f"\nshare of counted pixels in a label band: {band}")
    return 0


def _band_fraction(shapes) -> str:
    """How much of each size's labels lies in a band (the inputs' character)."""
    from array_api_compat import numpy as xp

    from jdt_array.metrics._boundary import boundary_counts, boundary_width

    parts = []
    for name, shape in shapes.items():
        label, pred = make_maps(shape)
        counted = (label >= 0) & (label < shape[1])
        width = boundary_width(shape[2:])
        _, _, band = boundary_counts(xp, label, pred, counted, shape[1], width)
        parts.append(f"{name} {int(band.sum()) / max(int(counted.sum()), 1):.0%}")
    return ", ".join(parts)


if __name__ == "__main__":
    raise SystemExit(main())
