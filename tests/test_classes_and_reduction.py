"""``classes=`` (the class ids in the means), ``reduction="none"`` (per-image losses)
and the generalized Dice ``weight_type``: against the float64 references, in every
form, with hand gradients, and against MONAI where it is installed."""

import functools

import numpy as np
import pytest
from _support.backends import run
from _support.family_reference import generalized_dice_reference
from _support.inputs import IGNORE, make_hard_label, make_logits, make_soft_label
from _support.reference import jdt_loss_reference

import jdt_array

SHAPE = (3, 5, 6, 7)
rng = np.random.default_rng(25)
LOGITS = make_logits(rng, SHAPE)
HARD = make_hard_label(rng, SHAPE, absent=(3,), ignore_fraction=0.1)
SOFT = make_soft_label(rng, SHAPE)

CLASS_CASES = {
    "no-background": {"classes": range(1, 5)},
    "two-classes-image-level": {"classes": [0, 2], "mIoUD": 0.0, "mIoUI": 1.0},
    "absent-chosen-all-levels": {"classes": (1, 3), "mIoUI": 0.5, "mIoUC": 0.5},
    "weighted": {"classes": [1, 2, 4], "class_weights": [1.0, 2.0, 0.5, 1.0, 3.0]},
    "agnostic": {"classes": [1, 2], "class_agnostic": True, "mIoUI": 1.0},
    "agnostic-weighted": {
        "classes": [0, 3, 4], "class_agnostic": True, "class_weights": [1, 2, 3, 4, 5],
    },
    "all-mode": {"classes": [4, 0], "active_classes_mode_hard": "ALL", "mIoUC": 1.0},
}  # fmt: skip
PER_IMAGE_CASES = {
    "default": {"mIoUD": 0.0, "mIoUI": 1.0},
    "dice-all": {"mIoUD": 0.0, "mIoUI": 1.0, "alpha": 0.5, "beta": 0.5,
                 "active_classes_mode_hard": "ALL"},
    "scaled-focal-weighted": {"mIoUD": 0.0, "mIoUI": 0.5, "gamma": 2.0,
                              "class_weights": [1.0, 2.0, 0.5, 1.0, 3.0]},
    "chosen": {"mIoUD": 0.0, "mIoUI": 1.0, "classes": [1, 2]},
    "agnostic": {"mIoUD": 0.0, "mIoUI": 1.0, "class_agnostic": True},
}  # fmt: skip


def _label(kind):
    return HARD if kind == "hard" else SOFT


@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("case", CLASS_CASES)
def test_classes_leave_the_other_classes_out_of_the_means(grid_backend, case, kind):
    options = {**CLASS_CASES[case], "ignore_index": IGNORE}
    label = _label(kind)
    expected = jdt_loss_reference(LOGITS, label, **options)
    run(grid_backend, jdt_array.jdt_loss, (LOGITS, label), expected, **options)


def test_classes_on_every_backend(backend):
    options = {"classes": [1, 2, 4], "mIoUI": 1.0, "ignore_index": IGNORE}
    expected = jdt_loss_reference(LOGITS, HARD, **options)
    run(backend, jdt_array.jaccard_loss, (LOGITS, HARD), expected, **options)


def test_every_class_chosen_equals_no_choice():
    chosen = jdt_array.dice_loss(LOGITS, HARD, classes=range(5), ignore_index=IGNORE)
    assert float(chosen) == float(jdt_array.dice_loss(LOGITS, HARD, ignore_index=IGNORE))


def test_a_left_out_class_still_shapes_the_chosen_classes_through_the_softmax():
    # Raising the logit of class 0 takes probability from the chosen classes.
    options = {"classes": [1, 2, 3, 4], "ignore_index": IGNORE}
    raised = LOGITS.copy()
    raised[:, 0] += 3.0
    assert float(jdt_array.jaccard_loss(raised, HARD, **options)) > float(
        jdt_array.jaccard_loss(LOGITS, HARD, **options)
    )


@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("case", PER_IMAGE_CASES)
def test_reduction_none_gives_the_image_level_class_losses(grid_backend, case, kind):
    options = {**PER_IMAGE_CASES[case], "ignore_index": IGNORE, "reduction": "none"}
    label = _label(kind)
    expected = jdt_loss_reference(LOGITS, label, **options)
    args = [grid_backend.asarray(a) for a in (LOGITS, label)]
    got = grid_backend.call(jdt_array.jdt_loss, *args, **options)
    assert tuple(got.shape) == expected.shape
    np.testing.assert_allclose(
        grid_backend.to_numpy(got), expected, rtol=grid_backend.rtol, atol=grid_backend.atol
    )


