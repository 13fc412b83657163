"""The PyTorch path off the CPU never reads a tensor on the host.

On the meta device a tensor has a shape and no data, so every host read (``.item()``,
``bool()``, ``int()``, ``bincount``, ``nonzero``, boolean indexing, a shape from the
data) raises: running each module forward and backward there proves the non-CPU code
path free of them, for every kernel choice and under ``torch.compile``. Value checks
become device-side assertions there, tested on CPU by treating CPU tensors as an
accelerator's. With CUDA, a training step runs under ``set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import jdt_array  # noqa: E402
from jdt_array import _array, _checks  # noqa: E402
from jdt_array.backends import torch as jt  # noqa: E402

IGNORE = 255
CHOICES = ["native", "triton", "generic"]

JDT_MODULES = {
    "JDTLoss": lambda: jt.JDTLoss(ignore_index=IGNORE),
    "JDTLoss-autodiff": lambda: jt.JDTLoss(ignore_index=IGNORE, backward="autodiff"),
    "JaccardLoss-mIoUI": lambda: jt.JaccardLoss(mIoUI=1.0, mIoUD=0.0),
    "DiceLoss-L2": lambda: jt.DiceLoss(norm=2, ignore_index=IGNORE),
    "TverskyLoss": lambda: jt.TverskyLoss(alpha=0.3, beta=0.7, mIoUC=1.0),
    "CEJDTLoss": lambda: jt.CEJDTLoss(ignore_index=IGNORE, class_weights=[1, 2, 1, 1]),
    "GeneralizedDiceLoss": lambda: jt.GeneralizedDiceLoss(),
}
CE_MODULES = {
    "CrossEntropyLoss": lambda: jt.CrossEntropyLoss(gamma=2.0, ignore_index=IGNORE),
    "KLDivLoss": lambda: jt.KLDivLoss(temperature=2.0),
}
HARD_ONLY = {
    "LovaszSoftmaxLoss": lambda: jt.LovaszSoftmaxLoss(ignore_index=IGNORE),
    "LovaszHingeLoss": lambda: jt.LovaszHingeLoss(),
}


def meta_inputs(kind, shape=(2, 4, 5, 6)):
    b, c, *spatial = shape
    logits = torch.empty(shape, device="meta")
    if kind == "binary":
        logits = logits[:, 0]
        return logits.requires_grad_(True), torch.empty((b, *spatial), dtype=torch.long,
                                                        device="meta")  # fmt: skip
    if kind == "soft":
        return logits.requires_grad_(True), torch.empty(shape, device="meta")
    label = torch.empty((b, *spatial), dtype=torch.long, device="meta")
    if kind == "channels-last":
        logits = torch.empty((b, *spatial, c), device="meta")
    return logits.requires_grad_(True), label


def _cases():
    for name in JDT_MODULES:
        for kind in ("hard", "soft"):
            yield name, JDT_MODULES[name], kind
    yield "CrossEntropyLoss", CE_MODULES["CrossEntropyLoss"], "hard"
    yield "KLDivLoss", CE_MODULES["KLDivLoss"], "soft"
    yield "LovaszSoftmaxLoss", HARD_ONLY["LovaszSoftmaxLoss"], "hard"
    yield "LovaszHingeLoss", HARD_ONLY["LovaszHingeLoss"], "binary"


CASES = [pytest.param(make, kind, id=f"{name}-{kind}") for name, make, kind in _cases()]


@pytest.mark.parametrize("choice", CHOICES)
@pytest.mark.parametrize("make, kind", CASES)
def test_every_module_runs_forward_and_backward_on_the_meta_device(
    monkeypatch, choice, make, kind
):
    monkeypatch.setenv("JDT_ARRAY_TORCH_KERNEL", choice)
    logits, label = meta_inputs(kind)
    loss = make()(logits, label)
    loss.backward()
    assert loss.shape == () and loss.device.type == "meta"
    assert logits.grad.shape == logits.shape and logits.grad.device.type == "meta"


@pytest.mark.parametrize("choice", CHOICES)
def test_channels_last_and_keep_mask_run_on_the_meta_device(monkeypatch, choice):
    monkeypatch.setenv("JDT_ARRAY_TORCH_KERNEL", choice)
    logits, label = meta_inputs("channels-last")
    keep = torch.empty(label.shape, dtype=torch.bool, device="meta")
    loss = jt.JaccardLoss(class_axis=-1, ignore_index=IGNORE)(logits, label, keep)
    loss.backward()
    assert logits.grad.shape == logits.shape


def test_a_host_read_on_the_meta_device_raises():
    # The premise of this module: a meta tensor cannot be read.
    with pytest.raises((RuntimeError, NotImplementedError)):
        bool(torch.zeros((), device="meta") > 0)


@pytest.mark.parametrize("choice", ["native", "triton"])
def test_compiled_modules_run_on_the_meta_device_over_changing_shapes(monkeypatch, choice):
    monkeypatch.setenv("JDT_ARRAY_TORCH_KERNEL", choice)
    torch._dynamo.reset()
    compiled = torch.compile(jt.JaccardLoss(ignore_index=IGNORE), fullgraph=True,
                             backend="aot_eager")  # fmt: skip
    for shape in [(2, 4, 5, 6), (3, 4, 7, 2), (1, 4, 3, 3)]:
        logits, label = meta_inputs("hard", shape)
        compiled(logits, label).backward()
        assert logits.grad.shape == logits.shape


def test_metrics_update_runs_on_the_meta_device():
    metrics = jdt_array.metrics.FineGrainedMetrics(num_classes=4, ignore_index=IGNORE)
    prob = torch.empty((2, 4, 5, 6), device="meta")
    label = torch.empty((2, 5, 6), dtype=torch.long, device="meta")
    metrics.update(prob, label)
    metrics.update(torch.empty((2, 5, 6), dtype=torch.long, device="meta"), label)
    stats = jdt_array.metrics.batch_statistics(prob, label, num_classes=4,
                                               ignore_index=IGNORE)  # fmt: skip
    assert stats.intersection.device.type == "meta"


@pytest.fixture
def cpu_as_accelerator(monkeypatch):
    """CPU tensors treated as an accelerator's: the checks' device path, on CPU data."""
    on_accelerator = lambda x: type(x).__module__.startswith("torch")  # noqa: E731
    monkeypatch.setattr(_array, "on_accelerator", on_accelerator)
    monkeypatch.setattr(_checks, "on_accelerator", on_accelerator)


def test_a_bad_label_on_an_accelerator_fails_a_device_assertion(cpu_as_accelerator):
    logits = torch.randn(2, 4, 5, 6)
    label = torch.randint(0, 4, (2, 5, 6))
    good = jdt_array.jaccard_loss(logits, label)
    assert torch.isfinite(good)
    label[1, 2, 3] = 7
    # torch._assert_async on CPU fails at once; on CUDA at the next synchronisation.
    with pytest.raises(RuntimeError, match=r"class ids outside \[0, 4\)"):
        jdt_array.jaccard_loss(logits, label)
    soft = torch.softmax(torch.randn(2, 4, 5, 6), dim=1)
    soft[0, 0, 0, 0] = 1.5
    with pytest.raises(RuntimeError, match=r"probabilities in \[0, 1\]"):
        jdt_array.jaccard_loss(logits, soft)


def test_dropped_pixels_pass_the_device_assertion(cpu_as_accelerator):
    logits = torch.randn(2, 4, 5, 6)
    label = torch.randint(0, 4, (2, 5, 6))
    label[0, 0] = IGNORE
    loss = jdt_array.jaccard_loss(logits, label, ignore_index=IGNORE)
    assert torch.isfinite(loss)


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("choice", ["native", "triton"])
def test_a_cuda_training_step_never_synchronises(monkeypatch, choice):
    monkeypatch.setenv("JDT_ARRAY_TORCH_KERNEL", choice)
    net = torch.nn.Conv2d(3, 5, 3, padding=1).cuda()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    loss_fn = jt.CEJDTLoss(ignore_index=IGNORE)
    metrics = jdt_array.metrics.FineGrainedMetrics(num_classes=5, ignore_index=IGNORE)
    images = torch.randn(2, 3, 32, 48, device="cuda")
    label = torch.randint(0, 5, (2, 32, 48), device="cuda")
    for _ in range(2):  # the first step warms up (allocations, kernel compilation)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            logits = net(images)
            loss = loss_fn(logits, label)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            metrics.update(logits.detach().softmax(1), label)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss).item()
