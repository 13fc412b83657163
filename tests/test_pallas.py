"""The fused Pallas form of the JDT statistics and their gradient (Pallas's interpreter
on CPU) against the XLA form and the float64 reference, and the kernel choice
``JDT_ARRAY_JAX_KERNEL``."""

import numpy as np
import pytest
from _support.inputs import (
    IGNORE,
    make_hard_label,
    make_keep_mask,
    make_logits,
    make_soft_label,
)
from _support.reference import jdt_loss_reference

jax = pytest.importorskip("jax")
jnp = jax.numpy
pytest.importorskip("jax.experimental.pallas")

from jdt_array._kernels import jax_pallas  # noqa: E402
from jdt_array.backends import jax as jj  # noqa: E402

VARIABLE = "JDT_ARRAY_JAX_KERNEL"

# (shape, class axis, soft label, ignored fraction, keep mask): small and odd, so that
# the class tiles and the pixel blocks are padded and masked.
CASES = [
    pytest.param((2, 5, 7, 3), 1, False, 0.2, False, id="5-classes-ignored"),
    pytest.param((2, 1, 4, 5), 1, False, 0.0, False, id="1-class"),
    pytest.param((2, 37, 3, 5), 1, False, 0.1, True, id="37-classes-two-tiles-keep"),
    pytest.param((2, 5, 3, 6), -1, False, 0.2, True, id="channels-last-keep"),
    pytest.param((1, 4, 3, 4, 5), 1, False, 0.2, False, id="3d-ignored"),
    pytest.param((2, 3, 33, 17), 1, False, 0.0, False, id="two-pixel-blocks"),
    pytest.param((2, 5, 6, 5), 1, True, 0.0, True, id="soft-keep"),
    pytest.param((2, 3, 4, 3, 6), -1, True, 0.0, False, id="soft-3d-channels-last"),
    pytest.param((2, 35, 3, 3), -1, True, 0.0, True, id="soft-35-classes-channels-last"),
]
OPTIONS = {"mIoUD": 1.0, "mIoUI": 1.0, "mIoUC": 0.5, "ignore_index": IGNORE}


def _inputs(shape, class_axis, soft, ignored, keep, seed=0):
    rng = np.random.default_rng(seed)
    logits = make_logits(rng, shape)
    if soft:
        label = make_soft_label(rng, shape, class_axis=class_axis)
    else:
        label = make_hard_label(rng, shape, class_axis=class_axis, ignore_fraction=ignored)
    mask = make_keep_mask(rng, shape, class_axis=class_axis) if keep else None
    return logits, label, mask


def _value_and_grad(monkeypatch, kernel, logits, label, mask, **options):
    monkeypatch.setenv(VARIABLE, kernel)
    keep = None if mask is None else jnp.asarray(mask)
    y = jnp.asarray(label)

    def loss(z):
        return jj.jdt_loss(z, y, keep_mask=keep, **options)

    return jax.jit(jax.value_and_grad(loss))(jnp.asarray(logits))


def _runs_pallas(monkeypatch, kernel, logits, label, **options):
    monkeypatch.setenv(VARIABLE, kernel)
    step = jax.grad(lambda z: jj.jdt_loss(z, label, **options))
    return "pallas_call" in str(jax.make_jaxpr(step)(logits))


