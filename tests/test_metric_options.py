"""FineGrainedMetrics beyond the defaults: ``per_class()``, ``classes=``,
``multilabel=`` and ``compact=``, against the float64 definitions on the backends and
against torchmetrics and MONAI on the same inputs.

The peers score a class with nothing in label and prediction 0 where this package
leaves it out (NaN per class), so the peer comparisons use data where every class
occurs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from _support.inputs import IGNORE
from _support.metrics import as_backend_float, assert_matches, make_label, make_prob
from _support.metrics_reference import fine_grained_reference, per_class_reference
from hypothesis import given, settings
from hypothesis import strategies as st

from jdt_array.metrics import CompactStatistics, FineGrainedMetrics

SHAPE = (4, 4, 6, 6)
PER_CLASS_KEYS = ["IoUD", "DiceD", "AccD", "IoUI", "DiceI", "IoUC", "DiceC", "AccC"]


def evaluate(backend, batches, *, class_axis=1, **options):
    """A metric that saw ``batches`` (pairs of NumPy arrays) on ``backend``; under jit
    the per-batch part (statistics, and the compact reduction) runs compiled."""
    metric = FineGrainedMetrics(**options)
    for x, y in batches:
        x, y = backend.asarray(x), backend.asarray(y)
        if backend.jit:

            def part(x, y, metric=metric):
                return metric.state_of(metric.statistics(x, y, class_axis=class_axis))

            metric.update_statistics(backend.call(part, x, y))
        else:
            metric.update(x, y, class_axis=class_axis)
    return metric


def multiclass_batches(backend, seed, *, shape=SHAPE, ignore=0.1, absent=(), batches=2):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batches):
        prob = rounded(backend, make_prob(rng, shape))
        label = make_label(rng, prob, ignore_fraction=ignore, absent=absent)
        out.append((prob, label))
    return out


def multilabel_batches(
    backend, seed, *, shape=SHAPE, kind="prob", ignore=0.1, class_axis=1, batches=2
):
    """(predictions, 0/1 labels) of ``kind`` prob, logits or ids; labels agree with
    the predictions on about 70% of the entries."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(batches):
        logits = rng.normal(scale=2.0, size=shape)
        positive = logits > 0
        label = np.where(rng.random(shape) < 0.7, positive, rng.random(shape) < 0.4)
        label = np.where(rng.random(shape) < ignore, IGNORE, label).astype(np.int64)
        x = {
            "prob": 1 / (1 + np.exp(-logits)),
            "logits": logits,
            "ids": positive.astype(np.int32),
        }[kind]
        x = rounded(backend, x)
        if class_axis == -1:
            x, label = np.moveaxis(x, 1, -1), np.moveaxis(label, 1, -1)
        out.append((x, label))
    return out


def rounded(backend, x):
    """``x`` as the backend's float dtype holds it (NumPy float64 without a backend)."""
    return x if backend is None else as_backend_float(backend, x)


def joined(batches):
    return [np.concatenate(parts) for parts in zip(*batches, strict=True)]


def assert_per_class(backend, table, expected):
    assert list(table) == list(expected)
    for key, want in expected.items():
        got = table[key]
        assert isinstance(got, np.ndarray) and got.shape == want.shape, key
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9, err_msg=key)


# -- against the definitions -----------------------------------------------------------

CLASSES_CASES = {
    "no-background": dict(options={"classes": range(1, 4), "ignore_index": IGNORE}),
    "two-classes-q20": dict(options={"classes": [2, 0], "q": 20}),
    "one-class-calibration": dict(
        options={"classes": [2], "calibration": True, "ignore_index": IGNORE}
    ),
    "a-chosen-class-never-seen": dict(absent=(3,), options={"classes": [1, 3]}),
    "no-chosen-class-anywhere": dict(absent=(3,), options={"classes": [3], "q": 50}),
}


@pytest.mark.parametrize("case", CLASSES_CASES.values(), ids=CLASSES_CASES.keys())
def test_classes_match_definitions(grid_backend, case):
    options = dict(case["options"], num_classes=SHAPE[1])
    batches = multiclass_batches(
        grid_backend,
        1,
        absent=case.get("absent", ()),
        ignore=0.1 if "ignore_index" in options else 0.0,
    )
    metric = evaluate(grid_backend, batches, **options)
    expected = fine_grained_reference(*joined(batches), **options)
    assert_matches(grid_backend, metric.compute(), expected)
    assert_per_class(
        grid_backend, metric.per_class(), per_class_reference(*joined(batches), **options)
    )


