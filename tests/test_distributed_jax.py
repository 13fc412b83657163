"""axis_name / reduce over JAX devices: ``shard_map`` over 4 CPU devices gives the loss
and the gradients of one device on the global batch.

XLA fixes the number of CPU devices when JAX starts, and other test modules start it
first, so the sharded computations run once in a subprocess (this file run as a script
with ``--xla_force_host_platform_device_count=4``) that saves its results; the tests
compare them.
"""

import functools
import sys

import numpy as np
import pytest
from _support.inputs import (
    IGNORE,
    make_hard_label,
    make_keep_mask,
    make_logits,
    make_soft_label,
)
from _support.replicas import batch_mesh, run_with_cpu_devices, save_results, shard_map_of

DEVICES = 4
SHAPE = (2 * DEVICES, 4, 5, 6)  # global batch: two images per device
CASES = ("hard", "soft", "agnostic", "small-class")
FORMS = ("core", "custom_vjp")  # jdt_array.jdt_loss(reduce=), backends.jax (axis_name=)
TIMEOUT_S = 120


def case(name):
    """Global float64 inputs and options of each case."""
    rng = np.random.default_rng(sum(map(ord, name)))
    logits = make_logits(rng, SHAPE)
    keep = np.ones(SHAPE[:1] + SHAPE[2:], dtype=bool)
    if name == "hard":
        label = make_hard_label(rng, SHAPE, absent=(3,), ignore_fraction=0.1)
        label[5, :2, :2] = 3  # a small class that only device 2 sees
        options = {"mIoUD": 0.5, "mIoUI": 0.25, "mIoUC": 0.25, "ignore_index": IGNORE}
    elif name == "soft":
        label, keep = make_soft_label(rng, SHAPE), make_keep_mask(rng, SHAPE)
        options = {
            "mIoUD": 0.4, "mIoUI": 1.0, "mIoUC": 0.5, "norm": 2, "gamma": 2.0,
            "log_loss": True, "class_weights": (1.0, 0.5, 2.0, 1.5),
            "active_classes_mode_soft": "PRESENT", "threshold": 0.3,
        }  # fmt: skip
    elif name == "agnostic":
        label = make_hard_label(rng, SHAPE)
        options = {
            "class_agnostic": True,
            "class_weights": (1.0, 2.0, 3.0, 4.0),
            "mIoUI": 1.0,
        }
    else:  # the FAQ's case: per-device losses miss a rare class
        label = make_hard_label(rng, SHAPE, absent=(3,))
        label[6, 0, 0] = 3
        options = {}
    return logits, label, keep, options


def model_data():
    rng = np.random.default_rng(7)
    image = rng.normal(size=(SHAPE[0], *SHAPE[2:], 3))  # channels-last, as in Flax
    label = make_hard_label(rng, SHAPE, absent=(3,))
    label[1, :2, :2] = 3  # present on device 0 only
    params = {"w": rng.normal(size=(3, SHAPE[1])), "b": np.zeros(SHAPE[1])}
    return params, image, label


MODEL_LOSS = {"mIoUD": 1.0, "mIoUI": 0.5, "mIoUC": 0.5, "class_axis": -1}


# ---------------------------------------------------------------- the subprocess


