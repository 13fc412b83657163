"""JAX kernels: a softmax and its gradient that XLA compiles well, the generic array
code for the rest, and JAX's autodiff for ``value_and_grad``.

Two forms of the generic code cost XLA dearly on CPU:

* **Reductions over the class axis** of (B, C, N) logits (the softmax's max and sum,
  the gradient's sum(x * g)): XLA's CPU reduction over a non-minor axis is one
  element at a time, 20-70x slower than adding the C slices of shape (B, N) one after
  another, which vectorizes along the pixels. :func:`class_max` and :func:`class_sum`
  fold the slices in a ``fori_loop`` (one slice per step: no (B, C, N) temporary, and
  a loop body XLA fuses); a class axis that is already the last axis keeps the plain
  reduction.
* **The derivative of the softmax's max shift**: ``jax.grad`` of ``exp(x - max(x))``
  traces the max too (an equality mask over every logit and a second reduction)
  although its contribution is exactly zero. :func:`softmax` has its own derivative,
  x * (t - sum(x * t)), as a ``custom_jvp`` (so ``jax.grad``, ``jax.jvp`` and ``vmap``
  all work).

The fused two-pass Pallas form of the JDT statistics and their gradient is in
``jax_pallas.py`` (the kernel set of ``JDT_ARRAY_JAX_KERNEL=pallas``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from .._pixels import along_classes
from . import numpy_threads
from .generic import Generic


def autodiff_value_and_grad(
    loss_fn: Callable, logits: jax.Array, label: jax.Array, **options: Any
) -> tuple[jax.Array, jax.Array]:
    """``(loss, d loss / d logits)`` by ``jax.value_and_grad`` (works inside ``jit``)."""
    return jax.value_and_grad(lambda z: loss_fn(z, label, **options))(logits)


# -- reductions over the class axis ----------------------------------------------------


def _fold(op: Callable, term: Callable[[Any], jax.Array], count: int) -> jax.Array:
    """op(...op(term(0), term(1))..., term(count - 1)), one term per loop step."""
    first = term(0)
    if count == 1:
        return first
    return lax.fori_loop(1, count, lambda c, acc: op(acc, term(c)), first)


def _slice(x: jax.Array, c: Any, axis: int) -> jax.Array:
    return lax.dynamic_index_in_dim(x, c, axis=axis, keepdims=True)


def _minor(x: jax.Array, axis: int) -> bool:
    """Whether the plain reduction is the fast one: the class axis is the last (or the
    array too small to matter)."""
    return axis == x.ndim - 1 or x.shape[axis] <= 1


# The folds are jitted functions of module-level terms, cached by (term, axis, shapes):
# called eagerly, a loop over a fresh closure would be traced and compiled again at
# every call (two XLA compilations, 0.2 s, per eager loss call); under an outer jit
# they are inlined.


def class_max(x: jax.Array, axis: int) -> jax.Array:
    """``max(x, axis, keepdims=True)``, NaN where any element is NaN."""
    if _minor(x, axis):
        return jnp.max(x, axis=axis, keepdims=True)
    return _folded_max(x, axis)


@functools.partial(jax.jit, static_argnums=(1,))
def _folded_max(x: jax.Array, axis: int) -> jax.Array:
    return _fold(jnp.maximum, lambda c: _slice(x, c, axis), x.shape[axis])


def class_sum(
    term: Callable[..., jax.Array], arrays: tuple, axis: int, *whole: jax.Array
) -> jax.Array:
    """``sum(term(*arrays, *whole), axis, keepdims=True)`` for an elementwise, module-
    level ``term``, without forming it in full: ``arrays`` are taken a class slice at a
    time, ``whole`` (size 1 along ``axis``) as they are."""
    if _minor(arrays[0], axis):
        return jnp.sum(term(*arrays, *whole), axis=axis, keepdims=True)
    return _folded_sum(term, tuple(arrays), axis, whole)


@functools.partial(jax.jit, static_argnums=(0, 2))
def _folded_sum(term: Callable, arrays: tuple, axis: int, whole: tuple) -> jax.Array:
    sliced = lambda c: term(*(_slice(a, c, axis) for a in arrays), *whole)  # noqa: E731
    return _fold(jnp.add, sliced, arrays[0].shape[axis])


def _exp_shifted(z: jax.Array, shift: jax.Array) -> jax.Array:
    return jnp.exp(z - shift)


def _product(x: jax.Array, g: jax.Array) -> jax.Array:
    return x * g


def _soft_l1_term(x, y, a, d):
    """x (g_|x| + g_|x-y| sign(x - y)): the norm-1 soft-label gradient's inner term."""
    return x * (a + d * jnp.sign(x - y))


def _count_dtype():
    """The default integer dtype: int64 with ``jax_enable_x64``, else int32."""
    return jnp.asarray(0).dtype


def _host_argsort_descending(key) -> np.ndarray:
    key = np.asarray(key)
    rows = key.reshape(-1, key.shape[-1])
    order = np.empty(rows.shape, np.int32)

    def sort(block):
        # Ascending order of -key, ties in their order: the stable descending order.
        order[block] = np.argsort(-rows[block], axis=-1, kind="stable")

    numpy_threads.each_block_of_rows(sort, rows.shape[0])
    return order.reshape(key.shape)


