r"""The Lovasz extension of the Jaccard loss and its gradient, and the mean over
groups (images) that the Lovasz losses take, synchronised over replicas.

For a class with ground-truth pixels G, the Jaccard loss of a set M of mispredicted
pixels is the submodular set function :math:`\Delta(M) = |M| / |G \cup M|`. Its Lovasz
extension at a vector of pixel errors :math:`m \ge 0`, sorted decreasingly by a
permutation :math:`\pi`, is

.. math::
    \bar\Delta(m) = \sum_i m_{\pi_i} g_i, \qquad
    g_i = \Delta(\{\pi_1, \dots, \pi_i\}) - \Delta(\{\pi_1, \dots, \pi_{i-1}\}),

(Berman et al., CVPR 2018, Alg. 1), linear in the sorted errors: the gradient of a
pixel's error is the increment :math:`g_i` at its rank.
"""

from __future__ import annotations

from typing import Any

from . import _kernels
from ._array import Array, device, zero_d
from ._tversky import sum_over_replicas


def check_syncable(fn_name: str, *, per_image: bool, synced: bool) -> None:
    """Refuse synchronisation across replicas for the pooled (``per_image=False``) losses.

    The pooled loss sorts the errors of every pixel of the batch together, so its value
    on the global batch needs all replicas' pixels in one sort: no sum of a few
    statistics gives it. The per-image loss is a mean of per-image terms, which syncs
    with two numbers.
    """
    if synced and not per_image:
        raise ValueError(
            f"{fn_name} with per_image=False cannot be synchronised across replicas "
            f"(reduce, sync_stats=True or axis_name): the pooled Lovasz loss sorts the "
            f"pixel errors of the whole global batch together, which would need every "
            f"replica's pixels, not a cheap sum of statistics. Use per_image=True (the "
            f"mean of per-image losses syncs exactly), or jdt_loss (e.g. jaccard_loss), "
            f"whose statistics sync by summation"
        )


def mean_over_groups(
    xp: Any, losses: Array, reduce: Any = None, *, nan: Any = 0.0
) -> tuple[Array, Array]:
    """The mean of the (G,) per-group losses (with ``reduce``: over every replica's
    groups), and the number of groups it divides by (at least 1). ``nan`` (0, or NaN
    for a fault found on this replica) is added to the sum.

    The local sum and count go through ``reduce`` in one call; the gradient of the
    ratio flows back through the sum. No group at all (here or, with ``reduce``, on
    any replica) gives 0 with a zero gradient.
    """
    total = xp.sum(losses) + nan
    # The count comes from the data (not a constant), so it is per-replica under
    # shard_map like the sum it is packed with.
    count = xp.sum(xp.ones_like(losses))
    total, count = sum_over_replicas(xp, reduce, total, count)
    has = count > 0
    groups = xp.where(has, count, 1.0)
    return zero_d(xp, xp.where(has, total / groups, 0.0)), groups


def lovasz_extension(
    xp: Any, errors: Array, fg: Array, keep: Array, *, with_grad: bool = False
) -> Any:
    """The Lovasz extension of the Jaccard loss along the last axis; with
    ``with_grad``, also its gradient with respect to ``errors``.

    ``errors`` (..., M) floating, ``fg`` and ``keep`` (..., M) boolean; ``fg`` must be
    False where ``keep`` is. Dropped pixels get zero error and sort after every kept
    one, so they change neither the value nor (being zero) the gradient. The
    extension is linear in the sorted errors: the gradient of a pixel's error is the
    Jaccard increment at its rank (0 for dropped pixels).
    """
    key = xp.where(keep, errors, -1.0)
    order = _kernels.argsort_descending(xp, key)
    sorted_errors = xp.take_along_axis(xp.where(keep, errors, 0.0), order, axis=-1)
    sorted_fg = xp.take_along_axis(xp.astype(fg, order.dtype), order, axis=-1)
    increments = jaccard_increments(xp, sorted_fg, errors.dtype)
    value = xp.sum(sorted_errors * increments, axis=-1)
    if not with_grad:
        return value
    rank = xp.argsort(order, axis=-1)  # the inverse permutation
    return value, xp.where(keep, xp.take_along_axis(increments, rank, axis=-1), 0.0)


def jaccard_increments(xp: Any, sorted_fg: Array, dtype: Any) -> Array:
    r""":math:`g_i = \Delta(\{\pi_1..\pi_i\}) - \Delta(\{\pi_1..\pi_{i-1}\})` along the last
    axis, from the integer 0/1 ground truth in sorted order.

    Counts stay integers, exact beyond float32's 2**24. The union
    :math:`|G| + \#\text{misses so far}` is >= 1 at every position (either G is not
    empty or the prefix holds a miss), so the ratio never divides by zero.
    """
    total = xp.sum(sorted_fg, axis=-1, keepdims=True)
    intersection = xp.astype(total - _kernels.cumulative_sum(xp, sorted_fg, -1), dtype)
    union = xp.astype(total + _kernels.cumulative_sum(xp, 1 - sorted_fg, -1), dtype)
    jaccard = 1.0 - intersection / union
    if jaccard.shape[-1] == 0:  # no pixels (a slice to -1 of nothing is no array API)
        return jaccard
    shape = (*jaccard.shape[:-1], 1)
    zero = xp.zeros(shape, dtype=dtype, device=device(jaccard))
    return jaccard - xp.concat([zero, jaccard[..., :-1]], axis=-1)
