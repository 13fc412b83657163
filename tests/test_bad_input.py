"""Bad input and faults: a NaN never becomes a plausible loss, values at dropped pixels
reach nothing, empty inputs give 0, and what cannot be computed raises a clear error,
on every backend and both kernel paths (channels first: native kernels; channels last
or norm 2: the generic code)."""

import functools

import numpy as np
import pytest
from _support.inputs import IGNORE, make_hard_label, make_logits, make_soft_label
from _support.tiers import tiered

import jdt_array

SHAPE = (2, 3, 4, 5)

# name: (loss, label kind, options). "binary": one score per pixel and a 0/1 label.
LOSSES = {
    "jaccard": (jdt_array.jaccard_loss, "hard", {}),
    "jaccard-l2": (jdt_array.jaccard_loss, "hard", {"norm": 2, "mIoUI": 1.0}),
    "dice-image-class": (
        jdt_array.dice_loss, "hard", {"mIoUD": 0.0, "mIoUI": 1.0, "mIoUC": 1.0}
    ),
    "tversky-soft-gamma": (
        functools.partial(jdt_array.tversky_loss, alpha=0.3, beta=0.7), "soft",
        {"gamma": 2.0},
    ),
    "jdt-soft-present-l2": (
        jdt_array.jdt_loss, "soft", {"active_classes_mode_soft": "PRESENT", "norm": 2}
    ),
    "generalized-dice": (jdt_array.generalized_dice_loss, "hard", {}),
    "lovasz-softmax": (jdt_array.lovasz_softmax_loss, "hard", {}),
    "lovasz-per-image": (jdt_array.lovasz_softmax_loss, "hard", {"per_image": True}),
    "lovasz-hinge": (jdt_array.lovasz_hinge_loss, "binary", {}),
    "cross-entropy-focal": (jdt_array.cross_entropy, "hard", {"gamma": 2.0}),
    "cross-entropy-soft": (jdt_array.cross_entropy, "soft", {}),
    "kl-div": (jdt_array.kl_div, "soft", {"temperature": 2.0}),
    "ce-jdt": (jdt_array.ce_jdt_loss, "hard", {}),
}  # fmt: skip
# One loss of each code path (region loss on hard labels, on soft labels with norm 2,
# Lovasz softmax, Lovasz hinge on binary labels, cross-entropy on soft labels, and a
# compound loss) runs on every backend; the rest of the table on the grid backends.
SMOKE = {"jaccard", "jdt-soft-present-l2", "lovasz-softmax", "lovasz-hinge",
         "cross-entropy-soft", "ce-jdt"}  # fmt: skip
NAMES = tiered([pytest.param(name, id=name) for name in LOSSES], smoke=SMOKE)


def make_inputs(kind, *, class_axis=1, shape=SHAPE, seed=0):
    """NumPy float64 logits and a label of ``kind``, channels at ``class_axis``."""
    rng = np.random.default_rng(seed)
    if kind == "binary":  # one score per pixel
        pixels = shape[:1] + shape[2:]
        return make_logits(rng, pixels), rng.integers(0, 2, size=pixels)
    shape = tuple(np.moveaxis(np.empty(shape), 1, class_axis).shape)
    logits = make_logits(rng, shape)
    if kind == "soft":
        return logits, make_soft_label(rng, shape, class_axis=class_axis)
    return logits, make_hard_label(rng, shape, class_axis=class_axis)


def pixel_shape(logits, kind, class_axis):
    shape = list(logits.shape)
    if kind != "binary":
        shape.pop(class_axis)
    return tuple(shape)


def value_and_grad(backend, fn, logits, label, keep=None, **options):
    """(value, gradient) as NumPy arrays, through ``jdt_array.value_and_grad`` on the
    backend (under ``jax.jit`` for the jitted ones)."""

    def step(z, y, *k):
        extra = {"keep_mask": k[0]} if k else {}
        return jdt_array.value_and_grad(fn, z, y, **extra, **options)

    arrays = [backend.asarray(a) for a in (logits, label, keep) if a is not None]
    value, grad = backend.call(step, *arrays)
    return backend.to_numpy(value), backend.to_numpy(grad)


# ---------------------------------------------------------------- NaN propagation