MULTILABEL_CASES = {
    "probabilities": dict(kind="prob", options={"ignore_index": IGNORE, "q": 20}),
    "logits": dict(kind="logits", options={"activation": "sigmoid", "threshold": 0.3}),
    "0/1-predictions": dict(kind="ids", ignore=0.0, options={}),
    "channels-last-3d": dict(
        kind="prob",
        shape=(3, 3, 4, 3, 5),
        class_axis=-1,
        options={"ignore_index": IGNORE, "threshold": 0.7, "q": 50},
    ),
    "classes": dict(kind="prob", options={"classes": [0, 3], "ignore_index": IGNORE}),
}


@pytest.mark.parametrize("case", MULTILABEL_CASES.values(), ids=MULTILABEL_CASES.keys())
def test_multilabel_matches_definitions(grid_backend, case):
    options = dict(
        case["options"], num_classes=case.get("shape", SHAPE)[1], multilabel=True
    )
    axis = case.get("class_axis", 1)
    batches = multilabel_batches(
        grid_backend,
        2,
        shape=case.get("shape", SHAPE),
        kind=case["kind"],
        ignore=case.get("ignore", 0.1 if "ignore_index" in options else 0.0),
        class_axis=axis,
    )
    metric = evaluate(grid_backend, batches, class_axis=axis, **options)
    expected = fine_grained_reference(*joined(batches), class_axis=axis, **options)
    assert_matches(grid_backend, metric.compute(), expected)
    table = per_class_reference(*joined(batches), class_axis=axis, **options)
    assert_per_class(grid_backend, metric.per_class(), table)
    # every class a binary problem: present where label or prediction has it
    np.testing.assert_array_equal(table["IoUI"], table["IoUC"])


def test_multilabel_takes_boolean_labels_and_predictions():
    rng = np.random.default_rng(3)
    pred, label = rng.random((2, 3, 5, 5)) < 0.4, rng.random((2, 3, 5, 5)) < 0.4
    metric = FineGrainedMetrics(3, multilabel=True)
    metric.update(pred, label)
    expected = fine_grained_reference(
        pred.astype(int), label.astype(int), num_classes=3, multilabel=True
    )
    assert metric.compute() == pytest.approx(expected, rel=1e-12)


COMPACT_CASES = {
    "ignore-index": {"ignore_index": IGNORE},
    "binary": {"num_classes": 2, "binary": True},
    "calibration": {"calibration": True, "ignore_index": IGNORE, "num_bins": 7},
    "classes-calibration": {"classes": [1, 2], "calibration": True},
}


@pytest.mark.parametrize("options", COMPACT_CASES.values(), ids=COMPACT_CASES.keys())
def test_compact_mode_gives_every_key_but_the_worst_cases(grid_backend, options):
    options = {"num_classes": SHAPE[1], **options}
    shape = (SHAPE[0], options["num_classes"], *SHAPE[2:])
    batches = multiclass_batches(
        grid_backend, 4, shape=shape, ignore=0.1 if "ignore_index" in options else 0
    )
    compact = evaluate(grid_backend, batches, compact=True, **options)
    expected = fine_grained_reference(*joined(batches), worst=False, **options)
    assert_matches(grid_backend, compact.compute(), expected)
    full = evaluate(grid_backend, batches, **options)
    table = full.per_class()
    for key, value in compact.per_class().items():
        np.testing.assert_allclose(value, table[key], rtol=1e-12, err_msg=key)


