"""The fused kernels compiled for real GPUs, with no GPU in the room: registers, spills
and occupancy of every kernel the launchers can run, on A100 (sm_80), H100/H200
(sm_90a) and B200 (sm_100a).

    python -m jdt_array._tools.kernel_report            # the table, a few minutes
    python -m jdt_array._tools.kernel_report --json report.json

* **Triton** (``JDT_ARRAY_TORCH_KERNEL=triton``): every specialization of
  :func:`jdt_array._kernels.triton_launch.specializations` goes through Triton's own
  compiler (``triton.compile`` of the kernel's source for ``GPUTarget("cuda", cc,
  32)``); the PTX goes through ``ptxas-blackwell -v`` from Triton's wheel, which
  prints the registers per thread and the bytes spilled.
* **Pallas** (``JDT_ARRAY_JAX_KERNEL=pallas``): the JAX losses are exported for
  platform ``cuda`` with interpretation off (``jax.export``), which runs Pallas's
  lowering with its rules for block shapes; the Triton IR of each ``pallas_call``
  (the kernels pin Pallas's Triton lowering) then goes through the same compiler.
  XLA compiles that IR with the Triton it bundles, so its register counts may differ
  a little from these.

Occupancy from registers, warps and shared memory: resident warps per multiprocessor
= resident programs x warps, programs limited by the 65,536-register file (registers
allocated per warp in units of 256), 64 warps, 32 programs and the shared memory per
multiprocessor. A row passes with no spill and at least ``MIN_RESIDENT_WARPS``
(25% of the 64 warps), or with a reason recorded in ``EXCEPTIONS`` (and in
benchmarks/README.md).

Compiling needs Triton outside its interpreter: under ``TRITON_INTERPRET=1`` (the
tests' setting) the Triton part runs in a subprocess without it. Each result is
cached by the kernel's source, the Triton version and the target
(``JDT_ARRAY_KERNEL_REPORT_CACHE``, by default ``~/.cache/jdt-array/kernel-report``),
so a second report is quick; compiles run in parallel processes. JAX runs in its
default configuration (float64 off), as users run it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

# name -> (compute capability, ptxas --gpu-name, shared memory per multiprocessor)
TARGETS = {
    "sm_80": (80, "sm_80", 164 * 1024),
    "sm_90a": (90, "sm_90a", 228 * 1024),
    "sm_100a": (100, "sm_100a", 228 * 1024),
}
REGISTER_FILE = 65536
MAX_WARPS = 64
MAX_PROGRAMS = 32
MIN_RESIDENT_WARPS = 16
# Specializations allowed below MIN_RESIDENT_WARPS, by name prefix, with the reason
# (also recorded in benchmarks/README.md). Empty: every kernel meets the rule.
EXCEPTIONS: dict[str, str] = {}


class Row(NamedTuple):
    """One kernel compiled for one target."""

    family: str  # "triton" or "pallas"
    name: str
    target: str
    warps: int
    registers: int
    spill_stores: int
    spill_loads: int
    shared: int  # bytes per program
    resident_warps: int

    @property
    def ok(self) -> bool:
        exception = any(self.name.startswith(p) for p in EXCEPTIONS)
        spills = self.spill_stores + self.spill_loads
        return spills == 0 and (self.resident_warps >= MIN_RESIDENT_WARPS or exception)


def resident_warps(registers: int, warps: int, shared: int, target: str) -> int:
    """Warps resident on one multiprocessor of ``target`` for a kernel of ``warps``
    warps, ``registers`` per thread and ``shared`` bytes of shared memory."""
    per_warp = -(-registers * 32 // 256) * 256
    programs = min(REGISTER_FILE // (per_warp * warps), MAX_WARPS // warps, MAX_PROGRAMS)
    if shared:
        # 1 KiB of shared memory per program is reserved by the driver (sm_80 on).
        programs = min(programs, TARGETS[target][2] // (shared + 1024))
    return programs * warps


def _usage(log: str) -> tuple[int, int, int]:
    """(registers, spill-store bytes, spill-load bytes) from a ``ptxas -v`` log."""
    registers = int(re.search(r"Used (\d+) registers", log).group(1))
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    return registers, int(spills.group(1)), int(spills.group(2))


def _compiled(source, target: str, options: dict, key: str) -> tuple[int, int, int, int]:
    """(registers, spill stores, spill loads, shared bytes) of ``source`` compiled by
    Triton for ``target``: its own ``ptxas -v`` log (the binary and flags Triton uses
    on a GPU of that target), kept in a cache under ``key``."""
    cached = _cache_path(key, target, options)
    if os.path.exists(cached):
        with open(cached) as f:
            return tuple(json.load(f))
    import triton
    from triton.backends.compiler import GPUTarget

    triton.knobs.compilation.always_compile = True  # Triton's cache has no ptxas log
    triton.knobs.nvidia.dump_ptxas_log = True
    log = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(log):
        warnings.simplefilter("ignore")  # TRITON_DEFAULT_FP_FUSION: Triton's default
        compiled = triton.compile(source, target=GPUTarget("cuda", TARGETS[target][0], 32),
                                  options=options)  # fmt: skip
    usage = (*_usage(log.getvalue()), int(compiled.metadata.shared))
    os.makedirs(os.path.dirname(cached), exist_ok=True)
    with open(cached, "w") as f:
        json.dump(usage, f)
    return usage


def _cache_path(key: str, target: str, options: dict) -> str:
    import triton

    root = os.environ.get("JDT_ARRAY_KERNEL_REPORT_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "jdt-array", "kernel-report"
    )
    options = sorted(options.items())
    digest = hashlib.sha256(f"{triton.__version__}|{key}|{target}|{options}".encode())
    return os.path.join(root, digest.hexdigest()[:32] + ".json")


def _row(family, name, target, warps, usage) -> Row:
    registers, stores, loads, shared = usage
    resident = resident_warps(registers, warps, shared, target)
    return Row(family, name, target, warps, registers, stores, loads, shared, resident)


# -- Triton ----------------------------------------------------------------------------


def _signature(kernel, aligned: bool) -> tuple[dict, dict]:
    """The Triton signature of ``kernel`` as the launcher calls it, and the alignment
    attributes of Triton's specialization when ``aligned``."""
    from jdt_array._kernels import triton_launch

    signature, attrs = {}, {}
    for i, param in enumerate(kernel.params):
        if param.is_constexpr:
            signature[param.name] = "constexpr"
        elif param.name in triton_launch.POINTERS:
            signature[param.name] = triton_launch.POINTERS[param.name]
        else:
            signature[param.name] = param.annotation_type
        if aligned and param.name in triton_launch.ALIGNED:
            attrs[(i,)] = [["tt.divisibility", 16]]
    return signature, attrs


