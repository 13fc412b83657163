"""Launching the Triton kernels of ``triton_jdt.py`` on PyTorch tensors: which copy of
the kernels runs (compiled for CUDA, interpreted for CPU), the (B, C, N) views with
their strides, the tiles and grids, and the list of every specialization this module
can launch (``specializations``, which the compile report and its tests compile for
real GPUs).

Nothing here reads a tensor's values: every launch is asynchronous on CUDA.
"""

from __future__ import annotations

import functools
import math
import os
import threading
from collections.abc import Iterator
from typing import Any, NamedTuple

import torch

__all__ = ["MAX_IMAGE_ELEMENTS", "MAX_REGISTERS", "TILES", "Tile", "gradient",
           "gradient_buffer", "specializations", "statistics", "tile_for"]  # fmt: skip


class Tile(NamedTuple):
    """The compile-time shape of a launch: one tile holding every class (``one_tile``)
    or several of ``block_c`` classes swept in turn, ``block_n`` pixels, and the warps
    of a program."""

    one_tile: bool
    block_c: int
    block_n: int
    warps: int


# Registers per thread at most (``maxnreg``): 4 programs of 4 warps then share the
# 65,536 registers of a multiprocessor, 16 warps resident (25% occupancy) at least.
# Without the cap ptxas sometimes trades a few bytes of spills for more programs.
MAX_REGISTERS = 128
# The tiles the launcher picks from, by kernel and number of classes: the first
# one-tile entry that holds every class, else the multi-tile entry of the fewest
# classes that holds them all, else the last. Chosen from the compile report
# (``jdt_array._tools.kernel_report``): every kernel compiles within MAX_REGISTERS
# without spills on sm_80, sm_90a and sm_100a, for aligned and unaligned inputs.
# * The gradient pass holds one tile of up to 32 classes (1024 elements, 8 per
#   thread at 4 warps) in registers; beyond, it sweeps tiles of 16 x 32 (a tile of
#   16 x 64 spills on unaligned channels-last soft labels).
# * The statistics pass also carries four per-class sums per program across its
#   pixel blocks: it holds one tile only up to 4 classes, and otherwise sweeps tiles
#   (its per-class sums then live in its row of the partial-sum buffer); its tiles
#   are 512 elements.
TILES = {
    "statistics": (
        Tile(True, 2, 256, 4),
        Tile(True, 4, 128, 4),
        Tile(False, 8, 64, 4),
        Tile(False, 16, 32, 4),
    ),
    "gradient": (
        Tile(True, 2, 512, 4),
        Tile(True, 4, 256, 4),
        Tile(True, 8, 128, 4),
        Tile(True, 16, 64, 4),
        Tile(True, 32, 32, 4),
        Tile(False, 16, 32, 4),
    ),
}
# Offsets within one image are int32 (fewer registers than int64): the fused passes
# take images of fewer elements (C x pixels) than this; larger ones go native.
MAX_IMAGE_ELEMENTS = 2**31 - 1
# Programs of the statistics pass per multiprocessor (each sums a run of pixels).
_PROGRAMS_PER_SM = 8
# Triton's interpreter keeps the launch grid in module state: two threads launching
# at once corrupt each other's grid (``InterpreterError: y >= grid_dim[1]``), so
# interpreted launches are serialized. Compiled launches are thread-safe.
_INTERPRETER_LOCK = threading.Lock()


def tile_for(kernel: str, num_classes: int) -> Tile:
    """The tile of ``kernel`` ("statistics" or "gradient") over ``num_classes``
    classes (a pure function of them)."""
    tiles = TILES[kernel]
    for tile in tiles:
        if num_classes <= tile.block_c:
            return tile
    return tiles[-1]


# -- the kernels, compiled or interpreted ----------------------------------------------


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


def interpreting() -> bool:
    """Whether Triton runs in its interpreter: ``TRITON_INTERPRET=1`` was set before
    ``triton`` was imported (its own library functions are interpreted then too)."""
    from triton.language import standard
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(standard.sum, InterpretedFunction)


