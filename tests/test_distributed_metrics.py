"""FineGrainedMetrics over a dataset sharded across replicas: after syncing, every
replica's ``compute()`` equals one pass over the whole dataset. The core's
``synced(gather)`` with a host-side gather between threads (on every backend), two
gloo processes (``backends.torch.sync_metrics``) and ``shard_map``/``pmap``
over 4 CPU devices (``backends.jax.gather_statistics``).
"""

import dataclasses
import functools
import sys

import numpy as np
import pytest
from _support.inputs import IGNORE
from _support.metrics import (
    as_backend_float,
    assert_matches,
    make_label,
    make_multilabel_label,
    make_prob,
)
from _support.metrics_reference import fine_grained_reference
from _support.replicas import (
    Replicas,
    batch_mesh,
    run_torch_ranks,
    run_with_cpu_devices,
    save_results,
    shard_map_of,
)

from jdt_array.metrics import BatchStatistics, FineGrainedMetrics, batch_statistics
from jdt_array.metrics._state import is_per_image

IMAGES = 6
OPTIONS = {
    "calibration": {"num_classes": 4, "ignore_index": IGNORE, "calibration": True, "q": 20},
    "binary": {"num_classes": 2, "binary": True, "calibration": True, "q": 50},
    "compact-classes": {"num_classes": 4, "ignore_index": IGNORE, "classes": [0, 2],
                        "calibration": True, "compact": True},
    "multilabel": {"num_classes": 3, "multilabel": True, "ignore_index": IGNORE, "q": 30},
    "boundary": {"num_classes": 4, "ignore_index": IGNORE, "boundary": True, "q": 20},
}  # fmt: skip


def reference(prob, label, name, **more):
    """The float64 definitions of ``name``'s keys (no worst cases when compact)."""
    options = {k: v for k, v in {**OPTIONS[name], **more}.items() if k != "compact"}
    return fine_grained_reference(
        prob, label, worst=not OPTIONS[name].get("compact"), **options
    )


def dataset(name, images=IMAGES, float_of=lambda x: x):
    """Probabilities and labels of ``images`` images, float64 unless ``float_of``."""
    rng = np.random.default_rng(sum(map(ord, name)))
    options = OPTIONS[name]
    prob = float_of(make_prob(rng, (images, options["num_classes"], 5, 6)))
    ignored = 0.1 if "ignore_index" in options else 0
    if options.get("multilabel"):
        label = make_multilabel_label(rng, prob, ignore_fraction=ignored)
    else:
        label = make_label(rng, prob, ignore_fraction=ignored)
    if "ignore_index" in options:
        label[1] = IGNORE  # an image with every pixel ignored is skipped
    return prob, label


# Shards as lists of batches (start, stop) of the dataset, one list per replica. One
# batch size throughout, so that JAX compiles each operation once.
LAYOUTS = {
    "uneven": [[(0, 2), (2, 4)], [(4, 6)]],
    "one-empty": [[(0, 2), (2, 4), (4, 6)], []],
    "three": [[(4, 6)], [], [(0, 2), (2, 4)]],
}


def update(backend, metric, prob, label):
    x, y = backend.asarray(prob), backend.asarray(label)
    if backend.jit:  # the pure per-batch function under jax.jit, state outside
        metric.update_statistics(jitted_statistics(metric.options)(x, y))
    else:
        metric.update(x, y)


@functools.cache
def jitted_statistics(options):
    """One jitted ``batch_statistics`` per set of options, shared by the replicas."""
    import jax

    return jax.jit(functools.partial(batch_statistics, **dataclasses.asdict(options)))


class HostGather(Replicas):
    """Threads standing for replicas with an all-gather on the host, as an mpi4py
    ``allgather`` of the NumPy statistics would do."""

    def __init__(self, n, to_numpy):
        super().__init__(n)
        self.to_numpy = to_numpy

    def reduce_for(self, rank):
        def gather(stats):
            self.slots[rank] = [self.host(v) for v in stats]
            self.barrier.wait()
            fields = [
                None if parts[0] is None
                else np.concatenate(parts) if is_per_image(stats, name)
                else sum(parts)
                for name, *parts in zip(type(stats)._fields, *self.slots, strict=True)
            ]  # fmt: skip
            self.barrier.wait()
            return type(stats)(*fields)

        return gather

    def host(self, value):
        """An empty replica sends NumPy statistics; the others, the backend's arrays."""
        if value is None or isinstance(value, np.ndarray):
            return value
        return self.to_numpy(value)


def synced_on_replicas(backend, name, layout):
    """Every replica's synced metric, each replica updating its shard of ``name``."""
    prob, label = dataset(name, float_of=lambda x: as_backend_float(backend, x))

    def replica(batches, gather):
        metric = FineGrainedMetrics(**OPTIONS[name])
        for lo, hi in batches:
            update(backend, metric, prob[lo:hi], label[lo:hi])
        return metric.synced(gather)

    shards = LAYOUTS[layout]
    return HostGather(len(shards), backend.to_numpy).run(replica, shards), (prob, label)


