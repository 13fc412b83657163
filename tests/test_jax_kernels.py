"""The JAX kernel layer's own forms: the class-axis folds, the softmax with its
``custom_jvp``, the host sort of the Lovasz losses; each against plain JAX / NumPy."""

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jnp = jax.numpy

from jdt_array._kernels import jax as jk  # noqa: E402
from jdt_array._kernels.generic import Generic  # noqa: E402

SHAPES = [
    pytest.param((2, 5, 7, 3), 1, id="channels-first"),
    pytest.param((2, 7, 3, 5), -1, id="channels-last"),
    pytest.param((2, 4, 3, 5), 2, id="middle-axis"),
    pytest.param((3, 1, 6), 1, id="1-class"),
]


@pytest.mark.parametrize("shape, axis", SHAPES)
def test_class_folds_equal_plain_reductions(shape, axis):
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape))
    axis = axis % len(shape)
    np.testing.assert_array_equal(jk.class_max(x, axis), jnp.max(x, axis, keepdims=True))
    np.testing.assert_allclose(
        jk.class_sum(lambda a: a * a, (x,), axis),
        jnp.sum(x * x, axis, keepdims=True),
        rtol=1e-13,
    )


def test_class_max_keeps_nan():
    x = jnp.asarray([[[1.0, 2.0], [np.nan, 0.0], [3.0, -1.0]]])
    assert np.isnan(jk.class_max(x, 1)[0, 0, 0]) and jk.class_max(x, 1)[0, 0, 1] == 2.0


@pytest.mark.parametrize("shape, axis", SHAPES)
def test_softmax_value_and_derivatives_equal_jax_nn_softmax(shape, axis):
    rng = np.random.default_rng(1)
    x = jnp.asarray(3 * rng.normal(size=shape))
    t = jnp.asarray(rng.normal(size=shape))
    axis = axis % len(shape)
    want, want_t = jax.jvp(lambda z: jax.nn.softmax(z, axis=axis), (x,), (t,))
    got, got_t = jax.jit(lambda z, s: jax.jvp(lambda w: jk.softmax(w, axis), (z,), (s,)))(
        x, t
    )
    np.testing.assert_allclose(got, want, rtol=1e-13)
    np.testing.assert_allclose(got_t, want_t, rtol=1e-10, atol=1e-15)
    # Reverse mode (the transpose of the jvp) and under vmap.
    weights = jnp.asarray(rng.normal(size=shape))

    def loss(fn):
        return lambda z: jnp.sum(fn(z) * weights)

    g_want = jax.grad(loss(lambda z: jax.nn.softmax(z, axis=axis)))(x)
    g_got = jax.vmap(jax.grad(loss(lambda z: jk.softmax(z, axis))))(jnp.stack([x, x]))
    np.testing.assert_allclose(g_got[1], g_want, rtol=1e-10, atol=1e-15)


def test_hand_softmax_gradient_equals_the_generic_one():
    rng = np.random.default_rng(2)
    prob = jax.nn.softmax(jnp.asarray(rng.normal(size=(2, 6, 5, 4))), axis=1)
    g = jnp.asarray(rng.normal(size=prob.shape))
    want = Generic(jnp).softmax_vjp(prob, g, 1)
    np.testing.assert_allclose(jk.JaxKernels(jnp).softmax_vjp(prob, g, 1), want,
                               rtol=1e-12, atol=1e-15)  # fmt: skip


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_host_sort_is_the_stable_descending_order(dtype):
    """Ties (many, from rounding) keep their order, as in a stable sort; also under jit,
    vmap and with a gradient flowing around it."""
    rng = np.random.default_rng(3)
    key = np.round(rng.random((2, 3, 200)), 1).astype(dtype)
    key[0, 1, :50] = -1.0  # the dropped pixels' key
    want = np.argsort(-key, axis=-1, kind="stable")
    kernels = jk.JaxKernels(jnp)
    got = jax.jit(kernels.argsort_descending)(jnp.asarray(key))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(jax.vmap(kernels.argsort_descending)(jnp.asarray(key)),
                                  want)  # fmt: skip

    def sorted_sum(z):
        order = kernels.argsort_descending(z)
        weights = jnp.arange(z.shape[-1], dtype=z.dtype)
        return jnp.sum(jnp.take_along_axis(z, order, axis=-1) * weights)

    grad = jax.jit(jax.grad(sorted_sum))(jnp.asarray(key))
    rank = np.argsort(want, axis=-1)  # the position of each element in the order
    np.testing.assert_array_equal(grad, rank.astype(dtype))


def test_host_sort_of_nothing_is_empty():
    kernels = jk.JaxKernels(jnp)
    assert kernels.argsort_descending(jnp.zeros((2, 0))).shape == (2, 0)


def test_core_loss_has_second_derivatives():
    """The softmax's custom_jvp is differentiable again: jax.hessian of the core loss
    equals central differences of its gradient."""
    import jdt_array

    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(1, 3, 2, 2)))
    y = jnp.asarray(rng.integers(0, 3, size=(1, 2, 2)))

    def loss(z):
        return jdt_array.jaccard_loss(z, y, smooth=1.0)

    hessian = jax.hessian(loss)(x)
    step = jnp.zeros_like(x).at[0, 1, 0, 0].set(1e-5)
    central = (jax.grad(loss)(x + step) - jax.grad(loss)(x - step)) / 2e-5
    np.testing.assert_allclose(hessian[..., 0, 1, 0, 0], central, rtol=1e-6, atol=1e-10)
    assert np.abs(central).max() > 1e-4


def test_eager_calls_on_the_same_shapes_compile_nothing_again():
    # The class folds are cached jitted functions: called eagerly again on the same
    # shapes, a loss, its gradient and a metric's batch counts run compiled code (a
    # loop over a fresh closure was compiled twice per call: 0.2 s for a tiny input).
    # (A metric's per-image state grows, so its update compiles the new shapes.)
    import jdt_array
    from jdt_array.metrics import batch_statistics

    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, 5, 4, 6)))
    y = jnp.asarray(rng.integers(0, 5, (2, 4, 6)))
    soft = jax.nn.softmax(jnp.asarray(rng.normal(size=(2, 5, 4, 6))), axis=1)

    def run():
        for label in (y, soft):
            jax.block_until_ready(jdt_array.value_and_grad(jdt_array.jdt_loss, x, label))
        jax.block_until_ready(batch_statistics(x, y, num_classes=5))

    run()
    compiled = []

    def listen(event, duration, **kwargs):
        if "compile" in event:
            compiled.append(event)

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        run()
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    assert not compiled
