"""Hand-derived gradients of the loss family against autodiff, on every backend."""

import functools

import numpy as np
import pytest
from _support.inputs import (
    IGNORE,
    make_hard_label,
    make_keep_mask,
    make_logits,
    make_soft_label,
)

import jdt_array

SHAPE = (2, 4, 5, 6)


def case_inputs(kind, seed=0):
    rng = np.random.default_rng(seed)
    logits = make_logits(rng, SHAPE)
    keep = make_keep_mask(rng, SHAPE)
    if kind == "hard":
        return logits, make_hard_label(rng, SHAPE, absent=(2,), ignore_fraction=0.1), keep
    if kind == "soft":
        return logits, make_soft_label(rng, SHAPE), keep
    binary = rng.integers(0, 2, size=(SHAPE[0], *SHAPE[2:]))
    binary = np.where(rng.random(binary.shape) < 0.1, IGNORE, binary)
    return logits[:, 0], binary, keep


CASES = [
    ("ce", jdt_array.cross_entropy, "hard", {"ignore_index": IGNORE}),
    ("ce-focal", jdt_array.cross_entropy, "hard", {"ignore_index": IGNORE, "gamma": 2.0}),
    ("ce-focal-frac", jdt_array.cross_entropy, "hard",
     {"ignore_index": IGNORE, "gamma": 0.5}),
    ("ce-soft", jdt_array.cross_entropy, "soft", {"use_keep": True}),
    ("ce-soft-focal", jdt_array.cross_entropy, "soft", {"gamma": 1.5}),
    ("kl", jdt_array.kl_div, "soft", {"temperature": 2.0, "use_keep": True}),
    ("ce+jdt", jdt_array.ce_jdt_loss, "hard", {"ignore_index": IGNORE, "mIoUI": 1.0}),
    ("ce+jdt-soft", jdt_array.ce_jdt_loss, "soft", {"ce_weight": 0.5, "use_keep": True}),
    ("gdl", jdt_array.generalized_dice_loss, "hard", {"ignore_index": IGNORE}),
    ("gdl-image", jdt_array.generalized_dice_loss, "soft", {"per_image": True}),
    ("lovasz", jdt_array.lovasz_softmax_loss, "hard", {"ignore_index": IGNORE}),
    ("lovasz-all-image", jdt_array.lovasz_softmax_loss, "hard",
     {"ignore_index": IGNORE, "classes": "all", "per_image": True}),
    ("lovasz-listed", jdt_array.lovasz_softmax_loss, "hard",
     {"ignore_index": IGNORE, "classes": [3, 1, 1], "use_keep": True}),
    ("hinge", jdt_array.lovasz_hinge_loss, "binary", {"ignore_index": IGNORE}),
    ("hinge-pooled", jdt_array.lovasz_hinge_loss, "binary",
     {"ignore_index": IGNORE, "per_image": False, "use_keep": True}),
]  # fmt: skip


def arguments(kind, options, convert, seed=0):
    logits, label, keep = case_inputs(kind, seed)
    options = dict(options)
    if options.pop("use_keep", False):
        options["keep_mask"] = convert(keep)
    return logits, label, options


@pytest.mark.parametrize(
    ("name", "fn", "kind", "options"), CASES, ids=[c[0] for c in CASES]
)
def test_hand_gradient_matches_autodiff(name, fn, kind, options):
    torch = pytest.importorskip("torch")
    logits, label, np_options = arguments(kind, options, np.asarray)
    loss, grad = jdt_array.value_and_grad(fn, logits, label, **np_options)

    _, _, t_options = arguments(kind, options, torch.asarray)
    x = torch.asarray(logits).requires_grad_(True)
    t_loss = fn(x, torch.asarray(label), **t_options)
    t_loss.backward()
    np.testing.assert_allclose(float(loss), t_loss.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-6, atol=1e-14)
    assert np.any(grad != 0)


@pytest.mark.parametrize(
    ("name", "fn", "kind", "options"), CASES[::2], ids=[c[0] for c in CASES[::2]]
)
def test_value_and_grad_on_every_backend(backend, name, fn, kind, options):
    logits, label, np_options = arguments(kind, options, np.asarray)
    loss, grad = jdt_array.value_and_grad(fn, logits, label, **np_options)
    keep = np_options.pop("keep_mask", None)
    arrays = [backend.asarray(logits), backend.asarray(label)]
    if keep is not None:
        arrays.append(backend.asarray(keep))

    def call(lg, lb, km=None, **kw):
        extra = {} if km is None else {"keep_mask": km}
        return jdt_array.value_and_grad(fn, lg, lb, **extra, **kw)

    b_loss, b_grad = backend.call(call, *arrays, **np_options)
    np.testing.assert_allclose(
        backend.to_numpy(b_loss), float(loss), rtol=backend.rtol * 10
    )
    np.testing.assert_allclose(
        backend.to_numpy(b_grad), grad, rtol=backend.rtol * 100, atol=backend.atol * 10
    )


def test_partials_of_family_losses():
    logits, label, _ = case_inputs("hard")
    focal = functools.partial(jdt_array.cross_entropy, gamma=2.0, ignore_index=IGNORE)
    a = jdt_array.value_and_grad(focal, logits, label)
    b = jdt_array.value_and_grad(jdt_array.cross_entropy, logits, label, gamma=2.0,
                                 ignore_index=IGNORE)  # fmt: skip
    np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("fn", [jdt_array.lovasz_softmax_loss, jdt_array.lovasz_hinge_loss])
def test_lovasz_gradient_with_reduce_is_the_global_slice(fn):
    """Two simulated replicas: each hand-derived gradient is its slice of the global one."""
    kind = "binary" if fn is jdt_array.lovasz_hinge_loss else "hard"
    logits, label, _ = case_inputs(kind, seed=3)
    options = {"ignore_index": IGNORE, "per_image": True}
    loss, grad = jdt_array.value_and_grad(fn, logits, label, **options)
    halves = [slice(0, 1), slice(1, 2)]
    others = {0: 1, 1: 0}
    for i, part in enumerate(halves):
        other = halves[others[i]]
        other_sum = float(fn(logits[other], label[other], **options))  # one image each
        # What the other replica contributes to each collective, in call order: the
        # loss's (sum, count), then the gradient's image count.
        contributions = [np.asarray([other_sum, 1.0]), np.asarray([1.0])]

        def reduce(v, contributions=contributions):
            return v + contributions.pop(0)

        r_loss, r_grad = jdt_array.value_and_grad(
            fn, logits[part], label[part], reduce=reduce, **options
        )
        np.testing.assert_allclose(float(r_loss), float(loss), rtol=1e-12)
        np.testing.assert_allclose(r_grad, grad[part], rtol=1e-10, atol=1e-15)
