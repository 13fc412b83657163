"""activation="sigmoid" and activation=None (binary, multi-label, probabilities) for the
JDT losses, generalized Dice and CE + JDT, against float64 formulas on every backend,
with their gradients (autodiff and by hand) and their errors."""

import functools

import numpy as np
import pytest
from _support.backends import run
from _support.gradients import GRADIENT_CHECKS
from _support.inputs import IGNORE, make_hard_label, make_keep_mask, make_logits
from _support.reference import jdt_loss_reference, sigmoid, softmax

import jdt_array
from jdt_array.cross_entropy import activated_cross_entropy

SHAPE = (3, 4, 5, 6)
rng = np.random.default_rng(17)


def multi_label(shape, *, ignore_fraction=0.0, absent=()):
    """0/1 integer labels shaped like the logits, IGNORE at some entries; classes in
    ``absent`` never occur."""
    label = (rng.random(shape) < 0.4).astype(np.int64)
    for c in absent:
        label[:, c] = 0
    return np.where(rng.random(shape) < ignore_fraction, IGNORE, label)


def bce_reference(logits, label, *, keep=None):
    """Mean over kept entries of -(y log p + (1 - y) log(1 - p)), p = sigmoid(z)."""
    p, y = sigmoid(logits), np.asarray(label, dtype=np.float64)
    terms = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    keep = np.broadcast_to(True if keep is None else keep, terms.shape)
    return float(terms[keep].mean())


LEVELS = {
    "dataset": dict(mIoUD=1.0),
    "image+class": dict(mIoUD=0.0, mIoUI=1.0, mIoUC=1.0),
    "all-classes-weighted": dict(
        active_classes_mode_hard="ALL", class_weights=[0.5, 1.0, 2.0, 1.0]
    ),
    "dice-l2-focal": dict(alpha=0.5, beta=0.5, norm=2, gamma=1.5),
    "log-agnostic": dict(log_loss=True, class_agnostic=True),
}


@pytest.mark.parametrize("options", LEVELS.values(), ids=LEVELS.keys())
def test_sigmoid_multi_label_matches_the_formulas(backend, options):
    logits = make_logits(rng, SHAPE)
    label = multi_label(SHAPE, ignore_fraction=0.1, absent=(2,))
    expected = jdt_loss_reference(
        logits, label, activation="sigmoid", ignore_index=IGNORE, **options
    )
    run(backend, jdt_array.jdt_loss, [logits, label], expected, activation="sigmoid",
        ignore_index=IGNORE, **options)  # fmt: skip


def test_sigmoid_ignore_index_drops_one_class_of_a_pixel_only(backend):
    logits = make_logits(rng, SHAPE)
    label = multi_label(SHAPE)
    label[:, 1, :2] = IGNORE  # class 1 unknown on two rows; the other classes known
    expected = jdt_loss_reference(
        logits, label, activation="sigmoid", ignore_index=IGNORE, mIoUI=1.0
    )
    # Dropping the whole pixel instead would give another value.
    whole = np.broadcast_to((label != IGNORE).all(axis=1), label.shape[:1] + SHAPE[2:])
    other = jdt_loss_reference(
        logits, np.where(label == IGNORE, 0, label), activation="sigmoid",
        keep_mask=whole, mIoUI=1.0,
    )  # fmt: skip
    assert not np.isclose(expected, other)
    run(backend, jdt_array.jdt_loss, [logits, label], expected, activation="sigmoid",
        ignore_index=IGNORE, mIoUI=1.0)  # fmt: skip


def test_sigmoid_takes_bool_and_soft_labels_with_a_keep_mask(backend):
    logits = make_logits(rng, SHAPE)
    keep = make_keep_mask(rng, SHAPE)
    hard = rng.random(SHAPE) < 0.5
    expected = jdt_loss_reference(logits, hard, keep_mask=keep, activation="sigmoid")
    run(backend, jdt_array.jaccard_loss, [logits, hard, keep], expected,
        activation="sigmoid")  # fmt: skip
    soft = rng.random(SHAPE)
    expected = jdt_loss_reference(logits, soft, keep_mask=keep, activation="sigmoid")
    run(backend, jdt_array.dice_loss, [logits, soft, keep],
        jdt_loss_reference(logits, soft, keep_mask=keep, activation="sigmoid", alpha=0.5,
                           beta=0.5),
        activation="sigmoid")  # fmt: skip
    assert expected > 0


