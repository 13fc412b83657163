"""``jdt-array`` / ``python -m jdt_array``: consistency report, demo, benchmarks and the
evaluation of a folder of predictions."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from ._tools.arguments import at_least
from ._tools.libraries import INSTALL_HINTS, LIBRARIES, ArrayLibrary

COMMANDS = ("check", "demo", "bench", "evaluate")
BACKENDS = tuple(dict.fromkeys(lib.module for lib in LIBRARIES))
DTYPES = ("float64", "float32", "float16", "bfloat16")
# The checkout this package was imported from, where benchmarks/ lives; an installed
# wheel has no benchmarks.
SOURCE_ROOT = Path(__file__).resolve().parent.parent
_seed = at_least(0)  # a random seed: NumPy takes non-negative integers only


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jdt-array",
        description="jdt-array: Jaccard, Dice and Tversky losses for soft labels on every "
        "array library. 'check' (the default) compares every installed library and device "
        "with NumPy float64; 'demo' trains a small network with CE and with CE + JDT and "
        "compares their fine-grained mIoU; 'bench' runs the benchmark suite; 'evaluate' "
        "computes the fine-grained metrics of a folder of predicted label maps.",
    )
    parser.add_argument("--version", action="version", version=f"jdt-array {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{check,demo,bench,evaluate}")
    check = sub.add_parser("check", help="cross-backend consistency report (default)")
    check.add_argument(
        "--backends", nargs="+", choices=BACKENDS, metavar="NAME",
        help=f"libraries to check (default: all installed; from {', '.join(BACKENDS)})",
    )  # fmt: skip
    check.add_argument(
        "--dtypes", nargs="+", choices=DTYPES, default=["float32", "float64"],
        metavar="DTYPE", help=f"dtypes to check (default: float32 float64; from {DTYPES})",
    )  # fmt: skip
    check.add_argument("--seed", type=_seed, default=0, help="random seed >= 0 (default 0)")
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

    if _has_benchmarks():
        bench_help = "the benchmark suite; 'jdt-array bench --help' lists its options"
    else:
        bench_help = "the benchmark suite: only in a source checkout, not in this install"
    sub.add_parser("bench", add_help=False, help=bench_help)

    from ._tools.evaluate_command import add_arguments as evaluate_arguments

    evaluate_arguments(
        sub.add_parser(
            "evaluate",
            help="fine-grained metrics of a folder of predicted label maps against "
            "the ground truth; 'jdt-array evaluate --help' lists its options",
        )
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = _parser()
    top_level = ("-h", "--help", "--version")  # options of jdt-array itself
    if not argv or (argv[0].startswith("-") and argv[0] not in top_level):
        argv = ["check", *argv]  # 'check' is the default command
    if argv[0] not in COMMANDS and not argv[0].startswith("-"):
        parser.error(  # exits with status 2
            f"unknown command {argv[0]!r} (choose from {', '.join(COMMANDS)}; "
            "'check' is the default)"
        )
    if argv[0] == "bench":
        return _bench(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    if args.command == "evaluate":
        from ._tools.evaluate_command import run as evaluate

        return evaluate(args)
    return _check(args)


def _check(args) -> int:
    if len(args.shape) < 2 or min(args.shape) < 1:
        _parser().error(
            f"--shape needs B C and optional spatial sizes >= 1, got {args.shape}"
        )
    # float64 results need JAX's double precision, which must be chosen before import.
    os.environ.setdefault("JAX_ENABLE_X64", "1")
    from ._tools.check import as_dicts, format_report, run_checks
    from ._tools.progress import show_progress

    libraries, unusable = _selected_libraries(args.backends)
    for problem in unusable:
        print(f"jdt-array check: not checked: {problem}", file=sys.stderr)
    results = run_checks(
        libraries, args.dtypes, seed=args.seed, shape=args.shape, progress=show_progress
    )
    if args.json:
        print(json.dumps(as_dicts(results), indent=1))
    elif results:
        print(format_report(results))
    if not results and libraries:
        print(
            f"jdt-array check: nothing was checked: no selected library supports the "
            f"dtypes {', '.join(args.dtypes)} ({_supported_dtypes(libraries)})",
            file=sys.stderr,
        )
    passed = results and all(r.passed for r in results)
    return 0 if passed and not unusable else 1


def _selected_libraries(modules) -> tuple[list[ArrayLibrary], list[str]]:
    """The usable libraries (and devices) of ``modules`` (default: all usable here),
    and why each selected module that has none cannot be checked."""
    libraries = [lib for lib in LIBRARIES if not modules or lib.module in modules]
    usable = [lib for lib in libraries if lib.available()]
    problems = []
    for module in dict.fromkeys(modules or ()):
        if any(lib.module == module for lib in usable):
            continue
        own = [lib for lib in libraries if lib.module == module]
        if not own[0].installed():
            problems.append(f"{module} is not installed ({INSTALL_HINTS[module]})")
        else:
            devices = ", ".join(lib.device for lib in own)
            problems.append(f"{module} is installed but finds no device ({devices}) here")
    return usable, problems


def _supported_dtypes(libraries) -> str:
    return "; ".join(
        f"{lib.name}: {' '.join(d for d in DTYPES if lib.supports(d)) or 'none'}"
        for lib in libraries
    )


def _demo(args) -> int:
    if args.steps < 1:
        _parser().error(f"--steps must be at least 1, got {args.steps}")
    from ._tools.demo import run_demo

    run_demo(args.framework, steps=args.steps, seed=args.seed, plot=args.plot or None)
    return 0


def _has_benchmarks() -> bool:
    return (SOURCE_ROOT / "benchmarks" / "suite.py").is_file()


def _bench(argv: list[str]) -> int:
    if not _has_benchmarks():
        print(
            "jdt-array bench: the benchmark suite lives in the source checkout "
            "(benchmarks/, also in the sdist); install the package from there with "
            "pip install -e .",
            file=sys.stderr,
        )
        return 2
    sys.path.insert(0, str(SOURCE_ROOT))
    from benchmarks.suite import main as bench_main

    from ._tools.progress import show_progress

    return bench_main(argv, progress=show_progress, prog="jdt-array bench")


if __name__ == "__main__":
    sys.exit(main())
