"""The PyTorch modules of the loss family equal their functions, with gradients."""

import numpy as np
import pytest
from _support.inputs import (
    IGNORE,
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


MODULES = [
    (jt.CrossEntropyLoss(ignore_index=IGNORE, gamma=1.0), jdt_array.cross_entropy,
     {"ignore_index": IGNORE, "gamma": 1.0}, "hard"),
    (jt.KLDivLoss(temperature=2.0), jdt_array.kl_div, {"temperature": 2.0}, "soft"),
    (jt.CEJDTLoss(ignore_index=IGNORE, class_weights=[1.0, 2.0, 0.5], mIoUI=1.0),
     jdt_array.ce_jdt_loss,
     {"ignore_index": IGNORE, "class_weights": [1.0, 2.0, 0.5], "mIoUI": 1.0}, "hard"),
    (jt.GeneralizedDiceLoss(ignore_index=IGNORE), jdt_array.generalized_dice_loss,
     {"ignore_index": IGNORE}, "hard"),
    (jt.LovaszSoftmaxLoss(ignore_index=IGNORE, per_image=True),
     jdt_array.lovasz_softmax_loss, {"ignore_index": IGNORE, "per_image": True}, "hard"),
]  # fmt: skip


@pytest.mark.parametrize(("module", "fn", "options", "kind"), MODULES,
                         ids=[type(m[0]).__name__ for m in MODULES])  # fmt: skip
def test_module_equals_function(module, fn, options, kind):
    logits, hard, soft, keep = tensors()
    label = hard if kind == "hard" else soft
    x = logits.clone().requires_grad_(True)
    value = module(x, label, keep)
    value.backward()
    expected, grad = jdt_array.value_and_grad(
        fn, logits.numpy(), label.numpy(), keep_mask=keep.numpy(), **options
    )
    assert isinstance(module, torch.nn.Module)
    assert value.item() == pytest.approx(float(expected), rel=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), grad, rtol=1e-6, atol=1e-14)


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
