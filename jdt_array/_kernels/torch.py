"""PyTorch kernels for the hot spots of the losses and metrics (see ``generic.py``).

Hard labels are used as indices (gather / scatter-add) instead of a one-hot comparison
over every class: one pass over the probabilities instead of several over (B, C, N).
Each function allocates as few pixel-sized buffers as it can (in-place updates of its
own temporaries): on CPU a fresh buffer costs page faults as well as bandwidth.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import torch

from .._array import in_torch_func
from .generic import HardL1

# The class blocks of an in-place gradient: the temporary is 1/_BLOCKS of the logits.
_BLOCKS = 8
# From this many classes on, a CPU argmax takes NumPy's running maximum.
_RUNNING_ARGMAX_CLASSES = 32


def _has_numpy_view(x: torch.Tensor) -> bool:
    """Whether ``x`` is a plain CPU tensor that NumPy can view (not traced, a dtype
    NumPy has)."""
    traced = torch.compiler.is_compiling() or in_torch_func(x)
    return not traced and x.dtype in (torch.float16, torch.float32, torch.float64)


def _numpy_namespace() -> Any:
    from array_api_compat import numpy as np_namespace

    return np_namespace


def autograd_value_and_grad(
    loss_fn: Callable, logits: torch.Tensor, label: torch.Tensor, **options: Any
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, d loss / d logits)`` by autograd; ``logits`` itself is left untouched."""
    x = logits.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(x, label, **options)
        (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


class TorchKernels(HardL1):
    counts_pairs_in_one_pass = True

    def value_and_grad(self, loss_fn, logits, label, options, *, hand_gradient):
        return autograd_value_and_grad(loss_fn, logits, label, **options)

    def softmax(self, x: torch.Tensor, axis: int, keep=None) -> torch.Tensor:
        if keep is None:
            return torch.softmax(x, dim=axis)
        kept = keep.unsqueeze(axis)
        if torch.is_grad_enabled() and x.requires_grad:  # autograd: select first
            return torch.softmax(torch.where(kept, x, 0.0), dim=axis)
        # No tape: the same probabilities (1 / C where dropped) without a second copy.
        return torch.softmax(x, dim=axis).masked_fill_(~kept, 1.0 / x.shape[axis])

    def argmax(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        if x.device.type != "cpu":
            return torch.max(x, dim=axis).indices
        if x.shape[axis] >= _RUNNING_ARGMAX_CLASSES and _has_numpy_view(x):
            # Many classes: the passes below read (B, C, N) four times, NumPy's
            # running maximum once, a class slice at a time in cache (4x faster at
            # C = 150); a CPU tensor shares its memory with the NumPy view.
            from . import kernels_for

            index = kernels_for(_numpy_namespace()).argmax(x.detach().numpy(), axis)
            return torch.from_numpy(index)
        # On CPU both argmax and max(dim) are several times slower than amax: take the
        # maximum, then the first class equal to it as the largest reversed class
        # number C - c among them (uint8/int16 to keep the (B, C, N) pass narrow).
        c = x.shape[axis]
        best = x.amax(dim=axis, keepdim=True)
        dtype = torch.uint8 if c < 256 else torch.int16 if c < 2**15 else torch.int64
        shape = [1] * x.ndim
        shape[axis] = c
        reversed_ids = torch.arange(c, 0, -1, dtype=dtype).reshape(shape)
        is_best = x == best
        # A bool tensor is a uint8 one already: view it, no copy.
        is_best = is_best.view(dtype) if dtype == torch.uint8 else is_best.to(dtype)
        first = is_best.mul_(reversed_ids).amax(dim=axis)
        index = c - first  # c where the maximum is NaN (it equals nothing)
        if index.numel() and int(index.max()) == c:  # a narrow pass, not isnan(best)
            # As torch.argmax: such a pixel takes the index of a NaN.
            nan = index == c
            index[nan] = torch.max(x.movedim(axis, -1)[nan], dim=-1).indices.to(dtype)
        return index

    def class_counts(self, ids: torch.Tensor, num_classes: int) -> torch.Tensor:
        # scatter-add rather than bincount, whose output size costs a host sync on GPU.
        counts = ids.new_zeros(ids.shape[0], num_classes + 1, dtype=torch.int64)
        ones = counts.new_ones(()).expand(ids.shape)
        return counts.scatter_add_(1, ids.long(), ones)[:, :num_classes]

    def pair_counts(self, label_ids, pred_ids, num_classes):
        b, size = label_ids.shape[0], (num_classes + 1) ** 2
        # Both int64 first: a mixed-dtype in-place add is many times slower on CPU.
        code = (label_ids.long() * (num_classes + 1)).add_(pred_ids.long())
        if label_ids.device.type == "cpu":
            if b > 1:
                code += size * torch.arange(b).unsqueeze(1)
            counts = torch.bincount(code.reshape(-1), minlength=b * size)
        else:  # bincount sizes its output from the data: a host sync on GPU
            counts = code.new_zeros(b, size)
            counts.scatter_add_(1, code, counts.new_ones(()).expand(code.shape))
        return counts.reshape(b, num_classes + 1, num_classes + 1)

    def cumulative_sum(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        # torch's own: array-api-compat's finds the namespace through an lru_cache,
        # at which torch.compile warns.
        return torch.cumsum(x, dim=axis)

    def value_range(self, values: torch.Tensor):
        return torch.aminmax(values)  # one pass; amin alone is slow on int64 CPU tensors

    def hard_l1_statistics(self, prob, label, keep):
        b, c = prob.shape[:2]
        p = prob.reshape(b, c, math.prod(prob.shape[2:]))
        index, kept, of_class = _index_and_weights(label, keep, b, c, p.dtype)
        p_label = p.gather(1, index).squeeze(1)  # (B, N): x at each pixel's class
        if of_class is not None:
            p_label.mul_(of_class)
        prob_card = p.sum(2) if kept is None else torch.bmm(p, kept.unsqueeze(2)).squeeze(2)
        counts = _counts(index.squeeze(1), of_class, c, p.dtype)
        overlap = p.new_zeros(b, c).scatter_add_(1, index.squeeze(1), p_label)
        diff_card = prob_card + counts - 2 * overlap
        # The residual, x at each pixel's class, saves the gradient a second gather.
        return (prob_card, counts, diff_card), p_label

    def hard_l1_applies(self, prob):
        # Inside torch.func (vmap, grad) the generic code runs: it has batching rules
        # for every operation and no host reads (bincount).
        return not in_torch_func(prob)

    def hard_l1_vjp_applies(self, prob, g_prob_card, g_diff_card):
        # A gradient to differentiate goes to the generic code, which is autograd-safe.
        return not (
            torch.is_grad_enabled()
            and any(t.requires_grad for t in (prob, g_prob_card, g_diff_card))
        )

    def hard_l1_vjp(self, prob, label, keep, g_prob_card, g_diff_card, *, residual,
                    overwrite):  # fmt: skip
        b, c = prob.shape[:2]
        p = prob.reshape(b, c, math.prod(prob.shape[2:]))
        index, kept, of_class = _index_and_weights(label, keep, b, c, p.dtype)
        p_label = residual
        if p_label is None:
            p_label = p.gather(1, index).squeeze(1)
            if of_class is not None:
                p_label.mul_(of_class)
        # d |x| / dx = 1 and d |x - y| / dx = 1 - 2 y on kept pixels: g = a - 2 d y.
        a = (g_prob_card + g_diff_card).to(p.dtype)
        # Softmax VJP: x * (g - sum_c x_c g_c), with the one-hot term kept as indices:
        # on_label = -2 d_y x_y at each pixel.
        n = p.shape[2]
        # (the out= buffers are None under torch.compile: functional forms there)
        on_label = torch.gather(g_diff_card.to(p.dtype).mul(-2), 1, index.squeeze(1),
                                out=_buffer("on_label", (b, n), p))  # fmt: skip
        on_label.mul_(p_label)
        inner = torch.baddbmm(on_label.unsqueeze(1), a.unsqueeze(1), p,
                              out=_buffer("inner", (b, 1, n), p))  # fmt: skip
        if overwrite:
            grad = p
            # x * (a - inner) class block by class block, with one reused temporary of
            # a fraction of the probabilities, not a second copy.
            step = max(1, c // _BLOCKS)
            shift = _buffer("shift", (b, min(step, c), n), p)
            for start in range(0, c, step):
                block = slice(start, start + step)
                part = None if shift is None else shift[:, : grad[:, block].shape[1]]
                grad[:, block].mul_(torch.sub(a[:, block, None], inner, out=part))
        else:
            grad = torch.sub(a.unsqueeze(2), inner).mul_(p)
        grad.scatter_add_(1, index, on_label.unsqueeze(1))
        if kept is not None:
            grad.mul_(kept.unsqueeze(1))
        return grad.reshape(prob.shape)


def _counts(index, weight, num_classes, dtype):
    """(B, C) kept pixels of each class, from (B, N) class ids and 0/1 weights."""
    b = index.shape[0]
    if index.device.type == "cpu" and b == 1 and weight is None and not _tracing():
        # bincount is about twice as fast as scatter_add on CPU; it sizes its output
        # from the data, a host sync that only matters on GPU.
        return torch.bincount(index[0], minlength=num_classes).to(dtype).unsqueeze(0)
    ones = index.new_ones((), dtype=dtype).expand(index.shape) if weight is None else weight
    return torch.zeros((b, num_classes), dtype=dtype, device=index.device).scatter_add_(
        1, index, ones
    )


class Buffers(threading.local):
    """Scratch tensors of the CPU kernels, kept between calls: per thread, the last
    shape of each name and dtype.

    A fresh pixel-sized buffer costs a page fault per 4 KiB page at every training step
    (freed memory of that size goes back to the operating system), which on CPU can
    cost more than the arithmetic on it. Only for temporaries that do not outlive a
    kernel call; GPU caching allocators already reuse memory.
    """

    def get(self, name: str, shape: tuple, dtype: Any) -> torch.Tensor:
        arrays = self.__dict__.setdefault("arrays", {})
        kept = arrays.get((name, dtype))
        if kept is None or tuple(kept.shape) != tuple(shape):
            kept = arrays[(name, dtype)] = torch.empty(shape, dtype=dtype)
        return kept


_buffers = Buffers()


def _tracing() -> bool:
    return torch.compiler.is_compiling()


def _buffer(name, shape, like):
    """A scratch tensor for one kernel call: kept between calls on CPU (``Buffers``);
    on GPU the caching allocator already reuses memory; None while torch.compile
    traces (a traced graph holds no state of its own and takes any shape)."""
    if _tracing():
        return None
    if like.device.type != "cpu":
        return torch.empty(shape, dtype=like.dtype, device=like.device)
    return _buffers.get(name, shape, like.dtype)


def _index_and_weights(label, keep, batch, num_classes, dtype):
    """Class ids as gather indices (B, 1, N), and the 0/1 weights (B, N) of each pixel
    in |x| (kept) and in the class sums (kept and of a class), each ``None`` when every
    pixel counts; a pixel of no class points at class 0.

    Class ids are checked before the kernels run, except while torch.compile traces
    (the label cannot be read): there an id outside [0, C) is of no class, as in the
    generic code, instead of a gather out of range.
    """
    flat = label.reshape(batch, 1, math.prod(label.shape[1:]))
    kept = None if keep is None else keep.reshape(batch, 1, math.prod(keep.shape[1:]))
    of_class = kept
    if _tracing():
        valid = (flat >= 0) & (flat < num_classes)
        of_class = valid if kept is None else kept & valid
    index = flat if of_class is None else torch.where(of_class, flat, 0)
    as_weight = lambda mask: None if mask is None else mask.squeeze(1).to(dtype)  # noqa: E731
    return index.long(), as_weight(kept), as_weight(of_class)
