"""``jdt-array evaluate``: the fine-grained metrics of a folder of predicted label maps.

Each image pair is read, its ids mapped and its per-image pixel counts taken by the
metric core (:meth:`FineGrainedMetrics.statistics`) in one task of a Dask map: on
local threads or processes, or on a running ``dask.distributed`` cluster. A task holds
one image pair; only the counts, a few numbers per class, come back to the client,
which adds them in the order of the pair names and summarizes them once, so the
result depends neither on the number of workers nor on the order of the files.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..metrics import BatchStatistics, FineGrainedMetrics
from .label_files import (
    FORMATS,
    IGNORED,
    IdTable,
    LabelFileError,
    Pair,
    find_pairs,
    load_class_names,
    load_id_map,
    read_ids,
)
from .progress import show_progress

__all__ = ["Evaluation", "ImageResult", "add_arguments", "evaluate", "evaluate_pair", "run"]

Progress = Callable[[int, int, str], None]
IMAGE_SCORES = {"mIoU": "mIoUI", "mDice": "mDiceI", "mAcc": "mAccI", "Acc": "Acc"}
_SHOWN_PROBLEMS = 10  # problems listed in an error message; the rest are counted


class EvaluationError(Exception):
    """An evaluation that cannot go on; the message says why and what to do."""


# -- one image pair (runs on a worker) -------------------------------------------------


@dataclass(frozen=True)
class ImageResult:
    """What one pair contributes: counts and the image's own scores (percent), or the
    problem that stopped it."""

    pair: Pair
    shape: tuple[int, ...] | None = None
    pixels: int = 0  # labelled pixels (not ignored)
    stats: BatchStatistics | None = None
    scores: dict[str, float] | None = None  # None: no labelled pixel, or an error
    error: str | None = None


def evaluate_pair(pair: Pair, ids: IdTable, *, skip_bad: bool = False) -> ImageResult:
    """Read, check and count one pair.

    Raises:
        LabelFileError: a problem with the pair's files, unless ``skip_bad``: then it
            is returned in the result.
    """
    try:
        pred, label = read_ids(pair.pred), read_ids(pair.label)
        if pred.shape != label.shape:
            raise LabelFileError(_shape_mismatch(pair, pred.shape, label.shape))
        label = ids.labels(pair.label, label)
        pred = ids.predictions(pair.pred, pred)
    except LabelFileError as error:
        if not skip_bad:
            raise
        return ImageResult(pair, error=str(error))
    stats = image_statistics(ids, pred, label)
    pixels = int(np.count_nonzero(label != IGNORED))
    scores = image_scores(ids.num_classes, stats) if pixels else None
    return ImageResult(pair, tuple(label.shape), pixels, stats, scores)


def _shape_mismatch(pair: Pair, pred_shape, label_shape) -> str:
    hint = ""
    if len(pred_shape) == len(label_shape) + 1:
        hint = " (a probability map? only label maps are evaluated)"
    return (
        f"{pair.pred}: the prediction has shape {pred_shape}, its label {pair.label} "
        f"has {label_shape}{hint}"
    )


def image_statistics(ids: IdTable, pred: np.ndarray, label: np.ndarray) -> BatchStatistics:
    """The metric core's counts of one encoded pair, as those of a batch of one.

    Predictions of no class (``ids.void``, C) are counted as a class C + 1 of their own,
    whose column is then dropped: what remains are the C classes' counts with those
    pixels wrong wherever the label has a class (a false negative there) and a false
    positive of none, as the Cityscapes evaluation counts them.
    """
    C = ids.num_classes
    if ids.void is None:
        return _metric(C).statistics(pred[None], label[None])
    return _without_class(_metric(C + 1).statistics(pred[None], label[None]), C)


def _without_class(stats: BatchStatistics, num_classes: int) -> BatchStatistics:
    """``stats`` of C + 1 classes as those of the first C: every per-class (B, C + 1)
    field cut to (B, C); per-image fields (B,) unchanged."""
    return stats._replace(
        **{
            name: value[:, :num_classes]
            for name, value in stats._asdict().items()
            if value is not None and value.ndim == 2 and value.shape[1] == num_classes + 1
        }
    )


def _metric(num_classes: int, q: float = 1) -> FineGrainedMetrics:
    return FineGrainedMetrics(num_classes, ignore_index=IGNORED, q=q)


def image_scores(num_classes: int, stats: BatchStatistics) -> dict[str, float]:
    """The image's own Acc and image-level mAcc, mIoU, mDice (percent), by the core."""
    metric = _metric(num_classes)
    metric.update_statistics(stats)
    results = metric.compute()
    return {name: results[key] for name, key in IMAGE_SCORES.items()}


