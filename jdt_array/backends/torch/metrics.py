"""Fine-grained metrics over ``torch.distributed``: the statistics of a dataset sharded
across processes, gathered with the framework's collectives so that every rank's
``compute()`` equals one pass over the whole dataset.

The metric itself stays framework-free (:meth:`FineGrainedMetrics.synced` takes the
gather as a function); this module only supplies that function.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
import torch.distributed as dist

from ...metrics import BatchStatistics, FineGrainedMetrics

__all__ = ["gather_statistics", "sync_metrics"]

# Per-image fields, packed by dtype so that each kind costs one all_gather.
_COUNTS = ("intersection", "pred_count", "label_count", "bad_label", "bad_prediction")
_GAPS = ("ece_gap", "sce_image")


def sync_metrics(
    metrics: FineGrainedMetrics, *, process_group: Any = None
) -> FineGrainedMetrics:
    """The metric of every rank's images, on every rank of ``process_group`` (the
    default group for ``None``); ``metrics`` is left unchanged.

    Each rank evaluates its shard of the dataset (shards may differ in size, or be
    empty), then every rank calls this; ``compute()`` of the result equals one pass
    over all shards::

        m = FineGrainedMetrics(150, ignore_index=255)
        for prob, label in shard_loader:
            m.update(prob, label)
        results = sync_metrics(m).compute()  # the same on every rank

    It costs two collectives (four with calibration): the per-rank image counts,
    then the per-image counts and gaps, O(images x classes), padded to the largest
    shard. They run on the current CUDA device for the NCCL backend, else on the CPU.

    Raises:
        RuntimeError: ``torch.distributed`` is not initialised.
    """
    if not isinstance(metrics, FineGrainedMetrics):
        raise TypeError(
            f"metrics must be a FineGrainedMetrics, got {type(metrics).__name__}"
        )
    _check_initialized()
    return metrics.synced(functools.partial(gather_statistics, process_group=process_group))


def gather_statistics(
    stats: BatchStatistics, *, process_group: Any = None
) -> BatchStatistics:
    """The statistics of every rank of ``process_group``, the same on each rank.

    Per-image fields of :class:`~jdt_array.metrics.BatchStatistics` are concatenated
    in rank order (ranks may hold different numbers of images, also none), the summed
    ``sce_gap`` is summed over the ranks; as torch tensors, int64 counts and float64
    gaps, on the device the collectives use (see :func:`sync_metrics`).
    """
    _check_initialized()
    where = _collective_device(process_group)
    counts = _pack(stats, _COUNTS, torch.int64, where)
    sizes = _all_gather_sizes(counts.shape[0], where, process_group)
    fields = _unpack(_all_gather_rows(counts, sizes, process_group), stats, _COUNTS)
    if stats.ece_gap is not None:
        gaps = _pack(stats, _GAPS, torch.float64, where)
        fields.update(_unpack(_all_gather_rows(gaps, sizes, process_group), stats, _GAPS))
        total = torch.asarray(stats.sce_gap, dtype=torch.float64, device=where).clone()
        dist.all_reduce(total, op=dist.ReduceOp.SUM, group=process_group)
        fields["sce_gap"] = total
    return BatchStatistics(**fields)


def _check_initialized() -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "syncing metrics gathers them over a torch.distributed process group, but "
            "torch.distributed is not initialised; call "
            "torch.distributed.init_process_group first"
        )


def _collective_device(process_group: Any) -> torch.device:
    """Where ``process_group``'s collectives run: the current GPU for NCCL, else CPU."""
    if dist.get_backend(process_group) == dist.Backend.NCCL:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _pack(stats: BatchStatistics, names: tuple, dtype: Any, where: Any) -> torch.Tensor:
    """The per-image ``names`` fields side by side: (images, total columns)."""
    parts = []
    for name in names:
        value = torch.asarray(getattr(stats, name), dtype=dtype, device=where)
        parts.append(value.reshape(value.shape[0], math.prod(value.shape[1:])))
    return torch.cat(parts, dim=1)


def _unpack(packed: torch.Tensor, like: BatchStatistics, names: tuple) -> dict:
    """The fields of :func:`_pack` split back, each with its trailing shape in ``like``
    ((images,) or (images, columns))."""
    shapes = [tuple(getattr(like, name).shape[1:]) for name in names]
    parts = torch.split(packed, [math.prod(shape) for shape in shapes], dim=1)
    return {
        name: part.reshape(-1, *shape)
        for name, part, shape in zip(names, parts, shapes, strict=True)
    }


def _all_gather_sizes(size: int, where: Any, process_group: Any) -> list[int]:
    """Every rank's number of images, in rank order."""
    mine = torch.tensor([size], dtype=torch.int64, device=where)
    sizes = [torch.empty_like(mine) for _ in range(dist.get_world_size(process_group))]
    dist.all_gather(sizes, mine, group=process_group)
    return [int(s.item()) for s in sizes]


def _all_gather_rows(rows: torch.Tensor, sizes: list[int], process_group: Any):
    """The ranks' ``rows`` (their own numbers of rows) concatenated in rank order.

    ``all_gather`` needs one shape on every rank, so each pads to the largest and
    the padding is cut off again.
    """
    longest = max(sizes)
    padding = rows.new_zeros((longest - rows.shape[0], rows.shape[1]))
    padded = torch.cat([rows, padding]).contiguous()
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded, group=process_group)
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])
