"""Per-image Lovasz losses over data-parallel replicas: threads with the core's
``reduce`` hook, two gloo processes (``sync_stats=True``, also inside a DDP step) and
``shard_map`` over 4 CPU devices (``axis_name=``) all give the loss and the gradients
of one pass over the global batch; the pooled loss refuses to be synchronised.
"""

import functools
import itertools
import sys

import numpy as np
import pytest
from _support.family_reference import lovasz_hinge_reference, lovasz_softmax_reference
from _support.inputs import IGNORE, make_hard_label, make_keep_mask, make_logits
from _support.replicas import (
    Replicas,
    batch_mesh,
    run_torch_ranks,
    run_with_cpu_devices,
    save_results,
    shard_map_of,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import jdt_array

IMAGES = 4
SHAPE = (IMAGES, 4, 6, 5)
TIMEOUT_S = 60


def case(name, shape=SHAPE):
    """Global float64 inputs of each case: logits, label, keep_mask, the loss, options."""
    rng = np.random.default_rng(sum(map(ord, name)))
    if name == "hinge":
        spatial = (shape[0], *shape[2:])
        logits = make_logits(rng, spatial, scale=1.5)
        label = rng.integers(0, 2, size=spatial)
        label = np.where(rng.random(spatial) < 0.1, IGNORE, label)
        return logits, label, None, jdt_array.lovasz_hinge_loss, {"ignore_index": IGNORE}
    logits = make_logits(rng, shape)
    label = make_hard_label(rng, shape, absent=(3,), ignore_fraction=0.1)
    label[-1, :2, :2] = 3  # a class that only the last replica sees
    if name == "softmax":
        options = {"per_image": True, "ignore_index": IGNORE}
        return logits, label, None, jdt_array.lovasz_softmax_loss, options
    if name == "softmax-all":
        keep = make_keep_mask(rng, shape)
        keep[0] = False  # an image with nothing kept counts as 0 in the mean
        options = {"per_image": True, "classes": "all", "ignore_index": IGNORE}
        return logits, label, keep, jdt_array.lovasz_softmax_loss, options
    raise ValueError(name)


CASES = ("softmax", "softmax-all", "hinge")


def reference(name, shape=SHAPE):
    """The float64 definition on the global batch."""
    logits, label, keep, _, options = case(name, shape)
    ref = lovasz_hinge_reference if name == "hinge" else lovasz_softmax_reference
    return ref(logits, label, keep_mask=keep, **options)


# ---------------------------------------------------------------- threads, any library


def shard(arrays, bounds):
    """Per-replica slices of the batch axis; repeated bounds give empty shards."""
    edges = [0, *bounds, arrays[0].shape[0]]
    return [
        tuple(None if a is None else a[lo:hi] for a in arrays)
        for lo, hi in itertools.pairwise(edges)
    ]


def replica_losses(name, bounds):
    logits, label, keep, loss, options = case(name)

    def fn(part, reduce):
        return float(loss(part[0], part[1], keep_mask=part[2], reduce=reduce, **options))

    parts = shard((logits, label, keep), bounds)
    return Replicas(len(parts)).run(fn, parts)


@settings(max_examples=20, deadline=None)
@given(
    name=st.sampled_from(CASES),
    bounds=st.lists(st.integers(0, IMAGES), max_size=3).map(sorted),
)
def test_any_split_of_the_batch_gives_the_global_per_image_loss(name, bounds):
    # Shards of any size, empty ones included: each replica gets the mean over all
    # images, not the mean of the replicas' means.
    np.testing.assert_allclose(replica_losses(name, bounds), reference(name), rtol=1e-12)


def test_uneven_shards_without_sync_miss_the_global_loss():
    logits, label, keep, loss, options = case("softmax")
    parts = shard((logits, label, keep), (3,))
    unsynced = [float(loss(x, y, keep_mask=k, **options)) for x, y, k in parts]
    assert abs(np.mean(unsynced) - reference("softmax")) > 1e-2
    np.testing.assert_allclose(replica_losses("softmax", (3,)), reference("softmax"))


@pytest.mark.parametrize("name", CASES)
def test_identity_reduce_is_one_replica(name):
    logits, label, keep, loss, options = case(name)
    plain = float(loss(logits, label, keep_mask=keep, **options))
    hooked = float(loss(logits, label, keep_mask=keep, reduce=lambda v: v, **options))
    assert hooked == pytest.approx(plain, rel=1e-15)


def test_a_global_batch_of_no_images_gives_zero():
    logits, label, _, loss, options = case("softmax")
    assert float(loss(logits[:0], label[:0], reduce=lambda v: v, **options)) == 0.0


POOLED = {
    "softmax": (jdt_array.lovasz_softmax_loss, {}),
    "hinge": (jdt_array.lovasz_hinge_loss, {"per_image": False}),
}


@pytest.mark.parametrize("name", POOLED)
def test_pooled_loss_refuses_to_sync(name):
    logits, label, _, _, _ = case(name)
    loss, options = POOLED[name]
    with pytest.raises(ValueError, match=r"per_image=False .*per_image=True.*jdt_loss"):
        loss(logits, label, reduce=lambda v: v, **options)


def test_bad_reduce_rejected():
    logits, label, _, loss, options = case("softmax")
    with pytest.raises(TypeError, match="reduce must be None or a callable"):
        loss(logits, label, reduce="sum", **options)


# ---------------------------------------------------------------- torch.distributed

WORLD = 2
SHARDS = (slice(0, 3), slice(3, IMAGES))  # uneven: 3 images on rank 0, 1 on rank 1


def tensors(name, part=slice(None)):
    import torch

    logits, label, keep, _, options = case(name)
    x = torch.asarray(logits[part]).requires_grad_(True)
    k = None if keep is None else torch.asarray(keep[part])
    return x, torch.asarray(label[part]), k, options


def torch_loss(name, *, sync_stats=False, process_group=None):
    """The module of each case; "softmax-all" calls the core with ``reduce`` instead."""
    from jdt_array.backends import torch as jt

    _, _, _, loss, options = case(name)
    if name == "softmax-all":
        reduce = jt.replica_sum(process_group) if sync_stats else None
        return functools.partial(loss, reduce=reduce, **options)
    module = jt.LovaszHingeLoss if name == "hinge" else jt.LovaszSoftmaxLoss
    sync = {"process_group": process_group} if process_group is not None else {}
    return module(sync_stats=sync_stats, **sync, **options)


def model_and_data():
    import torch

    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, SHAPE[1], 1, dtype=torch.float64)
    rng = np.random.default_rng(7)
    image = torch.asarray(rng.normal(size=(SHAPE[0], 3, *SHAPE[2:])))
    label = torch.asarray(make_hard_label(rng, SHAPE, absent=(3,)))
    label[3, :2, :2] = 3  # present on rank 1 only
    return model, image, label


