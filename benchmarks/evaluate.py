"""Images per second of ``jdt-array evaluate`` against the Cityscapes evaluation script.

    python -m benchmarks.evaluate                  # 500 pairs of 1024 x 2048, 2 workers
    python -m benchmarks.evaluate --images 20      # a smoke run

Generates Cityscapes-style folders once (official label ids, PNG, the 19 training
classes plus ignored ids in labels and, rarely, in predictions; piecewise-constant maps
that compress like real ones) and times, in fresh processes, on the same files:

* ``jdt-array evaluate`` with ``--workers`` local processes and the id map to the 19
  training classes (every fine-grained metric, the worst images, a JSON report);
* ``cityscapesscripts``' ``evaluateImgLists`` in one process, instance scores off (its
  Cython extension where it is built, else its NumPy path: the run says which).

Wall-clock time of each command, start-up included; ``--rounds`` alternates their
order. Also checks that both report the same mIoU. Results are printed and written as
JSON (``--out``, default benchmarks/results/evaluate.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
TARGET = 4.0  # jdt-array evaluate's throughput over the Cityscapes script's, at least
PRED_SUFFIX, LABEL_SUFFIX = "_leftImg8bit", "_gtFine_labelIds"
CITIES = ("aachen", "bochum", "bremen", "cologne")


# -- data ------------------------------------------------------------------------------


def cityscapes_ids() -> tuple[list[int], list[int], dict[int, int]]:
    """The evaluated label ids, the ignored ones, and the id map to training ids."""
    from cityscapesscripts.helpers.labels import labels

    evaluated = [label.id for label in labels if not label.ignoreInEval and label.id >= 0]
    ignored = [label.id for label in labels if label.ignoreInEval and label.id >= 0]
    id_map = {
        label.id: label.trainId
        for label in labels
        if not label.ignoreInEval and label.id >= 0
    }
    return evaluated, ignored, id_map


def make_pair(index: int, shape: tuple[int, int], folder: Path) -> None:
    """One label and prediction PNG: regions of a coarse random layout refined twice,
    a prediction shifted by a few pixels with some regions relabelled."""
    from PIL import Image

    evaluated, ignored, _ = cityscapes_ids()
    rng = np.random.default_rng(index)
    h, w = shape
    label = _regions(rng, shape, 128, evaluated + ignored[:3])
    for block in (32, 8):  # smaller objects on top
        small = _regions(rng, shape, block, evaluated)
        label = np.where(rng.random((h // block, w // block)).repeat(block, 0).repeat(
            block, 1)[:h, :w] < 0.15, small, label)  # fmt: skip
    shift = rng.integers(-4, 5, 2)
    pred = np.roll(label, tuple(shift), axis=(0, 1))
    pred = np.where(_regions(rng, shape, 64, [0, 1]) == 1, pred,
                    _regions(rng, shape, 64, evaluated))  # fmt: skip
    pred = np.where(_regions(rng, shape, 256, [0] * 19 + [1]) == 1, ignored[0], pred)
    city = CITIES[index % len(CITIES)]
    stem = f"{city}/{city}_{index:06d}_000019"
    for root, suffix, ids in (("pred", PRED_SUFFIX, pred), ("gt", LABEL_SUFFIX, label)):
        path = folder / root / f"{stem}{suffix}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ids.astype(np.uint8)).save(path)


def _regions(rng, shape, block: int, values) -> np.ndarray:
    h, w = shape
    grid = rng.choice(values, (-(-h // block), -(-w // block)))
    return grid.repeat(block, 0).repeat(block, 1)[:h, :w]


def prepare(folder: Path, images: int, shape: tuple[int, int], workers: int) -> None:
    """Generate the folders unless ``folder`` already holds this many of this size."""
    stamp = folder / "generated.json"
    want = {"images": images, "shape": list(shape), "version": 1}
    if stamp.exists() and json.loads(stamp.read_text()) == want:
        return
    print(f"generating {images} pairs of {shape[0]} x {shape[1]} in {folder} ...")
    for old in folder.rglob("*.png"):
        old.unlink()
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(make_pair, range(images), [shape] * images, [folder] * images))
    _, _, id_map = cityscapes_ids()
    (folder / "id_map.json").write_text(json.dumps(id_map))
    stamp.write_text(json.dumps(want))


# -- the two commands ------------------------------------------------------------------


def time_jdt_array(folder: Path, workers: int) -> dict:
    out = folder / "jdt-array.json"
    command = [
        sys.executable, "-m", "jdt_array", "evaluate", str(folder / "pred"),
        str(folder / "gt"), "--num-classes", "19", "--id-map",
        str(folder / "id_map.json"), "--pred-suffix", PRED_SUFFIX, "--label-suffix",
        LABEL_SUFFIX, "--workers", str(workers), "--worst", "10", "--json", str(out),
    ]  # fmt: skip
    times = _timed(command)
    return {**times, "mIoU": json.loads(out.read_text())["metrics"]["mIoUD"]}


def time_cityscapes(folder: Path) -> dict:
    command = [sys.executable, "-m", "benchmarks.evaluate", "--one-cityscapes", str(folder)]
    out = folder / "cityscapes.json"
    times = _timed(command)
    report = json.loads(out.read_text())
    return {**times, "mIoU": report["mIoU"], "cython": report["cython"]}


def _timed(command: list[str]) -> dict[str, float]:
    """Wall-clock seconds of ``command``, and the CPU seconds of it and every process
    it started (its workers): the CPU time per image does not depend on how many
    other programs share the machine, the wall-clock time does."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seconds": seconds, "cpu_seconds": cpu}


