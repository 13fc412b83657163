"""Boundary IoU in the fine-grained metrics (``boundary=True``): the keys ``mBIoU*``
and the per-class ``BIoU*`` against their definition (the IoU keys of the classes'
boundary bands, tests/_support/metrics_reference.py), on every backend, in both state
layouts, beside unchanged region keys. The adapters and the data-parallel paths are
tested with the other options (test_torchmetrics.py, test_distributed_metrics.py,
the Keras checks)."""

import numpy as np
import pytest
from _support.boundary_reference import band_width, counted_of, reference_counts
from _support.inputs import IGNORE
from _support.metrics import as_backend_float, assert_matches, make_label, make_prob
from _support.metrics_reference import fine_grained_reference

from jdt_array.metrics import FineGrainedMetrics, batch_statistics

rng = np.random.default_rng(26)


def blobs(shape, num_classes, cell=4):
    """Class maps of blocks (objects with edges, not noise), some pixels ignored."""
    coarse = rng.integers(
        0, num_classes, size=(shape[0], *(-(-n // cell) for n in shape[1:]))
    )
    for axis in range(1, len(shape)):
        coarse = np.repeat(coarse, cell, axis=axis)
    label = coarse[(slice(None), *(slice(0, n) for n in shape[1:]))]
    return np.where(rng.random(shape) < 0.05, IGNORE, label)


def shifted(label, num_classes):
    """A prediction that gets the objects right but their edges wrong."""
    pred = np.roll(np.where(label == IGNORE, 0, label), 1, axis=-1)
    return np.where(rng.random(label.shape) < 0.05, rng.integers(0, num_classes), pred)


def run(backend, options, pred, label, *, class_axis=1, batches=2):
    metric = FineGrainedMetrics(**options)
    step = -(-pred.shape[0] // batches)
    for lo in range(0, pred.shape[0], step):
        x = backend.asarray(as_backend_float(backend, pred[lo : lo + step]))
        y = backend.asarray(label[lo : lo + step])
        if backend.jit:  # the pure per-batch statistics under jax.jit
            import jax

            fn = jax.jit(lambda a, b: metric.statistics(a, b, class_axis=class_axis))
            metric.update_statistics(fn(x, y))
        else:
            metric.update(x, y, class_axis=class_axis)
    return metric


def test_boundary_keys_equal_their_definition_on_every_backend(backend):
    label = blobs((4, 12, 16), 4)
    prob = make_prob(rng, (4, 4, 12, 16))
    options = {"num_classes": 4, "ignore_index": IGNORE, "boundary": True, "q": 25}
    metric = run(backend, options, prob, label)
    expected = fine_grained_reference(as_backend_float(backend, prob), label, **options)
    assert_matches(backend, metric.compute(), expected)


CASES = {
    "ids-2d": ({"num_classes": 5}, (5, 20, 24)),
    "width-2-classes": ({"num_classes": 4, "boundary_width": 2, "classes": [1, 3]},
                        (4, 14, 18)),
    "binary": ({"num_classes": 2, "binary": True, "q": 50}, (5, 16, 16)),
    "volume": ({"num_classes": 3, "dilation_ratio": 0.1}, (3, 6, 8, 10)),
    "ratio-of-a-wide-image": ({"num_classes": 3, "dilation_ratio": 0.05}, (2, 8, 60)),
    "compact": ({"num_classes": 4, "compact": True}, (4, 12, 12)),
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_boundary_keys_and_region_keys_equal_their_definition(grid_backend, case):
    options, shape = CASES[case]
    options = {**options, "ignore_index": IGNORE, "boundary": True}
    label = blobs(shape, options["num_classes"])
    pred = shifted(label, options["num_classes"])
    metric = run(grid_backend, options, pred, label)
    reference = {k: v for k, v in options.items() if k != "compact"}
    worst = not options.get("compact", False)
    expected = fine_grained_reference(pred, label, worst=worst, **reference)
    assert_matches(grid_backend, metric.compute(), expected)


def test_channels_last_probabilities_give_the_boundary_of_their_argmax():
    prob = make_prob(rng, (3, 10, 12, 4), class_axis=-1)
    label = make_label(rng, prob, class_axis=-1, ignore_fraction=0.1)
    options = {"num_classes": 4, "ignore_index": IGNORE, "boundary": True}
    metric = FineGrainedMetrics(**options)
    metric.update(prob, label, class_axis=-1)
    expected = fine_grained_reference(prob, label, class_axis=-1, **options)
    assert metric.compute() == pytest.approx(expected, rel=1e-12, nan_ok=True)


def test_region_keys_are_the_same_with_and_without_boundaries():
    label = blobs((4, 16, 16), 4)
    pred = shifted(label, 4)
    plain, both = (
        FineGrainedMetrics(4, ignore_index=IGNORE, boundary=b) for b in (False, True)
    )
    for metric in (plain, both):
        metric.update(pred, label)
    region = plain.compute()
    with_boundary = both.compute()
    assert {k: with_boundary[k] for k in region} == region
    assert set(with_boundary) - set(region) == {
        "mBIoUD", "mBIoUI", "mBIoUIQ", "mBIoUI1", "mBIoUC", "mBIoUCQ", "mBIoUC1"
    }  # fmt: skip


def test_per_class_boundary_iou_is_that_of_the_pooled_and_per_image_band_counts():
    label = blobs((4, 16, 20), 4)
    pred = shifted(label, 4)
    metric = FineGrainedMetrics(4, ignore_index=IGNORE, boundary=True)
    metric.update(pred, label)
    table = metric.per_class()
    d = band_width((16, 20))
    counted = counted_of(label, 4)
    tp, pred_band, label_band = reference_counts(label, pred, counted, 4, d)
    union = pred_band + label_band - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        pooled = tp.sum(0) / union.sum(0)
        per_image = tp / union
    np.testing.assert_allclose(table["BIoUD"], 100 * pooled, rtol=1e-12)
    present = label_band > 0
    by_class = [per_image[present[:, c], c].mean() for c in range(4)]
    np.testing.assert_allclose(table["BIoUC"], 100 * np.array(by_class), rtol=1e-12)


def test_a_perfect_prediction_scores_100_at_every_boundary_key():
    label = blobs((3, 12, 12), 3)
    metric = FineGrainedMetrics(3, ignore_index=IGNORE, boundary=True)
    metric.update(np.where(label == IGNORE, 0, label), label)  # right where counted
    results = metric.compute()
    assert all(results[k] == pytest.approx(100.0) for k in results if "BIoU" in k)


def test_batch_statistics_carry_the_band_counts_only_when_asked():
    label = blobs((2, 8, 8), 3)
    plain = batch_statistics(label, label, num_classes=3, ignore_index=IGNORE)
    assert plain.boundary_intersection is None
    stats = batch_statistics(label, label, num_classes=3, ignore_index=IGNORE,
                             boundary=True, boundary_width=1)  # fmt: skip
    want = reference_counts(label, label, counted_of(label, 3), 3, 1)
    got = (stats.boundary_intersection, stats.boundary_pred_count,
           stats.boundary_label_count)  # fmt: skip
    np.testing.assert_array_equal(np.stack(got), want)


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"multilabel": True}, ValueError, "multi-label"),
        ({"dilation_ratio": 0.1, "boundary_width": 3}, ValueError, "not both"),
        ({"boundary_width": 0}, ValueError, "boundary_width"),
        ({"dilation_ratio": -1.0}, ValueError, "dilation_ratio"),
        ({"boundary": 1}, TypeError, "boundary must be a bool"),
    ],
)
def test_bad_boundary_options_are_named(options, error, match):
    with pytest.raises(error, match=match):
        FineGrainedMetrics(3, **{"boundary": True, **options})


def test_a_label_without_spatial_axes_has_no_boundary():
    metric = FineGrainedMetrics(3, boundary=True)
    with pytest.raises(ValueError, match="spatial axes"):
        metric.update(np.array([0, 1, 2]), np.array([0, 1, 1]))