def _compile_triton(spec_and_target) -> Row:
    """Compile one specialization for one target (in a process outside Triton's
    interpreter)."""
    from triton.compiler import ASTSource

    from jdt_array._kernels import triton_jdt, triton_launch

    spec, target = spec_and_target
    kernel = getattr(triton_jdt, f"{spec.kernel}_kernel")
    signature, attrs = _signature(kernel, spec.aligned)
    source = ASTSource(fn=kernel, signature=signature, constexprs=spec.constants,
                       attrs=attrs)  # fmt: skip
    with open(triton_jdt.__file__, "rb") as f:
        key = hashlib.sha256(f.read()).hexdigest() + spec.name
    options = {"num_warps": spec.warps, "maxnreg": triton_launch.MAX_REGISTERS}
    usage = _compiled(source, target, options, key)
    return _row("triton", spec.name, target, spec.warps, usage)


def triton_rows(targets: Sequence[str] = tuple(TARGETS), *, aligned=(True, False),
                jobs: int | None = None) -> list[Row]:  # fmt: skip
    """Every Triton specialization compiled for every target."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return _in_subprocess(["--triton-only"], targets, aligned, jobs)
    from jdt_array._kernels import triton_launch

    work = [(s, t) for s in triton_launch.specializations(aligned=aligned) for t in targets]
    return _map(_compile_triton, work, jobs)


def _map(fn: Callable, work: list, jobs: int | None) -> list:
    jobs = jobs or min(len(work), os.cpu_count() or 1)
    if jobs <= 1:
        return [fn(w) for w in work]
    # spawn, not fork: JAX (the Pallas exports) runs threads that a fork would copy
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=spawn) as pool:
        return list(pool.map(fn, work, chunksize=max(1, len(work) // (4 * jobs))))


def _in_subprocess(only, targets, aligned, jobs) -> list[Row]:
    """The rows of this report computed by a process outside Triton's interpreter."""
    # Triton outside its interpreter; JAX in its default configuration (the tests
    # turn on float64, which changes the kernels' index arithmetic).
    unset = ("TRITON_INTERPRET", "JAX_ENABLE_X64")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    args = [sys.executable, "-m", "jdt_array._tools.kernel_report", *only, "--json", "-",
            "--targets", *targets, "--aligned", *[str(a) for a in aligned]]  # fmt: skip
    if jobs:
        args += ["--jobs", str(jobs)]
    done = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"the compile report failed:\n{done.stderr[-3000:]}")
    return [Row(*r) for r in json.loads(done.stdout)["rows"]]


