"""The GPU check in one command: the CUDA and CuPy tests, then the GPU benchmark sizes
for every PyTorch kernel choice (and the peers and JAX where installed), against the
bandwidth floor measured in the same run.

    python -m benchmarks.gpu_check                 # on one CUDA GPU: a few minutes
    python -m benchmarks.gpu_check --quick         # small sizes, a smoke run
    python -m benchmarks.gpu_check --device cpu --quick --skip-tests
                                                   # the plumbing on CPU (Triton's
                                                   # interpreter), as the tests run it

Before the tests it prints the compile report of the fused kernels (registers, spills
and resident warps of every Triton specialization and of the Pallas kernels, compiled
for sm_80, sm_90a and sm_100a: ``jdt_array._tools.kernel_report``; on CPU too, a few
minutes the first time, cached after), and on a GPU it times a small grid of tiles
and warps per benchmark size for each Triton kernel and records the best
(``benchmarks.triton_tuning``), so the first GPU run tunes the launcher.

The floor of a loss step is 12 bytes per float32 logit (the logits read twice, the
gradient written once) at the card's copy rate, measured here by a device-to-device
copy of a 2 GB buffer. Writes a Markdown table (for benchmarks/README.md) and a JSON
file with the machine, the versions and every figure to ``--out``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SIZES = {
    "cityscapes-like": (8, 19, 512, 1024),
    "ade20k-like": (16, 150, 512, 512),
    "3d-medical": (2, 4, 128, 128, 128),
}
QUICK_SIZES = {"small": (2, 19, 64, 128)}
CPU_SIZES = {"tiny": (2, 5, 16, 16)}
# The paths of each kernel choice and the peers, as benchmarks/paths.py names them.
PATHS = ("torch-eager-triton", "torch-compile-triton", "torch-eager", "torch-compile",
         "reference-replica", "monai", "jax-plain", "jax-jit", "jax-jit-vjp",
         "cupy")  # fmt: skip
CASES = ("jaccard-D", "dice-D", "jaccard-I+C", "jaccard-D-soft", "ce-jdt",
         "lovasz-softmax", "metrics-update")  # fmt: skip
# The targets: a multiple of the floor for the fused losses.
FLOOR_TARGETS = {"jaccard-D": 1.5, "dice-D": 1.5, "jaccard-I+C": 1.5,
                 "jaccard-D-soft": 1.5, "ce-jdt": 1.7}  # fmt: skip
# The floor's bytes per float32 logit: the logits read twice and the gradient written
# once; a soft label adds its one read (the design's 16; the two passes read it twice,
# 20 bytes, so the soft rows' target is the stricter one).
FLOOR_BYTES_PER_LOGIT = 12
SOFT_FLOOR_BYTES_PER_LOGIT = 16
TEST_FILES = ["tests/test_fused_kernels.py", "tests/test_no_host_sync.py"]


def copy_rate(device: str, nbytes: int) -> float:
    """Bytes per second moved (read + written) by a device-to-device copy."""
    import torch

    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(10):
        _sync(device)
        start = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        times.append(time.perf_counter() - start)
    del src, dst
    return 2 * nbytes / min(times)


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def run_tests(device: str, timeout: int) -> dict:
    """The Triton and host-sync tests, and every CUDA/CuPy parametrization of the
    suite, in a subprocess; their summary line and exit status."""
    runs = {}
    selections = {"kernels": TEST_FILES}
    if device == "cuda":
        selections["cuda-parametrizations"] = ["tests", "-k", "cuda or cupy"]
    for name, args in selections.items():
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
        start = time.perf_counter()
        try:
            done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                                  timeout=timeout)  # fmt: skip
            lines = done.stdout.strip().splitlines()
            failures = [x for x in lines if x.startswith("FAILED")][:20]
            runs[name] = {"exit": done.returncode, "failures": failures,
                          "summary": lines[-1] if lines else ""}  # fmt: skip
        except subprocess.TimeoutExpired:
            runs[name] = {"exit": None, "summary": f"timed out after {timeout} s"}
        runs[name]["seconds"] = round(time.perf_counter() - start, 1)
        print(f"tests {name}: {runs[name]['summary']}", flush=True)
    return runs


def benchmark(sizes, paths, cases, device, reps, rate) -> list[dict]:
    """Every (size, case, path) in this process: median ms, extra peak memory and the
    multiple of the floor."""
    from .paths import SOFT_CASES
    from .suite import installed, measure

    results = []
    for size, shape in sizes.items():
        numel = 1
        for n in shape:
            numel *= n
        for case in cases:
            per_logit = SOFT_FLOOR_BYTES_PER_LOGIT if case in SOFT_CASES else \
                FLOOR_BYTES_PER_LOGIT  # fmt: skip
            floor_ms = per_logit * numel / rate * 1e3
            for path in paths:
                if not installed(path) or not _runs(path, case, device):
                    continue
                record = {"size": size, "shape": list(shape), "case": case, "path": path}
                try:
                    record.update(measure(path, case, shape, device, reps))
                except Exception as err:  # one failing path must not hide the others
                    record["error"] = f"{type(err).__name__}: {str(err)[:300]}"
                record.update(_against_targets(record, floor_ms, rate))
                results.append(record)
                print(_row(record), flush=True)
                gc.collect()
                _empty_caches()
    return results


def _runs(path, case, device) -> bool:
    """The suite's GPU rows; on CPU (the smoke run) those of PyTorch only."""
    from .paths import applies

    return applies(path, case, "cuda") and (device == "cuda" or path.startswith(
        ("torch", "reference", "onehot", "monai")))  # fmt: skip


