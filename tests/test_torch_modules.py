"""The PyTorch modules of the loss family: what the loss tester (test_losses.py) does
not check, the hinge's one-score input, buffers that follow the module, refusals."""

import numpy as np
import pytest
from _support.inputs import (
    make_hard_label,
    make_keep_mask,
    make_logits,
    make_soft_label,
)

torch = pytest.importorskip("torch")

import jdt_array  # noqa: E402
from jdt_array.backends import torch as jt  # noqa: E402

SHAPE = (2, 3, 5, 4)


def tensors(seed=0):
    rng = np.random.default_rng(seed)
    return (
        torch.asarray(make_logits(rng, SHAPE)),
        torch.asarray(make_hard_label(rng, SHAPE, ignore_fraction=0.1)),
        torch.asarray(make_soft_label(rng, SHAPE)),
        torch.asarray(make_keep_mask(rng, SHAPE)),
    )


def test_lovasz_hinge_module():
    rng = np.random.default_rng(1)
    logits = torch.asarray(rng.normal(size=(2, 5, 4)), requires_grad=True)
    label = torch.asarray(rng.integers(0, 2, size=(2, 5, 4)))
    value = jt.LovaszHingeLoss()(logits, label)
    expected = jdt_array.lovasz_hinge_loss(logits.detach(), label)
    assert value.item() == pytest.approx(expected.item(), rel=1e-12)
    value.backward()
    assert torch.isfinite(logits.grad).all()


def test_ce_jdt_weights_follow_the_module():
    module = jt.CEJDTLoss(class_weights=[1.0, 2.0, 3.0]).double()
    assert module.class_weights.dtype == torch.float64
    assert module.to("meta").class_weights.device.type == "meta"


def test_lovasz_module_rejects_soft_labels():
    logits, _, soft, _ = tensors()
    with pytest.raises(TypeError, match="jdt_loss"):
        jt.LovaszSoftmaxLoss()(logits, soft)
