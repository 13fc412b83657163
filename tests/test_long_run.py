"""A long training run holds memory flat: 2,500 small steps of each PyTorch module and
of ``value_and_grad`` on NumPy leave the resident memory where it was after warm-up
(the kept CPU buffers, caches and autograd graphs must not grow with the steps).

The limit, 1 MiB over 2,500 steps, catches a leak of 420 bytes a step (the resident
memory of these steps moves by a few KiB: it is read after a garbage collection);
the earlier 4 MiB over 10,000 steps caught the same rate in four times the steps."""

import gc
import os

import numpy as np
import pytest

import jdt_array

STEPS = 2_500
WARM_UP = 300
GROWTH_LIMIT = 2**20  # bytes


def resident_bytes() -> int:
    """This process's resident memory now (Linux), after a garbage collection."""
    gc.collect()
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def growth(step) -> int:
    for _ in range(WARM_UP):
        step()
    before = resident_bytes()
    for _ in range(STEPS):
        step()
    return resident_bytes() - before


pytestmark = pytest.mark.skipif(
    not os.path.exists("/proc/self/statm"), reason="resident memory is read from /proc"
)


def _modules():
    jt = pytest.importorskip("jdt_array.backends.torch")
    return {
        "JDTLoss-vjp": (jt.JDTLoss(ignore_index=255), "hard"),
        "JDTLoss-autodiff": (jt.JDTLoss(backward="autodiff"), "hard"),
        "JaccardLoss": (jt.JaccardLoss(mIoUI=1.0), "soft"),
        "DiceLoss": (jt.DiceLoss(), "hard"),
        "TverskyLoss": (jt.TverskyLoss(alpha=0.3, beta=0.7), "hard"),
        "CEJDTLoss": (jt.CEJDTLoss(), "hard"),
        "CrossEntropyLoss": (jt.CrossEntropyLoss(), "hard"),
        "KLDivLoss": (jt.KLDivLoss(), "soft"),
        "GeneralizedDiceLoss": (jt.GeneralizedDiceLoss(), "hard"),
        "LovaszSoftmaxLoss": (jt.LovaszSoftmaxLoss(), "hard"),
        "LovaszHingeLoss": (jt.LovaszHingeLoss(), "binary"),
    }


NAMES = [
    "JDTLoss-vjp", "JDTLoss-autodiff", "JaccardLoss", "DiceLoss", "TverskyLoss",
    "CEJDTLoss", "CrossEntropyLoss", "KLDivLoss", "GeneralizedDiceLoss",
    "LovaszSoftmaxLoss", "LovaszHingeLoss",
]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_torch_module_training_holds_memory_flat(name):
    torch = pytest.importorskip("torch")
    module, kind = _modules()[name]
    rng = np.random.default_rng(0)
    weight = torch.zeros(3, 3, requires_grad=True)  # a tiny "model": mixes channels
    features = torch.asarray(rng.normal(size=(2, 3, 4, 4)), dtype=torch.float32)
    label = torch.asarray(rng.integers(0, 3, size=(2, 4, 4)))
    if kind == "soft":
        label = torch.softmax(torch.asarray(rng.normal(size=(2, 3, 4, 4))), 1).float()
    optimizer = torch.optim.SGD([weight], lr=0.01)

    def step():
        logits = torch.einsum("oc,bchw->bohw", weight, features) + features
        if kind == "binary":
            logits, target = logits[:, 0], label % 2
        else:
            target = label
        optimizer.zero_grad()
        module(logits, target).backward()
        optimizer.step()

    assert growth(step) < GROWTH_LIMIT


@pytest.mark.parametrize("fn", [jdt_array.jaccard_loss, jdt_array.lovasz_softmax_loss,
                                jdt_array.ce_jdt_loss])  # fmt: skip
def test_numpy_value_and_grad_holds_memory_flat(fn):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 3, 4, 4))
    label = rng.integers(0, 3, size=(2, 4, 4))

    def step():
        nonlocal logits
        _, grad = jdt_array.value_and_grad(fn, logits, label, ignore_index=255)
        logits = logits - 0.01 * grad

    assert growth(step) < GROWTH_LIMIT