def _launch(kernel: Any, grid: tuple, *args: Any, **options: Any) -> Any:
    """Launch ``kernel`` on ``grid`` (and return what Triton returns: the compiled
    kernel); in Triton's interpreter, one thread at a time."""
    if interpreting():
        with _INTERPRETER_LOCK:
            return kernel[grid](*args, **options)
    return kernel[grid](*args, **options)


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
        if not interpreting():
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


# -- views, strides and dtypes ---------------------------------------------------------


class _View(NamedTuple):
    """A (B, C, N) array as the kernels read it: its bytes, whether the classes are
    last in memory, the byte strides of an image and of the non-unit axis (the pixels
    when the classes are last, else the classes), and its dtype code."""

    data: torch.Tensor  # a uint8 tensor at the array's first byte
    classes_last: bool
    stride_b: int
    stride: int
    code: int


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """A uint8 tensor at ``t``'s first byte, over its storage: the kernels cast the
    pointer to the dtype they are told (one compiled kernel for every dtype)."""
    offset = t.storage_offset() * t.element_size()
    return t.new_empty(0, dtype=torch.uint8).set_(t.untyped_storage(), offset, (1,), (1,))


def _by_class(t: torch.Tensor, class_axis: int, classes_last: bool | None = None) -> _View:
    """``t`` (classes on ``class_axis``, 1 or the last) as the kernels read it: in place
    when its memory holds the classes last or first (``classes_last`` when given),
    else a copy in that layout (by default the one of ``class_axis``)."""
    b, c = t.shape[0], t.shape[class_axis]
    n = math.prod(t.shape) // max(b * c, 1)
    size = t.element_size()
    last = t.movedim(class_axis, -1)
    first = t.movedim(class_axis, 1)
    if classes_last is not False and last.is_contiguous():
        v = last.reshape(b, n, c)
        return _View(_bytes(v), True, v.stride(0) * size, v.stride(1) * size, _code(t))
    if classes_last is not True and first.is_contiguous():
        v = first.reshape(b, c, n)
        return _View(_bytes(v), False, v.stride(0) * size, v.stride(1) * size, _code(t))
    if classes_last is None:
        classes_last = class_axis == t.ndim - 1
    if classes_last:
        v = last.contiguous().reshape(b, n, c)
        return _View(_bytes(v), True, v.stride(0) * size, v.stride(1) * size, _code(t))
    v = first.contiguous().reshape(b, c, n)
    return _View(_bytes(v), False, v.stride(0) * size, v.stride(1) * size, _code(t))


def _code(t: torch.Tensor) -> int:
    codes = _kernels().FLOAT_CODES if t.is_floating_point() else _kernels().INT_CODES
    return codes[str(t.dtype).removeprefix("torch.")]


def _by_pixel(t: torch.Tensor | None) -> tuple[torch.Tensor | None, tuple[int, int]]:
    """A (B, *spatial) label or mask as a (B, N) tensor and its strides (elements);
    booleans as bytes (Triton loads them as such)."""
    if t is None:
        return None, (0, 0)
    flat = t.reshape(t.shape[0], math.prod(t.shape[1:]))
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    return flat, (flat.stride(0), flat.stride(1))


class _Inputs(NamedTuple):
    """Everything both passes read, as kernel arguments."""

    logits: _View
    pointers: tuple  # logits, soft label, hard label ids, keep mask
    strides: tuple  # z_b, z_s, y_b, y_s, h_b, h_n, k_b, k_n
    codes: tuple  # logits_code, label_code, has_keep, has_ignore
    constants: dict  # the compile-time switches and the tile
    tile: Tile
    shape: tuple[int, int, int]  # B, C, N