def check_every_replica(backend, name, layout):
    replicas, (prob, label) = synced_on_replicas(backend, name, layout)
    expected = reference(prob, label, name)
    for metric in replicas:
        assert_matches(backend, metric.compute(), expected)
        table = metric.per_class()
        assert all(v.shape == (OPTIONS[name]["num_classes"],) for v in table.values())


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["calibration", "binary"])
def test_every_replica_computes_the_metrics_of_the_whole_dataset(backend, name, layout):
    check_every_replica(backend, name, layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["compact-classes", "multilabel", "boundary"])
def test_compact_multilabel_and_boundary_replicas_sync_the_same_way(
    grid_backend, name, layout
):
    check_every_replica(grid_backend, name, layout)


def test_synced_leaves_the_local_metric_unchanged_and_counts_each_image_once():
    prob, label = dataset("calibration")
    local = FineGrainedMetrics(**OPTIONS["calibration"])
    local.update(prob[:2], label[:2])
    before = local.compute()
    other = BatchStatistics(*local.statistics(prob[2:], label[2:]))

    def gather(stats):  # a second replica holding the other images
        return BatchStatistics(
            *(
                None
                if a is None
                else np.concatenate([a, b])
                if name != "sce_gap"
                else a + b
                for name, a, b in zip(BatchStatistics._fields, stats, other, strict=True)
            )
        )

    whole = fine_grained_reference(prob, label, **OPTIONS["calibration"])
    for _ in range(2):  # syncing again gives the same: nothing is added twice
        assert local.synced(gather).compute() == pytest.approx(whole, rel=1e-12)
    assert local.compute() == before


def test_an_empty_replica_sends_empty_statistics_of_the_right_shape():
    sent = []
    metric = FineGrainedMetrics(**OPTIONS["binary"], num_bins=7)
    prob, label = dataset("binary")
    other = metric.statistics(prob, label)
    synced = metric.synced(lambda stats: sent.append(stats) or other)
    (stats,) = sent
    held = [v for v in stats if v is not None]  # (no boundary counts without boundary)
    assert [tuple(np.shape(v)) for v in held] == [
        (0, 2), (0, 2), (0, 2), (0,), (0,), (0, 7), (0,), (1, 7), (0,),
    ]  # fmt: skip
    # integer counts in int64, gaps in float64: what the other replicas send
    assert [np.asarray(v).dtype.kind for v in held] == list("iiiiifffi")
    assert not np.any(stats.sce_gap)
    expected = fine_grained_reference(prob, label, **OPTIONS["binary"], num_bins=7)
    assert synced.compute() == pytest.approx(expected, rel=1e-12)


def test_invalid_labels_on_one_replica_raise_on_every_replica():
    prob, label = dataset("calibration")
    label[4, 0, 0] = 9  # not a class id and not ignore_index

    def replica(batches, gather):
        metric = FineGrainedMetrics(**OPTIONS["calibration"])
        for lo, hi in batches:
            metric.update(prob[lo:hi], label[lo:hi])
        return metric.synced(gather)

    for metric in HostGather(2, np.asarray).run(replica, LAYOUTS["uneven"]):
        with pytest.raises(ValueError, match="class ids outside"):
            metric.compute()


def test_a_gather_with_statistics_of_other_options_is_refused():
    prob, label = dataset("calibration")
    metric = FineGrainedMetrics(**OPTIONS["calibration"])
    metric.update(prob, label)
    narrower = FineGrainedMetrics(3).statistics(np.argmax(prob, axis=1) % 3, label % 3)
    message = r"stats hold intersection of shape \(6, 3\), but this metric needs \(B, 4\)"
    with pytest.raises(ValueError, match=message):
        metric.synced(lambda stats: narrower)
    with pytest.raises(TypeError, match="BatchStatistics"):
        metric.synced(lambda stats: tuple(stats))


# ---------------------------------------------------------------- torch.distributed

WORLD = 2
# Per case, per rank: the batches (start, stop) of the dataset that rank evaluates.
TORCH_CASES = {
    "uneven": ("calibration", LAYOUTS["uneven"]),
    "one-empty": ("binary", LAYOUTS["one-empty"]),
    "compact": ("compact-classes", LAYOUTS["one-empty"]),
    "multilabel": ("multilabel", LAYOUTS["uneven"]),
    "nothing": ("binary", [[], []]),
    "compact-nothing": ("compact-classes", [[], []]),
    "bad-label": ("calibration", LAYOUTS["uneven"]),
}
TIMEOUT_S = 60


def torch_dataset(case):
    import torch

    name, _ = TORCH_CASES[case]
    prob, label = dataset(name)
    if case == "bad-label":
        label[5, 0, 0] = 9  # seen by rank 1 only
    return torch.asarray(prob), torch.asarray(label)


def outcome(compute):
    """``compute()``'s results, or its error message."""
    try:
        return {"results": compute()}
    except ValueError as error:
        return {"error": str(error)}