@pytest.mark.parametrize(
    "options",
    [
        {"classes": [0, 2], "ignore_index": IGNORE, "q": 25},
        {
            "multilabel": True,
            "activation": "sigmoid",
            "ignore_index": IGNORE,
            "compact": True,
        },
        {"compact": True, "classes": [1, 2, 3], "ignore_index": IGNORE},
    ],
    ids=["classes", "multilabel-compact", "compact"],
)
def test_options_on_every_backend(backend, options):
    """The smoke set: every backend, array-api-strict without data-dependent shapes and
    JAX under jit included (the compact reduction compiled too)."""
    options = {"num_classes": SHAPE[1], **options}
    if options.get("multilabel"):
        batches = multilabel_batches(backend, 5, kind="logits")
    else:
        batches = multiclass_batches(backend, 5)
    metric = evaluate(backend, batches, **options)
    reference = {k: v for k, v in options.items() if k != "compact"}
    expected = fine_grained_reference(
        *joined(batches), worst=not options.get("compact"), **reference
    )
    assert_matches(backend, metric.compute(), expected)
    assert_per_class(
        backend, metric.per_class(), per_class_reference(*joined(batches), **reference)
    )


def test_per_class_holds_what_the_means_average(grid_backend):
    batches = multiclass_batches(grid_backend, 6, absent=(2,))
    metric = evaluate(grid_backend, batches, num_classes=4, ignore_index=IGNORE)
    results, table = metric.compute(), metric.per_class()
    assert list(table) == PER_CLASS_KEYS
    for score in ("IoU", "Dice", "Acc"):
        for level in "DC":
            values = table[f"{score}{level}"]
            np.testing.assert_allclose(np.nanmean(values), results[f"m{score}{level}"])
    # class 2 is never labelled, only predicted: no recall, no level C value, and
    # IoU and Dice 0 at level D
    assert all(np.isnan(table[key][2]) for key in ("AccD", "IoUC", "DiceC", "AccC"))
    assert table["IoUD"][2] == table["DiceD"][2] == 0
    # level I per class counts false alarms as 0: at most the level C value
    assert np.all(table["IoUI"][[0, 1, 3]] <= table["IoUC"][[0, 1, 3]] + 1e-12)


def test_per_class_is_nan_outside_classes_and_for_binary_background():
    batches = multiclass_batches(None, 7)
    x, y = joined(batches)
    m = FineGrainedMetrics(4, classes=[1, 3], ignore_index=IGNORE)
    m.update(x, y)
    for values in m.per_class().values():
        assert np.isnan(values[[0, 2]]).all() and not np.isnan(values[[1, 3]]).any()
    b = FineGrainedMetrics(2, binary=True)
    b.update(np.argmax(x, 1) % 2, np.where(y == IGNORE, 0, y) % 2)
    for values in b.per_class().values():
        assert np.isnan(values[0]) and not np.isnan(values[1])


def test_compact_state_has_the_same_size_whatever_the_number_of_images():
    sizes = []
    for images in (2, 40):
        rng = np.random.default_rng(8)
        prob = make_prob(rng, (images, 5, 4, 4))
        metric = FineGrainedMetrics(5, compact=True, calibration=True)
        metric.update(prob, make_label(rng, prob))
        state = metric.state()
        assert isinstance(state, CompactStatistics)
        sizes.append([tuple(np.shape(v)) for v in state])
    assert sizes[0] == sizes[1]
    assert int(state.images) == 40


def test_a_mean_over_nothing_is_nan_in_the_multiclass_rule():
    label = np.zeros((2, 3, 3), dtype=np.int64)  # only background in every label
    m = FineGrainedMetrics(3, classes=[1, 2], q=50)
    m.update(label, label)
    results = m.compute()
    assert all(math.isnan(v) for k, v in results.items() if k != "Acc"), results
    assert math.isnan(results["Acc"])  # no pixel labelled with a chosen class


# -- against the peers -------------------------------------------------------------------

PEER_SHAPES = {"2d": (3, 4, 12, 10), "3d": (2, 3, 5, 6, 4)}


def peer_inputs(shape, ignore, seed=9):
    """Probabilities and labels where every class occurs in the label of every image
    (the peers score a class with nothing to score 0, this package leaves it out)."""
    rng = np.random.default_rng(seed)
    prob = make_prob(rng, shape)
    label = make_label(rng, prob, agree=0.7, ignore_fraction=0.1 if ignore else 0.0)
    flat = label.reshape(shape[0], -1)
    flat[:, : shape[1]] = np.arange(shape[1])  # every class in every image
    return prob, flat.reshape(label.shape)