@pytest.mark.parametrize("class_axis", [1, -1])
def test_one_channel_with_a_per_pixel_label_is_binary_segmentation(backend, class_axis):
    shape = (3, 1, 7, 5) if class_axis == 1 else (3, 7, 5, 1)
    logits = make_logits(rng, shape)
    label = (rng.random((3, 7, 5)) < 0.3).astype(np.int32)
    label[0] = 0  # an image without foreground: absent under "PRESENT"
    for options in (dict(mIoUD=1.0), dict(mIoUD=0.0, mIoUI=1.0)):
        expected = jdt_loss_reference(
            logits, label, class_axis=class_axis, activation="sigmoid", **options
        )
        run(backend, jdt_array.jaccard_loss, [logits, label], expected,
            class_axis=class_axis, activation="sigmoid", **options)  # fmt: skip
    # The same as the label shaped like the logits.
    run(backend, jdt_array.jaccard_loss,
        [logits, np.expand_dims(label, class_axis)], expected, class_axis=class_axis,
        activation="sigmoid", mIoUD=0.0, mIoUI=1.0)  # fmt: skip


@pytest.mark.parametrize("label_kind", ["hard", "soft"])
def test_none_takes_probabilities_of_one_class_per_pixel(backend, label_kind):
    logits = make_logits(rng, SHAPE)
    prob = softmax(logits, 1)
    if label_kind == "hard":
        label = make_hard_label(rng, SHAPE, ignore_fraction=0.1)
    else:
        label = softmax(make_logits(rng, SHAPE), 1)
    options = dict(ignore_index=IGNORE, mIoUI=0.5)
    expected = jdt_loss_reference(logits, label, **options)
    assert np.isclose(expected, jdt_loss_reference(prob, label, activation=None, **options))
    run(backend, jdt_array.jdt_loss, [prob, label], expected, activation=None, **options)


def test_none_with_one_channel_takes_foreground_probabilities(backend):
    logits = make_logits(rng, (2, 1, 6, 6))
    label = (rng.random((2, 6, 6)) < 0.5).astype(np.int64)
    expected = jdt_loss_reference(logits, label, activation="sigmoid")
    run(backend, jdt_array.jdt_loss, [sigmoid(logits), label], expected, activation=None)


def test_generalized_dice_with_sigmoid_is_sudre_over_independent_classes(backend):
    logits = make_logits(rng, SHAPE)
    label = multi_label(SHAPE)
    p = sigmoid(logits).reshape(3, 4, -1)
    y = label.reshape(3, 4, -1).astype(float)
    volume = y.sum(axis=(0, 2))
    w = 1 / volume**2
    w = w * volume.sum() / (w * volume).sum()
    tp = (p * y).sum(axis=(0, 2))  # the soft tp of a 0/1 label
    smooth = 1e-3
    expected = 1 - (2 * (w * tp).sum() + 2 * smooth) / (
        (w * (p.sum(axis=(0, 2)) + volume)).sum() + 2 * smooth
    )
    run(backend, jdt_array.generalized_dice_loss, [logits, label], expected,
        activation="sigmoid")  # fmt: skip


def test_ce_jdt_with_sigmoid_mixes_binary_cross_entropy(backend):
    logits = make_logits(rng, SHAPE)
    label = multi_label(SHAPE, ignore_fraction=0.1)
    keep = label != IGNORE
    bce = bce_reference(logits, np.where(keep, label, 0), keep=keep)
    jdt = jdt_loss_reference(logits, label, ignore_index=IGNORE, activation="sigmoid")
    run(backend, activated_cross_entropy, [logits, label], bce, activation="sigmoid",
        ignore_index=IGNORE)  # fmt: skip
    run(backend, jdt_array.ce_jdt_loss, [logits, label], 0.25 * bce + 0.75 * jdt,
        activation="sigmoid", ignore_index=IGNORE)  # fmt: skip


def test_ce_jdt_with_probabilities_is_the_cross_entropy_of_them(backend):
    logits = make_logits(rng, SHAPE)
    label = make_hard_label(rng, SHAPE)
    prob = softmax(logits, 1)
    ce = -np.log(np.take_along_axis(prob, label[:, None], axis=1)).mean()
    expected = 0.5 * ce + 0.5 * jdt_loss_reference(logits, label)
    run(backend, jdt_array.ce_jdt_loss, [prob, label], expected, activation=None,
        ce_weight=0.5, jdt_weight=0.5)  # fmt: skip
    binary = (rng.random((3, 6, 5)) < 0.5).astype(np.int64)
    z = make_logits(rng, (3, 1, 6, 5))
    run(backend, activated_cross_entropy, [sigmoid(z), binary],
        bce_reference(z, binary[:, None]), activation=None)  # fmt: skip