def train_step(model, image, label, loss_fn):
    import torch

    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss_fn(model(image), label).backward()
    optimizer.step()


def rank_results(rank):
    """What one of the two processes computes, in the gloo group of both."""
    import torch
    import torch.distributed as dist

    from jdt_array.backends import torch as jt

    mine = SHARDS[rank]
    group = dist.new_group(list(range(WORLD)))  # an explicit process_group
    results = {}
    for name in CASES:
        x, y, k, _ = tensors(name, mine)
        group_of = group if name == "softmax" else None
        loss = torch_loss(name, sync_stats=True, process_group=group_of)(x, y, keep_mask=k)
        loss.backward()
        results[f"{name}/loss"] = loss.item()
        results[f"{name}/grad"] = x.grad.numpy()
        results[f"{name}/unsynced"] = torch_loss(name)(x, y, keep_mask=k).item()

    model, image, label = model_and_data()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    loss_fn = jt.LovaszSoftmaxLoss(per_image=True, sync_stats=True)
    train_step(ddp, image[mine], label[mine], loss_fn)
    for key, value in ddp.module.state_dict().items():
        results[f"ddp/{key}"] = value.numpy()
    return results


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("lovasz-ranks")
    return run_torch_ranks(rank_results, out, world=WORLD, timeout_s=TIMEOUT_S)


def single_process(name):
    x, y, k, _ = tensors(name)
    loss = torch_loss(name)(x, y, keep_mask=k)
    loss.backward()
    return loss.item(), x.grad.numpy()


@pytest.mark.parametrize("name", CASES)
def test_every_rank_gets_the_global_batch_loss(ranks, name):
    expected = reference(name)
    assert single_process(name)[0] == pytest.approx(expected, rel=1e-12)
    for result in ranks:
        assert result[f"{name}/loss"] == pytest.approx(expected, rel=1e-12)
    # The shards differ in size: the mean of the ranks' own losses is another number.
    unsynced = [result[f"{name}/unsynced"] for result in ranks]
    assert np.mean(unsynced) != pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", CASES)
def test_each_rank_gets_world_size_times_its_slice_of_the_global_gradient(ranks, name):
    # As for jdt_loss: the all-reduce's backward sums the ranks' equal incoming
    # gradients, and DDP's average over WORLD undoes the factor.
    _, expected = single_process(name)
    assert np.any(expected != 0)
    for rank, result in enumerate(ranks):
        np.testing.assert_allclose(
            result[f"{name}/grad"] / WORLD, expected[SHARDS[rank]], rtol=1e-9, atol=1e-15
        )


def test_ddp_step_equals_the_single_process_step_on_the_global_batch(ranks):
    from jdt_array.backends import torch as jt

    model, image, label = model_and_data()
    train_step(model, image, label, jt.LovaszSoftmaxLoss(per_image=True))
    before = model_and_data()[0].state_dict()
    for key, value in model.state_dict().items():
        assert not np.array_equal(value.numpy(), before[key].numpy())  # it moved
        for result in ranks:
            np.testing.assert_allclose(
                result[f"ddp/{key}"], value.numpy(), rtol=1e-9, atol=1e-13
            )