def rank_results(rank):
    """What one of the two processes computes, in the gloo group of both."""
    import torch.distributed as dist

    from jdt_array.backends.torch.metrics import sync_metrics

    group = dist.new_group(list(range(WORLD)))  # an explicit process_group
    results = {}
    for case, (name, layout) in TORCH_CASES.items():
        prob, label = torch_dataset(case)
        local = FineGrainedMetrics(**OPTIONS[name])
        for lo, hi in layout[rank]:
            local.update(prob[lo:hi], label[lo:hi])
        sync = {"process_group": group} if case == "uneven" else {}
        results[case] = outcome(sync_metrics(local, **sync).compute)
        results[f"{case}/local"] = outcome(local.compute)
    return results


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("metric-ranks")
    return run_torch_ranks(
        rank_results, out, world=WORLD, timeout_s=TIMEOUT_S, suffix=".json"
    )


@pytest.mark.parametrize("case", ["uneven", "one-empty", "compact", "multilabel"])
def test_every_rank_computes_the_metrics_of_the_whole_dataset(ranks, case):
    name, _ = TORCH_CASES[case]
    expected = reference(*dataset(name), name)
    for result in ranks:
        assert result[case]["results"] == pytest.approx(expected, rel=1e-12)


def test_sync_leaves_each_rank_with_its_own_shard(ranks):
    name, layout = TORCH_CASES["uneven"]
    prob, label = dataset(name)
    for rank, result in enumerate(ranks):
        rows = np.concatenate([np.arange(lo, hi) for lo, hi in layout[rank]])
        expected = fine_grained_reference(prob[rows], label[rows], **OPTIONS[name])
        assert result["uneven/local"]["results"] == pytest.approx(expected, rel=1e-12)
        assert result["uneven/local"]["results"] != pytest.approx(expected_all(name))


def expected_all(name):
    return fine_grained_reference(*dataset(name), **OPTIONS[name])


def test_no_image_on_any_rank_is_an_error_on_every_rank(ranks):
    for result in ranks:
        assert "needs at least one update" in result["nothing"]["error"]
        assert "needs at least one update" in result["compact-nothing"]["error"]


def test_invalid_labels_on_one_rank_raise_on_every_rank(ranks):
    assert "results" in ranks[0]["bad-label/local"]  # rank 0's own images are fine
    for result in ranks:
        assert "class ids outside" in result["bad-label"]["error"]


def test_sync_needs_an_initialised_process_group():
    pytest.importorskip("torch")
    from jdt_array.backends.torch.metrics import gather_statistics, sync_metrics

    metric = FineGrainedMetrics(3)
    with pytest.raises(RuntimeError, match="init_process_group"):
        sync_metrics(metric)
    with pytest.raises(RuntimeError, match="init_process_group"):
        gather_statistics(
            metric.statistics(np.zeros((1, 2), dtype=int), np.ones((1, 2), dtype=int))
        )
    with pytest.raises(TypeError, match="FineGrainedMetrics"):
        sync_metrics({"mIoUD": 1.0})


# ---------------------------------------------------------------- JAX devices

DEVICES = 4
STEPS = 2  # evaluation batches of 2 images per device


def device_results():
    """Metrics from the statistics gathered inside shard_map and pmap."""
    import jax
    from jax.sharding import PartitionSpec as P

    from jdt_array.backends import jax as jj

    mesh = batch_mesh(jax, DEVICES)
    results = {}
    for name, options in OPTIONS.items():
        prob, label = dataset(name, images=STEPS * 2 * DEVICES)
        batches = np.split(prob, STEPS), np.split(label, STEPS)
        metric = FineGrainedMetrics(**options)

        def gathered(x, y, metric=metric):
            return jj.gather_statistics(metric.statistics(x, y), "batch")

        mapped = jax.pmap(gathered, axis_name="batch")

        def pmapped(x, y, mapped=mapped):  # every device holds the result: take one
            per_device = (a.reshape(DEVICES, -1, *a.shape[1:]) for a in (x, y))
            return jax.tree.map(lambda v: v[0], mapped(*per_device))

        step = {
            "shard_map": jax.jit(
                shard_map_of(jax)(
                    gathered, mesh=mesh, in_specs=(P("batch"), P("batch")), out_specs=P()
                )
            ),
            "pmap": pmapped,
        }
        for transform, fn in step.items():
            synced = FineGrainedMetrics(**options)
            for x, y in zip(*batches, strict=True):
                synced.update_statistics(fn(x, y))
            results[f"{name}/{transform}"] = synced.compute()
    return results


if __name__ == "__main__":
    save_results(device_results(), sys.argv[1])


@pytest.fixture(scope="module")
def devices(tmp_path_factory):
    out = tmp_path_factory.mktemp("metric-devices")
    return run_with_cpu_devices(
        __file__, out, devices=DEVICES, timeout_s=120, suffix=".json"
    )


@pytest.mark.parametrize("transform", ["shard_map", "pmap"])
@pytest.mark.parametrize("name", OPTIONS)
def test_gathered_device_statistics_give_the_metrics_of_the_whole_dataset(
    devices, name, transform
):
    expected = reference(*dataset(name, images=STEPS * 2 * DEVICES), name)
    assert devices[f"{name}/{transform}"] == pytest.approx(expected, rel=1e-12)