def run_cityscapes(folder: Path) -> None:
    """In a fresh process: the official script on the generated folders."""
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    preds = sorted(str(p) for p in (folder / "pred").rglob(f"*{PRED_SUFFIX}.png"))
    gts = sorted(str(p) for p in (folder / "gt").rglob(f"*{LABEL_SUFFIX}.png"))
    args = official.args
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    result = official.evaluateImgLists(preds, gts, args)
    report = {"mIoU": 100 * result["averageScoreClasses"], "cython": official.CSUPPORT}
    (folder / "cityscapes.json").write_text(json.dumps(report))


# -- main ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--images", type=int, default=500, help="image pairs (default 500)")
    p.add_argument(
        "--size", type=int, nargs=2, default=[1024, 2048], metavar=("H", "W"),
        help="image size (default 1024 2048)",
    )  # fmt: skip
    p.add_argument("--workers", type=int, default=2, help="jdt-array workers (default 2)")
    p.add_argument("--rounds", type=int, default=1, help="timed rounds (default 1)")
    p.add_argument(
        "--data", type=Path, default=RESULTS / "evaluate-data",
        help="where the generated folders go (kept and reused; default "
        "benchmarks/results/evaluate-data)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS / "evaluate.json")
    p.add_argument("--one-cityscapes", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.one_cityscapes is not None:
        run_cityscapes(args.one_cityscapes)
        return 0
    prepare(args.data, args.images, tuple(args.size), args.workers)
    ours, theirs = [], []
    for round_ in range(args.rounds):
        runs = [("ours", lambda: time_jdt_array(args.data, args.workers)),
                ("theirs", lambda: time_cityscapes(args.data))]  # fmt: skip
        for name, run in runs if round_ % 2 == 0 else runs[::-1]:
            (ours if name == "ours" else theirs).append(run())
    rate = {
        "jdt-array": args.images / statistics.median(r["seconds"] for r in ours),
        "cityscapes": args.images / statistics.median(r["seconds"] for r in theirs),
    }
    cpu_ms = {
        name: 1000 * statistics.median(r["cpu_seconds"] for r in runs) / args.images
        for name, runs in (("jdt-array", ours), ("cityscapes", theirs))
    }
    cython = theirs[0]["cython"]
    agree = abs(ours[0]["mIoU"] - theirs[0]["mIoU"]) <= 1e-9 * abs(theirs[0]["mIoU"])
    ratio = rate["jdt-array"] / rate["cityscapes"]
    verdict = "met" if ratio >= TARGET else "not met"
    print(
        f"{args.images} pairs of {args.size[0]} x {args.size[1]}, {os.cpu_count()} CPUs\n"
        f"jdt-array evaluate, {args.workers} workers: {rate['jdt-array']:.2f} images/s\n"
        f"Cityscapes script ({'Cython extension' if cython else 'NumPy path'}, one "
        f"process): {rate['cityscapes']:.2f} images/s\n"
        f"ratio {ratio:.2f} (target >= {TARGET:g}: {verdict})\n"
        f"CPU time per image, start-up and workers included: jdt-array "
        f"{cpu_ms['jdt-array']:.1f} ms, Cityscapes script {cpu_ms['cityscapes']:.1f} ms\n"
        f"mIoU {ours[0]['mIoU']:.4f} vs {theirs[0]['mIoU']:.4f}"
        f" ({'same' if agree else 'DIFFERENT'})"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "images": args.images, "size": args.size, "workers": args.workers,
        "rounds": args.rounds, "cpus": os.cpu_count(), "machine": platform.platform(),
        "python": platform.python_version(), "cityscapes_cython": cython,
    }  # fmt: skip
    results = {"images_per_second": rate, "cpu_ms_per_image": cpu_ms, "ratio": ratio,
               "target": TARGET,
               "runs": {"jdt-array": ours, "cityscapes": theirs}}  # fmt: skip
    args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
