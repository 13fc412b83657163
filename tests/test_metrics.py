"""FineGrainedMetrics against the float64 definitions, on every backend.

Also: hand-made cases where the dataset, image and class levels disagree the way
Wang et al. (NeurIPS 2023) describe, worst-case and calibration values worked out by
hand, binary mode, merge of shards, reset, bad inputs, and hypothesis properties.
"""

from __future__ import annotations

import numpy as np
import pytest
from _support.inputs import IGNORE
from _support.metrics import as_backend_float, assert_matches, make_label, make_prob
from _support.metrics_reference import fine_grained_reference
from _support.tiers import tiered_dict
from hypothesis import given, settings
from hypothesis import strategies as st

from jdt_array.metrics import FineGrainedMetrics, batch_statistics


def evaluate(backend, batches, *, class_axis=1, **options):
    """The metrics of ``batches`` (pairs of NumPy arrays) on ``backend``."""
    metrics = FineGrainedMetrics(**options)
    for x, y in batches:
        x, y = backend.asarray(x), backend.asarray(y)
        if backend.jit:  # the pure per-batch function under jax.jit, state outside
            stats = backend.call(metrics.statistics, x, y, class_axis=class_axis)
            metrics.update_statistics(stats)
        else:
            metrics.update(x, y, class_axis=class_axis)
    return metrics.compute()


# One shape for all multi-class cases (and one for binary): JAX compiles each
# operation once per shape, which is most of the time these tests take.
SHAPE, BINARY_SHAPE = (4, 4, 6, 6), (4, 2, 6, 6)
IGNORED = {"ignore_index": IGNORE}
CASES = {
    "ignore-index": dict(ignore_fraction=0.1, options=IGNORED),
    "no-ignore-index": dict(options={}),
    "worst-q20": dict(options={"q": 20, **IGNORED}),
    "worst-q-fraction": dict(options={"q": 37.5}),
    "class-never-seen": dict(absent=(3,), options={}),
    "ignore-is-class-0": dict(options={"ignore_index": 0}),
    "binary": dict(shape=BINARY_SHAPE, agree=0.8, options={"binary": True}),
    "calibration": dict(
        ignore_fraction=0.1, absent=(3,), options={"calibration": True, **IGNORED}
    ),
    "calibration-15-bins-q5": dict(options={"calibration": True, "num_bins": 15, "q": 5}),
    "calibration-binary": dict(
        shape=BINARY_SHAPE, options={"binary": True, "calibration": True}
    ),
}


# Every backend: an ignore_index with a worst-case q, the binary mode and the
# calibration; the grid backends: every case.
SMOKE_CASES = {"worst-q20", "binary", "calibration"}


@pytest.mark.parametrize("case", tiered_dict(CASES, smoke=SMOKE_CASES))
def test_all_keys_match_definitions(backend, case):
    rng = np.random.default_rng(0)
    shape = case.get("shape", SHAPE)
    options = dict(case["options"], num_classes=shape[1])
    batches = []
    for _ in range(2):
        prob = as_backend_float(backend, make_prob(rng, shape))
        label = make_label(
            rng, prob, agree=case.get("agree", 0.6), absent=case.get("absent", ()),
            ignore_fraction=case.get("ignore_fraction", 0.0),
        )  # fmt: skip
        if options.get("ignore_index") == IGNORE:
            label[0] = IGNORE  # an image with every pixel ignored is skipped
        batches.append((prob, label))
    full = [np.concatenate(parts) for parts in zip(*batches, strict=True)]
    expected = fine_grained_reference(*full, **options)
    assert_matches(backend, evaluate(backend, batches, **options), expected)


@pytest.mark.parametrize("calibration", [False, True], ids=["counts", "calibration"])
def test_channels_last_3d_volumes(backend, calibration):
    rng = np.random.default_rng(1)
    prob = as_backend_float(backend, make_prob(rng, (3, 3, 4, 5, 4), class_axis=-1))
    label = make_label(rng, prob, class_axis=-1)
    options = {"num_classes": 4, "calibration": calibration, "q": 50}
    expected = fine_grained_reference(prob, label, class_axis=-1, **options)
    results = evaluate(backend, [(prob, label)], class_axis=-1, **options)
    assert_matches(backend, results, expected)


