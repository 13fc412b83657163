"""The PyTorch adapter: modules, the lean backward, autocast, torch.compile."""

import numpy as np
import pytest
from _support.inputs import (
    IGNORE,
    make_hard_label,
    make_keep_mask,
    make_logits,
    make_soft_label,
)
from _support.reference import jdt_loss_reference

torch = pytest.importorskip("torch")

from jdt_array.backends import torch as jt  # noqa: E402

SHAPE = (2, 4, 6, 5)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def data(seed=0, soft=False, dtype=torch.float64, device="cpu"):
    rng = np.random.default_rng(seed)
    logits = make_logits(rng, SHAPE)
    label = (
        make_soft_label(rng, SHAPE)
        if soft
        else make_hard_label(rng, SHAPE, absent=(2,), ignore_fraction=0.1)
    )
    keep = make_keep_mask(rng, SHAPE)
    as_t = lambda a: torch.asarray(a, device=device)  # noqa: E731
    x = as_t(logits).to(dtype).requires_grad_(True)
    y = as_t(label).to(dtype) if soft else as_t(label)
    return logits, label, keep, x, y, as_t(keep)


MODULE_OPTIONS = [
    {},
    {"mIoUD": 0.0, "mIoUI": 1.0, "mIoUC": 1.0, "norm": 2},
    {"gamma": 2.0, "log_loss": True, "class_weights": [1.0, 0.5, 2.0, 1.5]},
    {"alpha": 0.5, "beta": 0.5, "active_classes_mode_soft": "PRESENT", "mIoUI": 0.5},
]


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("options", MODULE_OPTIONS)
def test_lean_backward_equals_autodiff(soft, options):
    results = []
    for backward in ("vjp", "autodiff"):
        _, _, _, x, y, keep = data(soft=soft)
        module = jt.JDTLoss(ignore_index=IGNORE, backward=backward, **options)
        loss = module(x, y, keep)
        loss.backward()
        results.append((loss.item(), x.grad.clone()))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-12)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_drop_in_for_the_reference_module(soft):
    # The reference constructor, positionally: mIoUD, mIoUI, mIoUC, alpha, beta, gamma,
    # smooth, threshold, norm, log_loss, ignore_index, class_weights, modes.
    args = (0.5, 0.25, 0.25, 1.0, 1.0, 1.0, 1e-3, 0.01, 1, False, IGNORE, None, "PRESENT",
            "ALL")  # fmt: skip
    module = jt.JDTLoss(*args)
    logits, label, keep, x, y, keep_t = data(1, soft)
    loss = module(x, y, keep_mask=keep_t)
    expected = jdt_loss_reference(
        logits, label, keep_mask=keep, mIoUD=0.5, mIoUI=0.25, mIoUC=0.25,
        ignore_index=IGNORE,
    )  # fmt: skip
    assert loss.item() == pytest.approx(expected, rel=1e-12)
    assert isinstance(module, torch.nn.Module)


def test_named_modules():
    logits, label, _, x, y, _ = data(2)
    for module, ab in [
        (jt.JaccardLoss(ignore_index=IGNORE), (1.0, 1.0)),
        (jt.DiceLoss(mIoUI=1.0, ignore_index=IGNORE), (0.5, 0.5)),
        (jt.TverskyLoss(alpha=0.3, beta=0.7, ignore_index=IGNORE), (0.3, 0.7)),
    ]:
        levels = {"mIoUI": 1.0} if isinstance(module, jt.DiceLoss) else {}
        expected = jdt_loss_reference(
            logits, label, alpha=ab[0], beta=ab[1], ignore_index=IGNORE, **levels
        )
        assert module(x, y).item() == pytest.approx(expected, rel=1e-12)


def test_bad_options_fail_at_construction():
    with pytest.raises(ValueError, match="gamma"):
        jt.JDTLoss(gamma=0.5)
    with pytest.raises(ValueError, match="backward"):
        jt.JDTLoss(backward="fast")
    with pytest.raises(TypeError, match="ignore_index"):
        jt.JDTLoss(ignore_index=1.5)