def _against_targets(record, floor_ms, rate) -> dict:
    if "error" in record:
        return {}
    extra = record["peak_extra_bytes"] / record["input_bytes"]
    out = {"floor_ms": floor_ms, "x_floor": record["median_ms"] / floor_ms,
           "extra_over_logits": extra}  # fmt: skip
    if record["case"] == "metrics-update":
        read_rate = record["input_bytes"] / (record["median_ms"] * 1e-3)
        out["read_GBps"] = read_rate / 1e9
        out["meets_target"] = read_rate >= rate / 2
    elif record["path"].endswith("triton") and record["case"] in FLOOR_TARGETS:
        out["meets_target"] = (out["x_floor"] <= FLOOR_TARGETS[record["case"]]
                               and out["extra_over_logits"] <= 1.1)  # fmt: skip
    return out


def compile_report() -> dict:
    """The fused kernels compiled for sm_80, sm_90a and sm_100a (no GPU needed):
    registers, spills and resident warps of each, printed as a table."""
    from jdt_array._tools import kernel_report

    rows, errors = [], {}
    for family, fn in (("triton", kernel_report.triton_rows),
                       ("pallas", kernel_report.pallas_rows)):  # fmt: skip
        try:
            rows += fn()
        except Exception as err:  # e.g. JAX not installed: report, go on
            errors[family] = f"{type(err).__name__}: {str(err)[:300]}"
    print(kernel_report.table(rows), flush=True)
    for family, error in errors.items():
        print(f"compile report, {family}: {error}", flush=True)
    return {"rows": [{**r._asdict(), "ok": r.ok} for r in rows], "errors": errors,
            "min_resident_warps": kernel_report.MIN_RESIDENT_WARPS}  # fmt: skip


def tuning(sizes, reps) -> dict:
    """The grid of Triton tiles and warps on the benchmark sizes (GPU only)."""
    from .triton_tuning import table, tune

    rows = tune(sizes, reps=reps)
    print(table(rows), flush=True)
    return {"rows": rows, "best": [r for r in rows if r.get("best")]}