def test_modules_refuse_to_sync_the_pooled_loss():
    jt = pytest.importorskip("jdt_array.backends.torch")
    with pytest.raises(ValueError, match=r"LovaszSoftmaxLoss with per_image=False"):
        jt.LovaszSoftmaxLoss(sync_stats=True)
    with pytest.raises(ValueError, match=r"LovaszHingeLoss with per_image=False"):
        jt.LovaszHingeLoss(per_image=False, sync_stats=True)
    jt.LovaszHingeLoss(sync_stats=True)  # per_image=True by default: syncs


def test_module_sync_options_are_checked():
    jt = pytest.importorskip("jdt_array.backends.torch")
    with pytest.raises(TypeError, match="sync_stats"):
        jt.LovaszSoftmaxLoss(per_image=True, sync_stats=1)
    with pytest.raises(ValueError, match="process_group"):
        jt.LovaszHingeLoss(process_group=object())
    x, y, k, _ = tensors("softmax")
    with pytest.raises(RuntimeError, match="init_process_group"):
        jt.LovaszSoftmaxLoss(per_image=True, sync_stats=True)(x, y, keep_mask=k)
    assert "sync_stats=True" in repr(jt.LovaszHingeLoss(sync_stats=True))


# ---------------------------------------------------------------- JAX devices

DEVICES = 4
JAX_SHAPE = (2 * DEVICES, 4, 5, 6)  # two images per device
FORMS = ("core", "axis_name")  # jdt_array.lovasz_*(reduce=), backends.jax.lovasz_*


def device_results():
    """Sharded values and gradients of every case and form."""
    import jax
    from jax.sharding import PartitionSpec as P

    from jdt_array.backends import jax as jj

    mesh = batch_mesh(jax, DEVICES)
    batch = P("batch")

    def sharded(fn, out_specs):
        return shard_map_of(jax)(fn, mesh=mesh, in_specs=(batch,) * 3, out_specs=out_specs)

    def loss_form(name, form):
        _, _, _, loss, options = case(name, JAX_SHAPE)
        if form == "core":
            return functools.partial(loss, reduce=jj.replica_sum("batch"), **options)
        adapter = jj.lovasz_hinge_loss if name == "hinge" else jj.lovasz_softmax_loss
        return functools.partial(adapter, axis_name="batch", **options)

    def one_case(name, logits, label, keep):
        _, _, _, loss, options = case(name, JAX_SHAPE)
        out = {}
        out["single/loss"], out["single/grad"] = jax.value_and_grad(
            functools.partial(loss, **options)
        )(logits, label, keep_mask=keep)
        for form in FORMS:
            fn = loss_form(name, form)

            def local(z, y, k, fn=fn):
                return jax.value_and_grad(fn)(z, y, keep_mask=k)

            def total(z, fn=fn):
                return sharded(lambda z, y, k: fn(z, y, keep_mask=k), P())(z, label, keep)

            out[f"{form}/loss"], out[f"{form}/grad"] = sharded(local, (P(), batch))(
                logits, label, keep
            )
            out[f"{form}/outer-grad"] = jax.grad(total)(logits)
        return out

    results = {}
    for name in CASES:
        logits, label, keep, _, _ = case(name, JAX_SHAPE)
        keep = np.ones(label.shape, dtype=bool) if keep is None else keep
        out = jax.jit(functools.partial(one_case, name))(logits, label, keep)
        results.update({f"{name}/{key}": np.asarray(v) for key, v in out.items()})
    return results


if __name__ == "__main__":
    save_results(device_results(), sys.argv[1])


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    out = tmp_path_factory.mktemp("lovasz-devices")
    return run_with_cpu_devices(__file__, out, devices=DEVICES, timeout_s=120)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", CASES)
def test_every_device_gets_the_global_batch_loss(devices, name, form):
    expected = reference(name, JAX_SHAPE)
    np.testing.assert_allclose(devices[f"{name}/single/loss"], expected, rtol=1e-12)
    np.testing.assert_allclose(devices[f"{name}/{form}/loss"], expected, rtol=1e-12)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", CASES)
def test_each_device_gets_its_slice_of_the_global_gradient(devices, name, form):
    # Inside shard_map, psum transposes to a broadcast: no factor of the device count.
    expected = devices[f"{name}/single/grad"]
    assert np.any(expected != 0)
    for key in ("grad", "outer-grad"):
        np.testing.assert_allclose(
            devices[f"{name}/{form}/{key}"], expected, rtol=1e-9, atol=1e-15
        )


def test_jax_forms_refuse_to_sync_the_pooled_loss():
    pytest.importorskip("jax")
    from jdt_array.backends import jax as jj

    logits, label, _, _, _ = case("softmax")
    with pytest.raises(ValueError, match="cannot be synchronised"):
        jj.lovasz_softmax_loss(logits, label, axis_name="batch")
    with pytest.raises(ValueError, match="cannot be synchronised"):
        jj.lovasz_hinge_loss(logits[:, 0], label % 2, per_image=False, axis_name="batch")
