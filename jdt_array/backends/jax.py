"""JAX adapter: ``jax.value_and_grad`` and ``custom_vjp`` forms of the JDT losses,
with ``axis_name=`` to sum the statistics over devices inside ``shard_map``/``pmap``
(also for the per-image Lovasz losses), and the metrics' batch statistics gathered
over devices.

The core functions already work under ``jit``, ``grad`` and ``vmap``; the
``custom_vjp`` forms here swap the traced backward of the pixel-level part for the
hand-derived one, which keeps only the inputs as residuals and recomputes the softmax.

The pixel-level part runs in one of two forms, chosen when a loss is traced by the
environment variable ``JDT_ARRAY_JAX_KERNEL`` (through ``jdt_array._kernels.kernels_for``):
``auto`` (the default) and ``xla`` run the array code through XLA; ``pallas`` runs the
two fused Pallas passes of ``jdt_array._kernels.jax_pallas`` (compiled through Pallas's
Triton lowering on GPU, in Pallas's interpreter on CPU) for the cases they cover
(softmax, ``norm=1``, the class axis first or last) and the XLA form for the rest.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

try:
    import jax
except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "jdt_array.backends.jax needs JAX: pip install 'jdt-array[jax]' (for GPUs see "
        "JAX's install guide)",
        name=err.name,
    ) from err

from .._cardinalities import label_vjp, statistics, statistics_vjp
from .._inputs import with_probabilities
from .._kernels.jax import autodiff_value_and_grad as value_and_grad
from ..jdt import JDTOptions, loss_of, prepare_jdt, statistics_of
from ..lovasz import lovasz_hinge_loss as _lovasz_hinge
from ..lovasz import lovasz_softmax_loss as _lovasz_softmax
from ..metrics import BatchStatistics
from ..metrics._state import is_per_image
from ..named_losses import refuse_weights, weights_among

__all__ = [
    "dice_loss",
    "gather_statistics",
    "jaccard_loss",
    "jdt_loss",
    "lovasz_hinge_loss",
    "lovasz_softmax_loss",
    "replica_sum",
    "tversky_loss",
    "value_and_grad",
]


@functools.lru_cache(maxsize=128)
def _lean_statistics(options: JDTOptions) -> Callable:
    """A ``custom_vjp`` of (logits, label, keep_mask) -> the (B, C) statistics in XLA
    code, whose backward recomputes the probabilities instead of keeping what autodiff
    would keep (a fused kernel, where one covers the case, has its own).

    The rest of the loss, collectives included, is left to JAX's autodiff, which knows
    how to transpose them.
    """

    @jax.custom_vjp
    def lean(logits, label, keep_mask):
        # The caller checked these arrays; do not read the label again.
        inputs = prepare_jdt(logits, label, keep_mask, options, check_values=False)
        return tuple(statistics(with_probabilities(inputs))[0])

    def forward(logits, label, keep_mask):
        return lean(logits, label, keep_mask), (logits, label, keep_mask)

    def backward(residuals, cotangents):
        logits, label, keep_mask = residuals
        g_prob_card, g_label_card, g_diff_card, _ = cotangents
        # The forward pass checked these arrays; do not read the label again.
        inputs = prepare_jdt(logits, label, keep_mask, options, check_values=False)
        inputs = with_probabilities(inputs)
        g_label = None  # an integer label has no gradient
        if not inputs.hard:  # a soft label may be trained too: its own gradient
            # (XLA code, which jit drops when the label's gradient is not used)
            g_label = label_vjp(inputs, g_label_card, g_diff_card)
            # A (B, *spatial) label of one sigmoid channel was given the class axis.
            g_label = g_label.reshape(label.shape).astype(label.dtype)
        grad = statistics_vjp(inputs, g_prob_card, g_diff_card)
        return grad.astype(logits.dtype), g_label, None

    lean.defvjp(forward, backward)
    return lean


def replica_sum(axis_name: Any) -> Callable[[jax.Array], jax.Array]:
    """The ``reduce`` hook of the core losses for JAX: ``jax.lax.psum`` over
    ``axis_name`` (a mapped axis of ``shard_map`` or ``pmap``, or a tuple of them)."""
    return functools.partial(jax.lax.psum, axis_name=axis_name)


def jdt_loss(
    logits: jax.Array,
    label: jax.Array,
    *,
    keep_mask: jax.Array | None = None,
    class_weights: Any = None,
    axis_name: Any = None,
    **options: Any,
) -> jax.Array:
    """:func:`jdt_array.jdt_loss` with the hand-derived gradient as the ``custom_vjp``
    of its pixel-level part.

    Same arguments and values; works under ``jit``, ``grad`` and ``vmap``. With
    ``axis_name`` (a mapped axis, or a tuple of them, of an enclosing ``shard_map`` or
    ``pmap`` over the batch), the statistics are summed over that axis with
    ``jax.lax.psum`` before the ratios, so every device returns the loss of the global
    batch. Gradients follow JAX's rules for ``psum``: inside ``shard_map``, each
    device's gradient with respect to its logits is its slice of the global-batch
    gradient, and the gradient with respect to replicated parameters is the full
    global-batch gradient. Inside ``pmap``, ``psum`` transposes to ``psum``: the
    per-device gradients carry a factor of the number of devices, and the usual
    ``jax.lax.pmean`` of the parameter gradients gives the global-batch gradient.
    """
    opts = JDTOptions(**options)
    # The kernel setting is read here, at trace time: a changed setting applies at the
    # next trace. A fused kernel (JDT_ARRAY_JAX_KERNEL=pallas) has a custom_vjp of its
    # own, which statistics_of takes first; the XLA form is the lean custom_vjp below.
    inputs = prepare_jdt(logits, label, keep_mask, opts, class_weights)
    lean = _lean_statistics(opts)
    stats, _ = statistics_of(inputs, unfused=lambda _: lean(logits, label, keep_mask))
    return loss_of(inputs, opts, reduce=_reduce(axis_name), stats=stats)


def _reduce(axis_name: Any) -> Callable | None:
    return None if axis_name is None else replica_sum(axis_name)


def jaccard_loss(logits: jax.Array, label: jax.Array, **options: Any) -> jax.Array:
    """:func:`jdt_array.jaccard_loss` with the hand-derived ``custom_vjp``."""
    refuse_weights("jaccard_loss", weights_among(options))
    return jdt_loss(logits, label, alpha=1.0, beta=1.0, **options)


def dice_loss(logits: jax.Array, label: jax.Array, **options: Any) -> jax.Array:
    """:func:`jdt_array.dice_loss` with the hand-derived ``custom_vjp``."""
    refuse_weights("dice_loss", weights_among(options))
    return jdt_loss(logits, label, alpha=0.5, beta=0.5, **options)


def tversky_loss(
    logits: jax.Array, label: jax.Array, *, alpha: float, beta: float, **options: Any
) -> jax.Array:
    """:func:`jdt_array.tversky_loss` with the hand-derived ``custom_vjp``."""
    return jdt_loss(logits, label, alpha=alpha, beta=beta, **options)


def lovasz_softmax_loss(
    logits: jax.Array, label: jax.Array, *, axis_name: Any = None, **options: Any
) -> jax.Array:
    """:func:`jdt_array.lovasz_softmax_loss`, with ``axis_name`` for data parallelism.

    With ``axis_name`` (a mapped axis of an enclosing ``shard_map`` or ``pmap``, or a
    tuple of them) and ``per_image=True``, the per-image losses and image counts are
    summed with ``jax.lax.psum``, so every device returns the mean over the global
    batch; gradients follow ``psum`` as in :func:`jdt_loss`. ``per_image=False`` sorts
    over the whole global batch and cannot be synchronised cheaply: it raises
    ``ValueError``.
    """
    return _lovasz_softmax(logits, label, reduce=_reduce(axis_name), **options)


def lovasz_hinge_loss(
    logits: jax.Array, label: jax.Array, *, axis_name: Any = None, **options: Any
) -> jax.Array:
    """:func:`jdt_array.lovasz_hinge_loss`, with ``axis_name`` as in
    :func:`lovasz_softmax_loss` (the default ``per_image=True`` syncs)."""
    return _lovasz_hinge(logits, label, reduce=_reduce(axis_name), **options)


def gather_statistics(stats: BatchStatistics, axis_name: Any) -> BatchStatistics:
    """The metrics' statistics of the global batch, from each device's slice of it.

    For evaluation inside ``shard_map`` (or ``pmap``) over ``axis_name``: the per-image
    fields of :func:`jdt_array.metrics.batch_statistics` are concatenated over the
    devices in axis order with ``jax.lax.all_gather``, and the summed fields (the
    per-class calibration gaps; every field of a
    :class:`~jdt_array.metrics.CompactStatistics`) are added with ``jax.lax.psum``.
    Every device gets the same result, which
    :meth:`~jdt_array.metrics.FineGrainedMetrics.update_statistics` takes as one
    batch; the metrics then equal a single pass over the global batch.
    """
    fields = {}
    for name, value in stats._asdict().items():
        if value is None:
            fields[name] = None
        elif is_per_image(stats, name):
            fields[name] = _all_gather(value, axis_name)
        else:  # already summed over the images: add the devices'
            fields[name] = jax.lax.psum(value, axis_name)
    return type(stats)(**fields)


# Newer JAX types values inside shard_map as varying or invariant over each axis, and
# all_gather must be asked for an invariant (replicated) result; older JAX inferred it.
_INVARIANT = (
    {"to": "invarying"} if "to" in inspect.signature(jax.lax.all_gather).parameters else {}
)


def _all_gather(value: jax.Array, axis_name: Any) -> jax.Array:
    """``value`` concatenated over ``axis_name`` along its first axis, the same on
    every device (so that ``shard_map`` may return it replicated)."""
    return jax.lax.all_gather(value, axis_name, tiled=True, **_INVARIANT)