def _jax_kernels(sizes, reps) -> list[dict]:
    """The XLA and Pallas forms of the JAX custom_vjp loss (benchmarks/jax_gpu.py)."""
    try:
        from .jax_gpu import run
    except ImportError as err:
        return [{"error": f"JAX is not installed: {err}"}]
    rows = run(tuple(sizes.values()), reps=reps)
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def _empty_caches() -> None:
    if "torch" in sys.modules:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _row(r) -> str:
    if "error" in r:
        return f"| {r['size']} | {r['case']} | {r['path']} | error: {r['error']} | | | |"
    target = {True: "yes", False: "no"}.get(r.get("meets_target"), "")
    return (f"| {r['size']} | {r['case']} | {r['path']} | {r['median_ms']:.2f} | "
            f"{r['x_floor']:.1f} | {r['extra_over_logits']:.2f} | {target} |")  # fmt: skip


def table(results) -> str:
    head = ("| size | case | path | median ms | x floor | extra peak / logits | target |\n"
            "|---|---|---|---|---|---|---|")  # fmt: skip
    return "\n".join([head, *(_row(r) for r in results)])


def machine(device: str) -> dict:
    import torch

    info = {"date": time.strftime("%Y-%m-%d"), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__}  # fmt: skip
    for name in ("triton", "jax", "cupy", "monai"):
        try:
            info[name] = __import__(name).__version__
        except ImportError:
            pass
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        info["cuda"] = torch.version.cuda
    return info


def _parser():
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_check", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--quick", action="store_true", help="small sizes, 3 repetitions")
    p.add_argument("--skip-tests", action="store_true")
    p.add_argument(
        "--skip-compile",
        action="store_true",
        help="no compile report (registers, spills, occupancy)",
    )
    p.add_argument(
        "--skip-tuning",
        action="store_true",
        help="no timing of the grid of Triton tiles (GPU only)",
    )
    p.add_argument("--paths", nargs="+", default=list(PATHS))
    p.add_argument("--cases", nargs="+", default=list(CASES))
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--test-timeout", type=int, default=300, help="seconds per test run")
    p.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    if args.device == "cpu":  # the Triton kernels in the interpreter, set before import
        os.environ.setdefault("TRITON_INTERPRET", "1")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # share the GPU
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run with --device cpu for the CPU smoke run",
              file=sys.stderr)  # fmt: skip
        return 2
    info = machine(args.device)
    print(json.dumps(info), flush=True)
    report = {"machine": info}
    if not args.skip_compile:
        report["compile"] = compile_report()
    report["tests"] = {} if args.skip_tests else run_tests(args.device, args.test_timeout)
    rate = copy_rate(args.device, 2**31 if args.device == "cuda" and not args.quick
                     else 2**26)  # fmt: skip
    report["copy_rate_Bps"] = rate
    print(f"copy rate {rate / 1e12:.2f} TB/s", flush=True)
    sizes = CPU_SIZES if args.device == "cpu" else QUICK_SIZES if args.quick else SIZES
    paths = [p for p in args.paths if args.device == "cuda" or "jax" not in p]
    print(table([]), flush=True)
    reps = 3 if args.quick else args.reps
    report["results"] = benchmark(sizes, paths, args.cases, args.device, reps, rate)
    if args.device == "cuda" and any("jax" in p for p in paths):
        report["jax_kernels"] = _jax_kernels(sizes, reps)
    if args.device == "cuda" and not args.skip_tuning:
        report["tuning"] = tuning(sizes, reps)
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = args.out / f"gpu-check-{args.device}-{stamp}"
    out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    out.with_suffix(".md").write_text(
        f"{info}\n\ncopy rate {rate / 1e12:.2f} TB/s\n\n{table(report['results'])}\n"
    )
    print(f"wrote {out}.json and {out}.md")
    failed_tests = any(t.get("exit") not in (0, 5) for t in report["tests"].values())
    failed_paths = any("error" in r for r in report["results"])
    failed_compile = any(not r["ok"] for r in report.get("compile", {}).get("rows", []))
    return 1 if failed_tests or failed_paths or failed_compile else 0


if __name__ == "__main__":
    sys.exit(main())