@pytest.mark.parametrize("ignore", [False, True], ids=["all-pixels", "ignore-index"])
@pytest.mark.parametrize("shape", PEER_SHAPES.values(), ids=PEER_SHAPES.keys())
def test_per_class_dataset_iou_equals_torchmetrics_jaccard_none(shape, ignore):
    torch = pytest.importorskip("torch")
    classification = pytest.importorskip("torchmetrics.classification")
    prob, label = peer_inputs(shape, ignore)
    options = {"ignore_index": IGNORE} if ignore else {}
    metric = FineGrainedMetrics(shape[1], **options)
    metric.update(prob, label)
    table = metric.per_class()
    peer = classification.MulticlassJaccardIndex(shape[1], average="none", **options)
    peer.update(torch.asarray(prob), torch.asarray(label))
    np.testing.assert_allclose(
        table["IoUD"], 100 * peer.compute().double().numpy(), rtol=1e-6
    )
    # leaving the background out: the mean of the other classes' rows
    without = FineGrainedMetrics(shape[1], classes=range(1, shape[1]), **options)
    without.update(prob, label)
    np.testing.assert_allclose(
        without.compute()["mIoUD"],
        100 * peer.compute()[1:].double().mean().item(),
        rtol=1e-6,
    )


def monai_one_hot(torch, ids, label, num_classes):
    """MONAI's one-hot (B, C, *spatial) of class ids; an ignored pixel all zeros (in
    prediction and label, so that it counts nowhere)."""
    kept = torch.asarray(label != IGNORE)
    one_hot = torch.nn.functional.one_hot(torch.asarray(ids) % num_classes, num_classes)
    return (one_hot.movedim(-1, 1) * kept.unsqueeze(1)).float()


@pytest.mark.parametrize("ignore", [False, True], ids=["all-pixels", "ignore-index"])
@pytest.mark.parametrize("shape", PEER_SHAPES.values(), ids=PEER_SHAPES.keys())
def test_classes_without_background_equal_monai_include_background_false(shape, ignore):
    torch = pytest.importorskip("torch")
    monai = pytest.importorskip("monai.metrics")
    rng = np.random.default_rng(10)
    prob = make_prob(rng, shape)
    # classes missing from some images: MONAI leaves them out (ignore_empty), as here
    label = make_label(rng, prob, agree=0.6, ignore_fraction=0.1 if ignore else 0.0)
    label[0] = np.where(label[0] == 1, 0, label[0])  # class 1 absent from image 0
    C = shape[1]
    metric = FineGrainedMetrics(C, classes=range(1, C), ignore_index=IGNORE)
    metric.update(prob, label)
    results, table = metric.compute(), metric.per_class()
    pred = monai_one_hot(torch, np.argmax(prob, axis=1), label, C)
    target = monai_one_hot(torch, np.where(label == IGNORE, 0, label), label, C)
    for peer, key in ((monai.MeanIoU, "IoU"), (monai.DiceMetric, "Dice")):
        mean = peer(include_background=False, reduction="mean")
        mean(pred, target)
        np.testing.assert_allclose(
            results[f"m{key}I"], 100 * mean.aggregate().item(), rtol=1e-6, err_msg=key
        )
        per_class = peer(include_background=False, reduction="mean_batch")
        per_class(pred, target)
        np.testing.assert_allclose(
            table[f"{key}C"][1:],
            100 * per_class.aggregate().double().numpy(),
            rtol=1e-6,
            err_msg=key,
        )


@pytest.mark.parametrize("kind", ["prob", "logits"])
@pytest.mark.parametrize("ignore", [False, True], ids=["all-entries", "ignore-index"])
@pytest.mark.parametrize("shape", PEER_SHAPES.values(), ids=PEER_SHAPES.keys())
def test_multilabel_dataset_level_equals_torchmetrics(shape, ignore, kind):
    torch = pytest.importorskip("torch")
    classification = pytest.importorskip("torchmetrics.classification")
    ((x, label),) = multilabel_batches(
        None, 11, shape=shape, kind=kind, ignore=0.1 if ignore else 0.0, batches=1
    )
    options = {"ignore_index": IGNORE} if ignore else {}
    activation = {"activation": "sigmoid"} if kind == "logits" else {}
    metric = FineGrainedMetrics(
        shape[1], multilabel=True, threshold=0.4, **options, **activation
    )
    metric.update(x, label)
    results, table = metric.compute(), metric.per_class()
    peers = {
        "IoU": classification.MultilabelJaccardIndex,
        "Dice": classification.MultilabelF1Score,
    }
    for key, peer_class in peers.items():
        for average in ("macro", "none"):
            # torchmetrics applies the sigmoid itself to values outside [0, 1]
            peer = peer_class(shape[1], threshold=0.4, average=average, **options)
            peer.update(torch.asarray(x), torch.asarray(label))
            want = 100 * peer.compute().double().numpy()
            got = results[f"m{key}D"] if average == "macro" else table[f"{key}D"]
            np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"{key} {average}")


