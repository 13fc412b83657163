"""sync_stats over torch.distributed: two gloo processes on this machine give the loss
and the gradients of one process on the concatenated batch, also inside a DDP step.

The two processes run every case once (a module fixture) and save their results; the
tests compare them with a single process on the global batch.
"""

import numpy as np
import pytest
from _support.inputs import (
    IGNORE,
    make_hard_label,
    make_keep_mask,
    make_logits,
    make_soft_label,
)
from _support.replicas import run_torch_ranks

torch = pytest.importorskip("torch")
dist = pytest.importorskip("torch.distributed")
if not dist.is_available():
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from jdt_array.backends import torch as jt  # noqa: E402

WORLD = 2
SHAPE = (2 * WORLD, 4, 6, 5)  # global batch: two images per rank
BACKWARDS = ("vjp", "autodiff")
TIMEOUT_S = 60


def case(name):
    """Global float64 inputs and options of each case (the same in every process)."""
    rng = np.random.default_rng(sum(map(ord, name)))
    logits = make_logits(rng, SHAPE)
    if name == "hard":
        label = make_hard_label(rng, SHAPE, absent=(3,), ignore_fraction=0.1)
        label[3, :2, :2] = 3  # a small class that only rank 1 sees
        options = {"mIoUD": 0.5, "mIoUI": 0.25, "mIoUC": 0.25, "ignore_index": IGNORE}
        return logits, label, None, options
    if name == "soft":
        options = {
            "mIoUD": 0.4, "mIoUI": 1.0, "mIoUC": 0.5, "norm": 2, "gamma": 2.0,
            "log_loss": True, "class_weights": [1.0, 0.5, 2.0, 1.5],
            "active_classes_mode_soft": "PRESENT", "threshold": 0.3,
        }  # fmt: skip
        return logits, make_soft_label(rng, SHAPE), make_keep_mask(rng, SHAPE), options
    if name == "agnostic":
        label = make_hard_label(rng, SHAPE)
        options = {
            "class_agnostic": True,
            "class_weights": [1.0, 2.0, 3.0, 4.0],
            "mIoUI": 1.0,
        }
        return logits, label, None, options
    if name == "small-class":  # the FAQ's case: per-rank losses miss a rare class
        label = make_hard_label(rng, SHAPE, absent=(3,))
        label[2, 0, 0] = 3
        return logits, label, None, {}
    raise ValueError(name)


CASES = ("hard", "soft", "agnostic", "small-class")


def tensors(name, part=slice(None)):
    logits, label, keep, options = case(name)
    x = torch.asarray(logits[part]).requires_grad_(True)
    y = torch.asarray(label[part])
    k = None if keep is None else torch.asarray(keep[part])
    return x, y, k, options


def model_and_data():
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, SHAPE[1], 1, dtype=torch.float64)
    rng = np.random.default_rng(7)
    image = torch.asarray(rng.normal(size=(SHAPE[0], 3, *SHAPE[2:])))
    label = torch.asarray(make_hard_label(rng, SHAPE, absent=(3,)))
    label[1, :2, :2] = 3  # present on rank 0 only
    return model, image, label


DDP_LOSS = {"mIoUD": 1.0, "mIoUI": 0.5, "mIoUC": 0.5}


