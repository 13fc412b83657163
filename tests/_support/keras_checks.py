"""The Keras checks, run as ``python keras_checks.py <check>`` in a process of its own
with ``KERAS_BACKEND`` set (Keras fixes its backend when it is first imported), by
tests/test_keras.py. Each check raises AssertionError with the values it compared."""

from __future__ import annotations

import os
import sys
import tempfile
import time

import keras
import numpy as np

import jdt_array
from jdt_array.backends import keras as jk

B, H, W, C = 4, 6, 6, 3
rng = np.random.default_rng(3)
IGNORE = 255


def close(got, want, what, rtol=2e-5, atol=2e-6):
    got = float(keras.ops.convert_to_numpy(got))
    assert np.isclose(got, want, rtol=rtol, atol=atol), f"{what}: {got} != {want}"


def inputs():
    logits = rng.normal(scale=2.0, size=(B, H, W, C)).astype("float32")
    label = rng.integers(0, C, size=(B, H, W)).astype("int32")
    label[0, :2] = IGNORE
    return logits, label


def check_losses_match_the_functional_forms():
    z, y = inputs()
    z64 = z.astype(np.float64)
    cases = [
        (jk.JDTLoss(mIoUI=1.0, ignore_index=IGNORE), jdt_array.jdt_loss,
         dict(mIoUI=1.0, ignore_index=IGNORE)),
        (jk.JaccardLoss(ignore_index=IGNORE, class_weights=[1.0, 2.0, 0.5]),
         jdt_array.jaccard_loss, dict(ignore_index=IGNORE, class_weights=[1.0, 2.0, 0.5])),
        (jk.TverskyLoss(alpha=0.3, beta=0.7, ignore_index=IGNORE), jdt_array.tversky_loss,
         dict(alpha=0.3, beta=0.7, ignore_index=IGNORE)),
        (jk.LovaszSoftmaxLoss(ignore_index=IGNORE, per_image=True),
         jdt_array.lovasz_softmax_loss, dict(ignore_index=IGNORE, per_image=True)),
        (jk.CEJDTLoss(ignore_index=IGNORE, mIoUC=1.0), jdt_array.ce_jdt_loss,
         dict(ignore_index=IGNORE, mIoUC=1.0)),
        (jk.GeneralizedDiceLoss(ignore_index=IGNORE, per_image=True),
         jdt_array.generalized_dice_loss, dict(ignore_index=IGNORE, per_image=True)),
    ]  # fmt: skip
    for loss, fn, options in cases:
        want = float(fn(z64, y.astype(np.int64), class_axis=-1, **options))
        close(loss(y, z), want, type(loss).__name__)
        # Labels as SparseCategoricalCrossentropy takes them: (B, H, W, 1).
        close(loss(y[..., None], z), want, f"{type(loss).__name__} (B, H, W, 1)")
        # Keras' reductions leave the batch's one value as it is.
        for reduction in ("sum", "mean", None):
            again = type(loss).from_config({**loss.get_config(), "reduction": reduction})
            close(again(y, z), want, f"{type(loss).__name__} reduction={reduction}")
    # A soft label shaped like the logits stays a soft label.
    soft = keras.ops.convert_to_numpy(keras.ops.softmax(rng.normal(size=z.shape), axis=-1))
    want = float(jdt_array.dice_loss(z64, soft, class_axis=-1, mIoUI=1.0))
    close(jk.DiceLoss(mIoUI=1.0)(soft.astype("float32"), z), want, "DiceLoss soft label")
    # One score per pixel for the hinge, labels of the same shape.
    scores = rng.normal(size=(B, H, W)).astype("float32")
    binary = (rng.random((B, H, W)) < 0.4).astype("int32")
    want = float(jdt_array.lovasz_hinge_loss(scores.astype(np.float64), binary))
    close(jk.LovaszHingeLoss()(binary, scores), want, "LovaszHingeLoss")