@pytest.mark.parametrize("shape, class_axis, soft, ignored, keep", CASES)
def test_pallas_value_and_gradient_match_xla_and_float64_reference(
    monkeypatch, shape, class_axis, soft, ignored, keep
):
    logits, label, mask = _inputs(shape, class_axis, soft, ignored, keep)
    options = {**OPTIONS, "class_axis": class_axis}
    v_pallas, g_pallas = _value_and_grad(
        monkeypatch, "pallas", logits, label, mask, **options
    )
    v_xla, g_xla = _value_and_grad(monkeypatch, "xla", logits, label, mask, **options)
    want = jdt_loss_reference(logits, label, keep_mask=mask, **options)
    assert g_pallas.dtype == jnp.float64 and g_pallas.shape == shape
    np.testing.assert_allclose(v_pallas, want, rtol=1e-12)
    np.testing.assert_allclose(v_pallas, v_xla, rtol=1e-12)
    np.testing.assert_allclose(g_pallas, g_xla, rtol=1e-9, atol=1e-14)
    # One class: the softmax is 1 everywhere and the gradient 0; otherwise it is not.
    assert np.any(np.asarray(g_pallas) != 0) == (shape[class_axis] > 1)


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_pallas_float32_is_close_to_float64_reference(monkeypatch, soft):
    shape = (2, 6, 5, 7)
    logits, label, mask = _inputs(shape, 1, soft, 0.2, True)
    z = np.float32(logits)
    y = np.float32(label) if soft else label.astype(np.int32)
    value, grad = _value_and_grad(monkeypatch, "pallas", z, y, mask, **OPTIONS)
    _, grad64 = _value_and_grad(monkeypatch, "xla", logits, label, mask, **OPTIONS)
    assert value.dtype == jnp.float32 and grad.dtype == jnp.float32
    np.testing.assert_allclose(value, jdt_loss_reference(z, y, keep_mask=mask, **OPTIONS),
                               rtol=1e-5)  # fmt: skip
    np.testing.assert_allclose(grad, grad64, rtol=1e-4, atol=1e-6)


def test_pallas_statistics_equal_the_xla_statistics():
    """The (B, C) statistics themselves, hard and soft, with dropped pixels."""
    from jdt_array._cardinalities import statistics
    from jdt_array._inputs import prepare, with_probabilities

    for soft in (False, True):
        logits, label, mask = _inputs((2, 7, 5, 4), 1, soft, 0.2, True, seed=3)
        z, y, keep = jnp.asarray(logits), jnp.asarray(label), jnp.asarray(mask)
        inputs = with_probabilities(prepare(z, y, keep, ignore_index=IGNORE))
        want = statistics(inputs)[0]
        got = jax.jit(jax_pallas.statistics, static_argnums=(3, 4))(
            z, y, inputs.keep, 1, not soft
        )
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-14)


def test_pallas_gradient_under_vmap_is_per_example(monkeypatch):
    logits, label, _ = _inputs((3, 5, 4, 6), 1, False, 0.0, False, seed=1)
    z, y = jnp.asarray(logits), jnp.asarray(label)
    monkeypatch.setenv(VARIABLE, "pallas")

    def one(zi, yi):
        return jj.dice_loss(zi[None], yi[None], mIoUI=1.0)

    batched = jax.jit(jax.vmap(jax.value_and_grad(one)))(z, y)
    single = jax.jit(jax.value_and_grad(one))
    singles = [single(z[i], y[i]) for i in range(3)]
    np.testing.assert_allclose(batched[0], [v for v, _ in singles], rtol=1e-12)
    np.testing.assert_allclose(batched[1], np.stack([g for _, g in singles]), rtol=1e-9,
                               atol=1e-14)  # fmt: skip


def test_soft_label_gradient_is_the_same_with_pallas(monkeypatch):
    """A trained soft label gets its gradient from the XLA code on both paths."""
    logits, label, mask = _inputs((2, 4, 5, 3), 1, True, 0.0, True, seed=2)
    z, y, keep = jnp.asarray(logits), jnp.asarray(label), jnp.asarray(mask)
    grads = {}
    for kernel in ("xla", "pallas"):
        monkeypatch.setenv(VARIABLE, kernel)
        loss = lambda z, y: jj.jaccard_loss(z, y, keep_mask=keep)  # noqa: E731
        grads[kernel] = jax.jit(jax.grad(loss, argnums=(0, 1)))(z, y)
    for g_pallas, g_xla in zip(grads["pallas"], grads["xla"], strict=True):
        np.testing.assert_allclose(g_pallas, g_xla, rtol=1e-9, atol=1e-14)


def test_nan_at_dropped_pixels_stays_out_of_the_pallas_form(monkeypatch):
    logits, label, mask = _inputs((2, 5, 4, 4), 1, False, 0.3, True, seed=4)
    dropped = ~mask | (label == IGNORE)
    poisoned = np.where(dropped[:, None], np.nan, logits)
    clean = _value_and_grad(monkeypatch, "pallas", logits, label, mask, **OPTIONS)
    dirty = _value_and_grad(monkeypatch, "pallas", poisoned, label, mask, **OPTIONS)
    np.testing.assert_array_equal(clean[0], dirty[0])
    np.testing.assert_array_equal(clean[1], dirty[1])
    assert np.all(
        np.asarray(dirty[1])[np.broadcast_to(dropped[:, None], logits.shape)] == 0
    )