def device_results():
    """Every sharded computation and its single-device counterpart."""
    import jax
    from jax.sharding import PartitionSpec as P

    import jdt_array
    from jdt_array.backends import jax as jj

    shard_map = shard_map_of(jax)
    mesh = batch_mesh(jax, DEVICES)
    batch = P("batch")

    def sharded(fn, out_specs, in_specs=(batch, batch, batch)):
        return shard_map(fn, mesh=mesh, in_specs=in_specs, out_specs=out_specs)

    def loss_form(form, axis_name, options):
        if form == "core":
            reduce = None if axis_name is None else jj.replica_sum(axis_name)
            return functools.partial(jdt_array.jdt_loss, reduce=reduce, **options)
        return functools.partial(jj.jdt_loss, axis_name=axis_name, **options)

    def one_case(options, logits, label, keep):
        """Single-device and sharded values of one case: one jit, one compilation."""
        single = loss_form("core", None, options)
        out = {}
        out["single/loss"], out["single/grad"] = jax.value_and_grad(single)(
            logits, label, keep_mask=keep
        )
        for form in FORMS:
            fn = loss_form(form, "batch", options)

            def local(z, y, k, fn=fn):
                return jax.value_and_grad(fn)(z, y, keep_mask=k)

            def total(z, fn=fn):
                return sharded(lambda z, y, k: fn(z, y, keep_mask=k), P())(z, label, keep)

            out[f"{form}/loss"], out[f"{form}/grad"] = sharded(local, (P(), batch))(
                logits, label, keep
            )
            out[f"{form}/outer-grad"] = jax.grad(total)(logits)
        per_device = sharded(lambda z, y, k: single(z, y, keep_mask=k)[None], batch)
        out["unsynced/loss"] = per_device(logits, label, keep)
        return out

    results = {}
    for name in CASES:
        *arrays, options = case(name)
        out = jax.jit(functools.partial(one_case, options))(*arrays)
        results.update({f"{name}/{key}": value for key, value in out.items()})

    def model_loss(p, x, y, axis_name=None):
        logits = x @ p["w"] + p["b"]
        if axis_name is None:  # the reference: plain autodiff on one device
            return jdt_array.jaccard_loss(logits, y, **MODEL_LOSS)
        return jj.jaccard_loss(logits, y, axis_name=axis_name, **MODEL_LOSS)

    synced_grad = jax.grad(functools.partial(model_loss, axis_name="batch"))

    def gradients(params, image, label):
        in_specs = (P(), batch, batch)
        return {
            "single": jax.grad(model_loss)(params, image, label),
            "shard_map": sharded(synced_grad, P(), in_specs)(params, image, label),
        }

    params, image, label = model_data()
    found = jax.jit(gradients)(params, image, label)
    pmapped = jax.pmap(
        lambda p, x, y: jax.lax.pmean(synced_grad(p, x, y), "batch"),
        axis_name="batch", in_axes=(None, 0, 0),
    )(params, *(a.reshape(DEVICES, -1, *a.shape[1:]) for a in (image, label)))  # fmt: skip
    found["pmap"] = {key: value[0] for key, value in pmapped.items()}
    for transform, grads in found.items():
        results.update({f"params/{transform}/{key}": v for key, v in grads.items()})
    return {k: np.asarray(v) for k, v in results.items()}


if __name__ == "__main__":
    save_results(device_results(), sys.argv[1])


# ---------------------------------------------------------------- the tests


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    out = tmp_path_factory.mktemp("devices")
    return run_with_cpu_devices(__file__, out, devices=DEVICES, timeout_s=TIMEOUT_S)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", CASES)
def test_every_device_gets_the_global_batch_loss(devices, name, form):
    np.testing.assert_allclose(
        devices[f"{name}/{form}/loss"], devices[f"{name}/single/loss"], rtol=1e-12
    )


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", CASES)
def test_each_device_gets_its_slice_of_the_global_gradient(devices, name, form):
    # Inside shard_map, psum transposes to a broadcast: no factor of the device count.
    np.testing.assert_allclose(
        devices[f"{name}/{form}/grad"], devices[f"{name}/single/grad"],
        rtol=1e-9, atol=1e-15,
    )  # fmt: skip


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", CASES)
def test_gradient_of_the_sharded_loss_is_the_global_gradient(devices, name, form):
    np.testing.assert_allclose(
        devices[f"{name}/{form}/outer-grad"], devices[f"{name}/single/grad"],
        rtol=1e-9, atol=1e-15,
    )  # fmt: skip


def test_unsynced_per_device_losses_miss_the_global_loss(devices):
    expected = devices["small-class/single/loss"]
    unsynced = devices["small-class/unsynced/loss"]
    assert unsynced.shape == (DEVICES,)
    # Three of the four devices never see the rare class and leave it out.
    assert abs(np.mean(unsynced) - expected) > 1e-2


@pytest.mark.parametrize("transform", ["shard_map", "pmap"])
def test_parameter_gradient_equals_the_single_device_gradient(devices, transform):
    # shard_map sums the replicated parameters' gradients itself; under pmap, psum
    # transposes to psum, and the pmean of the device gradients is the global one.
    for key in ("w", "b"):
        expected = devices[f"params/single/{key}"]
        assert np.any(expected != 0)
        np.testing.assert_allclose(
            devices[f"params/{transform}/{key}"], expected, rtol=1e-9, atol=1e-15
        )
