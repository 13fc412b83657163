"""The JAX adapter: custom_vjp losses under jit, grad and vmap; a short training run."""

import numpy as np
import pytest
from _support.inputs import (
    IGNORE,
    make_hard_label,
    make_keep_mask,
    make_logits,
    make_soft_label,
)

jax = pytest.importorskip("jax")
jnp = jax.numpy

import jdt_array  # noqa: E402
from jdt_array.backends import jax as jj  # noqa: E402

SHAPE = (3, 4, 5, 6)
OPTIONS = [
    {},
    {"mIoUD": 0.0, "mIoUI": 1.0, "mIoUC": 1.0, "norm": 2},
    {"gamma": 2.0, "log_loss": True, "class_weights": (1.0, 0.5, 2.0, 1.5)},
    {"class_agnostic": True, "mIoUI": 1.0},
]


def data(seed=0, soft=False, shape=SHAPE, class_axis=1):
    rng = np.random.default_rng(seed)
    logits = make_logits(rng, shape)
    make = make_soft_label if soft else make_hard_label
    label = make(rng, shape, class_axis=class_axis)
    keep = make_keep_mask(rng, shape, class_axis=class_axis)
    return jnp.asarray(logits), jnp.asarray(label), jnp.asarray(keep)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("options", OPTIONS)
def test_custom_vjp_equals_autodiff(soft, options):
    logits, label, keep = data(soft=soft)

    def plain(z):
        return jdt_array.jdt_loss(z, label, keep_mask=keep, **options)

    def custom(z):
        return jj.jdt_loss(z, label, keep_mask=keep, **options)

    v1, g1 = jax.jit(jax.value_and_grad(plain))(logits)
    v2, g2 = jax.jit(jax.value_and_grad(custom))(logits)
    np.testing.assert_allclose(v1, v2, rtol=1e-12)
    np.testing.assert_allclose(g1, g2, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("fn", [jdt_array.jdt_loss, jj.jdt_loss, jj.dice_loss])
def test_vmap_gives_per_example_losses(fn):
    logits, label, _ = data(1)
    per_example = jax.vmap(lambda z, y: fn(z[None], y[None], mIoUI=1.0))(logits, label)
    one_by_one = [fn(logits[i : i + 1], label[i : i + 1], mIoUI=1.0) for i in range(3)]
    np.testing.assert_allclose(per_example, jnp.stack(one_by_one), rtol=1e-12)
    grads = jax.vmap(jax.grad(lambda z, y: fn(z[None], y[None])))(logits, label)
    assert grads.shape == logits.shape and bool(jnp.all(jnp.isfinite(grads)))


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_channels_last_gradient(soft):
    shape = (2, 5, 6, 4)
    logits, label, keep = data(2, soft, shape, class_axis=-1)

    def loss(z, fn):
        return fn(z, label, keep_mask=keep, class_axis=-1, mIoUC=1.0)

    g_last = jax.grad(loss)(logits, jj.jdt_loss)
    # The same loss on the transposed (channels-first) problem.
    first = jnp.moveaxis(logits, -1, 1)
    label_first = jnp.moveaxis(label, -1, 1) if soft else label
    g_first = jax.grad(
        lambda z: jdt_array.jdt_loss(z, label_first, keep_mask=keep, mIoUC=1.0)
    )(first)
    np.testing.assert_allclose(g_last, jnp.moveaxis(g_first, 1, -1), rtol=1e-9, atol=1e-15)


def test_value_and_grad_inside_jit():
    logits, label, _ = data(3)
    fn = jax.jit(
        lambda z, y: jdt_array.value_and_grad(
            jdt_array.dice_loss, z, y, ignore_index=IGNORE
        )
    )
    value, grad = fn(logits, label)
    expected, expected_grad = jdt_array.value_and_grad(
        jdt_array.dice_loss, np.asarray(logits), np.asarray(label), ignore_index=IGNORE
    )
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    np.testing.assert_allclose(grad, expected_grad, rtol=1e-9, atol=1e-15)


def test_training_reduces_the_loss():
    rng = np.random.default_rng(0)
    image = jnp.asarray(rng.normal(size=(4, 8, 8, 3)))  # channels-last, as in Flax
    label = (image[..., 0] > 0).astype(jnp.int32) + (image[..., 1] > 1).astype(jnp.int32)
    params = {"w": jnp.zeros((3, 3)), "b": jnp.zeros(3)}

    def loss_fn(p):
        logits = image @ p["w"] + p["b"]
        return jj.jaccard_loss(logits, label, class_axis=-1)

    @jax.jit
    def step(p):
        value, grads = jax.value_and_grad(loss_fn)(p)
        return jax.tree.map(lambda a, g: a - 2.0 * g, p, grads), value

    losses = []
    for _ in range(30):
        params, value = step(params)
        losses.append(float(value))
    assert losses[-1] < 0.7 * losses[0]
