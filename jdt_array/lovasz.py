r"""The Lovasz-Softmax and Lovasz hinge losses: tight convex surrogates of the Jaccard loss.

Both are the Lovasz extension of the Jaccard loss (``_lovasz_extension``) at per-pixel
errors: :math:`|[y_i = c] - p_{i,c}|` per class for the softmax loss, the hinge
:math:`\max(0, 1 - s_i z_i)` for the binary one. All classes (and all images) are sorted
in one batched sort; ignored pixels get zero error and sort last instead of being
removed, so every shape is static and the losses run under ``jax.jit``.

References:
    Maxim Berman, Amal Rannen Triki, Matthew B. Blaschko. The Lovasz-Softmax Loss: A
    Tractable Surrogate for the Optimization of the Intersection-Over-Union Measure in
    Neural Networks. CVPR 2018.
    Jiaqian Yu, Matthew B. Blaschko. The Lovasz Hinge: A Novel Convex Surrogate for
    Submodular Losses. TPAMI 2018.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from numbers import Integral
from typing import Any, NamedTuple

from . import _checks as checks
from ._array import Array, compute_dtype, device, eager_any, namespace_of
from ._inputs import prepare, with_probabilities
from ._lovasz_extension import check_syncable, lovasz_extension, mean_over_groups
from ._pixels import kept_pixels, masked_mean

__all__ = [
    "lovasz_hinge_loss",
    "lovasz_hinge_value_and_grad",
    "lovasz_softmax_loss",
    "lovasz_softmax_value_and_grad",
]


def lovasz_softmax_loss(
    logits: Array,
    label: Array,
    *,
    classes: str | Sequence[int] = "present",
    per_image: bool = False,
    ignore_index: int | None = None,
    keep_mask: Array | None = None,
    class_axis: int = 1,
    reduce: Callable[[Array], Array] | None = None,
) -> Array:
    r"""The Lovasz-Softmax loss of softmax(logits) against a hard label.

    For each class c the pixel errors are :math:`m_i = |[y_i = c] - p_{i,c}|` and the
    class loss is the Lovasz extension of the Jaccard loss at m (see the module
    docstring); the loss is the mean of the class losses (Berman et al., CVPR 2018).
    Values equal those of the authors' reference implementation, which takes
    probabilities (here: the softmax of ``logits``).

    Args:
        logits: (B, C, *spatial) with ``class_axis=1``, or (B, *spatial, C) with
            ``class_axis=-1``; any number of spatial axes. float16/bfloat16 inputs are
            accumulated in float32.
        label: hard label, an integer array (B, *spatial) of class ids. Soft labels
            are rejected: the Lovasz extension is defined on sets (see the FAQ); use
            :func:`jdt_array.jdt_loss` for them.
        classes: ``"present"`` averages over the classes that occur in the kept
            pixels (of each image if ``per_image``), ``"all"`` over all C classes, a
            sequence of class ids over those (repeats count repeatedly, as in the
            reference).
        per_image: False pools the pixels of all images for each class (the
            reference's default for multi-class); True takes the mean over the B
            images of each image's loss, an image with nothing kept counting as 0.
        ignore_index: label value whose pixels are dropped.
        keep_mask: optional boolean (B, *spatial); False drops a pixel.
        class_axis: the axis of ``logits`` holding the classes.
        reduce: the data-parallel hook of :func:`jdt_array.jdt_loss`, a function
            summing a 1-d array over the replicas; needs ``per_image=True``. The sum
            of this replica's per-image losses and its image count go through it in
            one call, so every replica returns the mean over the global batch and
            gradients flow back through ``reduce``. ``None``: this call's batch only.

    Returns:
        A 0-d array in the namespace and on the device of ``logits``, float64 for
        float64 logits and float32 otherwise; 0 with a zero gradient when nothing is
        left to average. With ``reduce``, the loss of the global batch.

    Raises:
        TypeError: a floating (soft) label, mixed libraries, non-floating logits, a
            non-boolean ``keep_mask`` or ``per_image``, a ``classes`` that is no
            sequence of ints.
        ValueError: shapes that do not match, an unknown ``classes`` string, a class id
            outside [0, C), a kept label outside [0, C) (not checked inside
            ``jax.jit``, where such pixels belong to no class); ``reduce`` with
            ``per_image=False`` (pooled pixels cannot be summed over replicas).
    """
    groups = _softmax_groups(
        logits, label, classes, per_image, ignore_index, keep_mask, class_axis, reduce
    )
    losses = lovasz_extension(groups.xp, groups.errors, groups.fg, groups.keep)
    return _softmax_value(groups, losses, reduce)[0]


def lovasz_softmax_value_and_grad(
    logits: Array, label: Array, **options: Any
) -> tuple[Array, Array]:
    """:func:`lovasz_softmax_loss` (the same arguments) and its gradient with respect
    to ``logits``, by hand (with ``reduce``: this replica's slice of the global-batch
    gradient).

    The Lovasz extension is linear in the sorted errors, so d loss / d error of a pixel
    is the Jaccard increment at its rank (times the class's weight in the mean), and
    d error / d p is -1 on the class's pixels and +1 elsewhere.
    """
    args = checks.arguments(lovasz_softmax_loss, logits, label, options)
    g, reduce = _softmax_groups(**args), args["reduce"]
    xp = g.xp
    losses, g_errors = lovasz_extension(xp, g.errors, g.fg, g.keep, with_grad=True)
    loss, groups = _softmax_value(g, losses, reduce)
    # d loss / d class loss: 1 / (active classes of the group) / (groups).
    count = xp.sum(xp.astype(g.active, g.errors.dtype), axis=1, keepdims=True)
    weight = xp.where(g.active, 1.0 / xp.where(count > 0, count, 1.0), 0.0) / groups
    sign = 1.0 - 2.0 * xp.astype(g.fg, g.errors.dtype)  # d error / d p
    g_prob = sign * g_errors * xp.expand_dims(weight, axis=-1)  # (G, K, M)
    batch, num_classes, axis = g.prob.shape[0], g.prob.shape[g.axis], g.axis
    if not args["per_image"]:
        g_prob = _unpool_images(xp, g_prob, batch)
    if g.class_ids is not None:  # add the rows of listed (or repeated) classes up
        g_prob = _scatter_classes(xp, g_prob, g.class_ids, num_classes)
    spatial = tuple(g.prob.shape[a] for a in range(g.prob.ndim) if a not in (0, axis))
    g_prob = xp.reshape(g_prob, (batch, num_classes, *spatial))
    g_prob = xp.permute_dims(g_prob, _inverse(_classes_second(g_prob.ndim, axis)))
    grad = g.kernels.softmax_vjp(g.prob, g_prob, axis)
    return loss, xp.astype(grad, logits.dtype, copy=False)


class _Groups(NamedTuple):
    """The pixel errors of the Lovasz-Softmax loss, sorted by group (an image, or the
    pooled batch) and class: (G, K, M) arrays, K the classes averaged over."""

    xp: Any
    kernels: Any  # the kernel set of xp
    prob: Array  # softmax(logits), shaped like the logits
    axis: int  # the class axis, non-negative
    errors: Array  # |[y = c] - p_c|
    fg: Array  # the pixels of the class, kept
    keep: Array  # the kept pixels
    active: Array  # (G, K) the classes that count in each group's mean
    class_ids: tuple[int, ...] | None  # the listed classes, or None for all


def _softmax_groups(
    logits, label, classes, per_image, ignore_index, keep_mask, class_axis, reduce
) -> _Groups:
    """Check the arguments of :func:`lovasz_softmax_loss`; its errors, grouped."""
    checks.check_bool("per_image", per_image)
    reduce = checks.check_reduce(reduce)
    check_syncable("lovasz_softmax_loss", per_image=per_image, synced=reduce is not None)
    inputs = prepare(
        logits, label, keep_mask, class_axis=class_axis, ignore_index=ignore_index,
        hard_only="lovasz_softmax_loss",
    )  # fmt: skip
    xp, axis, kept, num_classes = (
        inputs.xp,
        inputs.class_axis,
        inputs.keep,
        inputs.num_classes,
    )
    class_ids = _class_ids(classes, num_classes)
    prob_nd = with_probabilities(inputs).prob
    batch, pixels = label.shape[0], math.prod(label.shape[1:])  # sizes: B may be 0
    # (permute_dims, not moveaxis, which torch.func.vmap cannot batch)
    prob = xp.permute_dims(prob_nd, _classes_second(prob_nd.ndim, axis))
    prob = xp.reshape(prob, (batch, num_classes, pixels))
    flat_label = xp.reshape(label, (batch, pixels))
    keep = _flat_keep(xp, kept, flat_label)
    if class_ids is None:
        ids = xp.arange(num_classes, dtype=label.dtype, device=device(label))
    else:
        index = xp.asarray(class_ids, device=device(label))
        prob = xp.take(prob, index, axis=1)  # (B, K, N), one row per listed class
        ids = xp.astype(index, label.dtype)

    keep = xp.expand_dims(keep, axis=1)  # (B, 1, N)
    fg = (xp.expand_dims(flat_label, axis=1) == xp.reshape(ids, (1, -1, 1))) & keep
    keep = keep & xp.ones(fg.shape, dtype=xp.bool, device=device(fg))
    if not per_image:
        # One group holding every image's pixels: (B, K, N) -> (1, K, B * N).
        fg, keep, prob = (_pool_images(xp, a) for a in (fg, keep, prob))
    errors = xp.where(fg, 1.0 - prob, prob)
    present_only = isinstance(classes, str) and classes == "present"
    active = xp.any(fg if present_only else keep, axis=-1)
    return _Groups(xp, inputs.kernels, prob_nd, axis, errors, fg, keep, active, class_ids)


def _softmax_value(groups: _Groups, losses: Array, reduce) -> tuple[Array, Array]:
    """The loss from the (G, K) class losses, and the number of groups (at least 1)."""
    xp = groups.xp
    return mean_over_groups(xp, masked_mean(xp, losses, groups.active, axis=1), reduce)


def lovasz_hinge_loss(
    logits: Array,
    label: Array,
    *,
    per_image: bool = True,
    ignore_index: int | None = None,
    keep_mask: Array | None = None,
    reduce: Callable[[Array], Array] | None = None,
) -> Array:
    r"""The binary Lovasz hinge loss of real-valued scores against a 0/1 label.

    With signs :math:`s_i = 2 y_i - 1` the hinge errors are
    :math:`m_i = \max(0, 1 - s_i z_i)`, and the loss is the Lovasz extension of the
    Jaccard loss of the foreground at m (Yu & Blaschko, TPAMI 2018; Berman et al.,
    CVPR 2018), equal to the authors' reference implementation.

    Args:
        logits: floating (B, *spatial), one score per pixel (foreground when > 0).
        label: integer or boolean (B, *spatial) of 0 (background) and 1 (foreground),
            plus ``ignore_index`` where given. Soft labels are rejected (use
            :func:`jdt_array.jdt_loss`).
        per_image: True (the reference's default for binary) takes the mean over the B
            images of each image's loss, an image with nothing kept counting as 0;
            False pools all pixels.
        ignore_index: label value whose pixels are dropped (integer labels only).
        keep_mask: optional boolean (B, *spatial); False drops a pixel.
        reduce: the data-parallel hook, as in :func:`lovasz_softmax_loss` (needs
            ``per_image=True``): every replica returns the mean over the global batch.

    Returns:
        A 0-d array like :func:`lovasz_softmax_loss`; 0 with a zero gradient when
        nothing is kept.

    Raises:
        TypeError: a floating (soft) label, non-floating logits, a non-boolean
            ``keep_mask`` or ``per_image``, mixed libraries.
        ValueError: shapes that differ, ``ignore_index`` with a boolean label, kept
            label values other than 0 and 1 (not checked inside ``jax.jit``, where such
            pixels count as background); ``reduce`` with ``per_image=False``.
    """
    h = _hinge_errors(logits, label, per_image, ignore_index, keep_mask, reduce)
    losses = lovasz_extension(h.xp, h.errors, h.fg, h.keep)
    return mean_over_groups(h.xp, losses, reduce, nan=h.nan)[0]


def lovasz_hinge_value_and_grad(
    logits: Array, label: Array, **options: Any
) -> tuple[Array, Array]:
    """:func:`lovasz_hinge_loss` (the same arguments) and its gradient with respect to
    ``logits``, by hand: -sign times the Jaccard increment at each pixel's rank, where
    its hinge error is positive."""
    args = checks.arguments(lovasz_hinge_loss, logits, label, options)
    h, reduce = _hinge_errors(**args), args["reduce"]
    xp = h.xp
    losses, g_errors = lovasz_extension(xp, h.errors, h.fg, h.keep, with_grad=True)
    loss, groups = mean_over_groups(xp, losses, reduce, nan=h.nan)
    g_errors = xp.reshape(g_errors, logits.shape) / groups
    grad = xp.where(h.raw > 0, -h.signs * g_errors, 0.0)
    return loss, xp.astype(grad, logits.dtype, copy=False)


class _Hinge(NamedTuple):
    xp: Any
    raw: Array  # 1 - s z, shaped like the logits
    signs: Array  # s = 2 y - 1
    errors: Array  # max(0, 1 - s z), (G, M)
    fg: Array  # the kept foreground pixels, (G, M)
    keep: Array  # the kept pixels, (G, M)
    nan: Array  # 0, or NaN where a kept score is not finite


def _hinge_errors(logits, label, per_image, ignore_index, keep_mask, reduce) -> _Hinge:
    """Check the arguments of :func:`lovasz_hinge_loss`; its errors, grouped."""
    xp = namespace_of(logits=logits, label=label, keep_mask=keep_mask)
    ignore_index = checks.check_ignore_index(ignore_index)
    checks.check_bool("per_image", per_image)
    reduce = checks.check_reduce(reduce)
    check_syncable("lovasz_hinge_loss", per_image=per_image, synced=reduce is not None)
    fg = _binary_foreground(xp, logits, label, ignore_index, keep_mask)
    keep = kept_pixels(xp, label, ignore_index, keep_mask)

    batch, pixels = logits.shape[0], math.prod(logits.shape[1:])  # sizes: B may be 0
    flat = (batch, pixels) if per_image else (1, batch * pixels)
    z = xp.astype(logits, compute_dtype(xp, logits.dtype))
    if keep is not None:  # dropped scores count as 0: NaN there reaches nothing
        z = xp.where(keep, z, 0.0)
    signs = 2.0 * xp.astype(fg, z.dtype) - 1.0
    raw = 1.0 - z * signs
    # The hinge: errors below 0 only sort after the positive ones and add nothing
    # (NaN stays NaN: a NaN or inf score is no error of 0).
    errors = xp.reshape(xp.where(raw <= 0, 0.0, raw), flat)
    fg = xp.reshape(fg, flat)
    keep = _flat_keep(xp, keep, fg)
    return _Hinge(xp, raw, signs, errors, fg & keep, keep, _nan_of(xp, z))


def _nan_of(xp: Any, z: Array) -> Array:
    """0, or NaN if ``z`` (0 at dropped pixels) holds a NaN or an infinity: an infinite
    score would give a finite hinge error, a plausible loss for a diverged model."""
    return xp.sum(z * 0.0)


def _binary_foreground(xp, logits, label, ignore_index, keep_mask):
    """Check the hinge's arguments; the boolean foreground (label 1) of shape (B, ...)."""
    if not xp.isdtype(logits.dtype, "real floating"):
        raise TypeError(f"logits must be a floating array, got dtype {logits.dtype}")
    if logits.ndim < 1:
        raise ValueError("logits must have shape (B, *spatial), got a 0-d array")
    checks.refuse_soft_label(xp, label, "lovasz_hinge_loss")
    is_bool = label.dtype == xp.bool
    if not (is_bool or xp.isdtype(label.dtype, "integral")):
        raise TypeError(f"label must be an integer or boolean 0/1 array, got {label.dtype}")
    for name, value in (("label", label), ("keep_mask", keep_mask)):
        if value is not None and tuple(value.shape) != tuple(logits.shape):
            raise ValueError(
                f"{name} must have the shape of logits {tuple(logits.shape)} (one score "
                f"per pixel), got {tuple(value.shape)}"
            )
    if keep_mask is not None and keep_mask.dtype != xp.bool:
        raise TypeError(f"keep_mask must be a boolean array, got dtype {keep_mask.dtype}")
    if is_bool:
        if ignore_index is not None:
            raise ValueError("ignore_index needs an integer label, got a boolean label")
        return label
    bad = (label != 0) & (label != 1)
    kept = kept_pixels(xp, label, ignore_index, keep_mask)
    if kept is not None:
        bad = bad & kept
    message = f"a binary label must hold 0 and 1 (or ignore_index={ignore_index!r})"
    if eager_any(xp, bad, message):
        raise ValueError(
            f"a binary label must hold 0 and 1 (or ignore_index={ignore_index!r}), got "
            f"values in [{int(xp.min(label))}, {int(xp.max(label))}]"
        )
    return label == 1


def _class_ids(classes: Any, num_classes: int) -> tuple[int, ...] | None:
    """The class ids to average over, or None for "present" and "all"."""
    if isinstance(classes, str):
        if classes in ("present", "all"):
            return None
        raise ValueError(
            f'classes must be "present", "all" or a sequence of class ids, got {classes!r}'
        )
    try:
        ids = tuple(classes)
    except TypeError:
        raise TypeError(
            f'classes must be "present", "all" or a sequence of class ids, got {classes!r}'
        ) from None
    if not ids:
        raise ValueError("classes must name at least one class id, got an empty sequence")
    for c in ids:
        if isinstance(c, bool) or not isinstance(c, Integral):
            raise TypeError(f"classes must hold int class ids, got {c!r} in {classes!r}")
        if not 0 <= c < num_classes:
            raise ValueError(
                f"class id {c} in classes is outside [0, {num_classes}) for logits with "
                f"{num_classes} classes"
            )
    return tuple(int(c) for c in ids)


def _classes_second(ndim: int, axis: int) -> tuple[int, ...]:
    """The permutation that moves the class ``axis`` to position 1."""
    return (0, axis, *(a for a in range(1, ndim) if a != axis))


def _inverse(permutation: tuple[int, ...]) -> tuple[int, ...]:
    inverse = [0] * len(permutation)
    for position, axis in enumerate(permutation):
        inverse[axis] = position
    return tuple(inverse)


def _flat_keep(xp, keep, like):
    """``keep`` reshaped like ``like`` (B, N); all True when None."""
    if keep is None:
        return xp.ones(like.shape, dtype=xp.bool, device=device(like))
    return xp.reshape(keep, like.shape)


def _pool_images(xp, a):
    """(B, K, N) -> (1, K, B * N): every image's pixels in one group per class."""
    pooled = xp.reshape(
        xp.permute_dims(a, (1, 0, 2)), (a.shape[1], a.shape[0] * a.shape[2])
    )
    return xp.expand_dims(pooled, axis=0)


def _unpool_images(xp, a, batch):
    """(1, K, B * N) -> (B, K, N), undoing :func:`_pool_images`."""
    pixels = a.shape[2] // max(batch, 1)  # explicit: a -1 cannot be inferred for B = 0
    return xp.permute_dims(xp.reshape(a[0, ...], (a.shape[1], batch, pixels)), (1, 0, 2))


def _scatter_classes(xp, g_rows, class_ids, num_classes):
    """(B, K, N) gradients of the listed classes' rows -> (B, C, N), summed per class."""
    ids = xp.asarray(class_ids, device=device(g_rows))
    classes = xp.arange(num_classes, dtype=ids.dtype, device=device(ids))
    select = xp.astype(xp.reshape(ids, (-1, 1)) == xp.reshape(classes, (1, -1)),
                       g_rows.dtype)  # (K, C)  # fmt: skip
    return xp.permute_dims(xp.tensordot(g_rows, select, axes=([1], [0])), (0, 2, 1))
