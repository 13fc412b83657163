"""The core's ``reduce`` hook, framework-free: replicas simulated by threads that sum
their arrays behind a barrier get the global-batch loss and their gradient slices.

The framework collectives are tested in test_distributed_torch.py (gloo processes)
and test_distributed_jax.py (shard_map over CPU devices).
"""

import itertools

import numpy as np
import pytest
from _support.inputs import (
    IGNORE,
    make_hard_label,
    make_keep_mask,
    make_logits,
    make_soft_label,
)
from _support.options import OPTION_SETS
from _support.replicas import Replicas
from hypothesis import given, settings
from hypothesis import strategies as st

import jdt_array
from jdt_array.jdt import jdt_value_and_grad

SHAPE = (7, 4, 5, 6)


def problem(seed, hard):
    rng = np.random.default_rng(seed)
    logits = make_logits(rng, SHAPE)
    if hard:
        label = make_hard_label(rng, SHAPE, absent=(3,), ignore_fraction=0.1)
        label[6, :2, :2] = 3  # a small class that only the last replica sees
        return logits, label, {"ignore_index": IGNORE}
    return logits, make_soft_label(rng, SHAPE), {"keep_mask": make_keep_mask(rng, SHAPE)}


def split(arrays, bounds):
    """Per-replica slices of the batch axis of every array (and of a keep_mask)."""
    edges = [0, *bounds, SHAPE[0]]
    logits, label, extra = arrays
    parts = []
    for lo, hi in itertools.pairwise(edges):
        part = {k: v[lo:hi] if k == "keep_mask" else v for k, v in extra.items()}
        parts.append((logits[lo:hi], label[lo:hi], part))
    return parts


def synced(parts, xp=np, **options):
    def fn(part, reduce):
        logits, label, extra = (
            xp.asarray(part[0]), xp.asarray(part[1]),
            {k: xp.asarray(v) if k == "keep_mask" else v for k, v in part[2].items()},
        )  # fmt: skip
        return jdt_value_and_grad(logits, label, reduce=reduce, **extra, **options)

    results = Replicas(len(parts)).run(fn, parts)
    return [float(r[0]) for r in results], np.concatenate(
        [np.asarray(r[1]) for r in results]
    )


@pytest.mark.parametrize("hard", [True, False], ids=["hard", "soft"])
@pytest.mark.parametrize("options", OPTION_SETS.values(), ids=OPTION_SETS.keys())
def test_replicas_get_the_global_loss_and_their_gradient_slices(hard, options):
    logits, label, extra = arrays = problem(0, hard)
    loss, grad = jdt_value_and_grad(logits, label, **extra, **options)
    losses, grads = synced(split(arrays, (3, 5)), **options)
    np.testing.assert_allclose(losses, float(loss), rtol=1e-12)
    np.testing.assert_allclose(grads, grad, rtol=1e-9, atol=1e-15)


def test_array_api_strict_replicas_match_numpy():
    xp = pytest.importorskip("array_api_strict")
    arrays = problem(1, True)
    options = {"mIoUD": 0.5, "mIoUI": 0.25, "mIoUC": 0.25}
    losses, grads = synced(split(arrays, (2, 4)), xp=xp, **options)
    expected = synced(split(arrays, (2, 4)), **options)
    np.testing.assert_allclose(losses, expected[0], rtol=1e-12)
    np.testing.assert_allclose(grads, expected[1], rtol=1e-12)


@settings(max_examples=25, deadline=None)
@given(
    bounds=st.lists(st.integers(1, SHAPE[0] - 1), max_size=3, unique=True).map(sorted),
    hard=st.booleans(),
    weights=st.tuples(*[st.sampled_from([0.0, 0.5, 1.0])] * 3).filter(any),
)
def test_any_split_of_the_batch_gives_the_global_loss(bounds, hard, weights):
    logits, label, extra = arrays = problem(2, hard)
    options = dict(zip(("mIoUD", "mIoUI", "mIoUC"), weights, strict=True))
    expected = float(jdt_array.jdt_loss(logits, label, **extra, **options))

    def fn(part, reduce):
        return float(
            jdt_array.jdt_loss(part[0], part[1], reduce=reduce, **part[2], **options)
        )

    losses = Replicas(len(bounds) + 1).run(fn, split(arrays, bounds))
    np.testing.assert_allclose(losses, expected, rtol=1e-12)


def test_unsynced_replicas_miss_the_global_loss():
    # The FAQ's warning: replicas that never see a rare class leave it out of their
    # dataset-level mean, so their average is not the global-batch loss.
    logits, label, extra = arrays = problem(0, True)
    expected = float(jdt_array.jdt_loss(logits, label, **extra))
    parts = split(arrays, (3, 5))
    unsynced = [float(jdt_array.jdt_loss(lg, lb, **ex)) for lg, lb, ex in parts]
    assert abs(np.mean(unsynced) - expected) > 1e-2
    np.testing.assert_allclose(synced(parts)[0], expected, rtol=1e-12)


def test_loss_from_statistics_sums_statistics_over_replicas():
    logits, label, extra = arrays = problem(3, True)
    options = jdt_array.jdt.JDTOptions(mIoUD=1.0, mIoUC=1.0)
    stats, hard = jdt_array.jdt.jdt_statistics(logits, label, **extra)
    expected = float(jdt_array.jdt.loss_from_statistics(stats, options, hard=hard))

    def fn(part, reduce):
        stats, hard = jdt_array.jdt.jdt_statistics(part[0], part[1], **part[2])
        return float(
            jdt_array.jdt.loss_from_statistics(stats, options, hard=hard, reduce=reduce)
        )

    losses = Replicas(2).run(fn, split(arrays, (4,)))
    np.testing.assert_allclose(losses, expected, rtol=1e-12)


def test_value_and_grad_passes_reduce_to_the_hand_gradient():
    logits, label, extra = arrays = problem(4, False)
    expected = jdt_array.value_and_grad(jdt_array.dice_loss, logits, label, **extra)

    def fn(part, reduce):
        return jdt_array.value_and_grad(
            jdt_array.dice_loss, part[0], part[1], reduce=reduce, **part[2]
        )

    results = Replicas(2).run(fn, split(arrays, (3,)))
    for loss, _ in results:
        assert float(loss) == pytest.approx(float(expected[0]), rel=1e-12)
    np.testing.assert_allclose(
        np.concatenate([g for _, g in results]), expected[1], rtol=1e-9, atol=1e-15
    )


def test_identity_reduce_is_one_replica():
    logits, label, extra = problem(5, True)
    options = {"mIoUD": 0.5, "mIoUI": 0.5, "mIoUC": 0.5, **extra}
    plain = jdt_value_and_grad(logits, label, **options)
    hooked = jdt_value_and_grad(logits, label, reduce=lambda v: v, **options)
    assert float(hooked[0]) == float(plain[0])
    np.testing.assert_array_equal(hooked[1], plain[1])


def test_bad_reduce_rejected():
    logits, label, extra = problem(6, True)
    with pytest.raises(TypeError, match="reduce must be None or a callable"):
        jdt_array.jdt_loss(logits, label, reduce="sum", **extra)
    with pytest.raises(TypeError, match="reduce must be None or a callable"):
        jdt_value_and_grad(logits, label, reduce=3, **extra)
    # Dataset level: tp, fp, fn and present counts of 4 classes in one vector.
    with pytest.raises(ValueError, match=r"reduce must return .* shape \(\) for .*\(16,\)"):
        jdt_array.jdt_loss(logits, label, reduce=lambda v: v.sum(), **extra)
