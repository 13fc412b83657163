"""Launching the Triton kernels of ``triton_jdt.py`` on PyTorch tensors: which copy of
the kernels runs (compiled for CUDA, interpreted for CPU), the (B, C, N) views with
their strides, block sizes and grids.

Nothing here reads a tensor's values: every launch is asynchronous on CUDA.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, NamedTuple

import torch

__all__ = ["MAX_CLASSES", "gradient", "gradient_buffer", "statistics"]

# One program holds the scores of all classes of its pixels in registers: beyond this
# many classes the tile no longer fits and the native kernels run instead.
MAX_CLASSES = 16384
# Elements of one [classes, pixels] tile, and the pixels of a tile at most.
_TILE = 4096
_MAX_PIXELS = 1024


@functools.cache
def _kernels() -> Any:
    """The kernel module (``triton_jdt``), imported on first use."""
    try:
        from . import triton_jdt
    except ImportError as err:
        raise ImportError(
            "JDT_ARRAY_TORCH_KERNEL=triton needs Triton; install it with "
            "pip install 'jdt-array[triton]'"
        ) from err
    return triton_jdt


def _interpreting() -> bool:
    """Whether Triton runs in its interpreter: ``TRITON_INTERPRET=1`` was set before
    ``triton`` was imported (its own library functions are interpreted then too)."""
    from triton.language import standard
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(standard.sum, InterpretedFunction)


def _kernels_for(tensor: torch.Tensor) -> Any:
    kind = tensor.device.type
    kernels = _kernels()
    if kind == "cuda":
        return kernels
    if kind == "cpu":
        if os.environ.get("TRITON_INTERPRET") != "1":
            raise RuntimeError(
                "JDT_ARRAY_TORCH_KERNEL=triton runs its kernels on CUDA tensors; on CPU "
                "tensors only in Triton's interpreter, which is slow and meant for "
                "tests: set TRITON_INTERPRET=1 before triton is imported, or "
                "JDT_ARRAY_TORCH_KERNEL=auto for the native CPU kernels"
            )
        if not _interpreting():
            raise RuntimeError(
                "TRITON_INTERPRET=1 was set after triton was imported, so Triton is "
                "not in its interpreter and cannot run on CPU tensors: set it in the "
                "environment of the process (before anything imports triton)"
            )
        return kernels
    raise RuntimeError(
        f"JDT_ARRAY_TORCH_KERNEL=triton runs on CUDA tensors (and CPU tensors under "
        f"TRITON_INTERPRET=1), got a tensor on {tensor.device}; use "
        f"JDT_ARRAY_TORCH_KERNEL=auto"
    )


class _View(NamedTuple):
    tensor: torch.Tensor  # (B, C, N) or (B, N, C), a view where the layout allows
    strides: tuple[int, int, int]  # in (B, C, N) order


def _by_class(t: torch.Tensor, class_axis: int) -> _View:
    """``t`` (classes on ``class_axis``) as a (B, C, N) view with its strides: the
    classes last or first in memory, whichever ``t`` has, without a copy when ``t`` is
    dense (a copy otherwise)."""
    b, c = t.shape[0], t.shape[class_axis]
    n = math.prod(t.shape) // max(b * c, 1)
    last = t.movedim(class_axis, -1)
    if last.is_contiguous():
        v = last.reshape(b, n, c)
        return _View(v, (v.stride(0), v.stride(2), v.stride(1)))
    v = t.movedim(class_axis, 1).reshape(b, c, n)  # a copy if t is not dense
    return _View(v, (v.stride(0), v.stride(1), v.stride(2)))


def _by_pixel(t: torch.Tensor | None) -> tuple[torch.Tensor | None, tuple[int, int]]:
    """A (B, *spatial) label or mask as a (B, N) tensor and its strides; booleans as
    bytes (Triton loads them as such)."""
    if t is None:
        return None, (0, 0)
    flat = t.reshape(t.shape[0], math.prod(t.shape[1:]))
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    return flat, (flat.stride(0), flat.stride(1))


class _Inputs(NamedTuple):
    """Everything both passes read, as kernel arguments."""

    logits: _View
    label: torch.Tensor
    label_strides: tuple[int, int, int]
    keep: torch.Tensor | None
    keep_strides: tuple[int, int]
    flags: dict  # the compile-time switches of the kernels
    shape: tuple[int, int, int]  # B, C, N
    block: tuple[int, int]  # classes and pixels of a tile


def _inputs(logits, label, keep, class_axis, norm, ignore_index) -> _Inputs:
    view = _by_class(logits, class_axis)
    b, c = logits.shape[0], logits.shape[class_axis]
    n = math.prod(logits.shape) // max(b * c, 1)
    hard = not label.is_floating_point()
    if hard:
        flat, (l_b, l_n) = _by_pixel(label)
        label_view, label_strides = flat, (l_b, 0, l_n)
    else:
        soft = _by_class(label, class_axis)
        label_view, label_strides = soft.tensor, soft.strides
    keep_view, keep_strides = _by_pixel(keep)
    block_c = _next_power_of_2(c)
    block_n = max(1, min(_MAX_PIXELS, _TILE // block_c))
    flags = dict(HARD=hard, HAS_KEEP=keep is not None,
                 HAS_IGNORE=hard and ignore_index is not None, L1=norm == 1)  # fmt: skip
    return _Inputs(view, label_view, label_strides, keep_view, keep_strides, flags,
                   (b, c, n), (block_c, block_n))  # fmt: skip


def _next_power_of_2(value: int) -> int:
    return 1 << max(value - 1, 0).bit_length()


def _common_args(inputs: _Inputs) -> tuple:
    # A missing keep mask: any valid pointer (never read, HAS_KEEP is off).
    keep = inputs.keep if inputs.keep is not None else inputs.label
    return inputs.logits.tensor, inputs.label, keep


def _strides(inputs: _Inputs) -> tuple:
    return (*inputs.logits.strides, *inputs.label_strides, *inputs.keep_strides)


def statistics(
    logits: torch.Tensor,
    label: torch.Tensor,
    keep: torch.Tensor | None,
    class_axis: int,
    norm: float,
    ignore_index: int | None,
) -> tuple[torch.Tensor, ...]:
    """Pass 1: (|x|, |y|, |x - y|, max y), each (B, C) float32, and the cross-entropy
    sum and the number of kept pixels of each image, each (B,)."""
    inputs = _inputs(logits, label, keep, class_axis, norm, ignore_index)
    b, c, n = inputs.shape
    block_c, block_n = inputs.block
    device = logits.device
    if b * n == 0:
        cards = [torch.zeros((b, c), dtype=torch.float32, device=device) for _ in range(4)]
        return (*cards, *[torch.zeros(b, dtype=torch.float32, device=device)
                          for _ in range(2)])  # fmt: skip
    runs = max(1, min(_cdiv(n, block_n), _cdiv(_programs(device), b)))
    per_run = _cdiv(_cdiv(n, runs), block_n) * block_n
    runs = _cdiv(n, per_run)
    kernels = _kernels_for(logits)
    partial = torch.empty((runs, b, kernels.NUM_STATS, c), dtype=torch.float32,
                          device=device)  # fmt: skip
    ce = torch.empty((runs, b, kernels.NUM_CE), dtype=torch.float32, device=device)
    kernels.statistics_kernel[(runs, b)](
        *_common_args(inputs), partial, ce, b, n, c,
        0 if ignore_index is None else ignore_index, float(norm), per_run,
        *_strides(inputs), **inputs.flags, BLOCK_C=block_c, BLOCK_N=block_n,
        num_warps=_warps(inputs),
    )  # fmt: skip
    # Fresh tensors each (an operator's outputs may not alias one another).
    sums = partial[:, :, :3].sum(0).unbind(1)
    ce_sum, count = ce.sum(0).unbind(1)
    label_max = partial[:, :, 3].amax(0)
    return (*[s.clone() for s in sums], label_max, ce_sum.clone(), count.clone())


def gradient(
    logits: torch.Tensor,
    label: torch.Tensor,
    keep: torch.Tensor | None,
    g_prob_card: torch.Tensor,
    g_diff_card: torch.Tensor,
    g_ce: torch.Tensor | None,
    class_axis: int,
    norm: float,
    ignore_index: int | None,
) -> torch.Tensor:
    """Pass 2: the logits' gradient of sum(g_prob_card |x|) + sum(g_diff_card |x - y|)
    (+ sum_b g_ce[b] times image b's cross-entropy sum), in the logits' dtype and
    memory layout."""
    inputs = _inputs(logits, label, keep, class_axis, norm, ignore_index)
    b, c, n = inputs.shape
    block_c, block_n = inputs.block
    grad = gradient_buffer(logits, class_axis)
    if b * n == 0:
        return grad.zero_()
    out = _by_class(grad, class_axis)
    g_prob = g_prob_card.to(torch.float32).contiguous()
    g_diff = g_diff_card.to(torch.float32).contiguous()
    with_ce = g_ce is not None
    g_ce = g_ce.to(torch.float32).contiguous() if with_ce else g_prob
    _kernels_for(logits).gradient_kernel[(_cdiv(n, block_n), b)](
        *_common_args(inputs), g_prob, g_diff, g_ce, out.tensor, n, c,
        0 if ignore_index is None else ignore_index, float(norm),
        *_strides(inputs), *out.strides, **inputs.flags, WITH_CE=with_ce,
        BLOCK_C=block_c, BLOCK_N=block_n, num_warps=_warps(inputs),
    )  # fmt: skip
    return grad


def gradient_buffer(logits: torch.Tensor, class_axis: int) -> torch.Tensor:
    """The empty gradient of ``logits``: in their memory layout where the kernels
    write it in place (classes first or last in memory), contiguous otherwise (the
    fake implementation of the operator allocates the same)."""
    grad = torch.empty_like(logits)
    if any(grad.movedim(class_axis, to).is_contiguous() for to in (-1, 1)):
        return grad
    return torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)


def _warps(inputs: _Inputs) -> int:
    """Warps per program: a full tile holds several float32 arrays of ``_TILE``
    elements, which 8 warps keep in registers without spilling (an untuned start:
    no GPU has timed the kernels yet)."""
    block_c, block_n = inputs.block
    return 8 if block_c * block_n >= _TILE else 4


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


@functools.cache
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _programs(device: torch.device) -> int:
    """Programs of the statistics pass: a few per multiprocessor on CUDA, a handful
    in the interpreter (each one a Python loop)."""
    if device.type != "cuda":
        return 4
    return 4 * _multiprocessors(device.index if device.index is not None else 0)
