"""The Triton kernels (``JDT_ARRAY_TORCH_KERNEL=triton``): their statistics and
gradients against float64 formulas written here from the definitions, the losses
against the float64 references and the other kernel sets, the cases they decline, and
their errors.

Where CUDA is, the tests run the compiled kernels on CUDA tensors; elsewhere (CI) on
CPU tensors in Triton's interpreter, which ``conftest.py`` turns on.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from _support.family_reference import cross_entropy_reference  # noqa: E402
from _support.reference import jdt_loss_reference  # noqa: E402

import jdt_array  # noqa: E402
from jdt_array._kernels import triton_launch  # noqa: E402
from jdt_array.backends import torch as jt  # noqa: E402

IGNORE = 255
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def triton_kernels(monkeypatch):
    monkeypatch.setenv("JDT_ARRAY_TORCH_KERNEL", "triton")


# -- float64 statistics, from the definitions ----------------------------------------


def reference_statistics(logits, label, keep, class_axis, norm, ignore_index):
    """(|x|^p, |y|^p, |x - y|^p, max y) per (image, class) and the cross-entropy sum
    and kept-pixel count per image, in float64 with autograd, by explicit loops."""
    logits, label = logits.cpu(), label.cpu()
    keep = None if keep is None else keep.cpu()
    z = logits.double().movedim(class_axis, 1)
    b, c = z.shape[:2]
    n = math.prod(z.shape[2:])
    z = z.reshape(b, c, n)
    x = torch.exp(z - z.amax(1, keepdim=True)) if n else z
    x = x / x.sum(1, keepdim=True) if n else x
    kept = torch.ones((b, n), dtype=torch.bool)
    if keep is not None:
        kept &= keep.reshape(b, n)
    if label.is_floating_point():
        y = label.double().movedim(class_axis, 1).reshape(b, c, n)
    else:
        ids = label.reshape(b, n)
        if ignore_index is not None:
            kept &= ids != ignore_index
        y = torch.stack([(ids == k).double() for k in range(c)], dim=1)
    w = kept.unsqueeze(1).expand(b, c, n)
    zero = torch.zeros((), dtype=torch.float64)
    card = lambda v: torch.where(w, v, zero).pow(norm).sum(2)  # noqa: E731
    log_x = torch.log(torch.where(w, x, 1.0))
    ce = -torch.where(w & (y > 0), y * log_x, zero).sum((1, 2))
    label_max = torch.where(w, y, zero).amax(2) if n else zero.expand(b, c)
    return (card(x), card(y), card((x - y).abs()), label_max, ce,
            kept.double().sum(1))  # fmt: skip


def make_case(shape, class_axis, *, hard, keep, ignore, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    axis = class_axis % len(shape)
    c = shape[axis]
    logits = (2 * torch.randn(shape, generator=g)).to(dtype)
    pixel_shape = shape[:axis] + shape[axis + 1 :]
    if hard:
        label = torch.randint(0, c, pixel_shape, generator=g)
        if ignore:
            label = torch.where(torch.rand(pixel_shape, generator=g) < 0.3, IGNORE, label)
    else:
        label = torch.softmax(3 * torch.randn(shape, generator=g), dim=axis).to(dtype)
    keep_mask = torch.rand(pixel_shape, generator=g) < 0.7 if keep else None
    on = lambda t: None if t is None else t.to(DEVICE)  # noqa: E731
    return on(logits), on(label), on(keep_mask)


SHAPES = {
    "C5-odd-pixels": ((2, 5, 7, 9), 1),
    "C1": ((2, 1, 6, 5), 1),
    "C300": ((1, 300, 3, 5), 1),
    "C19-channels-last": ((2, 6, 7, 19), -1),
    "3d": ((2, 4, 3, 5, 6), 1),
    "3d-channels-last": ((1, 3, 4, 5, 7), -1),
    "no-spatial-axes": ((6, 4), 1),
    "B0": ((0, 5, 4, 4), 1),
    "empty-image": ((2, 3, 0, 4), 1),
}
CASES = [
    pytest.param(shape, axis, hard, keep, ignore, norm, dtype,
                 id=f"{name}-{'hard' if hard else 'soft'}{'-keep' if keep else ''}"
                 f"{'-ignore' if ignore else ''}-p{norm}-{str(dtype)[6:]}")
    for name, (shape, axis) in SHAPES.items()
    for hard, keep, ignore, norm, dtype in [
        (True, False, False, 1, torch.float32),
        (True, True, True, 1, torch.float32),
        (True, False, True, 2, torch.float16),
        (False, False, False, 1, torch.float32),
        (False, True, False, 1.5, torch.bfloat16),
    ]
]  # fmt: skip
TOLERANCE = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


def _close(actual, expected, tol):
    atol = tol * max(1.0, expected.numel() ** 0.5)
    got = actual.detach().cpu().double().numpy()
    np.testing.assert_allclose(got, expected.detach().numpy(), rtol=tol, atol=atol)


@pytest.mark.parametrize("shape, class_axis, hard, keep, ignore, norm, dtype", CASES)
def test_fused_statistics_and_gradient_equal_float64_formulas(
    triton_kernels, shape, class_axis, hard, keep, ignore, norm, dtype
):
    logits, label, keep_mask = make_case(shape, class_axis, hard=hard, keep=keep,
                                         ignore=ignore, dtype=dtype)  # fmt: skip
    axis = class_axis % logits.ndim
    ignore_index = IGNORE if ignore else None
    z = logits.clone().requires_grad_(True)
    got = torch.ops.jdt_array.fused_statistics(z, label, keep_mask, axis, float(norm),
                                               ignore_index)  # fmt: skip
    z64 = logits.cpu().double().requires_grad_(True)
    want = reference_statistics(z64, label, keep_mask, axis, norm, ignore_index)
    tol = TOLERANCE[dtype]
    for g, w in zip(got, want, strict=True):
        assert g.dtype == torch.float32 and g.shape == w.shape
        _close(g, w, tol)
    # The gradient of a random combination of the differentiable outputs.
    gen = torch.Generator().manual_seed(1)
    weights = [torch.randn(w.shape, generator=gen, dtype=torch.float64) for w in want]
    used = (0, 2, 4)  # |x|, |x - y|, cross-entropy (the others are constant in z)
    total = sum((got[i].double().cpu() * weights[i]).sum() for i in used)
    total_ref = sum((want[i] * weights[i]).sum() for i in used)
    (grad,) = torch.autograd.grad(total, z)
    (grad_ref,) = torch.autograd.grad(total_ref, z64)
    assert grad.dtype == logits.dtype and grad.shape == logits.shape
    _close(grad, grad_ref, 10 * tol)


def test_a_fully_ignored_batch_gives_zero_statistics_and_gradient(triton_kernels):
    logits = torch.randn(2, 4, 5, 6, device=DEVICE, requires_grad=True)
    label = torch.full((2, 5, 6), IGNORE, device=DEVICE)
    stats = torch.ops.jdt_array.fused_statistics(logits, label, None, 1, 1.0, IGNORE)
    assert all(float(s.abs().sum()) == 0 for s in stats)
    (grad,) = torch.autograd.grad(stats[0].sum() + stats[2].sum() + stats[4].sum(), logits)
    assert float(grad.abs().sum()) == 0


def test_nan_and_inf_at_dropped_pixels_stay_inert(triton_kernels):
    logits, label, keep = make_case((2, 5, 6, 7), 1, hard=True, keep=True, ignore=True,
                                    dtype=torch.float32)  # fmt: skip
    dropped = ~keep | (label == IGNORE)
    poisoned = torch.where(dropped.unsqueeze(1), float("nan"), logits)
    poisoned[:, 0] = torch.where(dropped, float("inf"), poisoned[:, 0])
    outs = []
    for z in (logits, poisoned):
        z = z.clone().requires_grad_(True)
        loss = jdt_array.ce_jdt_loss(z, label, keep_mask=keep, ignore_index=IGNORE)
        outs.append((loss, *torch.autograd.grad(loss, z)))
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1])
    assert float(outs[1][1][dropped.unsqueeze(1).expand_as(logits)].abs().sum()) == 0


def test_nan_at_a_kept_pixel_gives_nan(triton_kernels):
    logits, label, _ = make_case((2, 5, 6, 7), 1, hard=True, keep=False, ignore=False,
                                 dtype=torch.float32)  # fmt: skip
    logits[1, 2, 3, 4] = float("nan")
    z = logits.requires_grad_(True)
    loss = jdt_array.jaccard_loss(z, label)
    (grad,) = torch.autograd.grad(loss, z)
    assert torch.isnan(loss) and torch.isnan(grad).any()


# -- the losses through the fused kernels ------------------------------------------

LOSS_OPTIONS = [
    pytest.param({}, id="jaccard-mIoUD"),
    pytest.param({"mIoUD": 0.0, "mIoUI": 0.5, "mIoUC": 0.5}, id="mIoUI-mIoUC"),
    pytest.param({"alpha": 0.5, "beta": 0.5, "norm": 2}, id="dice-L2"),
    pytest.param(
        {"alpha": 0.3, "beta": 0.7, "gamma": 1.5, "log_loss": True}, id="tversky-focal-log"
    ),
    pytest.param({"class_weights": [1.0, 2.0, 0.5, 1.0, 3.0]}, id="class-weights"),
]


@pytest.mark.parametrize("options", LOSS_OPTIONS)
@pytest.mark.parametrize("hard", [True, False], ids=["hard", "soft"])
@pytest.mark.parametrize("class_axis", [1, -1])
def test_jdt_loss_through_triton_equals_the_float64_reference(
    triton_kernels, options, hard, class_axis
):
    shape = (2, 5, 6, 7) if class_axis == 1 else (2, 6, 7, 5)
    logits, label, keep = make_case(shape, class_axis, hard=hard, keep=True,
                                    ignore=hard, dtype=torch.float32)  # fmt: skip
    extra = {"ignore_index": IGNORE} if hard else {}
    loss = jdt_array.jdt_loss(logits, label, keep_mask=keep, class_axis=class_axis,
                              **extra, **options)  # fmt: skip
    want = jdt_loss_reference(*_host(logits, label), keep_mask=_host(keep)[0],
                              class_axis=class_axis, **extra, **options)  # fmt: skip
    np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hard", [True, False], ids=["hard", "soft"])
def test_ce_jdt_loss_through_triton_equals_the_float64_references(triton_kernels, hard):
    logits, label, keep = make_case((2, 5, 6, 7), 1, hard=hard, keep=True, ignore=hard,
                                    dtype=torch.float32)  # fmt: skip
    extra = {"ignore_index": IGNORE} if hard else {}
    loss = jdt_array.ce_jdt_loss(logits, label, keep_mask=keep, **extra)
    arrays, host_keep = _host(logits, label), _host(keep)[0]
    ce = cross_entropy_reference(*arrays, keep_mask=host_keep, **extra)
    jdt = jdt_loss_reference(*arrays, keep_mask=host_keep, **extra)
    np.testing.assert_allclose(float(loss), 0.25 * ce + 0.75 * jdt, rtol=1e-5)


def _host(*tensors):
    return [t.cpu().numpy() for t in tensors]


MODULES = [
    pytest.param(lambda: jt.JaccardLoss(ignore_index=IGNORE), id="JaccardLoss"),
    pytest.param(
        lambda: jt.DiceLoss(ignore_index=IGNORE, mIoUI=1.0, mIoUD=0.0), id="DiceLoss-mIoUI"
    ),
    pytest.param(
        lambda: jt.TverskyLoss(alpha=0.3, beta=0.7, ignore_index=IGNORE), id="TverskyLoss"
    ),
    pytest.param(
        lambda: jt.JDTLoss(ignore_index=IGNORE, backward="autodiff"), id="JDTLoss-autodiff"
    ),
    pytest.param(
        lambda: jt.CEJDTLoss(ignore_index=IGNORE, class_weights=[1, 2, 1, 1, 3]),
        id="CEJDTLoss",
    ),
]


@pytest.mark.parametrize("module", MODULES)
def test_torch_modules_give_the_native_values_and_gradients(
    monkeypatch, triton_kernels, module
):
    logits, label, keep = make_case((2, 5, 6, 7), 1, hard=True, keep=True, ignore=True,
                                    dtype=torch.float32)  # fmt: skip
    results = {}
    for choice in ("triton", "native"):
        monkeypatch.setenv("JDT_ARRAY_TORCH_KERNEL", choice)
        z = logits.clone().requires_grad_(True)
        loss = module()(z, label, keep)
        loss.backward()
        results[choice] = (loss.detach(), z.grad)
    torch.testing.assert_close(results["triton"][0], results["native"][0])
    torch.testing.assert_close(results["triton"][1], results["native"][1])


def _uses_the_fused_operator(loss) -> bool:
    seen, stack = set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if "fused_statistics" in node.name():
            return True
        stack.extend(f for f, _ in node.next_functions)
    return False


def test_the_triton_choice_runs_the_fused_operator_and_native_does_not(monkeypatch):
    logits = torch.randn(2, 5, 4, 4, device="meta", requires_grad=True)
    label = torch.zeros(2, 4, 4, dtype=torch.long, device="meta")
    for choice, fused in (("triton", True), ("native", False), ("auto", False)):
        monkeypatch.setenv("JDT_ARRAY_TORCH_KERNEL", choice)
        assert _uses_the_fused_operator(jdt_array.jaccard_loss(logits, label)) is fused
        assert _uses_the_fused_operator(jt.JaccardLoss()(logits, label)) is fused


def test_declined_cases_fall_back_to_the_native_kernels(triton_kernels):
    # float64 logits, a soft label with a gradient and torch.func run natively.
    logits, label, _ = make_case((2, 4, 5, 5), 1, hard=False, keep=False, ignore=False,
                                 dtype=torch.float64)  # fmt: skip
    assert not _uses_the_fused_operator(
        jdt_array.jaccard_loss(logits.requires_grad_(True), label)
    )
    soft = label.float().requires_grad_(True)
    loss = jdt_array.jaccard_loss(logits.float().requires_grad_(True), soft)
    assert not _uses_the_fused_operator(loss)
    assert torch.autograd.grad(loss, soft)[0].abs().sum() > 0
    grad, value = torch.func.grad_and_value(
        lambda z: jdt_array.jaccard_loss(z, label.float())
    )(logits.float().detach())
    want = jdt_array.jaccard_loss(logits.float(), label.float())
    np.testing.assert_allclose(float(value), float(want), rtol=1e-6)
    assert grad.shape == logits.shape and grad.abs().sum() > 0


def test_triton_on_cpu_without_the_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv("JDT_ARRAY_TORCH_KERNEL", "triton")
    logits, label = torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        jdt_array.jaccard_loss(logits, label)


def test_an_unknown_kernel_choice_names_the_variable(monkeypatch):
    monkeypatch.setenv("JDT_ARRAY_TORCH_KERNEL", "cuda")
    with pytest.raises(ValueError, match="JDT_ARRAY_TORCH_KERNEL must be one of"):
        jdt_array.jaccard_loss(torch.randn(2, 3, 4), torch.zeros(2, 4, dtype=torch.long))


@pytest.mark.parametrize("choice", ["generic", "native"])
def test_every_kernel_choice_gives_the_same_loss(monkeypatch, choice):
    logits, label, keep = make_case((2, 5, 6, 7), 1, hard=True, keep=True, ignore=True,
                                    dtype=torch.float32)  # fmt: skip
    monkeypatch.setenv("JDT_ARRAY_TORCH_KERNEL", choice)
    loss = jdt_array.jaccard_loss(logits, label, keep_mask=keep, ignore_index=IGNORE)
    want = jdt_loss_reference(*_host(logits, label), keep_mask=_host(keep)[0],
                              ignore_index=IGNORE)  # fmt: skip
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_launch_blocks_cover_every_class_and_stay_within_one_tile():
    for classes in (1, 2, 5, 19, 150, 300, 4096, triton_launch.MAX_CLASSES):
        logits = torch.empty((1, classes, 3), device="meta")
        block_c, block_n = triton_launch._inputs(
            logits, torch.empty((1, 3), dtype=torch.long, device="meta"), None, 1, 1, None
        ).block
        assert block_c >= classes and block_c == 2 ** math.ceil(math.log2(classes))
        assert block_c * block_n <= max(triton_launch._TILE, block_c)