def test_reduction_none_on_every_backend(backend):
    options = {"mIoUD": 0.0, "mIoUI": 1.0, "reduction": "none", "ignore_index": IGNORE}
    expected = jdt_loss_reference(LOGITS, HARD, alpha=0.5, beta=0.5, **options)
    args = [backend.asarray(a) for a in (LOGITS, HARD)]
    got = backend.call(jdt_array.dice_loss, *args, **options)
    np.testing.assert_allclose(
        backend.to_numpy(got), expected, rtol=backend.rtol, atol=backend.atol
    )


@pytest.mark.parametrize("case", PER_IMAGE_CASES)
def test_the_mean_of_the_per_image_losses_is_the_mean_loss(case):
    """Each row averaged over its image's active classes, then over the images with
    one, is the loss of reduction="mean"."""
    options = {**PER_IMAGE_CASES[case], "ignore_index": IGNORE}
    losses = jdt_array.jdt_loss(LOGITS, HARD, reduction="none", **options)
    active = (losses != 0).any(axis=1)  # every active entry of these inputs is > 0
    rows = [np.mean(row[row != 0]) for row in losses[active]]
    mean = float(jdt_array.jdt_loss(LOGITS, HARD, **options))
    np.testing.assert_allclose(np.mean(rows), mean, rtol=1e-12)


def test_a_nan_logit_makes_its_images_row_nan_and_no_other():
    logits = LOGITS.copy()
    logits[1, 2, 3, 4] = np.nan
    losses = jdt_array.jdt_loss(
        logits, HARD, mIoUD=0.0, mIoUI=1.0, reduction="none", ignore_index=IGNORE
    )
    assert np.isnan(losses[1]).all() and np.isfinite(losses[[0, 2]]).all()


GD_CASES = {
    "simple": {"weight_type": "simple"},
    "uniform-per-image": {"weight_type": "uniform", "per_image": True},
    "square-chosen": {"classes": [1, 2, 3]},
    "simple-chosen-per-image": {
        "weight_type": "simple", "classes": [0, 4], "per_image": True,
    },
    "none": {"per_image": True, "reduction": "none", "classes": [1, 2, 4]},
}  # fmt: skip


@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("case", GD_CASES)
def test_generalized_dice_weight_types_and_classes(grid_backend, case, kind):
    options = {**GD_CASES[case], "ignore_index": IGNORE}
    label = _label(kind)
    expected = generalized_dice_reference(LOGITS, label, **options)
    args = [grid_backend.asarray(a) for a in (LOGITS, label)]
    got = grid_backend.call(jdt_array.generalized_dice_loss, *args, **options)
    np.testing.assert_allclose(
        grid_backend.to_numpy(got), expected, rtol=grid_backend.rtol, atol=grid_backend.atol
    )


GRADIENT_CASES = [
    (jdt_array.jdt_loss, CLASS_CASES["weighted"]),
    (jdt_array.jdt_loss, CLASS_CASES["agnostic-weighted"]),
    (jdt_array.tversky_loss, {"alpha": 0.3, "beta": 0.7, "classes": [0, 2], "mIoUI": 1.0}),
    (jdt_array.generalized_dice_loss, GD_CASES["simple-chosen-per-image"]),
    (jdt_array.generalized_dice_loss, {"weight_type": "uniform", "classes": [2, 3]}),
]