# -- the map over all pairs (runs on the client) ---------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """The summary (``FineGrainedMetrics.compute()``), the per-class scores (None until
    the metric core has ``per_class()``), every evaluated image and every skipped
    pair or file with its reason."""

    metrics: dict[str, float]
    per_class: dict[str, list[float]] | None
    images: list[ImageResult]
    skipped: list[str]


def evaluate(
    pairs: Sequence[Pair],
    ids: IdTable,
    *,
    q: float = 1,
    skip_bad: bool = False,
    skipped: Sequence[str] = (),
    workers: int = 1,
    threads: bool = False,
    scheduler: str | None = None,
    progress: Progress | None = None,
) -> Evaluation:
    """Evaluate ``pairs`` with Dask: locally on ``workers`` processes (``threads``:
    threads; 1: in this thread), or on the ``dask.distributed`` cluster whose
    scheduler listens at ``scheduler``.

    Raises:
        EvaluationError: the first pair with a bad file (unless ``skip_bad``: then
            such pairs are skipped and listed), no labelled pixel at all, an
            unreachable scheduler.
    """
    pairs = sorted(pairs, key=lambda pair: pair.name)
    try:
        if scheduler is not None:
            results = _map_on_cluster(pairs, ids, skip_bad, scheduler, progress)
        else:
            results = _map_locally(pairs, ids, skip_bad, workers, threads, progress)
    except LabelFileError as error:  # stops the run at the first bad pair
        raise EvaluationError(
            f"{error}\n(--skip-bad skips and lists the pairs that cannot be evaluated)"
        ) from error
    results = sorted(results, key=lambda result: result.pair.name)
    bad = [result.error for result in results if result.error is not None]
    images = [result for result in results if result.error is None]
    if not images:
        raise EvaluationError(_listing(bad, "pairs cannot be evaluated; none is left"))
    metric = _metric(ids.num_classes, q)
    for image in images:
        metric.update_statistics(image.stats)
    if not any(image.pixels for image in images):
        raise EvaluationError(
            "no image has a labelled pixel: every label pixel is ignored (check "
            "--ignore-index and --id-map)"
        )
    return Evaluation(metric.compute(), per_class_scores(metric), images, [*skipped, *bad])


def per_class_scores(metric: FineGrainedMetrics) -> dict[str, list[float]] | None:
    """``metric.per_class()`` as lists of C floats (percent, NaN where a class has no
    score)."""
    # The guard goes when the metric-core branch, which adds per_class(), is merged.
    if not hasattr(metric, "per_class"):
        return None
    return {
        key: [float(v) for v in np.asarray(values)]
        for key, values in metric.per_class().items()
    }


def _listing(problems: Sequence[str], what: str) -> str:
    shown = "\n  ".join(problems[:_SHOWN_PROBLEMS])
    more = len(problems) - _SHOWN_PROBLEMS
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return f"{len(problems)} {what}:\n  {shown}{tail}"


def _map_locally(pairs, ids, skip_bad, workers, threads, progress) -> list[ImageResult]:
    import dask
    from dask.callbacks import Callback

    task = dask.delayed(evaluate_pair, pure=False)
    tasks = [task(pair, ids, skip_bad=skip_bad) for pair in pairs]
    keys = {task.key for task in tasks}
    done = 0

    def count(key, result, dsk, state, worker_id) -> None:
        nonlocal done
        if key in keys:
            done += 1
            _report(progress, done, len(tasks))

    if workers == 1:
        scheduler = "synchronous"
    else:
        scheduler = "threads" if threads else "processes"
    with Callback(posttask=count):
        return list(dask.compute(*tasks, scheduler=scheduler, num_workers=workers))


def _map_on_cluster(pairs, ids, skip_bad, address, progress) -> list[ImageResult]:
    try:
        from distributed import Client, as_completed
    except ImportError as error:
        raise EvaluationError(
            '--scheduler needs dask.distributed: pip install "jdt-array[evaluate]"'
        ) from error
    try:
        client = Client(address)
    except (OSError, TimeoutError) as error:
        raise EvaluationError(
            f"--scheduler {address}: no dask.distributed scheduler answers ({error})"
        ) from error
    with client:
        futures = client.map(evaluate_pair, pairs, ids=ids, skip_bad=skip_bad, pure=False)
        results = []
        for done, (future, result) in enumerate(
            as_completed(futures, with_results=True), 1
        ):
            results.append(result)
            future.release()  # its counts are here now
            _report(progress, done, len(futures))
    return results


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total, "image pairs")


# -- output ----------------------------------------------------------------------------


def markdown(result: Evaluation, class_names: Sequence[str], worst: int) -> str:
    """The report: metrics, per-class table, the worst images, skipped files."""
    C = len(class_names)
    unscored = sum(1 for image in result.images if image.scores is None)
    lines = [
        f"{len(result.images)} image pairs, {C} classes, in percent"
        + (f" ({unscored} without a labelled pixel, not scored)" if unscored else "")
        + ":",
        "",
        *_table(["metric", "value"], [[k, _number(v)] for k, v in result.metrics.items()]),
    ]
    if result.per_class is not None:
        keys = list(result.per_class)
        rows = [
            [class_names[c], *(_number(result.per_class[k][c]) for k in keys)]
            for c in range(C)
        ]
        lines += ["", "Per class:", "", *_table(["class", *keys], rows)]
    ranked = worst_images(result.images, worst)
    if ranked:
        rows = [[image.pair.name, *map(_number, image.scores.values())] for image in ranked]
        lines += [
            "",
            f"The {len(ranked)} worst images by image-level mIoU:",
            "",
            *_table(["image", *IMAGE_SCORES], rows),
        ]
    if result.skipped:
        lines += ["", f"Skipped ({len(result.skipped)}, --skip-bad):", ""]
        lines += [f"- {problem}" for problem in result.skipped]
    return "\n".join(lines)


def worst_images(images: Sequence[ImageResult], k: int) -> list[ImageResult]:
    """The k scored images of lowest image-level mIoU (ties by name)."""
    scored = [image for image in images if image.scores is not None]
    return sorted(scored, key=lambda image: (image.scores["mIoU"], image.pair.name))[:k]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def as_json(result: Evaluation, options: dict[str, Any]) -> dict[str, Any]:
    """Every number of the evaluation; NaN becomes null."""
    return {
        "metrics": _finite(result.metrics),
        "per_class": None if result.per_class is None else _finite(result.per_class),
        "images": [_image_entry(image) for image in result.images],
        "skipped": list(result.skipped),
        "options": options,
        "version": __version__,
    }


def _image_entry(image: ImageResult) -> dict[str, Any]:
    scores = image.scores or dict.fromkeys(IMAGE_SCORES)
    return {
        "name": image.pair.name,
        "pred": image.pair.pred,
        "label": image.pair.label,
        "shape": list(image.shape),
        "pixels": image.pixels,
        **_finite(scores),
    }


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def write_csv(folder: Path, result: Evaluation, class_names: Sequence[str]) -> list[Path]:
    """``images.csv`` (one row per image) and, with per-class scores, ``per_class.csv``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "images.csv"]
    with written[0].open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["name", "pred", "label", "pixels", *IMAGE_SCORES])
        for image in result.images:
            scores = image.scores or dict.fromkeys(IMAGE_SCORES, "")
            writer.writerow(
                [image.pair.name, image.pair.pred, image.pair.label, image.pixels,
                 *scores.values()]
            )  # fmt: skip
    if result.per_class is not None:
        written.append(folder / "per_class.csv")
        with written[1].open("w", newline="") as file:
            writer = csv.writer(file)
            writer.writerow(["class_id", "class", *result.per_class])
            for c, name in enumerate(class_names):
                writer.writerow([c, name, *(v[c] for v in result.per_class.values())])
    return written