def test_integer_predictions_and_narrow_label_dtypes(backend):
    rng = np.random.default_rng(2)
    pred = rng.integers(0, 4, size=(4, 6, 6)).astype(np.int16)
    label = np.where(rng.random(pred.shape) < 0.5, pred, rng.integers(0, 4, pred.shape))
    label = np.where(rng.random(pred.shape) < 0.1, 255, label).astype(np.uint8)
    options = {"num_classes": 4, "ignore_index": 255}
    expected = fine_grained_reference(pred, label, **options)
    assert_matches(backend, evaluate(backend, [(pred, label)], **options), expected)


@pytest.mark.parametrize("dtype", ["uint32", "uint64"])
@pytest.mark.parametrize("calibration", [False, True], ids=["counts", "calibration"])
def test_wide_unsigned_labels(backend, dtype, calibration):
    """Unsigned labels meet signed class ids and predictions: no mixed-kind promotion
    (array-api-strict refuses uint64 with int64)."""
    rng = np.random.default_rng(3)
    prob = as_backend_float(backend, make_prob(rng, (2, 3, 5, 4)))
    label = make_label(rng, prob)
    label = np.where(rng.random(label.shape) < 0.1, 7, label).astype(dtype)
    options = {"num_classes": 3, "ignore_index": 7, "calibration": calibration}
    expected = fine_grained_reference(prob, label, **options)
    assert_matches(backend, evaluate(backend, [(prob, label)], **options), expected)


def hand_made_dataset():
    """Three 10 x 10 images, background 0 and object 1, predictions as integers.

    A: a 50-pixel object, found exactly. B: a 1-pixel object, missed (predicted as
    background). C: background only, found exactly. The small miss barely moves the
    dataset level but costs a whole class score in image B at levels I and C.
    """
    label = np.zeros((3, 10, 10), dtype=np.int64)
    label[0, :5] = 1
    label[1, 0, 0] = 1
    pred = label.copy()
    pred[1, 0, 0] = 0
    return pred, label


def test_levels_disagree_on_a_missed_small_object(backend):
    pred, label = hand_made_dataset()
    r = evaluate(backend, [(pred, label)], num_classes=2, q=34)
    # D: object tp 50, fn 1; background tp 249, fp 1.
    iou_d = (50 / 51 + 249 / 250) / 2
    # I: A = (1 + 1) / 2; B = (99/100 + 0) / 2; C = 1 (only background present).
    iou_i = (1 + 0.99 / 2 + 1) / 3
    # C: background over A, B, C = (1 + 0.99 + 1) / 3; object over A, B = (1 + 0) / 2.
    iou_c = ((1 + 0.99 + 1) / 3 + 0.5) / 2
    np.testing.assert_allclose(
        [r["mIoUD"], r["mIoUI"], r["mIoUC"]], [100 * iou_d, 100 * iou_i, 100 * iou_c]
    )
    assert r["mIoUD"] > r["mIoUI"] > r["mIoUC"]
    # Worst 34% of 3 images is image B; per class, 34% of 3 (background) or 2 (object)
    # images is one: background's worst is B's 0.99, the object's worst is B's 0.
    np.testing.assert_allclose(r["mIoUI34"], 100 * 0.99 / 2)
    np.testing.assert_allclose(r["mIoUC34"], 100 * (0.99 + 0) / 2)
    np.testing.assert_allclose(r["mAccC34"], 100 * (1 + 0) / 2)  # background recall 1 in B
    np.testing.assert_allclose(r["Acc"], 100 * 299 / 300)
    np.testing.assert_allclose(r["mDiceI"], 100 * (1 + (2 * 99 / 199) / 2 + 1) / 3)