# -- the softmax -----------------------------------------------------------------------


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def softmax(x: jax.Array, axis: int) -> jax.Array:
    """Softmax of ``x`` along ``axis`` (max-shifted), with fast class reductions."""
    shift = class_max(x, axis)
    total = class_sum(_exp_shifted, (x,), axis, shift)
    return jnp.exp(x - shift) / total


@softmax.defjvp
def _softmax_jvp(axis, primals, tangents):
    (x,), (t,) = primals, tangents
    prob = softmax(x, axis)
    # A plain sum: it is linear in t, so its transpose (a broadcast) is what
    # jax.grad runs; the fold's transpose would be a scatter per class.
    return prob, prob * (t - jnp.sum(prob * t, axis=axis, keepdims=True))


@functools.partial(jax.jit, static_argnums=(1,))
def _folded_argmax(x: jax.Array, axis: int) -> jax.Array:
    def step(c, carry):
        best, index = carry
        value = _slice(x, c, axis)
        # Strictly greater keeps the first maximum; a NaN wins over any number,
        # and the first NaN stays.
        better = (value > best) | (jnp.isnan(value) & ~jnp.isnan(best))
        return jnp.where(better, value, best), jnp.where(better, c, index)

    first = _slice(x, 0, axis)
    # zeros_like, not zeros: inside shard_map the carry keeps the slice's
    # varying-axis type, which a fresh constant lacks.
    start = (first, jnp.zeros_like(first, dtype=jnp.int32))
    _, index = lax.fori_loop(1, x.shape[axis], step, start)
    return jnp.squeeze(index, axis=axis)


class JaxKernels(Generic):
    def softmax(self, x, axis, keep=None):
        if keep is not None:  # dropped pixels count as logits 0 (see Generic.softmax)
            x = jnp.where(jnp.expand_dims(keep, axis=axis), x, 0.0)
        return softmax(x, axis)

    def softmax_vjp(self, prob, g_prob, axis):
        inner = class_sum(_product, (prob, g_prob), axis)
        return prob * (g_prob - inner)

    def soft_statistics_vjp(self, prob, label, keep, class_axis, norm, g_prob_card,
                            g_diff_card):  # fmt: skip
        """For norm 1: g = g_|x| + g_|x-y| sign(x - y) is formed inside the class fold
        and again in the output, never stored (one (B, C, N) temporary less)."""
        if norm != 1:
            return super().soft_statistics_vjp(
                prob, label, keep, class_axis, norm, g_prob_card, g_diff_card
            )
        axis = class_axis
        g_p = along_classes(jnp, g_prob_card, prob.ndim, axis)
        g_d = along_classes(jnp, g_diff_card, prob.ndim, axis)
        inner = class_sum(_soft_l1_term, (prob, label, g_p, g_d), axis)
        grad = prob * (g_p + g_d * jnp.sign(prob - label) - inner)
        if keep is None:
            return grad
        return jnp.where(jnp.expand_dims(keep, axis=axis), grad, 0.0)

    # -- sorting: NumPy's on the host, on CPU ---------------------------------------

    def argsort_descending(self, x):
        """On CPU, NumPy's stable sort on the host threads (``pure_callback``), 3x
        faster than XLA's CPU sort, which calls a compiled comparator per comparison;
        on other devices, and for nothing to sort, XLA's sort."""
        if jax.default_backend() != "cpu" or x.size == 0 or x.ndim == 0:
            return super().argsort_descending(x)
        out = jax.ShapeDtypeStruct(x.shape, jnp.int32)
        key = lax.stop_gradient(x)  # an order has no gradient
        return jax.pure_callback(_host_argsort_descending, out, key,
                                 vmap_method="expand_dims")  # fmt: skip

    # -- metrics: scatter-added counts instead of C comparisons per pixel -----------

    counts_pairs_in_one_pass = True

    def argmax(self, x, axis):
        """The first index of the maximum (the first NaN if any), folded over the class
        slices when the class axis is not the last."""
        if _minor(x, axis):
            return jnp.argmax(x, axis=axis)
        return _folded_argmax(x, axis)

    def class_counts(self, ids, num_classes):
        """(B, C) counts of the ids in [0, C] (C: no class) by one scatter-add per
        image."""
        bins = num_classes + 1
        rows = jnp.arange(ids.shape[0], dtype=jnp.int32)[:, None] * bins
        where = jnp.reshape(rows + ids.astype(jnp.int32), (-1,))
        counts = jnp.zeros(ids.shape[0] * bins, _count_dtype()).at[where].add(1)
        return jnp.reshape(counts, (ids.shape[0], bins))[:, :num_classes]

    def pair_counts(self, label_ids, pred_ids, num_classes):
        # int32 codes: the table is only built while its (C + 1)^2 bins fit an image
        bins = num_classes + 1
        code = label_ids.astype(jnp.int32) * bins + pred_ids.astype(jnp.int32)
        counts = self.class_counts(code, bins * bins)
        return jnp.reshape(counts, (code.shape[0], bins, bins))

    def value_and_grad(self, loss_fn, logits, label, options, *, hand_gradient):
        return autodiff_value_and_grad(loss_fn, logits, label, **options)