# -- the command -----------------------------------------------------------------------

DESCRIPTION = """\
The fine-grained metrics (Wang et al., NeurIPS 2023) of a folder of predicted label
maps against a folder of ground truth: Acc, mAcc / mIoU / mDice at dataset (D), image
(I) and class (C) level with their worst cases, the per-class table and the worst
images. PRED and LABEL are folders with the same layout (searched recursively, files
paired by their path without extension and suffix) or list files (.txt, one path per
line, paired line by line). Label maps of class ids, 2-D images of one channel (8- or
16-bit; palette images read as indices) or 3-D volumes:
  {formats}
Probability maps are out of scope: the calibration errors need probabilities; use
FineGrainedMetrics(calibration=True) in Python for them.
"""

EPILOG = """\
Cityscapes (official label ids, the 19 training classes through an id map):
  jdt-array evaluate results/ gtFine/val/ --num-classes 19 --id-map cityscapes.json \\
    --pred-suffix _leftImg8bit --label-suffix _gtFine_labelIds --worst 10 --json out.json
Exit status: 0 done, 1 a file or the evaluation failed (the message names the file),
2 bad arguments.
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``jdt-array evaluate``."""
    parser.description = DESCRIPTION.format(formats=", ".join(FORMATS))
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("pred", metavar="PRED", help="folder or list of predictions")
    parser.add_argument("label", metavar="LABEL", help="folder or list of ground truth")
    parser.add_argument(
        "--num-classes", type=_at_least(1), required=True, metavar="C",
        help="number of classes; class ids are 0 .. C - 1",
    )  # fmt: skip
    parser.add_argument(
        "--ignore-index", type=int, metavar="ID",
        help="label id (after --id-map) whose pixels are dropped (e.g. 255)",
    )  # fmt: skip
    parser.add_argument(
        "--id-map", metavar="FILE",
        help="JSON ({\"raw\": class, ...} or [[raw, class], ...]) or two-column CSV "
        "mapping raw ids to class ids (or to --ignore-index); raw label ids it does "
        "not map to a class are ignored, predicted ones count as wrong predictions",
    )  # fmt: skip
    parser.add_argument(
        "--class-names", metavar="FILE",
        help="C class names: a text file with one name per line, or a JSON list",
    )  # fmt: skip
    parser.add_argument(
        "--pred-suffix", default="", metavar="TEXT",
        help="end of prediction file names (before the extension) left out of the "
        "pair name; only files ending with it are read (e.g. _leftImg8bit)",
    )  # fmt: skip
    parser.add_argument(
        "--label-suffix", default="", metavar="TEXT",
        help="the same for the label files (e.g. _gtFine_labelIds)",
    )  # fmt: skip
    parser.add_argument(
        "--q", type=_percentage, default=1, metavar="Q",
        help="worst-case percentage of the m...I{Q} and m...C{Q} metrics (default 1)",
    )  # fmt: skip
    parser.add_argument(
        "--worst", type=_at_least(0), default=10, metavar="K",
        help="list the K images of lowest image-level mIoU (default 10; 0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--boundary", action="store_true",
        help="also the boundary IoU rows (not available yet in this version)",
    )  # fmt: skip
    parser.add_argument("--json", metavar="FILE", help="write every number as JSON")
    parser.add_argument(
        "--csv", metavar="DIR", help="write images.csv and per_class.csv into DIR"
    )
    parser.add_argument(
        "--skip-bad", action="store_true",
        help="skip unpaired files and pairs that cannot be evaluated (unreadable, "
        "several channels, shapes that differ, unknown ids), listing them in the "
        "report, instead of stopping with an error",
    )  # fmt: skip
    parser.add_argument(
        "--workers", type=_at_least(1), metavar="N",
        help=f"local worker processes (default: the {_cpu_count()} CPUs; 1: no pool)",
    )  # fmt: skip
    parser.add_argument(
        "--threads", action="store_true", help="local worker threads instead of processes"
    )
    parser.add_argument(
        "--scheduler", metavar="ADDRESS",
        help="run on a dask.distributed cluster, e.g. tcp://host:8786 (its workers "
        "need jdt-array and read the files from the same paths)",
    )  # fmt: skip


