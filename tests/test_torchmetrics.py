"""jdt_array.backends.torchmetrics.FineGrainedMetrics: a torchmetrics.Metric whose
compute() equals the core FineGrainedMetrics on the same images, in one process over
several batches and in two gloo processes (DDP synchronisation by torchmetrics) over
a sharded dataset."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from _support.inputs import IGNORE
from _support.metrics import make_label, make_multilabel_label, make_prob
from _support.replicas import run_torch_ranks

import jdt_array
from jdt_array.metrics import FineGrainedMetrics as CoreMetrics

torch = pytest.importorskip("torch")
pytest.importorskip("torchmetrics")
from jdt_array.backends.torchmetrics import FineGrainedMetrics  # noqa: E402

OPTIONS = {
    "calibration": dict(num_classes=4, ignore_index=IGNORE, calibration=True, q=20),
    "binary": dict(num_classes=2, binary=True, q=50),
    "compact-classes": dict(
        num_classes=4, ignore_index=IGNORE, classes=[1, 3], calibration=True, compact=True
    ),
    "multilabel": dict(num_classes=3, multilabel=True, ignore_index=IGNORE, q=30),
    "boundary": dict(num_classes=4, ignore_index=IGNORE, boundary=True, q=20),
}
IMAGES = 7


def dataset(name, images=IMAGES):
    rng = np.random.default_rng(sum(map(ord, name)))
    options = OPTIONS[name]
    prob = make_prob(rng, (images, options["num_classes"], 5, 6))
    ignored = 0.1 if "ignore_index" in options else 0
    if options.get("multilabel"):
        label = make_multilabel_label(rng, prob, ignore_fraction=ignored)
    else:
        label = make_label(rng, prob, ignore_fraction=ignored)
    return torch.asarray(prob), torch.asarray(label)


def core_metric(name, prob, label):
    core = CoreMetrics(**OPTIONS[name])
    core.update(prob, label)
    return core


def core_results(name, prob, label):
    return core_metric(name, prob, label).compute()


def as_arrays(table):
    return {key: np.asarray(value) for key, value in table.items()}


def as_floats(results):
    return {key: float(value) for key, value in results.items()}


@pytest.mark.parametrize("name", OPTIONS)
def test_compute_equals_the_core_metrics_over_several_batches(name):
    prob, label = dataset(name)
    metric = FineGrainedMetrics(**OPTIONS[name])
    for lo, hi in ((0, 3), (3, 4), (4, IMAGES)):
        metric.update(prob[lo:hi], label[lo:hi])
    results = metric.compute()
    assert all(isinstance(v, torch.Tensor) and v.shape == () for v in results.values())
    core = core_metric(name, prob, label)
    assert as_floats(results) == pytest.approx(core.compute(), rel=1e-7)
    table, want = metric.per_class(), core.per_class()
    assert list(table) == list(want)
    for key, values in table.items():
        assert values.dtype == torch.float64 and values.shape == (prob.shape[1],)
        np.testing.assert_allclose(values.numpy(), want[key], rtol=1e-7, err_msg=key)


def test_the_state_is_the_core_layout():
    """torchmetrics holds the fields of the core's layout, no list of its own."""
    for name, options in OPTIONS.items():
        metric = FineGrainedMetrics(**options)
        layout = CoreMetrics(**options).layout
        assert list(metric._defaults) == list(layout.fields), name
        for field_name, field in layout.fields.items():
            value = getattr(metric, field_name)
            if field.per_image:  # starts as the core's empty field: (0, C) int64, say
                (empty,) = value
                assert tuple(empty.shape) == (0, *field.shape), field_name
                assert (empty.dtype == torch.int64) == field.exact, field_name
            else:
                assert tuple(value.shape) == field.shape, field_name


def test_forward_returns_the_batch_and_keeps_what_came_before():
    prob, label = dataset("calibration")
    metric = FineGrainedMetrics(**OPTIONS["calibration"])
    metric.update(prob[:3], label[:3])
    batch = metric(prob[3:5], label[3:5])  # forward: this batch alone, and added
    assert as_floats(batch) == pytest.approx(
        core_results("calibration", prob[3:5], label[3:5]), rel=1e-7
    )
    ignored = torch.full_like(label[5:], IGNORE)
    with pytest.raises(ValueError, match="no pixel was evaluated"):
        metric(prob[5:], ignored)  # every pixel ignored: raises, as documented ...
    bad = label[5:].clone()
    bad[0, 0, 0] = 9
    with pytest.raises(ValueError, match="class ids outside"):
        metric(prob[5:], bad)
    # ... and the images accumulated before are all still there (issue 24, item 4)
    want = core_results("calibration", prob[:5], label[:5])
    assert as_floats(metric.compute()) == pytest.approx(want, rel=1e-7)
    metric(prob[5:], label[5:])
    assert as_floats(metric.compute()) == pytest.approx(
        core_results("calibration", prob, label), rel=1e-7
    )