def check_sigmoid_losses_take_binary_masks():
    z = rng.normal(size=(B, H, W, 1)).astype("float32")
    mask = (rng.random((B, H, W)) < 0.4).astype("int32")
    want = float(jdt_array.dice_loss(z.astype(np.float64), mask, class_axis=-1,
                                     activation="sigmoid"))  # fmt: skip
    loss = jk.DiceLoss(activation="sigmoid")
    close(loss(mask, z), want, "DiceLoss (B, H, W)")
    close(loss(mask[..., None], z), want, "DiceLoss (B, H, W, 1)")
    z3 = rng.normal(size=(B, H, W, C)).astype("float32")
    multi = (rng.random((B, H, W, C)) < 0.4).astype("int32")
    want = float(jdt_array.ce_jdt_loss(z3.astype(np.float64), multi, class_axis=-1,
                                       activation="sigmoid"))  # fmt: skip
    close(jk.CEJDTLoss(activation="sigmoid")(multi, z3), want, "CEJDTLoss sigmoid")
    # Probabilities in a multi-label target: soft with hard_label=False.
    probs = rng.random((B, H, W, C)).astype("float32")
    want = float(jdt_array.dice_loss(z3.astype(np.float64), probs.astype(np.float64),
                                     class_axis=-1, activation="sigmoid"))  # fmt: skip
    close(jk.DiceLoss(activation="sigmoid", hard_label=False)(probs, z3), want,
          "DiceLoss sigmoid soft")  # fmt: skip


def tiny_model():
    keras.utils.set_random_seed(0)
    inputs_ = keras.Input((H, W, 2))
    hidden = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs_)
    return keras.Model(inputs_, keras.layers.Conv2D(C, 1)(hidden))


def data():
    x = rng.normal(size=(B, H, W, 2)).astype("float32")
    return x, inputs()[1]


def check_fit_optimizes_the_loss_of_the_batch():
    x, y = data()
    model = tiny_model()
    loss = jk.CEJDTLoss(ignore_index=IGNORE, mIoUI=0.5)
    # "auto": XLA on JAX; eager on PyTorch (torch.compile of this fit passes too, but
    # takes 85 s on a 2-core CPU; the losses under torch.compile are tested in
    # test_torch_compile.py).
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss, jit_compile="auto")
    before = [w.copy() for w in model.get_weights()]
    want = float(loss(y, model.predict(x, verbose=0)))
    history = model.fit(x, y, batch_size=B, epochs=2, verbose=0, shuffle=False)
    # The first step reports the loss at the initial weights, on the whole batch.
    close(history.history["loss"][0], want, "first fit step", rtol=1e-4, atol=1e-5)
    assert history.history["loss"][1] < history.history["loss"][0], history.history
    after = model.get_weights()
    assert all(np.all(np.isfinite(w)) for w in after)
    changed = [not np.allclose(a, b) for a, b in zip(after, before, strict=True)]
    assert any(changed), "no update"