# -- Pallas ----------------------------------------------------------------------------

# The exported cases: (shape, class axis, soft label, keep mask); C classes on the
# class axis, 8 x 128 pixels (enough for the widest pixel block of every tile).
PALLAS_CASES = tuple(
    ((2, c, 8, 128) if axis == 1 else (2, 8, 128, c), axis, soft, keep)
    for c in (1, 5, 19, 150, 300)
    for axis in (1, -1)
    for soft, keep in ((False, False), (True, True))
) + (((2, 4, 4, 8, 32), 1, False, True), ((2, 4, 8, 32, 19), -1, True, False))
# The cases whose kernels the report compiles: one per tile of the Pallas kernels
# (the tile depends on the classes: 1, 8 and 32 classes, one or several tiles).
COMPILE_CASES = tuple(c for c in PALLAS_CASES if c[0][c[1]] in (1, 5, 19, 150))


def pallas_exports(cases=PALLAS_CASES, dtypes=("float32",)) -> dict[str, list[str]]:
    """The Triton IR of every ``pallas_call`` of ``jax.jit(jax.value_and_grad(loss))``
    of the Pallas form exported for ``cuda`` (interpretation off), by case name.

    Raises whatever Pallas's GPU lowering raises for a case it cannot lower."""
    import jax
    import jax.numpy as jnp
    from jax._src.pallas.triton import pallas_call_registration as registration

    from jdt_array._kernels import choice
    from jdt_array.backends import jax as jj

    captured: list[str] = []
    lower = registration.lowering.lower_jaxpr_to_triton_module

    def capture(*args, **kwargs):
        result = lower(*args, **kwargs)
        captured.append(result.module.operation.get_asm())
        return result

    kernels = {}
    registration.lowering.lower_jaxpr_to_triton_module = capture
    try:
        with choice.setting("jax", "pallas"):
            for (shape, axis, soft, keep), dtype in ((c, d) for c in cases for d in dtypes):
                name = _case_name(shape, axis, soft, keep, dtype)
                captured.clear()
                pixels = shape[:axis] + shape[axis + 1 :] if axis == 1 else shape[:-1]
                z = jax.ShapeDtypeStruct(shape, jnp.dtype(dtype))
                y = jax.ShapeDtypeStruct(
                    shape if soft else pixels, jnp.dtype(dtype) if soft else jnp.int32
                )
                k = jax.ShapeDtypeStruct(pixels, jnp.bool_) if keep else None

                def loss(logits, label, mask, axis=axis, ignore=None if soft else 255):
                    return jj.jaccard_loss(
                        logits, label, keep_mask=mask, class_axis=axis, ignore_index=ignore
                    )

                step = jax.jit(jax.value_and_grad(loss))
                jax.export.export(step, platforms=["cuda"], disabled_checks=[
                    jax.export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")
                ])(z, y, k)  # fmt: skip
                kernels[name] = list(captured)
    finally:
        registration.lowering.lower_jaxpr_to_triton_module = lower
    return kernels


