"""``jdt-array evaluate``: its options, and the run from files to reports."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .arguments import at_least
from .evaluate import EvaluationError, Progress, Scoring, evaluate, listing
from .evaluate_report import as_json, markdown, write_csv
from .label_files import FORMATS, LabelFileError, find_pairs
from .label_ids import IdTable, load_class_names, load_id_map
from .progress import show_progress

__all__ = ["add_arguments", "run"]

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
        "--num-classes", type=at_least(1), required=True, metavar="C",
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
        "--worst", type=at_least(0), default=10, metavar="K",
        help="list the K images of lowest image-level mIoU (default 10; 0: none)",
    )  # fmt: skip
    parser.add_argument(
        "--boundary", action="store_true",
        help="also boundary IoU (Cheng et al., CVPR 2021): the mBIoU rows, the IoU of "
        "the classes' inner boundary bands, for the edges of objects",
    )  # fmt: skip
    parser.add_argument(
        "--dilation-ratio", type=_positive, default=0.02, metavar="R",
        help="--boundary: the band width as a fraction of the image diagonal "
        "(default 0.02, the paper's)",
    )  # fmt: skip
    parser.add_argument(
        "--boundary-width", type=at_least(1), metavar="PIXELS",
        help="--boundary: the band width in pixels instead of --dilation-ratio",
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
        "--workers", type=at_least(1), metavar="N",
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


def _percentage(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 100:
        raise argparse.ArgumentTypeError(f"must be in (0, 100], got {text}")
    return int(value) if value.is_integer() else value  # the key: mIoUI1, not mIoUI1.0


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    return value


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
                listing(unpaired, "files have no partner")
                + "\n(--skip-bad skips and lists them)"
            )
        if not pairs:
            raise EvaluationError(listing(unpaired, "files have no partner; no pair"))
        scoring = Scoring(
            q=args.q, boundary=args.boundary, dilation_ratio=args.dilation_ratio,
            boundary_width=args.boundary_width,
        )  # fmt: skip
        result = evaluate(
            pairs, ids, scoring=scoring, skip_bad=args.skip_bad, skipped=unpaired,
            workers=args.workers or _cpu_count(), threads=args.threads,
            scheduler=args.scheduler, progress=progress,
        )  # fmt: skip
    except (LabelFileError, EvaluationError, ImportError) as error:
        print(f"jdt-array evaluate: error: {error}", file=sys.stderr)
        return 1
    print(markdown(result, class_names, args.worst))
    try:
        _write_files(args, result, class_names)
    except OSError as error:
        print(f"jdt-array evaluate: error: cannot write a report: {error}", file=sys.stderr)
        return 1
    return 0


def _write_files(args: argparse.Namespace, result, class_names: Sequence[str]) -> None:
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        report = as_json(result, _options(args, class_names))
        path.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    if args.csv:
        write_csv(Path(args.csv), result, class_names)


def _usage_problem(args: argparse.Namespace) -> str | None:
    if not args.boundary and args.boundary_width is not None:
        return "--boundary-width is the band width of --boundary; add --boundary"
    if args.boundary_width is not None and args.dilation_ratio != 0.02:
        return "give the band width as --dilation-ratio or as --boundary-width, not both"
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