def train_step(model, image, label, loss_fn):
    """One SGD step on JDT + cross-entropy (a per-rank mean, as DDP expects)."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    logits = model(image)
    loss = loss_fn(logits, label) + torch.nn.functional.cross_entropy(logits, label)
    loss.backward()
    optimizer.step()
    return loss.detach()


def rank_results(rank):
    """What one of the two processes computes, in the gloo group of both."""
    mine = slice(rank * SHAPE[0] // WORLD, (rank + 1) * SHAPE[0] // WORLD)
    group = dist.new_group(list(range(WORLD)))  # an explicit process_group
    results = {}
    for name in CASES:
        for backward in BACKWARDS:
            x, y, k, options = tensors(name, mine)
            sync = {"process_group": group} if name == "soft" else {}
            loss = jt.jdt_loss(
                x, y, keep_mask=k, backward=backward, sync_stats=True, **sync, **options
            )
            loss.backward()
            results[f"{name}/{backward}/loss"] = loss.item()
            results[f"{name}/{backward}/grad"] = x.grad.numpy()
        x, y, k, options = tensors(name, mine)
        results[f"{name}/unsynced/loss"] = jt.jdt_loss(x, y, keep_mask=k, **options).item()

    for backward in BACKWARDS:
        model, image, label = model_and_data()  # the same start for both
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        loss_fn = jt.JDTLoss(sync_stats=True, backward=backward, **DDP_LOSS)
        train_step(ddp, image[mine], label[mine], loss_fn)
        for key, value in ddp.module.state_dict().items():
            results[f"ddp/{backward}/{key}"] = value.numpy()
    return results


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """The results of the two processes: one dict per rank."""
    out = tmp_path_factory.mktemp("distributed")
    return run_torch_ranks(rank_results, out, world=WORLD, timeout_s=TIMEOUT_S)


def single_process(name):
    x, y, k, options = tensors(name)
    loss = jt.jdt_loss(x, y, keep_mask=k, backward="autodiff", **options)
    loss.backward()
    return loss.item(), x.grad.numpy()


def rank_slice(array, rank):
    size = array.shape[0] // WORLD
    return array[rank * size : (rank + 1) * size]


@pytest.mark.parametrize("backward", BACKWARDS)
@pytest.mark.parametrize("name", CASES)
def test_every_rank_gets_the_loss_of_the_concatenated_batch(ranks, name, backward):
    expected, _ = single_process(name)
    for result in ranks:
        assert result[f"{name}/{backward}/loss"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("backward", BACKWARDS)
@pytest.mark.parametrize("name", CASES)
def test_each_rank_gets_world_size_times_its_slice_of_the_global_gradient(
    ranks, name, backward
):
    # The all-reduce's backward sums the ranks' (equal) incoming gradients: the
    # gradient of WORLD equal losses, which DDP's average divides by WORLD again.
    _, expected = single_process(name)
    for rank, result in enumerate(ranks):
        np.testing.assert_allclose(
            result[f"{name}/{backward}/grad"] / WORLD, rank_slice(expected, rank),
            rtol=1e-9, atol=1e-15,
        )  # fmt: skip


def test_unsynced_per_rank_losses_miss_the_global_loss(ranks):
    # Rank 0 never sees class 3, so alone it averages over fewer classes.
    expected, _ = single_process("small-class")
    unsynced = [result["small-class/unsynced/loss"] for result in ranks]
    assert abs(np.mean(unsynced) - expected) > 1e-2
    assert abs(unsynced[0] - expected) > 1e-2


@pytest.mark.parametrize("backward", BACKWARDS)
def test_ddp_step_equals_the_single_process_step_on_the_global_batch(ranks, backward):
    model, image, label = model_and_data()
    train_step(model, image, label, jt.JDTLoss(backward="autodiff", **DDP_LOSS))
    before = model_and_data()[0].state_dict()
    for key, value in model.state_dict().items():
        assert not torch.equal(value, before[key])  # the step moved every parameter
        for result in ranks:
            np.testing.assert_allclose(
                result[f"ddp/{backward}/{key}"], value.numpy(), rtol=1e-9, atol=1e-13
            )


def test_sync_without_an_initialised_process_group_is_an_error():
    x, y, _, _ = tensors("agnostic")
    with pytest.raises(RuntimeError, match="init_process_group"):
        jt.JDTLoss(sync_stats=True)(x, y)
    with pytest.raises(RuntimeError, match="init_process_group"):
        jt.jdt_loss(x, y, sync_stats=True, backward="autodiff")


def test_bad_sync_options_rejected():
    with pytest.raises(TypeError, match="sync_stats"):
        jt.JDTLoss(sync_stats=1)
    with pytest.raises(ValueError, match="process_group"):
        jt.JDTLoss(process_group=object())
    x, y, _, _ = tensors("agnostic")
    with pytest.raises(ValueError, match="process_group"):
        jt.jdt_loss(x, y, process_group=object())
