"""value_and_grad: the hand-derived gradient against autodiff and finite differences."""

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
from _support.options import OPTION_SETS, SMOKE_OPTION_SETS

import jdt_array
from jdt_array.grad import hand_gradient

SHAPE = (2, 4, 5, 6)


def inputs(seed, hard, shape=SHAPE):
    rng = np.random.default_rng(seed)
    logits = make_logits(rng, shape)
    if hard:
        label = make_hard_label(rng, shape, absent=(3,), ignore_fraction=0.1)
        return logits, label, {"ignore_index": IGNORE}
    return logits, make_soft_label(rng, shape), {"keep_mask": make_keep_mask(rng, shape)}


def numpy_grad(logits, label, **options):
    loss, grad = jdt_array.value_and_grad(jdt_array.jdt_loss, logits, label, **options)
    return float(loss), grad


@pytest.mark.parametrize("hard", [True, False], ids=["hard", "soft"])
@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_hand_gradient_matches_torch_autograd(hard, options):
    torch = pytest.importorskip("torch")
    logits, label, extra = inputs(0, hard)
    options = {**options, **extra}
    loss, grad = numpy_grad(logits, label, **options)

    t_options = {k: torch.asarray(v) if k == "keep_mask" else v for k, v in options.items()}
    x = torch.asarray(logits).requires_grad_(True)
    t_loss = jdt_array.jdt_loss(x, torch.asarray(label), **t_options)
    t_loss.backward()
    np.testing.assert_allclose(loss, t_loss.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-6, atol=1e-15)


# JAX traces the generic code with its own native kernels: a second autodiff to agree
# with, on the smoke option sets (PyTorch above runs them all, as the one autodiff
# library of the grids). Slow (conftest.py: "jax" in the name).
@pytest.mark.parametrize("hard", [True, False], ids=["hard", "soft"])
@pytest.mark.parametrize("name", SMOKE_OPTION_SETS)
def test_hand_gradient_matches_jax_autodiff(hard, name):
    jax = pytest.importorskip("jax")
    logits, label, extra = inputs(0, hard)
    options = {**OPTION_SETS[name], **extra}
    _, grad = numpy_grad(logits, label, **options)
    j_options = {
        k: jax.numpy.asarray(v) if k == "keep_mask" else v for k, v in options.items()
    }
    j_grad = jax.grad(
        lambda z: jdt_array.jdt_loss(z, jax.numpy.asarray(label), **j_options)
    )
    np.testing.assert_allclose(
        grad, j_grad(jax.numpy.asarray(logits)), rtol=1e-6, atol=1e-15
    )


@pytest.mark.parametrize("hard", [True, False], ids=["hard", "soft"])
@pytest.mark.parametrize(
    "options",
    [{}, {"norm": 2, "mIoUI": 1.0}, {"gamma": 2.0, "log_loss": True, "mIoUC": 1.0},
     {"class_agnostic": True, "class_weights": [1.0, 2.0, 0.5, 1.0]}],
)  # fmt: skip
def test_hand_gradient_matches_finite_differences(hard, options):
    logits, label, extra = inputs(1, hard, shape=(2, 4, 3, 3))
    options = {**options, **extra}
    _, grad = numpy_grad(logits, label, **options)
    rng = np.random.default_rng(2)
    eps = 1e-6
    for _ in range(12):
        direction = rng.normal(size=logits.shape)
        up = float(jdt_array.jdt_loss(logits + eps * direction, label, **options))
        down = float(jdt_array.jdt_loss(logits - eps * direction, label, **options))
        np.testing.assert_allclose(
            (up - down) / (2 * eps), np.sum(grad * direction), rtol=1e-5, atol=1e-9
        )


