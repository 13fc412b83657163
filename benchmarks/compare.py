"""Before / after: the same measurements on two source trees, alternating.

    python -m benchmarks.compare BEFORE_DIR AFTER_DIR [--rounds 2] [--paths ...]

Each measurement (path, case, size) runs in a fresh process of each tree in turn, the
order swapped every round (a noisy machine often runs the second process of a pair
slower); the table shows the median over the rounds. A tree is a checkout of this
repository (``git worktree add ../before <commit>``); its own ``benchmarks.suite
--one`` measures, so each tree runs its own code.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from .paths import CASES
from .suite import SIZES

DEFAULT_PATHS = ("numpy", "torch-eager", "torch-eager-autodiff", "torch-compile",
                 "jax-jit", "jax-jit-vjp")  # fmt: skip
METRIC_PATHS = ("numpy", "torch-eager", "jax-jit")


def measurements(paths, cases, sizes):
    for size in sizes:
        for case in cases:
            chosen = METRIC_PATHS if case == "metrics-update" else paths
            if case == "lovasz-softmax":
                chosen = [p for p in paths if p in ("numpy", "torch-eager")]
            for path in chosen:
                yield path, case, size


def run(tree: Path, path: str, case: str, shape, reps: int) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.suite", "--one", path, case, "cpu",
           ",".join(map(str, shape)), str(reps)]  # fmt: skip
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONPATH": str(tree)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tree,
                          timeout=900, check=False)  # fmt: skip
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit {done.returncode}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before", type=Path)
    p.add_argument("after", type=Path)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--paths", nargs="+", default=list(DEFAULT_PATHS))
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    p.add_argument("--sizes", nargs="+", default=list(SIZES["cpu"]),
                   choices=list(SIZES["cpu"]))  # fmt: skip
    args = p.parse_args(argv)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    found: dict = {}
    for round_ in range(args.rounds):
        order = list(trees.items()) if round_ % 2 == 0 else list(trees.items())[::-1]
        for path, case, size in measurements(args.paths, args.cases, args.sizes):
            reps = 3 if case == "lovasz-softmax" else args.reps
            for name, tree in order:
                record = run(tree, path, case, SIZES["cpu"][size], reps)
                found.setdefault((size, case, path), {}).setdefault(name, []).append(record)
            print(f"round {round_ + 1}: {size} {case} {path}", file=sys.stderr, flush=True)
    print("| size | case | path | before ms | after ms | after / before | before MB "
          "| after MB |\n|---|---|---|---|---|---|---|---|")  # fmt: skip
    for (size, case, path), runs in found.items():

        def median(name, key, scale=1.0, runs=runs):
            values = [r[key] * scale for r in runs.get(name, []) if key in r]
            return statistics.median(values) if values else float("nan")

        before, after = median("before", "median_ms"), median("after", "median_ms")
        print(f"| {size} | {case} | {path} | {before:.1f} | {after:.1f} | "
              f"{after / before:.2f} | {median('before', 'peak_extra_bytes', 1e-6):.0f} | "
              f"{median('after', 'peak_extra_bytes', 1e-6):.0f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