@pytest.mark.parametrize(("fn", "options"), GRADIENT_CASES)
def test_hand_gradients_with_classes_equal_autograd(fn, options):
    torch = pytest.importorskip("torch")
    options = {**options, "ignore_index": IGNORE}
    loss, grad = jdt_array.value_and_grad(fn, LOGITS, HARD, **options)
    z = torch.tensor(LOGITS, requires_grad=True)
    want = fn(z, torch.tensor(HARD), **options)
    want.backward()
    want = want.detach()
    np.testing.assert_allclose(loss, want.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_torch_modules_and_jax_forms_take_classes_and_reduction():
    torch = pytest.importorskip("torch")
    jt = pytest.importorskip("jdt_array.backends.torch")
    jj = pytest.importorskip("jdt_array.backends.jax")
    import jax
    import jax.numpy as jnp

    options = {"mIoUD": 0.0, "mIoUI": 1.0, "classes": [1, 2, 4], "reduction": "none"}
    expected = jdt_loss_reference(LOGITS, HARD, ignore_index=IGNORE, **options)
    z = torch.tensor(LOGITS, requires_grad=True)
    got = jt.DiceLoss(ignore_index=IGNORE, **options)(z, torch.tensor(HARD))
    want = jdt_loss_reference(
        LOGITS, HARD, ignore_index=IGNORE, alpha=0.5, beta=0.5, **options
    )
    np.testing.assert_allclose(got.detach().numpy(), want, rtol=1e-12)
    got.sum().backward()  # the lean backward under a (B, C) output
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    jitted = jax.jit(functools.partial(jj.jdt_loss, ignore_index=IGNORE, **options))
    np.testing.assert_allclose(jitted(jnp.asarray(LOGITS), jnp.asarray(HARD)), expected,
                               rtol=1e-10)  # fmt: skip
    gd = jt.GeneralizedDiceLoss(ignore_index=IGNORE, weight_type="simple", classes=[1, 2])
    want = generalized_dice_reference(
        LOGITS, HARD, ignore_index=IGNORE, weight_type="simple", classes=[1, 2]
    )
    np.testing.assert_allclose(float(gd(torch.tensor(LOGITS), torch.tensor(HARD))), want,
                               rtol=1e-12)  # fmt: skip


# -- against MONAI --------------------------------------------------------------------


def _monai():
    monai_losses = pytest.importorskip("monai.losses")
    torch = pytest.importorskip("torch")
    return monai_losses, torch


@pytest.mark.parametrize("spatial", [(6, 7), (4, 5, 3)], ids=["2d", "3d"])
def test_dice_without_background_equals_monai(spatial):
    monai_losses, torch = _monai()
    shape = (2, 4, *spatial)
    logits = make_logits(rng, shape)
    label = make_hard_label(rng, shape)
    z, y = torch.tensor(logits), torch.tensor(label)[:, None]
    common = {"include_background": False, "softmax": True, "to_onehot_y": True,
              "smooth_nr": 0.0, "smooth_dr": 0.0}  # fmt: skip
    ours = {"classes": range(1, 4), "smooth": 0.0, "active_classes_mode_hard": "ALL"}
    monai = monai_losses.DiceLoss(batch=True, **common)(z, y)
    np.testing.assert_allclose(float(jdt_array.dice_loss(logits, label, **ours)),
                               float(monai), rtol=1e-10)  # fmt: skip
    monai = monai_losses.DiceLoss(batch=False, reduction="none", **common)(z, y)
    mine = jdt_array.dice_loss(logits, label, mIoUD=0.0, mIoUI=1.0, reduction="none",
                               **ours)  # fmt: skip
    np.testing.assert_allclose(mine[:, 1:], monai.reshape(2, 3).numpy(), rtol=1e-10)
    assert np.all(mine[:, 0] == 0)  # the background is left out


@pytest.mark.parametrize("w_type", ["square", "simple", "uniform"])
@pytest.mark.parametrize("batch", [True, False])
def test_generalized_dice_weight_types_equal_monai(w_type, batch):
    monai_losses, torch = _monai()
    logits = make_logits(rng, (2, 4, 6, 5))
    label = make_hard_label(rng, (2, 4, 6, 5), absent=(2,))
    z, y = torch.tensor(logits), torch.tensor(label)[:, None]
    for background in (True, False):
        monai = monai_losses.GeneralizedDiceLoss(
            include_background=background, softmax=True, to_onehot_y=True, w_type=w_type,
            batch=batch, smooth_nr=0.0, smooth_dr=0.0, reduction="none",
        )(z, y)  # fmt: skip
        classes = None if background else range(1, 4)
        options = {"weight_type": w_type, "classes": classes, "smooth": 0.0}
        if batch:
            got = jdt_array.generalized_dice_loss(logits, label, **options)
        else:
            got = jdt_array.generalized_dice_loss(
                logits, label, per_image=True, reduction="none", **options
            )
        # (MONAI takes the weights in float32: ground_o.float())
        np.testing.assert_allclose(got, monai.numpy().reshape(np.shape(got)), rtol=1e-6)


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"classes": [0, 5]}, ValueError, r"ids in \[0, 5\), got \[5\]"),
        ({"classes": [1, 1]}, ValueError, "distinct"),
        ({"classes": []}, ValueError, "at least one"),
        ({"classes": [1.0]}, TypeError, "int class ids"),
        ({"classes": "all"}, TypeError, "sequence of class ids"),
        ({"reduction": "none"}, ValueError, "mIoUD=0 and mIoUC=0"),
        ({"reduction": "none", "mIoUD": 0.0, "mIoUC": 1.0}, ValueError, "not per image"),
        ({"reduction": "sum"}, ValueError, "reduction must be one of"),
    ],
)
def test_bad_classes_and_reductions_are_named(options, error, match):
    with pytest.raises(error, match=match):
        jdt_array.jdt_loss(LOGITS, HARD, ignore_index=IGNORE, **options)


def test_reduction_none_refuses_reduce_and_the_hand_gradient():
    options = {"mIoUD": 0.0, "mIoUI": 1.0, "reduction": "none", "ignore_index": IGNORE}
    with pytest.raises(ValueError, match="no reduce"):
        jdt_array.jdt_loss(LOGITS, HARD, reduce=lambda v: v, **options)
    with pytest.raises(ValueError, match="reduction='mean'"):
        jdt_array.value_and_grad(jdt_array.jdt_loss, LOGITS, HARD, **options)
    with pytest.raises(ValueError, match="per_image=True"):
        jdt_array.generalized_dice_loss(LOGITS, HARD, reduction="none")
    with pytest.raises(ValueError, match="weight_type"):
        jdt_array.generalized_dice_loss(LOGITS, HARD, weight_type="cubic")
