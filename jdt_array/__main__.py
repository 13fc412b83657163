"""``jdt-array`` / ``python -m jdt_array``: consistency report, demo and benchmarks."""

from __future__ import annotations

import argparse
import json
import os
import sys

from ._tools.libraries import LIBRARIES

BACKENDS = tuple(dict.fromkeys(lib.module for lib in LIBRARIES))
DTYPES = ("float64", "float32", "float16", "bfloat16")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jdt-array",
        description="jdt-array: Jaccard, Dice and Tversky losses for soft labels on every "
        "array library. 'check' (the default) compares every installed library and device "
        "with NumPy float64; 'demo' trains a small network with CE and with CE + JDT and "
        "compares their fine-grained mIoU; 'bench' runs the benchmark suite.",
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
    check.add_argument(
        "--seed", type=_seed, default=0, help="random seed >= 0 (default 0)"
    )
    check.add_argument(
        "--shape", type=int, nargs="+", default=[2, 5, 16, 16], metavar="N",
        help="logits shape B C *spatial (default 2 5 16 16)",
    )  # fmt: skip
    check.add_argument("--json", action="store_true", help="print JSON instead of a table")

    demo = sub.add_parser("demo", help="train with CE and with CE + JDT on synthetic data")
    demo.add_argument(
        "--framework", choices=("jax", "torch", "numpy"),
        help="default: jax if installed, else torch, else numpy",
    )  # fmt: skip
    demo.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    demo.add_argument("--seed", type=_seed, default=0, help="random seed >= 0 (default 0)")
    demo.add_argument(
        "--plot", default="jdt-array-demo.png",
        help="PNG of the training curves and predictions ('' for none)",
    )  # fmt: skip

    sub.add_parser(
        "bench", add_help=False,
        help="the benchmark suite (needs a source checkout); 'bench --help' lists options",
    )  # fmt: skip
    return parser


def _seed(text: str) -> int:
    """A random seed: NumPy takes non-negative integers only."""
    try:
        seed = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if seed < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {seed}")
    return seed


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in ("check", "demo", "bench", "-h", "--help"):
        argv = ["check", *argv]  # 'check' is the default command
    if argv[0] == "bench":
        return _bench(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if len(args.shape) < 2 or min(args.shape) < 1:
        _parser().error(
            f"--shape needs B C and optional spatial sizes >= 1, got {args.shape}"
        )
    # float64 results need JAX's double precision, which must be chosen before import.
    os.environ.setdefault("JAX_ENABLE_X64", "1")
    from ._tools.check import as_dicts, format_report, run_checks
    from ._tools.libraries import available_libraries

    libraries = [
        lib
        for lib in available_libraries()
        if not args.backends or lib.module in args.backends
    ]
    results = run_checks(libraries, args.dtypes, seed=args.seed, shape=args.shape)
    print(json.dumps(as_dicts(results), indent=1) if args.json else format_report(results))
    if not results:
        names = ", ".join(lib.name for lib in libraries) or "none"
        print(
            f"jdt-array check: nothing was checked: no selected library (installed and "
            f"selected: {names}) supports the dtypes {', '.join(args.dtypes)}",
            file=sys.stderr,
        )
    return 0 if results and all(r.passed for r in results) else 1


def _demo(args) -> int:
    if args.steps < 1:
        _parser().error(f"--steps must be at least 1, got {args.steps}")
    from ._tools.demo import run_demo

    run_demo(args.framework, steps=args.steps, seed=args.seed, plot=args.plot or None)
    return 0


def _bench(argv: list[str]) -> int:
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "suite.py").is_file():
        print(
            "jdt-array bench: the benchmark suite lives in the source checkout "
            "(benchmarks/); install the package from a clone with pip install -e .",
            file=sys.stderr,
        )
        return 2
    sys.path.insert(0, str(root))
    from benchmarks.suite import main as bench_main

    from ._tools.demo import progress_bar

    return bench_main(argv, progress=progress_bar)


if __name__ == "__main__":
    sys.exit(main())