@pytest.mark.parametrize("bad", [np.nan, np.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("name", NAMES)
def test_a_nan_or_inf_logit_at_a_kept_pixel_makes_the_loss_nan(backend, name, bad):
    fn, kind, options = LOSSES[name]
    logits, label = make_inputs(kind)
    logits[(0, 1, 2, 3)[: logits.ndim]] = bad
    arrays = [backend.asarray(logits), backend.asarray(label)]
    value = backend.to_numpy(backend.call(fn, *arrays, **options))
    assert np.isnan(value), f"{name} gave {value} for a {bad} logit"


@pytest.mark.parametrize("name", ["jaccard", "jdt-soft-present-l2", "ce-jdt"])
@pytest.mark.parametrize("mode", ["vjp", "autodiff"])
def test_torch_losses_propagate_nan_in_both_backward_modes(name, mode):
    torch = pytest.importorskip("torch")
    from jdt_array.backends import torch as jt

    _, kind, options = LOSSES[name]
    logits, label = make_inputs(kind)
    logits[0, 1, 2, 3] = np.nan
    z = torch.asarray(logits, dtype=torch.float32).requires_grad_(True)
    y = torch.asarray(label)
    if name == "ce-jdt":
        module = jt.CEJDTLoss(**options)
    else:
        module = jt.JDTLoss(backward=mode, **options)
    loss = module(z, y if kind == "hard" else y.float())
    loss.backward()
    assert torch.isnan(loss)


def test_nothing_active_but_a_nan_logit_is_still_nan():
    """Soft labels whose classes are all below the threshold activate no class, which
    gives 0 for valid logits; a NaN logit still gives NaN."""
    logits, _ = make_inputs("soft")
    label = np.full(logits.shape, 1 / 3)  # every class below the threshold
    options = {"active_classes_mode_soft": "PRESENT", "threshold": 0.5}
    assert float(jdt_array.jdt_loss(logits, label, **options)) == 0.0
    logits[0, 0, 0, 0] = np.nan
    assert np.isnan(jdt_array.jdt_loss(logits, label, **options))


@pytest.mark.parametrize(
    "name", ["jaccard", "dice-image-class", "generalized-dice", "lovasz-softmax", "ce-jdt"]
)
def test_a_minus_inf_logit_is_a_probability_of_zero(backend, name):
    """-inf is the usual way to rule a class out: softmax gives it probability 0
    exactly, as a very negative finite logit does."""
    fn, kind, options = LOSSES[name]
    logits, label = make_inputs(kind)
    other = (label[0, 2, 3] + 1) % 3  # not the pixel's class: the loss stays finite
    results = []
    for low in (-np.inf, -1e4):
        z = logits.copy()
        z[0, other, 2, 3] = low
        arrays = [backend.asarray(z), backend.asarray(label)]
        results.append(backend.to_numpy(backend.call(fn, *arrays, **options)))
    assert np.isfinite(results[0])
    np.testing.assert_allclose(results[0], results[1], rtol=backend.rtol, atol=0)


# ---------------------------------------------------------------- dropped pixels

GARBAGE = (np.nan, np.inf, -np.inf, 1e30, -1e30)


def garbage_at(a, dropped, class_axis=None):
    """``a`` with NaN, inf and huge values written at the ``dropped`` pixels."""
    out = a.copy()
    if class_axis is not None:
        dropped = np.broadcast_to(np.expand_dims(dropped, class_axis), a.shape)
    values = np.resize(np.array(GARBAGE), int(dropped.sum()))
    out[dropped] = values
    return out


def _drop_cases():
    for name, (_, kind, _) in LOSSES.items():
        for drop in ("ignore_index", "keep_mask"):
            if drop == "ignore_index" and kind in ("soft",):
                continue  # soft labels have no ignore_index
            for axis in (1, -1):
                if kind == "binary" and axis == -1:
                    continue
                yield pytest.param(name, drop, axis, id=f"{name}-{drop}-axis{axis}")


def _smoke_loss(case):
    return case.values[0] in SMOKE


@pytest.mark.parametrize("name, drop, class_axis", tiered(_drop_cases(), smoke=_smoke_loss))
def test_values_at_dropped_pixels_reach_neither_value_nor_gradient(
    backend, name, drop, class_axis
):
    fn, kind, options = LOSSES[name]
    logits, label = make_inputs(kind, class_axis=class_axis)
    axis = None if kind == "binary" else class_axis
    if kind != "binary":
        options = {**options, "class_axis": class_axis}
    rng = np.random.default_rng(1)
    dropped = rng.random(pixel_shape(logits, kind, class_axis)) < 0.3
    keep = None
    if drop == "keep_mask":
        keep = ~dropped
    else:
        label = np.where(dropped, IGNORE, label)
        options = {**options, "ignore_index": IGNORE}
    clean = value_and_grad(backend, fn, logits, label, keep, **options)
    bad_logits = garbage_at(logits, dropped, axis)
    bad_label = garbage_at(label, dropped, axis) if kind == "soft" else label
    dirty = value_and_grad(backend, fn, bad_logits, bad_label, keep, **options)
    # Bit for bit: the dropped pixels' values take no part in any operation.
    np.testing.assert_array_equal(dirty[0], clean[0])
    at_dropped = dropped if axis is None else np.expand_dims(dropped, axis)
    at_dropped = np.broadcast_to(at_dropped, logits.shape)
    np.testing.assert_array_equal(dirty[1][~at_dropped], clean[1][~at_dropped])
    assert (dirty[1][at_dropped] == 0).all()
    assert np.isfinite(clean[0]) and np.isfinite(clean[1]).all()


@pytest.mark.parametrize("mode", ["vjp", "autodiff"])
@pytest.mark.parametrize("class_axis", [1, -1])
def test_torch_modules_ignore_dropped_pixels_in_both_backward_modes(mode, class_axis):
    torch = pytest.importorskip("torch")
    from jdt_array.backends import torch as jt

    logits, label = make_inputs("hard", class_axis=class_axis)
    dropped = np.random.default_rng(2).random(label.shape) < 0.3
    label = np.where(dropped, IGNORE, label)
    module = jt.JDTLoss(ignore_index=IGNORE, class_axis=class_axis, backward=mode)
    results = []
    for z in (logits, garbage_at(logits, dropped, class_axis)):
        t = torch.asarray(z, dtype=torch.float32).requires_grad_(True)
        loss = module(t, torch.asarray(label))
        loss.backward()
        results.append((loss.item(), t.grad.numpy()))
    assert results[0][0] == results[1][0]
    np.testing.assert_array_equal(results[0][1], results[1][1])


# ---------------------------------------------------------------- soft labels


@pytest.mark.parametrize("fn", [jdt_array.jdt_loss, jdt_array.cross_entropy])
@pytest.mark.parametrize("bad", [np.nan, 1.5, -0.1], ids=["nan", "above-1", "negative"])
def test_a_soft_label_outside_zero_one_or_nan_is_refused(backend, fn, bad):
    if backend.jit:
        pytest.skip("value checks read the label: not inside jax.jit (documented)")
    logits, label = make_inputs("soft")
    label[1, 2, 0, 0] = bad
    with pytest.raises(ValueError, match=r"soft label must hold probabilities in \[0, 1\]"):
        fn(backend.asarray(logits), backend.asarray(label))


def test_a_nan_teacher_probability_is_refused():
    logits, target = make_inputs("soft")
    target[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="target_prob"):
        jdt_array.kl_div(logits, target)


@pytest.mark.parametrize("mode", ["vjp", "autodiff"])
@pytest.mark.parametrize("norm", [1, 2])
def test_a_soft_label_that_requires_grad_gets_its_gradient_in_torch(mode, norm):
    torch = pytest.importorskip("torch")
    from jdt_array.backends import torch as jt

    logits, label = make_inputs("soft")
    keep = torch.asarray(np.random.default_rng(3).random((2, 4, 5)) < 0.8)
    grads = []
    for fn in (
        functools.partial(jt.jdt_loss, backward=mode),
        jdt_array.jdt_loss,  # the core, through autograd
    ):
        z = torch.asarray(logits).requires_grad_(True)
        y = torch.asarray(label).requires_grad_(True)
        fn(z, y, keep_mask=keep, norm=norm, mIoUI=1.0).backward()
        grads.append((z.grad, y.grad))
    assert grads[0][1] is not None
    torch.testing.assert_close(grads[0][1], grads[1][1], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-10, atol=1e-12)
    assert (grads[0][1].movedim(1, -1)[~keep] == 0).all()


@pytest.mark.parametrize("norm", [1, 2])
def test_a_soft_label_gets_its_gradient_through_the_jax_custom_vjp(norm):
    jax = pytest.importorskip("jax")
    from jdt_array.backends import jax as jj

    logits, label = make_inputs("soft")
    args = (jax.numpy.asarray(logits), jax.numpy.asarray(label))
    grads = [
        jax.grad(lambda z, y, f=f: f(z, y, norm=norm, mIoUC=1.0), argnums=(0, 1))(*args)
        for f in (jj.jdt_loss, jdt_array.jdt_loss)
    ]
    for lean, autodiff in zip(grads[0], grads[1], strict=True):
        assert float(jax.numpy.abs(lean).max()) > 0
        np.testing.assert_allclose(np.asarray(lean), np.asarray(autodiff), atol=1e-12)


# ---------------------------------------------------------------- options


def test_python_class_weights_are_checked_under_jit():
    jax = pytest.importorskip("jax")
    from jdt_array.backends import jax as jj

    logits, label = (jax.numpy.asarray(a) for a in make_inputs("hard"))
    for fn in (jdt_array.jdt_loss, jj.jdt_loss):
        jitted = jax.jit(functools.partial(fn, class_weights=[1.0, -5.0, 1.0]))
        with pytest.raises(ValueError, match="class_weights"):
            jitted(logits, label)
        with pytest.raises(ValueError, match="class_weights"):
            jax.jit(functools.partial(fn, class_weights=(1.0, float("nan"), 1.0)))(
                logits, label
            )


@pytest.mark.parametrize("threshold", [1.0, 2.0, -0.1])
def test_a_threshold_outside_zero_one_is_refused(threshold):
    logits, label = make_inputs("soft")
    with pytest.raises(ValueError, match="threshold"):
        jdt_array.jdt_loss(logits, label, threshold=threshold)


def test_the_focal_power_is_continuous_at_gamma_one():
    """With soft labels, norm 3 and alpha != beta, T exceeds 1 for some classes (seed
    0 here): the focal power keeps the sign of 1 - T for every gamma, so gamma just
    above 1 gives what gamma = 1 gives."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=SHAPE) * 3
    label = rng.random(SHAPE)
    label /= label.sum(axis=1, keepdims=True)
    options = {"norm": 3, "alpha": 0.1, "beta": 0.9, "mIoUI": 1.0}
    at_one = float(jdt_array.jdt_loss(logits, label, **options))
    above = float(jdt_array.jdt_loss(logits, label, gamma=1 + 1e-9, **options))
    assert abs(above - at_one) < 1e-8
    _, grad_one = jdt_array.value_and_grad(jdt_array.jdt_loss, logits, label, **options)
    _, grad_above = jdt_array.value_and_grad(
        jdt_array.jdt_loss, logits, label, gamma=1 + 1e-9, **options
    )
    np.testing.assert_allclose(grad_above, grad_one, atol=1e-7)


def test_a_list_class_axis_is_a_clear_error_in_the_jax_forms():
    pytest.importorskip("jax")
    from jdt_array.backends import jax as jj

    logits, label = make_inputs("hard")
    with pytest.raises(TypeError, match="class_axis must be an int"):
        jj.jdt_loss(logits, label, class_axis=[1])


# ---------------------------------------------------------------- empty inputs


def _empty_cases():
    for name in LOSSES:
        for shape in ((0, 3, 4, 5), (2, 3, 0, 5)):
            yield pytest.param(name, shape, id=f"{name}-{'x'.join(map(str, shape))}")


@pytest.mark.parametrize("name, shape", tiered(_empty_cases(), smoke=_smoke_loss))
def test_nothing_to_average_gives_zero_and_a_zero_gradient(backend, name, shape):
    fn, kind, options = LOSSES[name]
    logits, label = make_inputs(kind, shape=shape)
    value, grad = value_and_grad(backend, fn, logits, label, **options)
    assert value.shape == () and value == 0
    assert grad.shape == logits.shape and (grad == 0).all()


def test_averaging_no_annotators_is_refused():
    labels = np.zeros((0, 2, 4, 4), dtype=np.int64)
    with pytest.raises(ValueError, match="no annotator"):
        jdt_array.soft_labels.average_annotators(labels, num_classes=3)


# ---------------------------------------------------------------- clear errors


@pytest.mark.parametrize("fn", [jdt_array.jaccard_loss, jdt_array.cross_entropy,
                                jdt_array.lovasz_softmax_loss])  # fmt: skip
def test_an_ignore_index_the_label_dtype_cannot_hold_matches_no_pixel(backend, fn):
    logits, label = make_inputs("hard")
    narrow = backend.asarray(label.astype(np.int8))
    z = backend.asarray(logits)
    got = backend.call(fn, z, narrow, ignore_index=IGNORE)
    want = backend.call(fn, z, backend.asarray(label))
    np.testing.assert_allclose(backend.to_numpy(got), backend.to_numpy(want), rtol=1e-6)


def test_label_smoothing_takes_an_ignore_index_the_dtype_cannot_hold(backend):
    label = np.random.default_rng(0).integers(0, 3, size=(2, 4, 4))
    smooth = jdt_array.soft_labels.label_smoothing
    got = backend.call(smooth, backend.asarray(label.astype(np.int8)), num_classes=3,
                       ignore_index=IGNORE)  # fmt: skip
    want = backend.call(smooth, backend.asarray(label), num_classes=3)
    np.testing.assert_allclose(backend.to_numpy(got), backend.to_numpy(want))


def test_calibration_metrics_refuse_a_nan_probability():
    from jdt_array.metrics import FineGrainedMetrics

    rng = np.random.default_rng(0)
    prob = rng.random((2, 3, 4, 4))
    prob /= prob.sum(axis=1, keepdims=True)
    prob[0, :, 1, 1] = np.nan
    metrics = FineGrainedMetrics(3, calibration=True)
    metrics.update(prob, rng.integers(0, 3, size=(2, 4, 4)))
    with pytest.raises(ValueError, match="NaN"):  # compute: the one sync point
        metrics.compute()
