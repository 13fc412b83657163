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
from _support.metrics import make_label, make_prob
from _support.replicas import run_torch_ranks

import jdt_array
from jdt_array.metrics import FineGrainedMetrics as CoreMetrics

torch = pytest.importorskip("torch")
pytest.importorskip("torchmetrics")
from jdt_array.backends.torchmetrics import FineGrainedMetrics  # noqa: E402

OPTIONS = {
    "calibration": dict(num_classes=4, ignore_index=IGNORE, calibration=True, q=20),
    "binary": dict(num_classes=2, binary=True, q=50),
}
IMAGES = 7


def dataset(name, images=IMAGES):
    rng = np.random.default_rng(sum(map(ord, name)))
    options = OPTIONS[name]
    prob = make_prob(rng, (images, options["num_classes"], 5, 6))
    label = make_label(rng, prob, ignore_fraction=0.1 if "ignore_index" in options else 0)
    return torch.asarray(prob), torch.asarray(label)


def core_results(name, prob, label):
    core = CoreMetrics(**OPTIONS[name])
    core.update(prob, label)
    return core.compute()


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
    assert as_floats(results) == pytest.approx(core_results(name, prob, label), rel=1e-7)


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


# Each rank's share of the dataset: uneven, and one rank updating twice.
SHARDS = {0: [(0, 2), (2, 5)], 1: [(5, IMAGES)]}


def rank_results(rank):
    """What one of the two processes computes after DDP-style synchronisation."""
    results = {}
    for name in OPTIONS:
        prob, label = dataset(name)
        metric = FineGrainedMetrics(**OPTIONS[name])
        for lo, hi in SHARDS[rank]:
            metric.update(prob[lo:hi], label[lo:hi])
        results[name] = as_floats(metric.compute())  # torchmetrics syncs here
        metric.reset()
        results[f"{name}/after-reset-empty"] = sum(len(t) for t in metric.intersection)
    return results


def test_two_gloo_processes_compute_the_metrics_of_the_whole_dataset(tmp_path):
    ranks = run_torch_ranks(rank_results, tmp_path, world=2, timeout_s=120, suffix=".json")
    for name in OPTIONS:
        want = core_results(name, *dataset(name))
        for result in ranks:
            assert result[name] == pytest.approx(want, rel=1e-7)
            assert result[f"{name}/after-reset-empty"] == 0


def test_importing_the_adapter_without_torchmetrics_names_the_extra():
    root = Path(jdt_array.__file__).resolve().parent.parent
    code = (
        "import sys; sys.modules['torchmetrics'] = None\n"
        "try:\n    import jdt_array.backends.torchmetrics\n"
        "except ImportError as err:\n    print(err)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(root)),
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "jdt-array[torchmetrics]" in out