def test_worst_case_q_averages_q_10_to_100():
    values = np.arange(10)  # image b has b + 1 of its 10 pixels right
    label = np.zeros((10, 10), dtype=np.int64)
    pred = (np.arange(10)[None, :] > values[:, None]).astype(np.int64)  # 1 = wrong
    m = FineGrainedMetrics(2, q=30)
    m.update(pred, label)
    r = m.compute()
    acc = (values + 1) / 10  # background recall per image, the only class present
    np.testing.assert_allclose(r["mAccI"], 100 * acc.mean())
    np.testing.assert_allclose(r["mAccI30"], 100 * acc[:3].mean())
    q_means = [acc[: q // 10].mean() for q in range(10, 101, 10)]
    np.testing.assert_allclose(r["mAccIQ"], 100 * np.mean(q_means))
    np.testing.assert_allclose(
        r["mAccCQ"], 100 * np.mean(q_means)
    )  # one class, same images


def test_binary_mode_scores_foreground_with_empty_conventions(backend):
    label = np.zeros((4, 2, 5), dtype=np.int64)
    pred = np.zeros_like(label)
    pred[1, 0, 0] = 1  # image 1: a false alarm on an empty image
    label[2, :, :2] = 1  # image 2: 4 of 6 foreground pixels found, no false positive
    pred[2, 0, :2] = pred[2, 1, :1] = 1
    pred[2, 1, 1] = 0
    label[3] = pred[3] = 1  # image 3: everything foreground, found
    r = evaluate(backend, [(pred, label)], num_classes=2, binary=True)
    # Image 0 empty/empty scores 1; image 1 scores 0; image 2 IoU 3/4, recall 3/4.
    np.testing.assert_allclose(r["mIoUI"], 100 * (1 + 0 + 0.75 + 1) / 4)
    np.testing.assert_allclose(r["mAccI"], 100 * (1 + 0 + 0.75 + 1) / 4)
    np.testing.assert_allclose(r["mDiceI"], 100 * (1 + 0 + 6 / 7 + 1) / 4)
    # Level C: foreground present (label or prediction) in images 1, 2, 3 only.
    np.testing.assert_allclose(r["mIoUC"], 100 * (0 + 0.75 + 1) / 3)
    # Level D: foreground tp 3 + 10, fp 1, fn 1.
    np.testing.assert_allclose(r["mIoUD"], 100 * 13 / 15)
    np.testing.assert_allclose([r["Acc"], r["mAccD"]], [100 * 13 / 14] * 2)


def test_calibration_of_constant_confidence(backend):
    # Every pixel predicts class 0 with confidence 0.75; half are right: ECE = 25%.
    prob = np.zeros(BINARY_SHAPE)
    prob[:, 0], prob[:, 1] = 0.75, 0.25
    label = np.zeros((4, 6, 6), dtype=np.int64)
    label[:, :3] = 1
    r = evaluate(backend, [(prob, label)], num_classes=2, calibration=True)
    np.testing.assert_allclose([r["ECED"], r["ECEI"]], [25.0, 25.0], rtol=1e-6)
    # SCE: class 0 (conf 0.75, correct on half) errs by 0.25; class 1 (conf 0.25,
    # never predicted, so never "correct") by 0.25. Permille.
    np.testing.assert_allclose([r["SCED"], r["SCEI"]], [250.0, 250.0], rtol=1e-6)


def test_merge_of_shards_equals_one_pass(backend):
    if backend.jit:
        pytest.skip("update runs eagerly; the eager jax backend covers merge")
    rng = np.random.default_rng(3)
    options = {"num_classes": 4, "ignore_index": IGNORE, "calibration": True, "q": 25}
    batches = []
    for _ in range(4):
        prob = make_prob(rng, SHAPE)
        batches.append((prob, make_label(rng, prob, ignore_fraction=0.1)))
    one_pass = evaluate(backend, batches, **options)
    shards = [FineGrainedMetrics(**options) for _ in range(3)]
    for i, (x, y) in enumerate(batches):
        shards[i % 3].update(backend.asarray(x), backend.asarray(y))
    before = shards[1].compute()
    merged = shards[0].merge(shards[1]).merge(shards[2])
    assert merged is shards[0]
    assert shards[1].compute() == before  # the merged-in shard is unchanged
    results = merged.compute()
    assert list(results) == list(one_pass)
    for key, value in one_pass.items():
        np.testing.assert_allclose(
            results[key], value, rtol=backend.rtol, atol=1e-9, err_msg=key
        )


def test_merge_needs_the_same_options():
    with pytest.raises(ValueError, match="other options"):
        FineGrainedMetrics(3).merge(FineGrainedMetrics(3, q=5))
    with pytest.raises(ValueError, match="other options"):
        FineGrainedMetrics(3).merge(FineGrainedMetrics(3, ignore_index=255))
    with pytest.raises(TypeError, match="FineGrainedMetrics"):
        FineGrainedMetrics(3).merge({"mIoUD": 1.0})
    m = FineGrainedMetrics(3)
    with pytest.raises(ValueError, match="itself"):
        m.merge(m)


def test_reset_forgets_every_image():
    pred, label = hand_made_dataset()
    m = FineGrainedMetrics(2)
    m.update(np.ones_like(pred), label)
    m.reset()
    with pytest.raises(ValueError, match="at least one update"):
        m.compute()
    m.update(pred, label)
    fresh = FineGrainedMetrics(2)
    fresh.update(pred, label)
    assert m.compute() == fresh.compute()


def test_add_and_value_are_aliases():
    pred, label = hand_made_dataset()
    prob = np.stack([pred == 0, pred == 1], axis=1).astype(np.float64)
    a, b = FineGrainedMetrics(2), FineGrainedMetrics(2)
    a.add(prob, label, image_file=["a.png", "b.png", "c.png"])
    b.update(prob, label)
    assert a.value() == b.compute()


def test_many_batches_fold_into_chunks_without_changing_results():
    rng = np.random.default_rng(4)
    batches = [
        (rng.integers(0, 3, (1, 4, 4)), rng.integers(0, 3, (1, 4, 4))) for _ in range(70)
    ]
    m = FineGrainedMetrics(3)
    for x, y in batches:
        m.update(x, y)
    x, y = (np.concatenate(v) for v in zip(*batches, strict=True))
    one = FineGrainedMetrics(3)
    one.update(x, y)
    assert m.compute() == pytest.approx(one.compute(), rel=1e-12)


def test_statistics_are_per_image_counts_independent_of_image_size():
    rng = np.random.default_rng(5)
    for size in (4, 64):
        prob = make_prob(rng, (2, 6, size, size))
        stats = batch_statistics(
            prob, make_label(rng, prob), num_classes=6, calibration=True, num_bins=7
        )
        assert tuple(stats.intersection.shape) == (2, 6)
        assert tuple(stats.ece_gap.shape) == (2, 7)
        assert tuple(stats.sce_image.shape) == (2,)
        assert tuple(stats.sce_gap.shape) == (6, 7)
        assert stats.label_count.dtype.kind == "i"


HOST_READS = ("__bool__", "__int__", "__float__", "__index__", "__array__", "__dlpack__")


@pytest.mark.parametrize(
    "options",
    [{"calibration": True}, {"calibration": True, "compact": True, "classes": [1, 3]},
     {"multilabel": True, "compact": True}],
    ids=["per-image", "compact", "multilabel"],
)  # fmt: skip
def test_update_reads_nothing_back_to_the_host(monkeypatch, options):
    xp = pytest.importorskip("array_api_strict")
    rng = np.random.default_rng(6)
    prob = make_prob(rng, SHAPE)
    label = make_label(rng, prob)
    label[0, 0, 0] = 7  # out of range: counted on the device, raised by compute
    if options.get("multilabel"):
        label = np.stack([label == c for c in range(4)], axis=1).astype(np.int64)
        label[0, 0, 0, 0] = 7

    def refuse(*args, **kwargs):
        raise AssertionError("read back to the host")

    for name in HOST_READS:  # every way a strict array's values reach Python or NumPy
        monkeypatch.setattr(type(xp.asarray(0)), name, refuse)
    m = FineGrainedMetrics(4, **options)
    for _ in range(3):
        m.update(xp.asarray(prob), xp.asarray(label))
    with pytest.raises(AssertionError, match="host"):
        m.compute()  # the one sync point does read
    with pytest.raises(AssertionError, match="host"):
        FineGrainedMetrics(4, eager_checks=True, **options).update(
            xp.asarray(prob), xp.asarray(label)
        )
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"3 (pixels with class ids|entries)"):
        m.compute()


def test_probabilities_with_autograd_history_are_not_kept():
    torch = pytest.importorskip("torch")

    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    m = FineGrainedMetrics(3, calibration=True)
    m.update(torch.softmax(logits, dim=1), torch.zeros(2, 4, 4, dtype=torch.int64))
    assert all(not getattr(v, "requires_grad", False) for v in m.state() if v is not None)


# Bad input -------------------------------------------------------------------------

BAD_CONSTRUCTOR = [
    ({"num_classes": 0}, ValueError, "num_classes"),
    ({"num_classes": 2.0}, TypeError, "num_classes"),
    ({"num_classes": 3, "binary": True}, ValueError, "num_classes=2"),
    ({"num_classes": 3, "q": 0}, ValueError, "q"),
    ({"num_classes": 3, "q": 101}, ValueError, "q"),
    ({"num_classes": 3, "q": "1"}, TypeError, "q"),
    ({"num_classes": 3, "num_bins": 0}, ValueError, "num_bins"),
    ({"num_classes": 3, "ignore_index": 2.5}, TypeError, "ignore_index"),
    ({"num_classes": 3, "calibration": 1}, TypeError, "calibration"),
    ({"num_classes": 3, "eager_checks": None}, TypeError, "eager_checks"),
]


@pytest.mark.parametrize(("options", "error", "match"), BAD_CONSTRUCTOR)
def test_bad_options_raise(options, error, match):
    with pytest.raises(error, match=match):
        FineGrainedMetrics(**options)


def test_bad_shapes_and_dtypes_raise(backend):
    prob = backend.asarray(make_prob(np.random.default_rng(7), (2, 3, 4, 4)))
    label = backend.asarray(np.zeros((2, 4, 4), dtype=np.int64))
    m = FineGrainedMetrics(3)
    with pytest.raises(ValueError, match="3 classes along class_axis=1, but num_classes=4"):
        FineGrainedMetrics(4).update(prob, label)
    with pytest.raises(ValueError, match=r"without the class axis"):
        m.update(prob, backend.asarray(np.zeros((2, 4, 5), dtype=np.int64)))
    with pytest.raises(ValueError, match="shape of label"):
        m.update(backend.asarray(np.zeros((2, 4, 5), dtype=np.int64)), label)
    with pytest.raises(TypeError, match="label must be an integer"):
        m.update(prob, backend.asarray(np.zeros((2, 4, 4))))
    with pytest.raises(ValueError, match="class_axis=3"):
        m.update(prob, label, class_axis=3)
    with pytest.raises(TypeError, match="calibration=True needs probabilities"):
        FineGrainedMetrics(3, calibration=True).update(label, label)


def test_out_of_range_values_raise(backend):
    label = np.zeros((4, 6, 6), dtype=np.int64)
    label[1, 0, 0] = 5
    pred, lb = backend.asarray(np.zeros_like(label)), backend.asarray(label)
    m = FineGrainedMetrics(4, ignore_index=255)
    m.update(pred, lb)  # counted on the device, raised by compute
    with pytest.raises(ValueError, match=r"1 pixels with class ids outside \[0, 4\)"):
        m.compute()
    with pytest.raises(ValueError, match=r"1 pixels with class ids outside"):
        FineGrainedMetrics(4, eager_checks=True).update(pred, lb)


def test_out_of_range_predictions_raise_where_the_pixel_is_kept(backend):
    label = np.zeros((4, 6, 6), dtype=np.int64)
    label[1, 0, 0] = 255
    m = FineGrainedMetrics(4, ignore_index=255)
    m.update(backend.asarray(np.where(label == 255, -1, 0)), backend.asarray(label))
    m.compute()  # the -1 sits on an ignored pixel
    m.update(backend.asarray(np.full_like(label, 4)), backend.asarray(label))
    with pytest.raises(ValueError, match=r"143 kept pixels with integer predictions"):
        m.compute()


def test_logits_with_calibration_raise(backend):
    logits = np.random.default_rng(8).normal(size=SHAPE)
    m = FineGrainedMetrics(4, calibration=True)
    m.update(backend.asarray(logits), backend.asarray(np.zeros((4, 6, 6), dtype=np.int64)))
    with pytest.raises(ValueError, match="not logits"):
        m.compute()


def test_all_pixels_ignored_raises():
    m = FineGrainedMetrics(3, ignore_index=255)
    m.update(np.zeros((2, 3, 3), dtype=np.int64), np.full((2, 3, 3), 255))
    with pytest.raises(ValueError, match="no pixel was evaluated"):
        m.compute()


def test_mixed_libraries_raise():
    torch = pytest.importorskip("torch")

    with pytest.raises(TypeError, match="one array library"):
        FineGrainedMetrics(3).update(
            np.zeros((1, 3, 2, 2)), torch.zeros(1, 2, 2, dtype=torch.int64)
        )


def test_statistics_of_other_options_are_refused():
    stats = batch_statistics(
        np.zeros((1, 2, 2), dtype=np.int64),
        np.zeros((1, 2, 2), dtype=np.int64),
        num_classes=4,
    )
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        FineGrainedMetrics(3).update_statistics(stats)
    with pytest.raises(ValueError, match="calibration"):
        FineGrainedMetrics(4, calibration=True).update_statistics(stats)
    with pytest.raises(TypeError, match="BatchStatistics"):
        FineGrainedMetrics(4).update_statistics(tuple(stats))


# Properties ------------------------------------------------------------------------

labels = st.integers(min_value=1, max_value=4).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.lists(
            st.lists(st.integers(0, n), min_size=6, max_size=6), min_size=1, max_size=8
        ),
    )
)


