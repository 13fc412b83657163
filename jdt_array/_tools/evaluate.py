"""``jdt-array evaluate``: the fine-grained metrics of a folder of predicted label maps.

Each image pair is read, its ids mapped and its per-image pixel counts taken by the
metric core (:meth:`FineGrainedMetrics.statistics`) in one task of a Dask map: on
local threads or processes, or on a running ``dask.distributed`` cluster. A task holds
one image pair; only the counts, a few numbers per class, come back to the client,
which adds them in the order of the pair names and summarizes them once, so the
result depends neither on the number of workers nor on the order of the files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..metrics import BatchStatistics, FineGrainedMetrics
from ..metrics._byte_table import byte_map_statistics
from ..metrics._state import compact_of
from ..metrics._summary import level_results
from .label_files import LabelFileError, Pair, read_ids
from .label_ids import IGNORED, IdTable

__all__ = [
    "Evaluation",
    "EvaluationError",
    "ImageResult",
    "Scoring",
    "evaluate",
    "evaluate_pair",
    "image_scores",
    "image_statistics",
    "listing",
    "per_class_scores",
    "raw_byte_statistics",
]

Progress = Callable[[int, int, str], None]
IMAGE_SCORES = {"mIoU": "mIoUI", "mDice": "mDiceI", "mAcc": "mAccI", "Acc": "Acc"}
BOUNDARY_SCORE = {"mBIoU": "mBIoUI"}  # with --boundary
_SHOWN_PROBLEMS = 10  # problems listed in an error message; the rest are counted


class EvaluationError(Exception):
    """An evaluation that cannot go on; the message says why and what to do."""


class Scoring(NamedTuple):
    """The metric options of an evaluation beside the ids: the worst-case percentage
    and boundary IoU (``FineGrainedMetrics``'s ``q``, ``boundary``,
    ``dilation_ratio``, ``boundary_width``)."""

    q: float = 1
    boundary: bool = False
    dilation_ratio: float | None = 0.02
    boundary_width: int | None = None


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


DEFAULT_SCORING = Scoring()


def evaluate_pair(
    pair: Pair, ids: IdTable, scoring: Scoring = DEFAULT_SCORING, *, skip_bad: bool = False
) -> ImageResult:
    """Read, check and count one pair.

    Raises:
        LabelFileError: a problem with the pair's files, unless ``skip_bad``: then it
            is returned in the result.
    """
    try:
        pred, label = read_ids(pair.pred), read_ids(pair.label)
        if pred.shape != label.shape:
            raise LabelFileError(_shape_mismatch(pair, pred.shape, label.shape))
        stats = raw_byte_statistics(ids, pred, label, scoring)
        if stats is None:
            label = ids.labels(pair.label, label)
            pred = ids.predictions(pair.pred, pred)
            stats = image_statistics(ids, pred, label, scoring)
    except LabelFileError as error:
        if not skip_bad:
            raise
        return ImageResult(pair, error=str(error))
    pixels = int(stats.kept_count[0])  # labelled: neither ignored nor of no class
    scores = image_scores(ids.num_classes, stats, scoring) if pixels else None
    return ImageResult(pair, tuple(label.shape), pixels, stats, scores)


def _shape_mismatch(pair: Pair, pred_shape, label_shape) -> str:
    hint = ""
    if len(pred_shape) == len(label_shape) + 1:
        hint = " (a probability map? only label maps are evaluated)"
    return (
        f"{pair.pred}: the prediction has shape {pred_shape}, its label {pair.label} "
        f"has {label_shape}{hint}"
    )


def image_statistics(
    ids: IdTable, pred: np.ndarray, label: np.ndarray, scoring: Scoring = DEFAULT_SCORING
) -> BatchStatistics:
    """The metric core's counts of one encoded pair, as those of a batch of one.

    Predictions of no class (``ids.void``, C) are counted as a class C + 1 of their own,
    whose column is then dropped: what remains are the C classes' counts with those
    pixels wrong wherever the label has a class (a false negative there) and a false
    positive of none, as the Cityscapes evaluation counts them.
    """
    C = ids.num_classes
    if ids.void is None:
        return _metric(C, scoring).statistics(pred[None], label[None])
    stats = _metric(C + 1, scoring).statistics(pred[None], label[None])
    return _without_class(stats, C)


def raw_byte_statistics(
    ids: IdTable, pred: np.ndarray, label: np.ndarray, scoring: Scoring = DEFAULT_SCORING
) -> BatchStatistics | None:
    """:func:`image_statistics` of a raw 8-bit pair with an id map, the map applied
    to the 256 byte values instead of every pixel (a third of the time of a
    Cityscapes pair); None where that does not apply (no id map, other dtypes, small
    images, boundary counts): then the pair is encoded pixel by pixel."""
    if ids.id_map is None or pred.dtype != np.uint8 or label.dtype != np.uint8:
        return None
    C = ids.num_classes
    flat = (1, label.size)
    stats = byte_map_statistics(
        label.reshape(flat), pred.reshape(flat), _metric(C + 1, scoring).options,
        label_values=ids.byte_values("label"), pred_values=ids.byte_values("prediction"),
    )  # fmt: skip
    return None if stats is None else _without_class(stats, C)


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


def _metric(num_classes: int, scoring: Scoring) -> FineGrainedMetrics:
    return FineGrainedMetrics(num_classes, ignore_index=IGNORED, **scoring._asdict())


def image_scores(
    num_classes: int, stats: BatchStatistics, scoring: Scoring = DEFAULT_SCORING
) -> dict[str, float]:
    """The image's own Acc and image-level mAcc, mIoU, mDice (and with boundaries
    mBIoU), percent, by the core's summary of the levels (the worst cases of one
    image, its own scores again, are not computed)."""
    options = _metric(num_classes, scoring).options
    results = level_results(np, compact_of(np, stats, options), options)
    names = {**IMAGE_SCORES, **(BOUNDARY_SCORE if scoring.boundary else {})}
    return {name: float(results[key]) for name, key in names.items()}


# -- the map over all pairs (runs on the client) ---------------------------------------


@dataclass(frozen=True)
class Evaluation:
    """The summary (``FineGrainedMetrics.compute()``), the per-class scores
    (``FineGrainedMetrics.per_class()``), every evaluated image and every skipped pair
    or file with its reason."""

    metrics: dict[str, float]
    per_class: dict[str, list[float]]
    images: list[ImageResult]
    skipped: list[str]


def evaluate(
    pairs: Sequence[Pair],
    ids: IdTable,
    *,
    scoring: Scoring = DEFAULT_SCORING,
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
            results = _map_on_cluster(pairs, ids, scoring, skip_bad, scheduler, progress)
        else:
            results = _map_locally(
                pairs, ids, scoring, skip_bad, workers, threads, progress
            )
    except LabelFileError as error:  # stops the run at the first bad pair
        raise EvaluationError(
            f"{error}\n(--skip-bad skips and lists the pairs that cannot be evaluated)"
        ) from error
    results = sorted(results, key=lambda result: result.pair.name)
    bad = [result.error for result in results if result.error is not None]
    images = [result for result in results if result.error is None]
    if not images:
        raise EvaluationError(listing(bad, "pairs cannot be evaluated; none is left"))
    metric = _metric(ids.num_classes, scoring)
    for image in images:
        metric.update_statistics(image.stats)
    if not any(image.pixels for image in images):
        raise EvaluationError(
            "no image has a labelled pixel: every label pixel is ignored (check "
            "--ignore-index and --id-map)"
        )
    return Evaluation(metric.compute(), per_class_scores(metric), images, [*skipped, *bad])


def per_class_scores(metric: FineGrainedMetrics) -> dict[str, list[float]]:
    """``metric.per_class()`` as lists of C floats (percent, NaN where a class has no
    score)."""
    return {
        key: [float(v) for v in np.asarray(values)]
        for key, values in metric.per_class().items()
    }


def listing(problems: Sequence[str], what: str) -> str:
    """``problems`` counted under the headline ``what``, the first ten listed."""
    shown = "\n  ".join(problems[:_SHOWN_PROBLEMS])
    more = len(problems) - _SHOWN_PROBLEMS
    tail = f"\n  ... and {more} more" if more > 0 else ""
    return f"{len(problems)} {what}:\n  {shown}{tail}"


def _map_locally(
    pairs, ids, scoring, skip_bad, workers, threads, progress
) -> list[ImageResult]:
    try:
        import dask
        from dask.callbacks import Callback
    except ImportError as error:
        raise EvaluationError(
            'jdt-array evaluate needs Dask: pip install "jdt-array[evaluate]"'
        ) from error

    task = dask.delayed(evaluate_pair, pure=False)
    tasks = [task(pair, ids, scoring, skip_bad=skip_bad) for pair in pairs]
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


def _map_on_cluster(pairs, ids, scoring, skip_bad, address, progress) -> list[ImageResult]:
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
        futures = client.map(
            evaluate_pair, pairs, ids=ids, scoring=scoring, skip_bad=skip_bad, pure=False
        )
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
