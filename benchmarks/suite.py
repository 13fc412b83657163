"""The benchmark suite: forward + backward time and peak memory of every path.

    python -m benchmarks.suite                  # CPU sizes, every installed path
    python -m benchmarks.suite --device cuda    # the GPU training sizes
    python -m benchmarks.suite --quick          # a smoke run with small sizes

Each measurement runs in a fresh process, so that the CPU peak memory (peak RSS) is the
step's own and compiled code does not leak between paths. Results are printed as a
table and written as JSON and a PNG plot (``--out``, default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from .paths import CASES, PATHS, applies

SIZES = {
    "cpu": {
        "cityscapes-like": (2, 19, 256, 512),
        "ade20k-like": (2, 150, 128, 256),
        "3d-medical": (1, 4, 64, 96, 96),
    },
    "cuda": {
        "cityscapes-like": (8, 19, 512, 1024),
        "ade20k-like": (16, 150, 512, 512),
        "3d-medical": (2, 4, 128, 128, 128),
    },
    "quick": {"small": (2, 5, 32, 32)},
}
# Peak memory bandwidth in bytes/s, for the bandwidth floor on GPUs.
BANDWIDTH = {"H200": 4.8e12, "H100": 3.35e12, "A100": 2.0e12, "L4": 0.3e12}
# Bytes moved per logit at the least: the logits read twice, the gradient written once.
FLOOR_BYTES_PER_LOGIT = 12

REQUIRES = {
    "numpy": "numpy",
    "torch": "torch",
    "jax": "jax",
    "cupy": "cupy",
    "monai": "monai",
    "onehot": "torch",
    "reference": "torch",
}


def installed(path: str) -> bool:
    return importlib.util.find_spec(REQUIRES[path.split("-")[0]]) is not None


def measure(path: str, case: str, shape, device: str, reps: int) -> dict:
    """Time one step (median of ``reps`` after warm-up) and its peak memory, in-process."""
    import resource

    import numpy as np

    from .paths import make_step

    step = make_step(path, case, shape, device)
    gpu_before = _gpu_bytes(path, device)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    for _ in range(2):  # compile and warm caches
        step.run()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step.run()
        times.append(time.perf_counter() - start)
    if device == "cuda":
        peak = _gpu_peak(path) - gpu_before
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss_before
    return {"median_ms": float(np.median(times) * 1e3), "min_ms": float(min(times) * 1e3),
            "peak_extra_bytes": int(max(peak, 0)), "input_bytes": step.input_bytes,
            "xla_temp_bytes": step.xla_temp_bytes,
            "gpu": _gpu_name(path) if device == "cuda" else None}  # fmt: skip


def _gpu_bytes(path, device):
    if device != "cuda":
        return 0
    lib = path.split("-")[0]
    if lib in ("torch", "monai", "onehot", "reference"):
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    if lib == "jax":
        import jax

        return jax.devices("gpu")[0].memory_stats()["bytes_in_use"]
    import cupy

    return cupy.get_default_memory_pool().used_bytes()


def _gpu_peak(path):
    lib = path.split("-")[0]
    if lib in ("torch", "monai", "onehot", "reference"):
        import torch

        return torch.cuda.max_memory_allocated()
    if lib == "jax":
        import jax

        return jax.devices("gpu")[0].memory_stats()["peak_bytes_in_use"]
    import cupy

    return cupy.get_default_memory_pool().total_bytes()


def _gpu_name(path):
    lib = path.split("-")[0]
    if lib == "jax":
        import jax

        return jax.devices("gpu")[0].device_kind
    if lib == "cupy":
        import cupy

        return cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    import torch

    return torch.cuda.get_device_name()


def bandwidth_floor_ms(shape, gpu: str | None) -> float | None:
    if not gpu:
        return None
    rate = next((v for k, v in BANDWIDTH.items() if k in gpu), None)
    if rate is None:
        return None
    numel = 1
    for n in shape:
        numel *= n
    return FLOOR_BYTES_PER_LOGIT * numel / rate * 1e3


def run_one_in_subprocess(path, case, size_name, shape, device, reps, timeout) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.suite", "--one", path, case, device,
           ",".join(map(str, shape)), str(reps)]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    record = {"path": path, "case": case, "size": size_name, "shape": list(shape),
              "device": device}  # fmt: skip
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return {**record, "error": f"timed out after {timeout} s"}
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {**record, "error": lines[-1] if lines else f"exit {done.returncode}"}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    floor = bandwidth_floor_ms(shape, result.get("gpu"))
    if floor:
        result["floor_ms"] = floor
        result["x_floor"] = result["median_ms"] / floor
    return {**record, **result}


def run_one_here(path, case, size_name, shape, device, reps) -> dict:
    """:func:`run_one_in_subprocess` in this process (``--quick``): no process start
    and imports per measurement, but the peak memory is this process's, shared with
    the earlier measurements (the smoke run checks that every path runs)."""
    record = {"path": path, "case": case, "size": size_name, "shape": list(shape),
              "device": device}  # fmt: skip
    try:
        result = measure(path, case, tuple(shape), device, reps)
    except Exception as err:  # a failing path is a reported result, not a crash
        return {**record, "error": f"{type(err).__name__}: {err}"}
    return {**record, **result}


def combine_processes(records: list[dict]) -> dict:
    """One result from the same measurement in several processes: the median of their
    medians and of their peak memory (each process's median is kept too)."""
    failed = [r for r in records if "error" in r]
    if failed or len(records) == 1:
        return failed[0] if failed else records[0]
    median = statistics.median(r["median_ms"] for r in records)
    combined = {**records[0], "median_ms": median,
                "min_ms": min(r["min_ms"] for r in records),
                "process_medians_ms": [r["median_ms"] for r in records],
                "peak_extra_bytes": int(statistics.median(
                    r["peak_extra_bytes"] for r in records))}  # fmt: skip
    if "floor_ms" in combined:
        combined["x_floor"] = median / combined["floor_ms"]
    return combined


def format_table(results) -> str:
    head = (
        f"{'size':<16} {'case':<16} {'path':<21} {'median ms':>10} {'extra MB':>9} "
        f"{'x floor':>8} {'XLA temp / logits':>18}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        if "error" in r:
            lines.append(
                f"{r['size']:<16} {r['case']:<16} {r['path']:<21} error: {r['error']}"
            )
            continue
        floor = f"{r['x_floor']:.1f}" if "x_floor" in r else "-"
        temp = r.get("xla_temp_bytes")
        temp = f"{temp / r['input_bytes']:.2f}" if temp is not None else "-"
        lines.append(
            f"{r['size']:<16} {r['case']:<16} {r['path']:<21} {r['median_ms']:>10.2f} "
            f"{r['peak_extra_bytes'] / 2**20:>9.1f} {floor:>8} {temp:>18}"
        )
    return "\n".join(lines)


def plot(results, filename: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if "error" not in r]
    groups = sorted({(r["size"], r["case"]) for r in ok})
    paths = sorted({r["path"] for r in ok})
    if not groups:
        return
    fig, ax = plt.subplots(figsize=(max(8, len(groups) * 1.4), 5))
    width = 0.8 / max(len(paths), 1)
    for i, path in enumerate(paths):
        values = [next((r["median_ms"] for r in ok if (r["size"], r["case"]) == g
                        and r["path"] == path), 0.0) for g in groups]  # fmt: skip
        ax.bar([j + i * width for j in range(len(groups))], values, width, label=path)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(groups))])
    ax.set_xticklabels([f"{s}\n{c}" for s, c in groups], fontsize=7)
    ax.set_ylabel("forward + backward, median ms (log)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(f"jdt-array benchmarks ({results[0]['device']})")
    fig.tight_layout()
    fig.savefig(filename, dpi=120)
    plt.close(fig)


def _parser(prog="python -m benchmarks.suite"):
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument(
        "--quick", action="store_true",
        help="a smoke run: one small size, 3 repetitions, every measurement in this "
        "process (no peak memory of its own)",
    )  # fmt: skip
    p.add_argument("--sizes", nargs="+", help="size names to run (default: all)")
    p.add_argument("--cases", nargs="+", choices=list(CASES), help="default: all")
    p.add_argument("--paths", nargs="+", choices=list(PATHS), help="default: installed")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument(
        "--processes", type=int, default=1,
        help="fresh processes per measurement, in rounds over all of them; the table "
        "shows the median of their medians (a noisy machine differs between processes)",
    )  # fmt: skip
    p.add_argument("--timeout", type=int, default=600, help="seconds per measurement")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    p.add_argument("--one", nargs=5, help=argparse.SUPPRESS)
    return p


def main(argv=None, progress=None, prog="python -m benchmarks.suite") -> int:
    """Run the suite; ``prog`` is the command's name in its help (``jdt-array bench``)."""
    args = _parser(prog).parse_args(argv)
    if args.one:
        path, case, device, shape, reps = args.one
        shape = tuple(int(n) for n in shape.split(","))
        print(json.dumps(measure(path, case, shape, device, int(reps))))
        return 0
    sizes = SIZES["quick" if args.quick else args.device]
    sizes = {k: v for k, v in sizes.items() if not args.sizes or k in args.sizes}
    paths = [p for p in (args.paths or PATHS) if installed(p)]
    jobs = [(p, c, s) for s in sizes for c in (args.cases or CASES) for p in paths
            if applies(p, c, args.device)]  # fmt: skip
    reps = 3 if args.quick else args.reps
    rounds = max(1, args.processes)
    runs = [[] for _ in jobs]
    for r in range(rounds):  # round by round: a slow spell hits every path alike
        # alternating: every other round runs the jobs in reverse order
        order = list(enumerate(jobs)) if r % 2 == 0 else list(enumerate(jobs))[::-1]
        for n, (i, (path, case, size)) in enumerate(order):
            label, count, total = (
                f"{size} {case} {path}",
                r * len(jobs) + n + 1,
                rounds * len(jobs),
            )
            if progress:
                progress(count, total, label)
            else:
                print(f"[{count}/{total}] {label}", file=sys.stderr, flush=True)
            if args.quick:
                record = run_one_here(path, case, size, sizes[size], args.device, reps)
            else:
                record = run_one_in_subprocess(
                    path, case, size, sizes[size], args.device, reps, args.timeout
                )
            runs[i].append(record)
    results = [combine_processes(records) for records in runs]
    print(format_table(results))
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
            "processor": platform.processor(), "cpus": os.cpu_count()}  # fmt: skip
    out_json = args.out / f"bench-{args.device}-{stamp}.json"
    out_json.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    plot(results, out_json.with_suffix(".png"))
    print(f"\nwrote {out_json} and {out_json.with_suffix('.png')}")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