def _metrics(pred, label, num_classes, **options):
    m = FineGrainedMetrics(num_classes, **options)
    m.update(np.asarray(pred), np.asarray(label))
    return m.compute()


@settings(max_examples=40, deadline=None)
@given(labels, st.booleans())
def test_perfect_prediction_scores_100_everywhere(data, binary):
    num_classes, rows = data
    label = np.array(rows) % (2 if binary else num_classes + 1)
    results = _metrics(label, label, 2 if binary else num_classes + 1, binary=binary, q=7)
    assert results == pytest.approx(dict.fromkeys(results, 100.0))


@settings(max_examples=40, deadline=None)
@given(labels, st.randoms(use_true_random=False), st.integers(1, 100))
def test_results_do_not_depend_on_image_order(data, random, q):
    num_classes, rows = data
    label = np.array(rows)
    pred = np.roll(label, 1, axis=1)
    order = list(range(len(rows)))
    random.shuffle(order)
    a = _metrics(pred, label, num_classes + 1, q=q)
    b = _metrics(pred[order], label[order], num_classes + 1, q=q)
    assert a == pytest.approx(b, rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(labels, st.lists(st.integers(0, 2), min_size=8, max_size=8))
def test_merge_of_random_shards_equals_one_pass(data, shard_of):
    num_classes, rows = data
    label = np.array(rows)
    pred = np.where(label % 2 == 0, label, 0)
    shards = [FineGrainedMetrics(num_classes + 1, q=30) for _ in range(3)]
    for i in range(len(rows)):
        shards[shard_of[i]].update(pred[i : i + 1], label[i : i + 1])
    for shard in shards[1:]:
        shards[0].merge(shard)
    assert shards[0].compute() == pytest.approx(
        _metrics(pred, label, num_classes + 1, q=30)
    )


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_torch_cpu_argmax_of_many_classes_in_any_float_dtype(dtype):
    """From 32 classes on, PyTorch's CPU argmax runs NumPy's running maximum on the
    tensor's memory (bfloat16, which NumPy lacks, keeps the torch form): the first
    maximum, the first NaN, as torch.argmax; strided views too."""
    torch = pytest.importorskip("torch")
    from jdt_array._kernels import argmax

    xp = pytest.importorskip("array_api_compat.torch")
    rng = np.random.default_rng(9)
    scores = torch.asarray(np.round(rng.random((2, 5, 40, 6)), 1)).to(getattr(torch, dtype))
    scores[0, 3, :2] = torch.nan
    for x, axis in ((scores, 2), (scores.movedim(2, 1), 1), (scores[:, :, ::2], 2)):
        want = torch.argmax(x.float(), dim=axis)
        assert torch.equal(argmax(xp, x, axis).long(), want)
