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

from ...metrics import BatchStatistics, CompactStatistics, FineGrainedMetrics
from ...metrics._state import is_per_image

__all__ = ["gather_statistics", "sync_metrics"]


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
    shard; with ``compact=True`` one or two all-reduces of O(classes) sums. They run
    on the current CUDA device for the NCCL backend, else on the CPU.

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
    stats: BatchStatistics | CompactStatistics, *, process_group: Any = None
) -> BatchStatistics | CompactStatistics:
    """The statistics (or compact state) of every rank of ``process_group``, the same
    on each rank.

    Per-image fields of :class:`~jdt_array.metrics.BatchStatistics` are concatenated
    in rank order (ranks may hold different numbers of images, also none), the
    others (``sce_gap``; every field of a
    :class:`~jdt_array.metrics.CompactStatistics`) are summed over the ranks; as torch
    tensors, int64 counts and float64 gaps and sums, on the device the collectives use
    (see :func:`sync_metrics`). The fields are packed by kind: one collective for the
    integer and one for the float fields of each (per-image or summed).
    """
    _check_initialized()
    where = _collective_device(process_group)
    fields = {}
    for per_image in (True, False):
        for exact in (True, False):
            names = [
                name for name, value in stats._asdict().items()
                if value is not None and is_per_image(stats, name) == per_image
                and _is_exact(value) == exact
            ]  # fmt: skip
            if not names:
                continue
            dtype = torch.int64 if exact else torch.float64
            packed = _pack(stats, names, dtype, where, per_image)
            if per_image:
                sizes = _all_gather_sizes(packed.shape[0], where, process_group)
                packed = _all_gather_rows(packed, sizes, process_group)
            else:
                dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=process_group)
            fields.update(_unpack(packed, stats, names, per_image))
    return type(stats)(**fields)


def _is_exact(value: Any) -> bool:
    """Whether a field (a tensor, or NumPy for an empty rank) holds integer counts."""
    return not torch.asarray(value).is_floating_point()


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


def _pack(stats, names: list, dtype: Any, where: Any, per_image: bool) -> torch.Tensor:
    """The ``names`` fields side by side: (images, total columns) for per-image fields,
    one flat vector for summed ones."""
    parts = []
    for name in names:
        value = torch.asarray(getattr(stats, name), dtype=dtype, device=where)
        if per_image:
            parts.append(value.reshape(value.shape[0], math.prod(value.shape[1:])))
        else:
            parts.append(value.reshape(1, math.prod(value.shape)))
    packed = torch.cat(parts, dim=1)
    return packed if per_image else packed[0].clone()  # all_reduce writes in place


def _unpack(packed: torch.Tensor, like, names: list, per_image: bool) -> dict:
    """The fields of :func:`_pack` split back, each with its trailing shape in ``like``
    (its whole shape for a summed field)."""
    shapes = [tuple(getattr(like, name).shape[int(per_image) :]) for name in names]
    rows = packed if per_image else packed[None, :]
    parts = torch.split(rows, [math.prod(shape) for shape in shapes], dim=1)
    return {
        name: part.reshape(-1, *shape) if per_image else part.reshape(shape)
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