def check_a_saved_model_reloads_with_its_loss_and_metrics():
    x, y = data()
    model = tiny_model()
    model.compile(
        optimizer="sgd", loss=jk.JaccardLoss(ignore_index=IGNORE, mIoUI=1.0, gamma=1.5),
        metrics=[jk.FineGrainedMeanIoU(C, level="C", ignore_index=IGNORE)],
    )  # fmt: skip
    model.fit(x, y, batch_size=2, epochs=1, verbose=0)
    want = model.evaluate(x, y, batch_size=B, verbose=0, return_dict=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.keras")
        model.save(path)
        loaded = keras.models.load_model(path)
    got = loaded.evaluate(x, y, batch_size=B, verbose=0, return_dict=True)
    assert type(loaded.loss) is jk.JaccardLoss, type(loaded.loss)
    assert loaded.loss.get_config() == model.loss.get_config()
    for key in want:
        close(got[key], want[key], f"reloaded {key}", rtol=1e-6)
    from keras.src.testing import TestCase  # Keras' own serialization round trip

    losses = [
        jk.JDTLoss(ignore_index=7, class_weights=np.array([1.0, 2.0, 0.5]), mIoUC=0.5),
        jk.JaccardLoss(gamma=2.0, reduction="sum", name="iou"),
        jk.DiceLoss(activation="sigmoid", hard_label=False),
        jk.TverskyLoss(alpha=0.3, beta=0.7),
        jk.CEJDTLoss(ce_weight=0.5, jdt_weight=0.5, ignore_index=7),
        jk.GeneralizedDiceLoss(per_image=True),
        jk.LovaszSoftmaxLoss(classes=[0, 2], per_image=True),
        jk.LovaszHingeLoss(per_image=False),
    ]
    for loss in losses:
        TestCase().run_class_serialization_test(loss)
        again = keras.losses.deserialize(keras.losses.serialize(loss))
        assert type(again) is type(loss), type(loss)
        assert again.get_config() == loss.get_config(), type(loss)
        assert loss.get_config()["reduction"] == loss.reduction


def check_metrics_match_fine_grained_metrics_in_compiled_evaluation():
    x, y = data()
    model = tiny_model()
    metrics = [jk.FineGrainedMeanIoU(C, level=lv, ignore_index=IGNORE) for lv in "DIC"]
    metrics += [
        jk.FineGrainedMeanDice(C, level="I", ignore_index=IGNORE),
        jk.FineGrainedMeanAccuracy(C, level="C", ignore_index=IGNORE),
    ]
    # Compiled on JAX (XLA), eager on PyTorch (see above).
    model.compile(loss=jk.JDTLoss(ignore_index=IGNORE), metrics=metrics, jit_compile="auto")
    got = model.evaluate(x, y, batch_size=2, verbose=0, return_dict=True)  # two updates
    reference = jdt_array.metrics.FineGrainedMetrics(C, ignore_index=IGNORE)
    reference.update(model.predict(x, batch_size=2, verbose=0), y, class_axis=-1)
    want = reference.compute()
    for key in ("mIoUD", "mIoUI", "mIoUC", "mDiceI", "mAccC"):
        close(got[key], want[key], key, rtol=1e-5)
    metric = metrics[1]
    metric.reset_state()
    assert np.isnan(float(keras.ops.convert_to_numpy(metric.result())))


def check_binary_metrics_follow_the_binary_rules():
    prob = rng.random((B, H, W, 2)).astype("float32")
    label = (rng.random((B, H, W)) < 0.2).astype("int32")
    label[1] = 0  # an image without foreground in the label
    prob[1, ..., 1] = 0.0  # nor in the prediction: it scores 1 at level I
    reference = jdt_array.metrics.FineGrainedMetrics(2, binary=True)
    reference.update(prob, label, class_axis=-1)
    want = reference.compute()
    for level in "DIC":
        metric = jk.FineGrainedMeanDice(2, level=level, binary=True)
        metric.update_state(label[:2], prob[:2])
        metric.update_state(label[2:, ..., None], prob[2:])
        close(metric.result(), want[f"mDice{level}"], f"binary mDice{level}")


def check_every_keras_loss_of_the_table_takes_its_functions_options():
    from _support.losses import KERAS_OWN, LOSSES, check_constructor

    for entry in LOSSES:
        if entry.keras_class is None:
            continue
        assert entry.keras_class in jk.__all__, entry.keras_class
        cls = getattr(jk, entry.keras_class)
        defaults = {"class_axis": -1, "classes": None}  # channels last; ids only
        if entry.name == "lovasz_softmax_loss":
            defaults = {"class_axis": -1}
        # (reduction is Keras' own there: the per-image losses are not offered)
        check_constructor(entry, cls, KERAS_OWN, defaults=defaults, absent=("reduction",))
        assert (
            keras.saving.get_registered_object(f"jdt_array>{entry.keras_class}") is cls
        ), entry.keras_class


def check_metric_configs_round_trip_through_keras_serialization():
    from keras.src.testing.test_case import TestCase  # Keras' own round-trip helper

    case = TestCase()
    metrics = [
        jk.FineGrainedMetric(C, score="Dice", level="C", ignore_index=IGNORE, name="d"),
        jk.FineGrainedMeanIoU(C, level="I", classes=range(1, C), class_axis=1),
        jk.FineGrainedMeanAccuracy(2, binary=True),
        jk.FineGrainedMeanDice(C, multilabel=True, threshold=0.3, activation="sigmoid"),
    ]
    for metric in metrics:
        again = case.run_class_serialization_test(metric)
        assert again.get_config() == metric.get_config(), type(metric)
        assert again._core.options == metric._core.options, type(metric)
        assert "score" not in jk.FineGrainedMeanIoU(C).get_config()
        names = [v.name for v in metric.variables]
        assert names == list(metric._core.layout.fields), names  # the core's layout


def check_width_one_images_with_integer_predictions():
    # Integer predictions and labels of width-1 images, both (B, H, 1): no class axis
    # to squeeze (issue 24, item 8).
    pred = rng.integers(0, C, size=(B, H, 1)).astype("int32")
    label = rng.integers(0, C, size=(B, H, 1)).astype("int32")
    reference = jdt_array.metrics.FineGrainedMetrics(C)
    reference.update(pred, label)
    want = reference.compute()
    for level in "DIC":
        metric = jk.FineGrainedMeanIoU(C, level=level)
        metric.update_state(label, pred)
        close(metric.result(), want[f"mIoU{level}"], f"width-1 mIoU{level}")
    # Keras-style labels with a trailing 1 beside integer predictions without it
    metric = jk.FineGrainedMeanIoU(C, level="I")
    metric.update_state(label[..., None], pred)
    close(metric.result(), want["mIoUI"], "(B, H, 1, 1) labels")


def check_boundary_iou_matches_the_core():
    z, y = inputs()
    options = {"ignore_index": IGNORE, "boundary_width": 1}
    reference = jdt_array.metrics.FineGrainedMetrics(C, boundary=True, **options)
    reference.update(z, y, class_axis=-1)
    want = reference.compute()
    for level in "DIC":
        metric = jk.FineGrainedMeanBoundaryIoU(C, level=level, **options)
        metric.update_state(y[:2], z[:2])
        metric.update_state(y[2:], z[2:])
        close(metric.result(), want[f"mBIoU{level}"], f"mBIoU{level}")
    again = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert again.get_config() == metric.get_config()


def check_classes_multilabel_and_per_class_match_the_core():
    z, y = inputs()
    options = {"classes": [1, 2], "ignore_index": IGNORE}
    reference = jdt_array.metrics.FineGrainedMetrics(C, **options)
    reference.update(z, y, class_axis=-1)
    want, table = reference.compute(), reference.per_class()
    for level in "DIC":
        metric = jk.FineGrainedMeanDice(C, level=level, **options)
        metric.update_state(y[:2], z[:2])
        metric.update_state(y[2:], z[2:])
        close(metric.result(), want[f"mDice{level}"], f"mDice{level} {options}")
    for key, values in metric.per_class().items():
        got = keras.ops.convert_to_numpy(values)
        assert np.allclose(got, table[key], rtol=1e-5, equal_nan=True), (key, got)
    logits = rng.normal(size=(B, H, W, C)).astype("float32")
    masks = (rng.random((B, H, W, C)) < 0.3).astype("int32")
    reference = jdt_array.metrics.FineGrainedMetrics(
        C, multilabel=True, activation="sigmoid", threshold=0.4
    )
    reference.update(logits, masks, class_axis=-1)
    want = reference.compute()
    for level in "DIC":
        metric = jk.FineGrainedMeanIoU(
            C, level=level, multilabel=True, activation="sigmoid", threshold=0.4
        )
        metric.update_state(masks, logits)
        close(metric.result(), want[f"mIoU{level}"], f"multi-label mIoU{level}")


def check_errors_name_what_to_do():
    z, y = inputs()
    try:
        jk.JaccardLoss(alpha=0.3)
    except TypeError as err:
        assert "alpha" in str(err), err
    else:
        raise AssertionError("JaccardLoss(alpha=0.3) did not raise")
    try:
        jk.JDTLoss()(y, z, sample_weight=np.ones(B))
    except ValueError as err:
        assert "class_weights" in str(err), err
    else:
        raise AssertionError("sample_weight was not refused")
    backend = keras.backend.backend
    keras.backend.backend = lambda: "tensorflow"
    try:
        for make in (jk.JDTLoss, lambda: jk.FineGrainedMeanIoU(3)):
            try:
                make()
            except RuntimeError as err:
                assert "KERAS_BACKEND=jax" in str(err) and "torch" in str(err), err
            else:
                raise AssertionError("the TensorFlow backend was not refused")
    finally:
        keras.backend.backend = backend


if __name__ == "__main__":
    assert keras.backend.backend() == os.environ["KERAS_BACKEND"]
    names = sys.argv[1:] or [n for n in dir() if n.startswith("check_")]
    for name in names:
        start = time.perf_counter()
        globals()[name]()
        print(f"ok {name} ({time.perf_counter() - start:.1f} s)")
