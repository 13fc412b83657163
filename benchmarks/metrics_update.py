"""``FineGrainedMetrics.update`` on NumPy, on PyTorch, and through the torchmetrics
adapter, in one process, interleaved: the paths take turns step by step, so that a
slow spell of a shared machine hits them alike.

    python -m benchmarks.metrics_update                       # this checkout
    python -m benchmarks.metrics_update --trees BEFORE AFTER  # two checkouts, alternating

The inputs are float32 logits (B, C, H, W) and int64 labels (B, H, W) with 10 %
ignored pixels; the metric keeps its default per-image state (``torch compact``: the
core's ``compact=True``, where the checkout has it). The target of the metric core
(issue 22): PyTorch within 1.3x of NumPy. ``torchmetrics jaccard`` is torchmetrics'
own ``MulticlassJaccardIndex`` on the same logits, for scale. With ``--trees``, each
checkout runs this script in its own processes, rounds alternating which goes first,
and the table shows both.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SHAPES = {"cityscapes-like": (8, 19, 256, 512), "ade20k-like": (8, 150, 128, 256)}
IGNORE = 255


def make_paths(shape):
    """{path name: zero-argument update step} for inputs of ``shape``."""
    import numpy as np
    import torch

    from jdt_array.metrics import FineGrainedMetrics

    rng = np.random.default_rng(0)
    logits = rng.standard_normal(shape, dtype=np.float32)
    label = rng.integers(0, shape[1], size=(shape[0], *shape[2:]))
    label = np.where(rng.random(label.shape) < 0.1, IGNORE, label)
    x, y = torch.from_numpy(logits), torch.from_numpy(label)

    def core_step(metric, a, b):
        def run():
            metric.update(a, b)  # the state grows as in an evaluation

        return run

    def core():
        return FineGrainedMetrics(shape[1], ignore_index=IGNORE)

    paths = {"numpy": core_step(core(), logits, label), "torch": core_step(core(), x, y)}
    if "compact" in inspect.signature(FineGrainedMetrics).parameters:
        compact = FineGrainedMetrics(shape[1], ignore_index=IGNORE, compact=True)
        paths["torch compact"] = core_step(compact, x, y)
    try:
        from torchmetrics.classification import MulticlassJaccardIndex

        from jdt_array.backends.torchmetrics import FineGrainedMetrics as Adapter
    except ImportError:
        return paths
    paths["torchmetrics adapter"] = core_step(Adapter(shape[1], ignore_index=IGNORE), x, y)
    jaccard = MulticlassJaccardIndex(shape[1], ignore_index=IGNORE)
    paths["torchmetrics jaccard"] = core_step(jaccard, x, y)
    return paths


def measure(shape, steps: int, warmup: int = 2) -> dict[str, float]:
    """Median ms of one update per path, the paths taking turns step by step."""
    paths = make_paths(shape)
    for _ in range(warmup):
        for run in paths.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in paths}
    for i in range(steps):
        order = list(paths.items())
        for name, run in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(values) for name, values in times.items()}


def run_tree(tree: Path, size: str, steps: int) -> dict[str, float]:
    """:func:`measure` in a fresh process importing the package of ``tree``."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", size, str(steps)]
    done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True,
                          timeout=1800, check=False)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def table(rows: dict) -> str:
    lines = ["| size | path | ms | / numpy |", "|---|---|---|---|"]
    for size, found in rows.items():
        for name, ms in found.items():
            lines.append(f"| {size} | {name} | {ms:.1f} | {ms / found['numpy']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    p.add_argument("--steps", type=int, default=15, help="timed updates per path")
    p.add_argument("--trees", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    p.add_argument("--rounds", type=int, default=2, help="with --trees: processes each")
    p.add_argument("--torch-threads", type=int, default=0,
                   help="PyTorch's intra-op threads (0: its default); 1 on a busy machine, "
                   "where waiting threads cost more than they add")  # fmt: skip
    p.add_argument("--one", nargs=2, metavar=("SIZE", "STEPS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.torch_threads:
        os.environ["JDT_BENCH_TORCH_THREADS"] = str(args.torch_threads)  # children too
    if os.environ.get("JDT_BENCH_TORCH_THREADS"):
        import torch

        torch.set_num_threads(int(os.environ["JDT_BENCH_TORCH_THREADS"]))
    if args.one:  # a child of --trees: one measurement as JSON
        print(json.dumps(measure(SHAPES[args.one[0]], int(args.one[1]))))
        return 0
    if not args.trees:
        print(table({size: measure(SHAPES[size], args.steps) for size in args.sizes}))
        return 0
    found: dict = {}
    trees = {"before": args.trees[0].resolve(), "after": args.trees[1].resolve()}
    for round_ in range(args.rounds):
        order = list(trees.items()) if round_ % 2 == 0 else list(trees.items())[::-1]
        for size in args.sizes:
            for which, tree in order:
                result = run_tree(tree, size, args.steps)
                for name, ms in result.items():
                    found.setdefault((size, name), {}).setdefault(which, []).append(ms)
            print(f"round {round_ + 1}: {size}", file=sys.stderr, flush=True)
    print("| size | path | before ms | after ms | after / before |\n|---|---|---|---|---|")
    for (size, name), runs in found.items():
        before, after = (statistics.median(runs.get(w, [float("nan")])) for w in trees)
        print(f"| {size} | {name} | {before:.1f} | {after:.1f} | {after / before:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