def test_dropped_entries_are_inert_under_sigmoid():
    logits = make_logits(rng, SHAPE)
    label = multi_label(SHAPE, ignore_fraction=0.2)
    poisoned = np.where(label == IGNORE, np.nan, logits)
    for fn in (jdt_array.jdt_loss, jdt_array.ce_jdt_loss):
        clean = jdt_array.value_and_grad(fn, logits, label, activation="sigmoid",
                                         ignore_index=IGNORE)  # fmt: skip
        dirty = jdt_array.value_and_grad(fn, poisoned, label, activation="sigmoid",
                                         ignore_index=IGNORE)  # fmt: skip
        assert float(clean[0]) == float(dirty[0])
        np.testing.assert_array_equal(clean[1][label != IGNORE], dirty[1][label != IGNORE])
        assert np.all(dirty[1][label == IGNORE] == 0)


def test_nan_in_means_nan_out_also_where_no_class_is_active():
    logits = make_logits(rng, SHAPE)
    logits[1, 2, 3, 4] = np.nan
    label = multi_label(SHAPE, absent=(2,))  # the NaN is in a class that is not active
    assert np.isnan(jdt_array.jdt_loss(logits, label, activation="sigmoid"))
    prob = sigmoid(make_logits(rng, (3, 1, 5, 6)))
    prob[1, 0, 3, 4] = np.nan
    empty = np.zeros((3, 5, 6), dtype=np.int64)  # no foreground: nothing active
    assert np.isnan(jdt_array.jdt_loss(prob, empty, activation=None))
    assert jdt_array.jdt_loss(np.nan_to_num(prob), empty, activation=None) == 0


SIGMOID_CASES = {
    "jdt": (jdt_array.jdt_loss, dict(mIoUI=0.5, mIoUC=0.5, ignore_index=IGNORE)),
    "dice-l2": (jdt_array.dice_loss, dict(norm=2, ignore_index=IGNORE)),
    "tversky": (functools.partial(jdt_array.tversky_loss, alpha=0.3, beta=0.7),
                dict(ignore_index=IGNORE)),
    "ce_jdt": (jdt_array.ce_jdt_loss, dict(ignore_index=IGNORE)),
    "generalized_dice": (jdt_array.generalized_dice_loss, dict(per_image=True)),
}  # fmt: skip


@GRADIENT_CHECKS
@pytest.mark.parametrize("case", SIGMOID_CASES.values(), ids=SIGMOID_CASES.keys())
def test_sigmoid_gradients_match_finite_differences(check, case):
    fn, options = case
    shape = (2, 3, 3, 4)
    label = multi_label(shape, ignore_fraction=0.1)
    if "ignore_index" not in options:
        label = np.where(label == IGNORE, 1, label)
    check(fn, make_logits(rng, shape, scale=1.0), label, activation="sigmoid", **options)


@GRADIENT_CHECKS
@pytest.mark.parametrize("fn", [jdt_array.jdt_loss, jdt_array.ce_jdt_loss],
                         ids=["jdt", "ce_jdt"])  # fmt: skip
@pytest.mark.parametrize("channels", [1, 3])
def test_probability_gradients_match_finite_differences(check, fn, channels):
    shape = (2, channels, 3, 4)
    logits = make_logits(rng, shape, scale=1.0)
    if channels == 1:
        prob, label = sigmoid(logits), (rng.random((2, 3, 4)) < 0.5).astype(np.int64)
    else:
        prob, label = softmax(logits, 1), make_hard_label(rng, shape)
    # Central differences leave the simplex; the sum check is for the inputs only.
    check(fn, prob, label, activation=None, mIoUI=1.0) if fn is jdt_array.jdt_loss \
        else check(fn, prob, label, activation=None)  # fmt: skip


def test_sigmoid_errors_name_the_argument_and_shapes():
    logits = make_logits(rng, SHAPE)
    with pytest.raises(ValueError, match=r"shape of logits \(3, 4, 5, 6\)"):
        jdt_array.jdt_loss(logits, make_hard_label(rng, SHAPE), activation="sigmoid")
    with pytest.raises(ValueError, match="must hold 0 or 1"):
        jdt_array.jdt_loss(logits, multi_label(SHAPE) * 2, activation="sigmoid")
    with pytest.raises(ValueError, match=r"probabilities in \[0, 1\]"):
        jdt_array.jdt_loss(logits, rng.random(SHAPE) + 1, activation="sigmoid")
    with pytest.raises(ValueError, match="activation must be one of"):
        jdt_array.jdt_loss(logits, multi_label(SHAPE), activation="relu")