# -- properties --------------------------------------------------------------------------

masks = st.lists(
    st.tuples(
        st.lists(st.integers(0, 1), min_size=6, max_size=6),
        st.lists(st.integers(0, 1), min_size=6, max_size=6),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=40, deadline=None)
@given(masks, st.integers(1, 100))
def test_multilabel_with_one_class_is_binary_mode(rows, q):
    """A binary problem scored as the foreground of two classes or as the one class of
    a multi-label problem: the same rules, the same values."""
    pred = np.array([p for p, _ in rows])
    label = np.array([y for _, y in rows])
    binary = FineGrainedMetrics(2, binary=True, q=q)
    binary.update(pred, label)
    multilabel = FineGrainedMetrics(1, multilabel=True, q=q)
    multilabel.update(pred[:, None], label[:, None])
    assert multilabel.compute() == pytest.approx(binary.compute(), rel=1e-12)
    np.testing.assert_allclose(
        multilabel.per_class()["IoUD"], binary.per_class()["IoUD"][1:]
    )


labels = st.integers(min_value=2, max_value=4).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.lists(
            st.lists(st.integers(0, n - 1), min_size=6, max_size=6), min_size=1, max_size=8
        ),
        st.lists(
            st.lists(st.integers(0, n - 1), min_size=6, max_size=6), min_size=8, max_size=8
        ),
        st.sets(st.integers(0, n - 1), min_size=1),
    )
)


@settings(max_examples=40, deadline=None)
@given(labels, st.lists(st.integers(0, 2), min_size=8, max_size=8))
def test_compact_shards_give_the_values_of_one_per_image_pass(data, shard_of):
    num_classes, rows, preds, classes = data
    label, pred = np.array(rows), np.array(preds[: len(rows)])
    shards = [
        FineGrainedMetrics(num_classes, classes=classes, compact=True) for _ in range(3)
    ]
    for i in range(len(rows)):
        shards[shard_of[i]].update(pred[i : i + 1], label[i : i + 1])
    for shard in shards[1:]:
        shards[0].merge(shard)
    whole = FineGrainedMetrics(num_classes, classes=classes)
    whole.update(pred, label)
    want = whole.compute()
    got = shards[0].compute()
    assert got == pytest.approx({k: want[k] for k in got}, rel=1e-12, nan_ok=True)


@settings(max_examples=30, deadline=None)
@given(labels)
def test_choosing_every_class_changes_nothing(data):
    num_classes, rows, preds, _ = data
    label, pred = np.array(rows), np.array(preds[: len(rows)])
    a, b = (
        FineGrainedMetrics(num_classes),
        FineGrainedMetrics(num_classes, classes=range(num_classes)),
    )
    a.update(pred, label)
    b.update(pred, label)
    assert a.compute() == b.compute()
    assert repr(a) == repr(b)  # the same options: they merge


# -- bad input ---------------------------------------------------------------------------

BAD_OPTIONS = [
    ({"classes": []}, ValueError, "at least one class"),
    ({"classes": [0, 4]}, ValueError, r"ids in \[0, 4\), got \[4\]"),
    ({"classes": [1, 1]}, ValueError, "repeat"),
    ({"classes": [1.0]}, TypeError, "int class ids"),
    ({"classes": [True]}, TypeError, "int class ids"),
    ({"classes": "12"}, TypeError, "sequence of class ids"),
    ({"num_classes": 2, "binary": True, "classes": [1]}, ValueError, "binary=True"),
    ({"multilabel": True, "binary": True, "num_classes": 2}, ValueError, "exclude"),
    ({"multilabel": True, "calibration": True}, ValueError, "calibration"),
    ({"activation": "sigmoid"}, ValueError, "multilabel=True"),
    ({"multilabel": True, "activation": "softmax"}, ValueError, "activation"),
    ({"multilabel": True, "threshold": 1.0}, ValueError, r"\(0, 1\)"),
    ({"multilabel": True, "threshold": "0.5"}, TypeError, "threshold"),
    ({"compact": 1}, TypeError, "compact"),
]