@pytest.mark.parametrize("check_vma", [False, True], ids=["pallas", "interpreter-declines"])
def test_pallas_under_shard_map_with_axis_name(monkeypatch, check_vma):
    """With check_vma=False the Pallas form runs inside shard_map; with the default
    check, Pallas's interpreter cannot, and the CPU runs the XLA form."""
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    logits, label, _ = _inputs((2, 5, 4, 3), 1, False, 0.0, False, seed=5)
    z, y = jnp.asarray(logits), jnp.asarray(label)
    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    results, programs = {}, {}
    for kernel in ("xla", "pallas"):
        monkeypatch.setenv(VARIABLE, kernel)

        @jax.jit
        @jax.shard_map(mesh=mesh, in_specs=(P("batch"), P("batch")),
                       out_specs=(P(), P("batch")), check_vma=check_vma)  # fmt: skip
        def step(z, y):
            return jax.value_and_grad(
                lambda w: jj.jaccard_loss(w, y, axis_name="batch", mIoUI=1.0)
            )(z)

        results[kernel] = step(z, y)
        programs[kernel] = str(jax.make_jaxpr(step)(z, y))
    assert ("pallas_call" in programs["pallas"]) == (not check_vma)
    np.testing.assert_allclose(results["pallas"][0], results["xla"][0], rtol=1e-12)
    np.testing.assert_allclose(results["pallas"][1], results["xla"][1], rtol=1e-9,
                               atol=1e-14)  # fmt: skip


def test_kernel_variable_selects_the_form_at_trace_time(monkeypatch):
    logits, label, _ = _inputs((2, 3, 4, 4), 1, False, 0.0, False)
    z, y = jnp.asarray(logits), jnp.asarray(label)
    assert _runs_pallas(monkeypatch, "pallas", z, y)
    assert not _runs_pallas(monkeypatch, "xla", z, y)
    # auto is XLA until the Pallas form has run on a GPU
    assert not _runs_pallas(monkeypatch, "auto", z, y)
    monkeypatch.delenv(VARIABLE)
    assert "pallas_call" not in str(jax.make_jaxpr(jax.grad(
        lambda w: jj.jdt_loss(w, y)))(z))  # fmt: skip


@pytest.mark.parametrize(
    "options, shape",
    [({"norm": 2}, (2, 3, 4, 5)), ({"class_axis": 2}, (2, 4, 3, 5))],
    ids=["norm-2", "middle-class-axis"],
)
def test_cases_the_pallas_form_does_not_cover_run_the_xla_form(monkeypatch, options, shape):
    rng = np.random.default_rng(6)
    z = jnp.asarray(make_logits(rng, shape))
    y = jnp.asarray(make_hard_label(rng, shape, class_axis=options.get("class_axis", 1)))
    assert not _runs_pallas(monkeypatch, "pallas", z, y, **options)
    forced = _value_and_grad(monkeypatch, "pallas", z, y, None, **options)
    xla = _value_and_grad(monkeypatch, "xla", z, y, None, **options)
    np.testing.assert_array_equal(forced[0], xla[0])
    np.testing.assert_array_equal(forced[1], xla[1])


def test_non_softmax_activation_declines_the_pallas_form():
    """The one predicate that a new option (another activation) declines through."""
    z = jnp.zeros((2, 3, 4))
    assert jax_pallas.covers(z, None, 1, 1.0)
    assert not jax_pallas.covers(z, None, 1, 1.0, activation="sigmoid")
    assert not jax_pallas.covers(z, None, 1, 1.0, activation=None)
    assert not jax_pallas.covers(jnp.zeros((2, 3, 0)), None, 1, 1.0)


@pytest.mark.parametrize("setting", ["cuda", "PALLAS!", "1"])
def test_an_unknown_kernel_setting_is_a_clear_error(monkeypatch, setting):
    monkeypatch.setenv(VARIABLE, setting)
    z, y = jnp.zeros((1, 2, 3)), jnp.zeros((1, 3), jnp.int32)
    with pytest.raises(ValueError, match=f"{VARIABLE} must be one of auto, xla, pallas"):
        jj.jaccard_loss(z, y)