def _at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    return parse


def _percentage(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"must be in (0, 100], got {text}")
    return int(value) if value.is_integer() else value  # the key: mIoUI1, not mIoUI1.0


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def run(args: argparse.Namespace, *, progress: Progress = show_progress) -> int:
    """``jdt-array evaluate`` with parsed ``args``; the exit status."""
    usage = _usage_problem(args)
    if usage:
        print(f"jdt-array evaluate: error: {usage}", file=sys.stderr)
        return 2
    try:
        ids, class_names = _id_table(args), _class_names(args)
        pairs, unpaired = find_pairs(
            args.pred, args.label, pred_suffix=args.pred_suffix,
            label_suffix=args.label_suffix,
        )  # fmt: skip
        if unpaired and not args.skip_bad:
            raise EvaluationError(
                _listing(unpaired, "files have no partner")
                + "\n(--skip-bad skips and lists them)"
            )
        if not pairs:
            raise EvaluationError(_listing(unpaired, "files have no partner; no pair"))
        result = evaluate(
            pairs, ids, q=args.q, skip_bad=args.skip_bad, skipped=unpaired,
            workers=args.workers or _cpu_count(), threads=args.threads,
            scheduler=args.scheduler, progress=progress,
        )  # fmt: skip
    except (LabelFileError, EvaluationError) as error:
        print(f"jdt-array evaluate: error: {error}", file=sys.stderr)
        return 1
    print(markdown(result, class_names, args.worst))
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        report = as_json(result, _options(args, class_names))
        path.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    if args.csv:
        write_csv(Path(args.csv), result, class_names)
    return 0


