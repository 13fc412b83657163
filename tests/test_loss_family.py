"""Properties that several losses of the family share, one test each parametrized by
the loss: NumPy half precision accumulates in float32; where nothing is kept, the
gradient is zero. (That the result is a 0-d array of the logits' library, device and
dtype is checked for every loss by the loss tester, test_losses.py.)"""

import numpy as np
import pytest
from _support.family_reference import cross_entropy_reference, lovasz_softmax_reference
from _support.inputs import IGNORE, make_hard_label, make_logits

import jdt_array

SHAPE = (3, 4, 5, 6)


HALF_CASES = {
    "lovasz_softmax_loss": (jdt_array.lovasz_softmax_loss, lovasz_softmax_reference),
    "cross_entropy": (jdt_array.cross_entropy, cross_entropy_reference),
}


@pytest.mark.parametrize("loss", HALF_CASES)
def test_half_precision_accumulates_in_float32(loss):
    fn, reference = HALF_CASES[loss]
    rng = np.random.default_rng(7)
    logits = make_logits(rng, SHAPE).astype(np.float16)
    label = make_hard_label(rng, SHAPE)
    result = fn(logits, label)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, reference(logits, label), rtol=1e-5)


# Per loss: the seed of its logits, the loss, and its logits from the (B, C, ...) ones.
NOTHING_KEPT_CASES = {
    "lovasz_softmax_loss": (10, jdt_array.lovasz_softmax_loss, lambda z: z),
    "lovasz_hinge_loss": (10, jdt_array.lovasz_hinge_loss, lambda z: z[:, 0]),
    "cross_entropy": (11, jdt_array.cross_entropy, lambda z: z),
}


@pytest.mark.parametrize("gradient", ["jax-autodiff", "hand"])
@pytest.mark.parametrize("loss", NOTHING_KEPT_CASES)
def test_gradient_is_zero_when_nothing_is_kept(loss, gradient):
    seed, fn, logits_of = NOTHING_KEPT_CASES[loss]
    logits = make_logits(np.random.default_rng(seed), SHAPE)
    label = np.full((SHAPE[0], *SHAPE[2:]), IGNORE)
    if gradient == "hand":  # NumPy: the hand-derived gradient
        _, grad = jdt_array.value_and_grad(
            fn, logits_of(logits), label, ignore_index=IGNORE
        )
    else:
        jax = pytest.importorskip("jax")
        jnp = jax.numpy
        label = jnp.asarray(label)
        grad = jax.jit(jax.grad(lambda v: fn(v, label, ignore_index=IGNORE)))(
            logits_of(jnp.asarray(logits))
        )
    assert np.all(np.asarray(grad) == 0)
