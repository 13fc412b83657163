"""On a CUDA GPU: a small grid of tiles and warps for each Triton kernel and benchmark
case, timed, with the best recorded, so that the first GPU run tunes the launcher
(``jdt_array._kernels.triton_launch.TILES``) instead of only measuring it.

    python -m benchmarks.triton_tuning                 # the GPU sizes, a table + JSON
    python -m benchmarks.triton_tuning --sizes 2,19,64,128

Each row: the kernel (statistics or gradient), the case, the candidate tile (one tile
holding every class, or tiles of ``block_c`` classes swept in turn; ``block_n``
pixels; warps), its median ms over ``reps`` launches (CUDA events), its registers and
spills as compiled (Triton's own counts) and the warps resident per multiprocessor;
the best candidate that keeps the occupancy rule of the compile report is marked.
``python -m benchmarks.gpu_check`` runs this on the GPU sizes and writes the rows and
the suggested ``TILES`` to its JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys

# The grid: elements per tile, warps; one tile for up to 32 classes, else tiles of
# block_c classes.
TILE_ELEMENTS = (512, 1024, 2048)
WARPS = (4, 8)
MULTI_CLASSES = (8, 16, 32)
GPU_SIZES = {
    "cityscapes-like": (8, 19, 512, 1024),
    "ade20k-like": (16, 150, 512, 512),
    "3d-medical": (2, 4, 128, 128, 128),
}


def candidates(num_classes: int) -> list:
    """The tiles tried for ``num_classes`` classes."""
    from jdt_array._kernels.triton_launch import Tile

    tiles = []
    one = max(2, 1 << max(0, (num_classes - 1).bit_length()))
    for elements in TILE_ELEMENTS:
        for warps in WARPS:
            if one <= 32:
                tiles.append(Tile(True, one, max(1, elements // one), warps))
            for block_c in MULTI_CLASSES:
                if block_c < num_classes or one > 32:
                    tiles.append(Tile(False, block_c, elements // block_c, warps))
    return tiles


@contextlib.contextmanager
def only_tile(kernel: str, tile):
    """The launcher picks ``tile`` for ``kernel`` for the duration."""
    from jdt_array._kernels import triton_launch

    before = triton_launch.TILES[kernel]
    triton_launch.TILES[kernel] = (tile,)
    try:
        yield
    finally:
        triton_launch.TILES[kernel] = before


def _time(fn, reps: int) -> float:
    import torch

    fn()  # compile and warm up
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


@contextlib.contextmanager
def launches():
    """The compiled kernels the launcher runs for the duration (registers, spills)."""
    from jdt_array._kernels import triton_launch

    launch, seen = triton_launch._launch, []

    def record(*args, **kwargs):
        seen.append(launch(*args, **kwargs))
        return seen[-1]

    triton_launch._launch = record
    try:
        yield seen
    finally:
        triton_launch._launch = launch


def tune(sizes=GPU_SIZES, *, reps: int = 10) -> list[dict]:
    """One row per (size, kernel, candidate tile); see the module docstring."""
    import torch

    from jdt_array._kernels import triton_launch
    from jdt_array._tools.kernel_report import MIN_RESIDENT_WARPS, resident_warps

    rows = []
    major = torch.cuda.get_device_capability()[0]
    target = "sm_80" if major < 9 else "sm_90a" if major == 9 else "sm_100a"
    for size, shape in sizes.items():
        c = shape[1]
        logits = torch.randn(shape, device="cuda")
        label = torch.randint(0, c, (shape[0], *shape[2:]), device="cuda")
        g = torch.randn(shape[0], c, device="cuda")
        passes = {
            "statistics": (triton_launch.statistics, (logits, label, None, 1, 1.0, None)),
            "gradient": (triton_launch.gradient,
                         (logits, label, None, g, g, None, 1, 1.0, None)),
        }  # fmt: skip
        for kernel, (launch, args) in passes.items():
            for tile in candidates(c):
                row = {"size": size, "shape": list(shape), "kernel": kernel,
                       "tile": list(tile)}  # fmt: skip
                try:
                    with only_tile(kernel, tile), launches() as seen:
                        row["ms"] = _time(lambda f=launch, a=args: f(*a), reps)
                    regs = getattr(seen[-1], "n_regs", None)
                    spills = getattr(seen[-1], "n_spills", None)
                    row.update(registers=regs, spills=spills)
                    if regs is not None:
                        row["resident_warps"] = resident_warps(regs, tile.warps, 0, target)
                        row["meets_rule"] = (not spills) and \
                            row["resident_warps"] >= MIN_RESIDENT_WARPS  # fmt: skip
                except Exception as err:  # one failing candidate must not hide the others
                    row["error"] = f"{type(err).__name__}: {str(err)[:200]}"
                rows.append(row)
    _mark_best(rows)
    return rows


def _mark_best(rows) -> None:
    by_case: dict = {}
    for r in rows:
        if "ms" in r and r.get("meets_rule", True):
            key = (r["size"], r["kernel"])
            if key not in by_case or r["ms"] < by_case[key]["ms"]:
                by_case[key] = r
    for r in by_case.values():
        r["best"] = True


def table(rows) -> str:
    head = ("| size | kernel | tile (one, block_c, block_n, warps) | ms | registers | "
            "spills | resident warps | best |\n" + "|---" * 8 + "|")  # fmt: skip
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['size']} | {r['kernel']} | {r['tile']} | error: "
                         f"{r['error']} | | | | |")  # fmt: skip
            continue
        lines.append(
            f"| {r['size']} | {r['kernel']} | {r['tile']} | {r['ms']:.3f} | "
            f"{r.get('registers')} | {r.get('spills')} | {r.get('resident_warps')} | "
            f"{'**best**' if r.get('best') else ''} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", help="comma-separated shapes (default: GPU sizes)")
    p.add_argument("--reps", type=int, default=10)
    args = p.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("tuning times compiled kernels: it needs a CUDA GPU", file=sys.stderr)
        return 2
    sizes = GPU_SIZES
    if args.sizes:
        sizes = {s: tuple(int(n) for n in s.split(",")) for s in args.sizes}
    rows = tune(sizes, reps=args.reps)
    print(table(rows))
    print(json.dumps([r for r in rows if r.get("best")]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