def _inputs(kernel, logits, label, keep, class_axis, ignore_index) -> _Inputs:
    view = _by_class(logits, class_axis)
    b, c, n = _shape(logits, class_axis)
    hard = not label.is_floating_point()
    if hard:
        ids, (h_b, h_n) = _by_pixel(label)
        soft, y_b, y_s, label_code = view.data, 0, 16, _code(label)
        ids = _bytes(ids)
    else:
        soft_view = _by_class(label, class_axis, view.classes_last)
        soft, y_b, y_s, label_code = (soft_view.data, soft_view.stride_b, soft_view.stride,
                                      soft_view.code)  # fmt: skip
        ids, h_b, h_n = view.data, 0, 0
    keep_flat, (k_b, k_n) = _by_pixel(keep)
    # A missing keep mask: any valid pointer (never read, has_keep is 0).
    keep_ptr = keep_flat if keep_flat is not None else ids
    tile = tile_for(kernel, c)
    constants = dict(HARD=hard, CLASSES_LAST=view.classes_last, ONE_TILE=tile.one_tile,
                     BLOCK_C=tile.block_c, BLOCK_N=tile.block_n)  # fmt: skip
    has_ignore = hard and ignore_index is not None
    codes = (view.code, label_code, int(keep is not None), int(has_ignore))
    return _Inputs(view, (view.data, soft, ids, keep_ptr),
                   (view.stride_b, view.stride, y_b, y_s, h_b, h_n, k_b, k_n), codes,
                   constants, tile, (b, c, n))  # fmt: skip


def _shape(logits: torch.Tensor, class_axis: int) -> tuple[int, int, int]:
    """(B, C, N): images, classes, pixels of an image."""
    b, c = logits.shape[0], logits.shape[class_axis]
    return b, c, math.prod(logits.shape) // max(b * c, 1)


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


# -- the two passes --------------------------------------------------------------------


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
    b, c, n = _shape(logits, class_axis)
    device = logits.device
    if b * n == 0:
        cards = [torch.zeros((b, c), dtype=torch.float32, device=device) for _ in range(4)]
        return (*cards, *[torch.zeros(b, dtype=torch.float32, device=device)
                          for _ in range(2)])  # fmt: skip
    inputs = _inputs("statistics", logits, label, keep, class_axis, ignore_index)
    block_n = inputs.tile.block_n
    runs = max(1, min(_cdiv(n, block_n), _cdiv(_programs(device), b)))
    per_run = _cdiv(_cdiv(n, runs), block_n) * block_n
    runs = _cdiv(n, per_run)
    kernels = _kernels_for(logits)
    partial = torch.zeros((runs, b, kernels.NUM_STATS, c), dtype=torch.float32,
                          device=device)  # fmt: skip
    ce = torch.empty((runs, b, kernels.NUM_CE), dtype=torch.float32, device=device)
    _launch(
        kernels.statistics_kernel, (runs, b), *inputs.pointers, partial, ce, b, n, c,
        _ignore(ignore_index), float(norm), per_run, *inputs.strides, *inputs.codes,
        **inputs.constants, num_warps=inputs.tile.warps, maxnreg=MAX_REGISTERS,
    )  # fmt: skip
    sums = partial[:, :, :3].sum(0)
    prob_card, label_card, third = sums.unbind(1)
    if inputs.constants["HARD"]:
        # A hard label: max y is whether a pixel has the class; for the L1 norm the
        # third row is the overlap sum x_y, and |x - y| = |x| + |y| - 2 x_y.
        label_max = (label_card > 0).to(torch.float32)
        diff_card = prob_card + label_card - 2 * third if norm == 1 else third.clone()
    else:
        label_max = partial[:, :, 3].amax(0)
        diff_card = third.clone()
    ce_sum, count = ce.sum(0).unbind(1)
    # Fresh tensors each (an operator's outputs may not alias one another).
    return (prob_card.clone(), label_card.clone(), diff_card, label_max, ce_sum.clone(),
            count.clone())  # fmt: skip


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
    grad = gradient_buffer(logits, class_axis)
    b, c, n = _shape(logits, class_axis)
    if b * n == 0:
        return grad.zero_()
    inputs = _inputs("gradient", logits, label, keep, class_axis, ignore_index)
    out = _by_class(grad, class_axis, inputs.logits.classes_last)
    g_prob = g_prob_card.to(torch.float32).contiguous()
    g_diff = g_diff_card.to(torch.float32).contiguous()
    if g_ce is None:
        g_ce = torch.zeros(b, dtype=torch.float32, device=logits.device)
    g_ce = g_ce.to(torch.float32).contiguous()
    _launch(
        _kernels_for(logits).gradient_kernel, (_cdiv(n, inputs.tile.block_n), b),
        *inputs.pointers, g_prob, g_diff, g_ce, out.data, b, n, c, _ignore(ignore_index),
        float(norm), *inputs.strides, out.stride_b, out.stride, *inputs.codes,
        **inputs.constants, num_warps=inputs.tile.warps, maxnreg=MAX_REGISTERS,
    )  # fmt: skip
    return grad


