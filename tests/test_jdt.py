"""jdt_loss and its named forms against the float64 formulas, on every backend.

What it shares with the rest of the family (its result lives with the logits) is
tested in test_loss_family.py.
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
from _support.options import OPTION_SETS, SMOKE_OPTION_SETS
from _support.reference import jdt_loss_reference
from _support.tiers import tiered_dict

import jdt_array

SHAPE = (3, 4, 5, 6)
OPTIONS = tiered_dict(OPTION_SETS, smoke=SMOKE_OPTION_SETS)


def check(backend, expected, logits, label, **options):
    """Run jdt_loss on ``backend`` and compare it with the float64 ``expected`` value."""
    arrays = [backend.asarray(logits), backend.asarray(label)]
    if "keep_mask" in options:
        arrays.append(backend.asarray(options.pop("keep_mask")))
        fn = lambda lg, lb, km, **kw: jdt_array.jdt_loss(lg, lb, keep_mask=km, **kw)  # noqa: E731
    else:
        fn = jdt_array.jdt_loss
    loss = backend.call(fn, *arrays, **options)
    assert loss.shape == ()
    np.testing.assert_allclose(
        backend.to_numpy(loss), expected, rtol=backend.rtol, atol=backend.atol
    )
    return loss


@pytest.mark.parametrize("options", OPTIONS)
def test_hard_label_matches_formulas(backend, options):
    rng = np.random.default_rng(0)
    logits = make_logits(rng, SHAPE)
    label = make_hard_label(rng, SHAPE, absent=(3,), ignore_fraction=0.1)
    label[0] = np.where(label[0] == 2, 0, label[0])  # class 2 absent from image 0
    options = dict(options, ignore_index=IGNORE)
    expected = jdt_loss_reference(logits, label, **options)
    check(backend, expected, logits, label, **options)


@pytest.mark.parametrize("options", OPTIONS)
def test_soft_label_matches_formulas(backend, options):
    rng = np.random.default_rng(1)
    logits = make_logits(rng, SHAPE)
    label = make_soft_label(rng, SHAPE)
    keep = make_keep_mask(rng, SHAPE)
    expected = jdt_loss_reference(logits, label, keep_mask=keep, **options)
    check(backend, expected, logits, label, keep_mask=keep, **options)


@pytest.mark.parametrize("hard", [True, False], ids=["hard", "soft"])
def test_channels_last_3d(backend, hard):
    rng = np.random.default_rng(2)
    shape = (2, 3, 4, 5, 3)  # (B, D, H, W, C)
    logits = make_logits(rng, shape)
    label = (
        make_hard_label(rng, shape, class_axis=-1)
        if hard
        else make_soft_label(rng, shape, class_axis=-1)
    )
    options = {"class_axis": -1, "mIoUD": 0.5, "mIoUI": 0.5, "mIoUC": 1.0}
    expected = jdt_loss_reference(logits, label, **options)
    check(backend, expected, logits, label, **options)


def test_keep_mask_with_ignore_index(backend):
    rng = np.random.default_rng(3)
    logits = make_logits(rng, SHAPE)
    label = make_hard_label(rng, SHAPE, ignore_fraction=0.2)
    keep = make_keep_mask(rng, SHAPE)
    options = {"ignore_index": IGNORE, "mIoUI": 1.0}
    expected = jdt_loss_reference(logits, label, keep_mask=keep, **options)
    check(backend, expected, logits, label, keep_mask=keep, **options)


def test_ignore_index_inside_class_range(backend):
    rng = np.random.default_rng(4)
    logits = make_logits(rng, SHAPE)
    label = make_hard_label(rng, SHAPE)
    options = {"ignore_index": 0, "mIoUC": 1.0}
    expected = jdt_loss_reference(logits, label, **options)
    check(backend, expected, logits, label, **options)


def test_named_losses(backend):
    rng = np.random.default_rng(5)
    logits = make_logits(rng, SHAPE)
    label = make_soft_label(rng, SHAPE)
    lg, lb = backend.asarray(logits), backend.asarray(label)
    cases = [
        (jdt_array.jaccard_loss, {}, {"alpha": 1.0, "beta": 1.0}),
        (jdt_array.dice_loss, {}, {"alpha": 0.5, "beta": 0.5}),
        (jdt_array.tversky_loss, {"alpha": 0.2, "beta": 0.8}, {"alpha": 0.2, "beta": 0.8}),
    ]
    for fn, kwargs, ref_kwargs in cases:
        loss = backend.call(fn, lg, lb, mIoUI=1.0, **kwargs)
        expected = jdt_loss_reference(logits, label, mIoUI=1.0, **ref_kwargs)
        np.testing.assert_allclose(
            backend.to_numpy(loss), expected, rtol=backend.rtol, atol=backend.atol
        )


def test_hard_label_equals_one_hot_soft_label(backend):
    rng = np.random.default_rng(6)
    logits = make_logits(rng, SHAPE)
    label = make_hard_label(rng, SHAPE, absent=(1,))
    one_hot = np.moveaxis(np.eye(SHAPE[1])[label], -1, 1)
    modes = {"active_classes_mode_hard": "PRESENT", "active_classes_mode_soft": "PRESENT"}
    for norm in (1, 2):
        hard = backend.call(
            jdt_array.jdt_loss, backend.asarray(logits), backend.asarray(label),
            norm=norm, mIoUI=1.0, **modes,
        )  # fmt: skip
        soft = backend.call(
            jdt_array.jdt_loss, backend.asarray(logits), backend.asarray(one_hot),
            norm=norm, mIoUI=1.0, **modes,
        )  # fmt: skip
        np.testing.assert_allclose(
            backend.to_numpy(hard), backend.to_numpy(soft), rtol=backend.rtol,
            atol=backend.atol,
        )  # fmt: skip


def test_nothing_active_gives_zero(backend):
    rng = np.random.default_rng(7)
    logits = make_logits(rng, SHAPE)
    label = np.full(SHAPE[:1] + SHAPE[2:], IGNORE)
    loss = check(
        backend, 0.0, logits, label, ignore_index=IGNORE, mIoUD=1.0, mIoUI=1.0, mIoUC=1.0
    )
    assert np.isfinite(backend.to_numpy(loss))