def _case_name(shape, axis, soft, keep, dtype) -> str:
    label = "soft" if soft else "hard"
    return (f"{'x'.join(map(str, shape))}-axis{axis}-{label}{'-keep' if keep else ''}"
            f"-{dtype}")  # fmt: skip


def _compile_ir(work) -> Row:
    name, ir, warps, stages, target = work
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "kernel.ttir")
        with open(path, "w") as f:
            f.write(ir)
        options = {"num_warps": warps, "num_stages": stages}
        usage = _compiled(path, target, options, hashlib.sha256(ir.encode()).hexdigest())
    return _row("pallas", name, target, warps, usage)


def pallas_rows(targets: Sequence[str] = tuple(TARGETS), *, cases=COMPILE_CASES,
                jobs: int | None = None) -> list[Row]:  # fmt: skip
    """The distinct Pallas kernels of ``cases`` compiled for every target."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        if cases != COMPILE_CASES:
            raise ValueError("cases other than COMPILE_CASES need TRITON_INTERPRET unset")
        return _in_subprocess(["--pallas-only"], targets, (True,), jobs)
    from jdt_array._kernels import jax_pallas

    distinct: dict[str, tuple[str, str]] = {}
    for case, irs in pallas_exports(cases).items():
        for ir in irs:
            kernel = re.search(r"tt\.func public @(\w+)", ir).group(1)
            digest = hashlib.sha256(ir.encode()).hexdigest()
            distinct.setdefault(digest, (f"{kernel}[{case}]", ir))
    warps, stages = jax_pallas.WARPS, jax_pallas.NUM_STAGES
    work = [(name, ir, warps, stages, t) for name, ir in distinct.values() for t in targets]
    return _map(_compile_ir, work, jobs)


# -- the report ------------------------------------------------------------------------


def table(rows: Iterable[Row]) -> str:
    """A Markdown table of ``rows``, one line per kernel with a column per target."""
    rows = list(rows)
    targets = [t for t in TARGETS if any(r.target == t for r in rows)]
    by_name: dict[tuple[str, str], dict[str, Row]] = {}
    for r in rows:
        by_name.setdefault((r.family, r.name), {})[r.target] = r
    head = "| kernel | warps | " + " | ".join(
        f"{t}: registers / spill bytes / resident warps" for t in targets
    )
    lines = [head + " |", "|---|---|" + "---|" * len(targets)]
    for (family, name), per in by_name.items():
        cells = []
        for t in targets:
            r = per.get(t)
            mark = "" if r is None or r.ok else " **!**"
            cells.append(
                ""
                if r is None
                else f"{r.registers} / "
                f"{r.spill_stores + r.spill_loads} / {r.resident_warps}{mark}"
            )
        warps = next(iter(per.values())).warps
        lines.append(f"| {family}: {name} | {warps} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parser():
    p = argparse.ArgumentParser(prog="python -m jdt_array._tools.kernel_report",
                                description=__doc__.split("\n\n")[0])  # fmt: skip
    p.add_argument("--targets", nargs="+", default=list(TARGETS), choices=list(TARGETS))
    p.add_argument("--aligned", nargs="+", default=["True", "False"],
                   choices=["True", "False"])  # fmt: skip
    p.add_argument("--jobs", type=int, default=None)
    p.add_argument("--triton-only", action="store_true")
    p.add_argument("--pallas-only", action="store_true")
    p.add_argument("--json", default=None, help="write the rows as JSON ('-': stdout)")
    return p


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    rows: list[Row] = []
    if not args.pallas_only:
        aligned = tuple(a == "True" for a in args.aligned)
        rows += triton_rows(args.targets, aligned=aligned, jobs=args.jobs)
    if not args.triton_only:
        rows += pallas_rows(args.targets, jobs=args.jobs)
    report = {"rows": [list(r) for r in rows], "min_resident_warps": MIN_RESIDENT_WARPS}
    if args.json == "-":
        print(json.dumps(report))
    else:
        print(table(rows))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(report, f, indent=1)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