@pytest.mark.parametrize(("options", "error", "match"), BAD_OPTIONS)
def test_bad_options_name_the_argument(options, error, match):
    with pytest.raises(error, match=match):
        FineGrainedMetrics(**{"num_classes": 4, **options})


def test_bad_multilabel_inputs_raise():
    m = FineGrainedMetrics(3, multilabel=True)
    prob = np.full((2, 3, 4, 4), 0.5)
    with pytest.raises(ValueError, match=r"shape of prob_or_pred \(2, 3, 4, 4\)"):
        m.update(prob, np.zeros((2, 4, 4), dtype=np.int64))
    with pytest.raises(TypeError, match="cast a float mask"):
        m.update(prob, np.zeros((2, 3, 4, 4)))
    with pytest.raises(ValueError, match="4 classes along class_axis=1"):
        m.update(np.zeros((2, 4, 4, 4)), np.zeros((2, 4, 4, 4), dtype=np.int64))
    with pytest.raises(TypeError, match="floating logits"):
        FineGrainedMetrics(3, multilabel=True, activation="sigmoid").update(
            np.zeros((1, 3, 2, 2), dtype=np.int64), np.zeros((1, 3, 2, 2), dtype=np.int64)
        )


@pytest.mark.parametrize(
    ("options", "x", "y", "match"),
    [
        ({}, 1.5, 0, "1 kept entries that are neither probabilities"),
        ({"activation": "sigmoid"}, math.nan, 0, "1 kept entries with NaN logits"),
        ({}, 0.5, 2, "1 entries that are neither 0, 1 nor ignore_index"),
        ({"ignore_index": 2}, 1.5, 2, None),
    ],
    ids=["probability-above-1", "nan-logit", "label-2", "dropped-entry"],
)
def test_invalid_multilabel_values_raise_in_compute(options, x, y, match):
    prob = np.full((1, 2, 3, 3), 0.25)
    label = np.zeros((1, 2, 3, 3), dtype=np.int64)
    prob[0, 1, 0, 0], label[0, 1, 0, 0] = x, y
    m = FineGrainedMetrics(2, multilabel=True, **options)
    m.update(prob, label)  # counted on the device, raised by compute
    if match is None:  # a value at a dropped entry influences nothing
        m.compute()
        return
    with pytest.raises(ValueError, match=match):
        m.compute()


def test_compact_and_per_image_metrics_do_not_merge():
    with pytest.raises(ValueError, match="other options"):
        FineGrainedMetrics(3).merge(FineGrainedMetrics(3, compact=True))
    with pytest.raises(ValueError, match="other options"):
        FineGrainedMetrics(3).merge(FineGrainedMetrics(3, classes=[1, 2]))


@pytest.mark.parametrize(
    "options",
    [{"compact": True, "classes": [1, 2], "calibration": True},
     {"multilabel": True, "compact": True}, {"multilabel": True, "ignore_index": IGNORE}],
    ids=["compact-classes", "multilabel-compact", "multilabel"],
)  # fmt: skip
def test_update_reads_nothing_on_the_meta_device(options):
    """Where every host read raises: the core and the torchmetrics metric keep their
    state on the device, batch after batch (parts merged on the way)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("torchmetrics")
    from jdt_array.backends.torchmetrics import FineGrainedMetrics as Adapter

    shape = (2, 4, 5, 6)
    prob = torch.empty(shape, device="meta")
    label_shape = shape if options.get("multilabel") else (2, 5, 6)
    label = torch.empty(label_shape, dtype=torch.long, device="meta")
    core, adapter = FineGrainedMetrics(4, **options), Adapter(4, **options).to("meta")
    for _ in range(3):
        core.update(prob, label)
        adapter.update(prob, label)
    for value in (*core.state(), *adapter.metric_state.values()):
        for part in value if isinstance(value, list) else [value]:
            assert part is None or part.device.type == "meta"
