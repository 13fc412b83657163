"""``torch.compile(fullgraph=True)`` of every torch module over changing input shapes
equals eager, forward and backward, in both backward modes.

The JDT modules compile with inductor (what users run). The rest compile with the
``aot_eager`` backend: the same dynamo capture (where a graph break fails
``fullgraph``) and AOT autograd tracing with dynamic shapes (where the hand-derived
backward once failed on the second shape), without inductor's C++ code generation,
which costs seconds per graph on a CPU.
"""

import warnings

import numpy as np
import pytest
from _support.inputs import IGNORE

torch = pytest.importorskip("torch")
from jdt_array.backends import torch as jt  # noqa: E402

# Three shapes in a row: the second makes torch.compile mark sizes dynamic.
SHAPES = [(2, 3, 6, 7), (3, 3, 5, 4), (1, 3, 8, 2)]

MODULES = {
    "JDTLoss-vjp": (lambda: jt.JDTLoss(ignore_index=IGNORE), "ignore", "inductor"),
    "JDTLoss-autodiff": (
        lambda: jt.JDTLoss(ignore_index=IGNORE, backward="autodiff"), "ignore", "inductor"
    ),
    "JaccardLoss-soft": (lambda: jt.JaccardLoss(mIoUI=1.0), "soft", "aot_eager"),
    "DiceLoss-last": (lambda: jt.DiceLoss(class_axis=-1), "hard-last", "aot_eager"),
    "TverskyLoss": (lambda: jt.TverskyLoss(alpha=0.3, beta=0.7, mIoUC=1.0), "hard",
                    "aot_eager"),
    "CEJDTLoss": (lambda: jt.CEJDTLoss(ignore_index=IGNORE), "ignore", "aot_eager"),
    "CrossEntropyLoss": (lambda: jt.CrossEntropyLoss(gamma=2.0), "hard", "aot_eager"),
    "KLDivLoss": (lambda: jt.KLDivLoss(temperature=2.0), "soft", "aot_eager"),
    "GeneralizedDiceLoss": (lambda: jt.GeneralizedDiceLoss(), "hard", "aot_eager"),
    "LovaszSoftmaxLoss": (lambda: jt.LovaszSoftmaxLoss(), "hard", "aot_eager"),
    "LovaszHingeLoss": (lambda: jt.LovaszHingeLoss(), "binary", "aot_eager"),
}  # fmt: skip


def inputs(kind, shape, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=shape).astype(np.float32)
    label = rng.integers(0, shape[1], size=(shape[0], *shape[2:]))
    if kind == "binary":
        return logits[:, 0], label % 2
    if kind == "soft":
        soft = rng.random(shape).astype(np.float32)
        return logits, soft / soft.sum(axis=1, keepdims=True)
    if kind == "hard-last":
        return np.moveaxis(logits, 1, -1).copy(), label
    if kind == "ignore":  # for the modules with an ignore_index
        label[0, 0, :2] = IGNORE
    return logits, label


def step(loss_fn, logits, label):
    z = torch.asarray(logits).requires_grad_(True)
    loss = loss_fn(z, torch.asarray(label))
    loss.backward()
    return loss.detach(), z.grad


@pytest.mark.parametrize("name", MODULES)
def test_compiled_module_equals_eager_over_changing_shapes_without_warnings(name):
    make, kind, compiler = MODULES[name]
    torch._dynamo.reset()
    module = make()
    compiled = torch.compile(module, fullgraph=True, backend=compiler)
    for seed, shape in enumerate(SHAPES):
        logits, label = inputs(kind, shape, seed)
        want = step(module, logits, label)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = step(compiled, logits, label)
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-6)
        # Dynamo warns at every functools.lru_cache it traces through (the package's
        # or array-api-compat's); users read that as a bug of the package.
        ours = [str(w.message) for w in caught if _from_the_package(w)]
        assert not ours, ours


def _from_the_package(caught: warnings.WarningMessage) -> bool:
    text = str(caught.message)
    return "jdt_array" in caught.filename or "jdt_array" in text or "lru_cache" in text


def test_compiled_class_ids_out_of_range_count_as_no_class():
    """Inside torch.compile the label cannot be read, so ids >= C are not refused (as
    in jax.jit): such a pixel counts for the prediction and for no class, as a soft
    one-hot label with an all-zero row does eagerly."""
    torch._dynamo.reset()
    logits, label = inputs("ignore", SHAPES[0], 0)
    label = np.where(label == IGNORE, 7, label)  # 7 >= C = 3
    compiled = torch.compile(jt.JDTLoss(mIoUI=1.0), fullgraph=True)
    got = step(compiled, logits, label)
    one_hot = (label[:, None] == np.arange(3)[None, :, None, None]).astype(np.float32)
    eager = jt.JDTLoss(mIoUI=1.0, active_classes_mode_soft="PRESENT")
    want = step(eager, logits, one_hot)
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="label holds class ids outside"):
        jt.JDTLoss(mIoUI=1.0)(torch.asarray(logits), torch.asarray(label))


TRITON_MODULES = ["JDTLoss-vjp", "JaccardLoss-soft", "DiceLoss-last", "CEJDTLoss"]


@pytest.mark.parametrize("name", TRITON_MODULES)
def test_compiled_module_through_the_triton_kernels_equals_native_eager(monkeypatch, name):
    # The fused operators under dynamo and AOT autograd with dynamic shapes (on CPU
    # tensors in Triton's interpreter; conftest turns it on where CUDA is missing).
    pytest.importorskip("triton")
    from jdt_array._kernels import triton_launch

    launches = []
    statistics = triton_launch.statistics
    monkeypatch.setattr(triton_launch, "statistics",
                        lambda *a: launches.append(1) or statistics(*a))  # fmt: skip
    make, kind, _ = MODULES[name]
    torch._dynamo.reset()
    module = make()
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    for seed, shape in enumerate(SHAPES):
        logits, label = inputs(kind, shape, seed)
        monkeypatch.setenv("JDT_ARRAY_TORCH_KERNEL", "native")
        want = step(module, logits, label)
        monkeypatch.setenv("JDT_ARRAY_TORCH_KERNEL", "triton")
        got = step(compiled, logits, label)
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got[1], want[1], rtol=1e-4, atol=1e-6)
    assert len(launches) == len(SHAPES)  # the compiled graphs ran the fused kernels