def test_class_weights_follow_the_module():
    module = jt.JDTLoss(class_weights=[1.0, 2.0, 3.0, 4.0])
    assert module.class_weights.device.type == "cpu"
    module = module.double()
    assert module.class_weights.dtype == torch.float64
    assert module.to("meta").class_weights.device.type == "meta"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_accumulates_in_float32(dtype):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(3, 4, 1)
    image = torch.randn(2, 3, 6, 5)
    label = torch.randint(0, 4, (2, 6, 5))
    with torch.autocast("cpu", dtype=dtype):
        logits = conv(image)
        loss = jt.JDTLoss(mIoUI=1.0)(logits, label)
    assert logits.dtype == dtype
    assert loss.dtype == torch.float32
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in conv.parameters())
    full = jt.JDTLoss(mIoUI=1.0)(conv(image).float(), label)
    assert loss.item() == pytest.approx(full.item(), rel=2e-2)


@pytest.mark.filterwarnings("ignore::UserWarning")  # dynamo's notes on array-api-compat
@pytest.mark.parametrize("backward", ["vjp", "autodiff"])
def test_torch_compile_same_as_eager(backward):
    *_, x, y, keep_t = data(3)
    module = jt.JDTLoss(mIoUI=1.0, ignore_index=IGNORE, backward=backward)
    eager = module(x, y, keep_t)
    (g_eager,) = torch.autograd.grad(eager, x)
    # fullgraph: the value checks must not break the graph while dynamo traces.
    compiled = torch.compile(module, fullgraph=True)
    value = compiled(x, y, keep_t)
    (g_compiled,) = torch.autograd.grad(value, x)
    assert value.item() == pytest.approx(eager.item(), rel=1e-9)
    torch.testing.assert_close(g_compiled, g_eager, rtol=1e-9, atol=1e-12)


def test_value_and_grad_leaves_input_untouched():
    import jdt_array

    _, _, _, x, y, _ = data(4)
    x = x.detach()
    loss, grad = jdt_array.value_and_grad(jdt_array.jdt_loss, x, y, ignore_index=IGNORE)
    assert not x.requires_grad and x.grad is None
    assert grad.shape == x.shape and not loss.requires_grad


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    image = torch.randn(4, 3, 8, 8)
    label = (image[:, 0] > 0).long() + (image[:, 1] > 1).long()
    model = torch.nn.Conv2d(3, 3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    loss_fn = jt.JDTLoss()
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = loss_fn(model(image), label)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]


@CUDA
def test_module_on_cuda_matches_cpu():
    _, _, _, x, y, keep = data(5)
    cpu = jt.JDTLoss(class_weights=[1.0, 2.0, 3.0, 4.0], mIoUI=1.0)
    value = cpu(x, y, keep)
    gpu_module = cpu.to("cuda")
    x_gpu = x.detach().cuda().requires_grad_(True)
    value_gpu = gpu_module(x_gpu, y.cuda(), keep.cuda())
    value_gpu.backward()
    assert value_gpu.item() == pytest.approx(value.item(), rel=1e-9)
    assert torch.isfinite(x_gpu.grad).all()


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_second_backward_recomputes(soft):
    """The lean backward writes its gradient into the saved probabilities; a second
    backward through the same graph (retain_graph) must not see them overwritten."""
    *_, x, y, keep_t = data(5, soft=soft)
    options = {"keep_mask": keep_t, "mIoUI": 0.5, "ignore_index": None if soft else IGNORE}
    loss = jt.jdt_loss(x, y, backward="vjp", **options)
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x)
    reference = jt.jdt_loss(x, y, backward="autodiff", **options)
    (want,) = torch.autograd.grad(reference, x)
    torch.testing.assert_close(first, want, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(second, want, rtol=1e-9, atol=1e-12)


def test_second_derivative_raises_for_the_hand_backward():
    """The hand-derived backward has no derivative of its own: asking for one
    (create_graph) must fail with a pointer to autodiff, not give a wrong or missing
    second derivative."""
    *_, x, y, keep_t = data(6)
    loss = jt.jdt_loss(x, y, keep_mask=keep_t, ignore_index=IGNORE, backward="vjp")
    with pytest.raises(RuntimeError, match="backward='autodiff'"):
        torch.autograd.grad(loss, x, create_graph=True)
    # autodiff keeps the full graph: its second derivative exists.
    loss = jt.jdt_loss(x, y, keep_mask=keep_t, ignore_index=IGNORE, backward="autodiff")
    (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    (second,) = torch.autograd.grad(grad.sum(), x)
    assert torch.isfinite(second).all()