def _ignore(ignore_index: int | None) -> int:
    return 0 if ignore_index is None else ignore_index


def gradient_buffer(logits: torch.Tensor, class_axis: int) -> torch.Tensor:
    """The empty gradient of ``logits``: in their memory layout where the classes are
    first or last in it (the kernels write it in place), contiguous otherwise, which
    for class axis 1 or the last is again one of the two (the fake implementation of
    the operator allocates the same)."""
    grad = torch.empty_like(logits)
    if any(grad.movedim(class_axis, to).is_contiguous() for to in (-1, 1)):
        return grad
    return torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)


@functools.cache
def _multiprocessors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _programs(device: torch.device) -> int:
    """Programs of the statistics pass: a few per multiprocessor on CUDA, a handful
    in the interpreter (each one a Python loop)."""
    if device.type != "cuda":
        return 4
    index = device.index if device.index is not None else torch.cuda.current_device()
    return _PROGRAMS_PER_SM * _multiprocessors(index)


# -- every specialization, for the compile report -------------------------------------


class Specialization(NamedTuple):
    """One compiled form of a kernel the launcher can run: the kernel's name, its
    compile-time arguments, the warps, and whether Triton's own specialization found
    the logits' pointer and byte strides 16-byte aligned (``aligned``: as PyTorch
    allocates; a view at an odd offset or an odd number of pixels or classes gives the
    other, which vectorizes its loads less)."""

    kernel: str
    constants: dict
    warps: int
    aligned: bool

    @property
    def name(self) -> str:
        k = self.constants
        kind = "hard" if k["HARD"] else "soft"
        layout = "last" if k["CLASSES_LAST"] else "first"
        tiles = "1x" if k["ONE_TILE"] else "nx"
        align = "" if self.aligned else "-unaligned"
        return (f"{self.kernel}-{kind}-{layout}-{tiles}{k['BLOCK_C']}x{k['BLOCK_N']}"
                f"-w{self.warps}{align}")  # fmt: skip


def specializations(
    *, aligned: tuple[bool, ...] = (True, False)
) -> Iterator[Specialization]:
    """Every (kernel, compile-time arguments, warps) the launcher can run: both
    kernels, hard and soft labels, both layouts, every tile of ``TILES``; for each,
    the aligned and the unaligned form of Triton's own specialization."""
    for kernel in ("statistics", "gradient"):
        for tile in TILES[kernel]:
            for hard in (True, False):
                for classes_last in (False, True):
                    constants = dict(HARD=hard, CLASSES_LAST=classes_last,
                                     ONE_TILE=tile.one_tile, BLOCK_C=tile.block_c,
                                     BLOCK_N=tile.block_n)  # fmt: skip
                    for align in aligned:
                        yield Specialization(kernel, constants, tile.warps, align)


# The kernels' pointer arguments (every other non-constexpr argument is annotated or
# a float), and those Triton specializes on their 16-byte alignment.
POINTERS = {"logits_ptr": "*u8", "label_ptr": "*u8", "ids_ptr": "*u8", "keep_ptr": "*u8",
            "partial_ptr": "*fp32", "ce_ptr": "*fp32", "g_prob_ptr": "*fp32",
            "g_diff_ptr": "*fp32", "g_ce_ptr": "*fp32", "grad_ptr": "*u8"}  # fmt: skip
ALIGNED = ("logits_ptr", "label_ptr", "grad_ptr", "z_b", "z_s", "y_b", "y_s", "o_b", "o_s")