def test_none_refuses_what_are_not_probabilities():
    logits = make_logits(rng, SHAPE)
    label = make_hard_label(rng, SHAPE)
    with pytest.raises(ValueError, match=r"outside \[0, 1\]"):
        jdt_array.jdt_loss(logits, label, activation=None)
    with pytest.raises(ValueError, match="sum to 1 over class axis 1"):
        jdt_array.jdt_loss(sigmoid(logits), label, activation=None)
    # Dropped pixels are not checked.
    prob = softmax(logits, 1)
    keep = make_keep_mask(rng, SHAPE)
    prob[:, 0][~keep] = 7.0
    loss = jdt_array.jdt_loss(prob, label, activation=None, keep_mask=keep)
    assert np.isfinite(loss)


def test_one_channel_under_softmax_points_to_sigmoid():
    logits = make_logits(rng, (2, 1, 4, 4))
    label = (rng.random((2, 4, 4)) < 0.5).astype(np.int64)
    with pytest.raises(ValueError, match="activation='sigmoid'"):
        jdt_array.jaccard_loss(logits, label)


@pytest.mark.parametrize("fn", [jdt_array.jaccard_loss, jdt_array.dice_loss])
@pytest.mark.parametrize("weight", ["alpha", "beta"])
def test_named_losses_refuse_weights_and_point_to_tversky(fn, weight):
    logits, label = make_logits(rng, SHAPE), make_hard_label(rng, SHAPE)
    with pytest.raises(TypeError, match="tversky_loss"):
        fn(logits, label, **{weight: 0.3})
    with pytest.raises(TypeError, match="tversky_loss"):
        jdt_array.value_and_grad(fn, logits, label, **{weight: 0.3})
    with pytest.raises(TypeError, match="unexpected keyword"):
        fn(logits, label, ignore_indx=3)


def test_named_losses_list_their_options():
    import inspect

    jdt_options = set(inspect.signature(jdt_array.jdt_loss).parameters)
    for fn in (jdt_array.jaccard_loss, jdt_array.dice_loss, jdt_array.tversky_loss):
        named = set(inspect.signature(fn).parameters) - {"misplaced"}
        want = (
            jdt_options if fn is jdt_array.tversky_loss else jdt_options - {"alpha", "beta"}
        )
        assert named == want, fn.__name__


@pytest.mark.parametrize("activation", ["sigmoid", None])
def test_torch_modules_and_jax_forms_take_the_activation(activation):
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    from jdt_array.backends import jax as jax_forms
    from jdt_array.backends.torch import CEJDTLoss, DiceLoss, JDTLoss

    shape = (2, 3, 4, 5) if activation else (2, 1, 4, 5)
    logits = make_logits(rng, shape, scale=1.0)
    x = logits if activation else sigmoid(logits)
    label = multi_label(shape) if activation else (rng.random((2, 4, 5)) < 0.5) * 1
    options = dict(activation=activation, mIoUI=1.0)
    want, want_grad = jdt_array.value_and_grad(jdt_array.jdt_loss, x, label, **options)
    for backward in ("vjp", "autodiff"):
        t = torch.tensor(x, requires_grad=True)
        loss = JDTLoss(backward=backward, **options)(t, torch.tensor(label))
        loss.backward()
        np.testing.assert_allclose(loss.item(), float(want), rtol=1e-12)
        np.testing.assert_allclose(t.grad.numpy(), want_grad, rtol=1e-9, atol=1e-12)
    j_label = jax.numpy.asarray(label)
    grad = jax.jit(jax.grad(lambda z: jax_forms.jdt_loss(z, j_label, **options)))(x)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-9, atol=1e-12)
    t = torch.tensor(x)
    np.testing.assert_allclose(
        DiceLoss(activation=activation)(t, torch.tensor(label)).item(),
        jdt_array.dice_loss(x, label, activation=activation), rtol=1e-12,
    )  # fmt: skip
    np.testing.assert_allclose(
        CEJDTLoss(activation=activation)(t, torch.tensor(label)).item(),
        jdt_array.ce_jdt_loss(x, label, activation=activation), rtol=1e-12,
    )  # fmt: skip