def test_merge_state_refuses_other_options_with_the_core_message():
    prob, label = dataset("calibration")
    options = OPTIONS["calibration"]
    metric = FineGrainedMetrics(**options)
    metric.update(prob[:3], label[:3])
    other = FineGrainedMetrics(**options)
    other.update(prob[3:], label[3:])
    narrower = FineGrainedMetrics(**{**options, "num_classes": 3})
    narrower.update(prob[:, :3], label % 3)
    for wrong in (narrower, FineGrainedMetrics(**{**options, "ignore_index": 0})):
        with pytest.raises(ValueError, match="cannot merge metrics with other options"):
            metric.merge_state(wrong)
    with pytest.raises(
        ValueError,
        match=r"incoming state hold intersection of shape "
        r"\(7, 3\), but this metric needs \(B, 4\)",
    ):
        metric.merge_state(narrower.metric_state)
    metric.merge_state(other)  # (issue 24, item 6): the refusals changed nothing
    want = core_results("calibration", prob, label)
    assert as_floats(metric.compute()) == pytest.approx(want, rel=1e-7)
    compact = FineGrainedMetrics(**OPTIONS["compact-classes"])
    compact.update(prob[:3], label[:3])
    more = FineGrainedMetrics(**OPTIONS["compact-classes"])
    more.update(prob[3:], label[3:])
    compact.merge_state(more.metric_state)
    want = core_results("compact-classes", prob, label)
    assert as_floats(compact.compute()) == pytest.approx(want, rel=1e-7)


def test_reset_forgets_every_image():
    prob, label = dataset("calibration")
    metric = FineGrainedMetrics(**OPTIONS["calibration"])
    metric.update(prob[:4], label[:4])
    metric.reset()
    metric.update(prob[4:], label[4:])
    want = core_results("calibration", prob[4:], label[4:])
    assert as_floats(metric.compute()) == pytest.approx(want, rel=1e-7)


def test_channels_last_logits_and_integer_predictions_are_taken():
    prob, label = dataset("binary")
    want = core_results("binary", prob, label)
    last = FineGrainedMetrics(**OPTIONS["binary"], class_axis=-1)
    last.update(torch.log(prob).movedim(1, -1), label)  # logits: the same argmax
    ids = FineGrainedMetrics(**OPTIONS["binary"])
    ids.update(prob.argmax(1), label)
    for metric in (last, ids):
        assert as_floats(metric.compute()) == pytest.approx(want, rel=1e-12)


def test_bad_options_and_labels_raise_the_core_errors():
    with pytest.raises(ValueError, match="num_classes=2"):
        FineGrainedMetrics(3, binary=True)
    prob, label = dataset("calibration")
    label[0, 0, 0] = 9
    metric = FineGrainedMetrics(**OPTIONS["calibration"])
    metric.update(prob, label)
    with pytest.raises(ValueError, match="class ids outside"):
        metric.compute()


# Each rank's share of the dataset: uneven, one rank updating twice; or every image
# on rank 0 and none on rank 1 (a rank without validation batches).
SHARDS = {
    "uneven": {0: [(0, 2), (2, 5)], 1: [(5, IMAGES)]},
    "one-empty": {0: [(0, 3), (3, IMAGES)], 1: []},
}


def rank_results(rank):
    """What one of the two processes computes after DDP-style synchronisation."""
    results = {}
    for layout, shards in SHARDS.items():
        for name in OPTIONS:
            prob, label = dataset(name)
            metric = FineGrainedMetrics(**OPTIONS[name])
            for lo, hi in shards[rank]:
                metric.update(prob[lo:hi], label[lo:hi])
            key = f"{layout}/{name}"
            results[key] = as_floats(metric.compute())  # torchmetrics syncs here
            results[f"{key}/per-class"] = {
                k: v.tolist() for k, v in metric.per_class().items()
            }
            metric.reset()
            try:  # every process syncs the reset (empty) state
                metric.compute()
            except ValueError as error:
                results[f"{key}/after-reset"] = str(error)
    # forward with dist_sync_on_step: the batch values of both processes' batches
    prob, label = dataset("calibration")
    stepped = FineGrainedMetrics(**OPTIONS["calibration"], dist_sync_on_step=True)
    lo, hi = (0, 4) if rank == 0 else (4, IMAGES)
    results["step"] = as_floats(stepped(prob[lo:hi], label[lo:hi]))
    return results


def test_two_gloo_processes_compute_the_metrics_of_the_whole_dataset(tmp_path):
    ranks = run_torch_ranks(rank_results, tmp_path, world=2, timeout_s=120, suffix=".json")
    for name in OPTIONS:
        core = core_metric(name, *dataset(name))
        want, table = core.compute(), core.per_class()
        for layout in SHARDS:  # one-empty: issue 24, item 1 (gloo aborted before)
            key = f"{layout}/{name}"
            for result in ranks:
                assert result[key] == pytest.approx(want, rel=1e-7), key
                for k, values in result[f"{key}/per-class"].items():
                    np.testing.assert_allclose(values, table[k], rtol=1e-7, err_msg=k)
                assert "needs at least one update" in result[f"{key}/after-reset"]
    want = core_results("calibration", *dataset("calibration"))
    for result in ranks:
        assert result["step"] == pytest.approx(want, rel=1e-7)


def test_importing_the_adapter_without_torchmetrics_names_the_extra():
    root = Path(jdt_array.__file__).resolve().parent.parent
    code = (
        "import sys; sys.modules['torchmetrics'] = None\n"
        "try:\n    import jdt_array.backends.torchmetrics\n"
        "except ImportError as err:\n    print(err)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=dict(os.environ, PYTHONPATH=str(root)),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert "jdt-array[torchmetrics]" in out
