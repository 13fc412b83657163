"""``jdt-array`` / ``python -m jdt_array``: the cross-backend consistency report."""

from __future__ import annotations

import argparse
import json
import os
import sys

BACKENDS = ("numpy", "array_api_strict", "torch", "jax", "cupy")
DTYPES = ("float64", "float32", "float16", "bfloat16")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jdt-array",
        description="jdt-array: JDT losses on every array library. 'check' (the default) "
        "runs each loss on shared random inputs on every installed library and device and "
        "compares it with NumPy float64.",
    )
    sub = parser.add_subparsers(dest="command")
    check = sub.add_parser("check", help="cross-backend consistency report (default)")
    check.add_argument(
        "--backends", nargs="+", choices=BACKENDS, metavar="NAME",
        help=f"libraries to check (default: all installed; from {', '.join(BACKENDS)})",
    )  # fmt: skip
    check.add_argument(
        "--dtypes", nargs="+", choices=DTYPES, default=["float32", "float64"],
        metavar="DTYPE", help=f"dtypes to check (default: float32 float64; from {DTYPES})",
    )  # fmt: skip
    check.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    check.add_argument(
        "--shape", type=int, nargs="+", default=[2, 5, 16, 16], metavar="N",
        help="logits shape B C *spatial (default 2 5 16 16)",
    )  # fmt: skip
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in ("check", "-h", "--help"):
        argv = ["check", *argv]  # 'check' is the default command
    args = _parser().parse_args(argv)
    if len(args.shape) < 2 or min(args.shape) < 1:
        _parser().error(
            f"--shape needs B C and optional spatial sizes >= 1, got {args.shape}"
        )
    # float64 results need JAX's double precision, which must be chosen before import.
    os.environ.setdefault("JAX_ENABLE_X64", "1")
    from .backends.arrays import available_libraries
    from .check import as_dicts, format_report, run_checks

    libraries = [
        lib
        for lib in available_libraries()
        if not args.backends or lib.module in args.backends
    ]
    results = run_checks(libraries, args.dtypes, seed=args.seed, shape=args.shape)
    print(json.dumps(as_dicts(results), indent=1) if args.json else format_report(results))
    return 0 if results and all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