def _usage_problem(args: argparse.Namespace) -> str | None:
    if args.boundary:
        return (
            "--boundary (the boundary IoU, issue 26) is not available yet in this "
            f"version ({__version__})"
        )
    if args.scheduler and (args.workers or args.threads):
        return "--workers and --threads are for local runs; the cluster has its workers"
    return None


def _id_table(args: argparse.Namespace) -> IdTable:
    if args.id_map is None:
        return IdTable(args.num_classes, args.ignore_index)
    id_map = load_id_map(args.id_map)
    for raw, class_id in id_map.items():
        if not 0 <= class_id < args.num_classes and class_id != args.ignore_index:
            raise LabelFileError(
                f"--id-map {args.id_map}: maps raw id {raw} to {class_id}, which is no "
                f"class id 0 .. {args.num_classes - 1} nor --ignore-index "
                f"{args.ignore_index} (leave an id out to ignore it in labels)"
            )
    return IdTable(args.num_classes, args.ignore_index, id_map)


def _class_names(args: argparse.Namespace) -> list[str]:
    if args.class_names is None:
        return [str(c) for c in range(args.num_classes)]
    return load_class_names(args.class_names, args.num_classes)


def _options(args: argparse.Namespace, class_names: Sequence[str]) -> dict[str, Any]:
    options = {key: value for key, value in vars(args).items() if key != "command"}
    if args.scheduler is None:
        options["workers"] = args.workers or _cpu_count()  # what ran, not None
    options["class_names"] = list(class_names)
    return options