@pytest.mark.parametrize("hard", [True, False], ids=["hard", "soft"])
def test_value_and_grad_on_every_backend(backend, hard):
    logits, label, extra = inputs(3, hard)
    options = {"mIoUD": 0.5, "mIoUI": 0.5, "mIoUC": 0.5, **extra}
    loss, grad = numpy_grad(logits, label, **options)
    arrays = [backend.asarray(logits), backend.asarray(label)]
    if "keep_mask" in options:
        arrays.append(backend.asarray(options.pop("keep_mask")))

    def fn(lg, lb, km=None, **kw):
        return jdt_array.value_and_grad(jdt_array.jdt_loss, lg, lb, keep_mask=km, **kw)

    b_loss, b_grad = backend.call(fn, *arrays, **options)
    assert tuple(b_grad.shape) == logits.shape
    assert b_grad.dtype == arrays[0].dtype
    np.testing.assert_allclose(backend.to_numpy(b_loss), loss, rtol=backend.rtol)
    np.testing.assert_allclose(
        backend.to_numpy(b_grad), grad, rtol=backend.rtol * 10, atol=backend.atol
    )


def test_named_losses_and_partials_have_hand_gradients():
    logits, label, extra = inputs(4, True)
    for fn, fixed in [
        (jdt_array.jaccard_loss, {"alpha": 1.0, "beta": 1.0}),
        (jdt_array.dice_loss, {"alpha": 0.5, "beta": 0.5}),
        (functools.partial(jdt_array.tversky_loss, alpha=0.3, beta=0.7),
         {"alpha": 0.3, "beta": 0.7}),
        (functools.partial(jdt_array.jdt_loss, mIoUI=1.0), {"mIoUI": 1.0}),
    ]:  # fmt: skip
        loss, grad = jdt_array.value_and_grad(fn, logits, label, **extra)
        expected = numpy_grad(logits, label, **fixed, **extra)
        np.testing.assert_allclose(float(loss), expected[0], rtol=1e-12)
        np.testing.assert_allclose(grad, expected[1], rtol=1e-12)


def test_integer_logits_rejected():
    with pytest.raises(TypeError, match=r"logits.*floating.*int64"):
        jdt_array.value_and_grad(
            jdt_array.jdt_loss, np.zeros((1, 2, 3), np.int64), np.zeros((1, 3), np.int64)
        )


def test_unknown_function_without_autodiff_rejected():
    with pytest.raises(TypeError, match="no hand-derived gradient"):
        hand_gradient(lambda logits, label: logits.sum())


@pytest.mark.parametrize(
    "case", ["all-ignored", "absent-classes", "perfect", "no-smooth", "extreme"]
)
def test_finite_gradients(backend, case):
    rng = np.random.default_rng(5)
    logits = make_logits(rng, SHAPE)
    label = make_hard_label(rng, SHAPE, absent=(1, 2))
    options = {"mIoUD": 1.0, "mIoUI": 1.0, "mIoUC": 1.0, "ignore_index": IGNORE}
    if case == "all-ignored":
        label = np.full_like(label, IGNORE)
    elif case == "perfect":
        logits = np.moveaxis(np.eye(SHAPE[1])[label], -1, 1) * 30.0
    elif case == "no-smooth":
        options.update(smooth=0.0, log_loss=True)  # absent classes stay inactive
        logits = np.clip(logits, -3, 3)
    elif case == "extreme":
        logits = np.sign(logits) * 1e4
    arrays = [backend.asarray(logits), backend.asarray(label)]
    b_loss, b_grad = backend.call(
        functools.partial(jdt_array.value_and_grad, jdt_array.jdt_loss), *arrays, **options
    )
    grad = backend.to_numpy(b_grad)
    assert np.isfinite(backend.to_numpy(b_loss))
    assert np.all(np.isfinite(grad))
    if case == "all-ignored":
        assert float(backend.to_numpy(b_loss)) == 0.0
        assert np.all(grad == 0)


def test_partials_of_family_losses():
    logits, label, _ = inputs(0, True)
    focal = functools.partial(jdt_array.cross_entropy, gamma=2.0, ignore_index=IGNORE)
    a = jdt_array.value_and_grad(focal, logits, label)
    b = jdt_array.value_and_grad(jdt_array.cross_entropy, logits, label, gamma=2.0,
                                 ignore_index=IGNORE)  # fmt: skip
    np.testing.assert_array_equal(a[1], b[1])
