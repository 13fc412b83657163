"""The fused kernels of the JDT statistics, Triton (``JDT_ARRAY_TORCH_KERNEL=triton``)
and Pallas (``JDT_ARRAY_JAX_KERNEL=pallas``), through their one protocol
(``jdt_array._kernels.fused``): a shape x dtype x tolerance matrix of statistics,
gradients and cross-entropy sums against float64 formulas written here, the losses
through them, the rules for infinities and NaN, second derivatives, the cases they
decline, the kernel choice and its errors.

Where CUDA is, the Triton kernels run compiled on CUDA tensors; elsewhere (CI) on CPU
tensors in Triton's interpreter, which ``conftest.py`` turns on; the Pallas kernels
run in Pallas's interpreter on CPU. Both interpreters are slow: the shapes are small
and odd, chosen to cross the tiles' boundaries (classes and pixels) with few pixels.
"""

from __future__ import annotations

import math
import threading
from typing import ClassVar

import numpy as np
import pytest
from _support.family_reference import cross_entropy_reference
from _support.reference import jdt_loss_reference

import jdt_array
from jdt_array._kernels import kernels_for
from jdt_array._kernels.fused import FusedCase
from jdt_array.jdt import jdt_statistics

IGNORE = 255
TORCH, JAX = "JDT_ARRAY_TORCH_KERNEL", "JDT_ARRAY_JAX_KERNEL"


# -- the frameworks ----------------------------------------------------------------------


class Triton:
    """PyTorch tensors with ``JDT_ARRAY_TORCH_KERNEL=triton``."""

    name, variable, setting, plain = "triton", TORCH, "triton", "native"
    # Relative tolerance of the float32 sums, and of a gradient stored in the dtype.
    tolerance: ClassVar = {"float32": 2e-5, "float16": 2e-3, "bfloat16": 1e-2}

    def __init__(self):
        self.torch = pytest.importorskip("torch")
        pytest.importorskip("triton")
        self.device = "cuda" if self.torch.cuda.is_available() else "cpu"

    def asarray(self, a, dtype=None):
        if a is None:
            return None
        t = self.torch.asarray(np.ascontiguousarray(a))
        return (t if dtype is None else t.to(getattr(self.torch, dtype))).to(self.device)

    def host(self, t) -> np.ndarray:
        return t.detach().cpu().double().numpy() if t.is_floating_point() else \
            t.cpu().numpy()  # fmt: skip

    def kernels(self):
        return kernels_for(jdt_array._array.array_namespace(self.torch.zeros(1)))

    def statistics_and_grad(self, case: FusedCase, weights):
        """The fused statistics and the gradient of sum(w_p |x|) + sum(w_d |x - y|) +
        sum(w_ce ce) by the framework's autodiff (the kernel's backward)."""
        torch = self.torch
        z = case.logits.clone().requires_grad_(True)
        stats = self.kernels().fused.statistics(case._replace(logits=z))
        used = (stats.prob_card, stats.diff_card, stats.ce_sum)
        terms = zip(used, weights, strict=True)
        total = sum((s * self.asarray(w, "float32")).sum() for s, w in terms)
        (grad,) = torch.autograd.grad(total, z)
        return [self.host(s) for s in stats], stats, grad


class Pallas:
    """JAX arrays with ``JDT_ARRAY_JAX_KERNEL=pallas``."""

    name, variable, setting, plain = "pallas", JAX, "pallas", "xla"
    tolerance: ClassVar = {"float64": 1e-10, "float32": 2e-5, "bfloat16": 1e-2}

    def __init__(self):
        self.jax = pytest.importorskip("jax")
        pytest.importorskip("jax.experimental.pallas")

    def asarray(self, a, dtype=None):
        if a is None:
            return None
        return self.jax.numpy.asarray(a, dtype=dtype)

    def host(self, a) -> np.ndarray:
        a = np.asarray(a)
        return a.astype(np.float64) if np.issubdtype(a.dtype, np.floating) or \
            a.dtype.name == "bfloat16" else a  # fmt: skip

    def kernels(self):
        return kernels_for(self.jax.numpy)

    def statistics_and_grad(self, case: FusedCase, weights):
        jax, jnp = self.jax, self.jax.numpy
        fused = self.kernels().fused

        @jax.jit
        def run(logits, label, keep, weights):
            def statistics(z):
                return fused.statistics(case._replace(logits=z, label=label, keep=keep))

            stats, vjp = jax.vjp(statistics, logits)
            w = [jnp.asarray(v, stats.prob_card.dtype) for v in weights]
            zeros = jnp.zeros_like
            cotangents = (w[0], zeros(stats.label_card), w[1], zeros(stats.label_max),
                          w[2], zeros(stats.count))  # fmt: skip
            return stats, vjp(type(stats)(*cotangents))[0]

        stats, grad = run(case.logits, case.label, case.keep, weights)
        return [self.host(s) for s in stats], stats, grad


FRAMEWORKS = [pytest.param(Triton, id="triton"), pytest.param(Pallas, id="pallas")]


@pytest.fixture(params=FRAMEWORKS)
def fw(request, monkeypatch):
    framework = request.param()
    monkeypatch.setenv(framework.variable, framework.setting)
    return framework


# -- float64 formulas ------------------------------------------------------------------


def _moved(a, class_axis):
    """(B, C, N) float64 from (B, ..., C, ...) with the classes on ``class_axis``."""
    a = np.moveaxis(np.asarray(a, np.float64), class_axis, 1)
    return a.reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))


def reference(logits, label, keep, class_axis, norm, ignore_index, hard):
    """Softmax x, label y (B, C, N), kept pixels (B, N) and the statistics
    (|x|^p, |y|^p, |x - y|^p, max y, cross-entropy sum, kept pixels) in float64."""
    z = _moved(logits, class_axis)
    b, c, n = z.shape
    kept = np.ones((b, n), bool) if keep is None else np.reshape(keep, (b, n)).copy()
    if hard:
        ids = np.reshape(label, (b, n))
        if ignore_index is not None:
            kept &= ids != ignore_index
        y = (ids[:, None, :] == np.arange(c)[None, :, None]).astype(np.float64)
    else:
        y = _moved(label, class_axis)
    w = kept[:, None, :]
    with np.errstate(all="ignore"):
        top = np.where(w, z, -np.inf).max(axis=1, keepdims=True) if c else z
        top = np.where(np.isfinite(top), top, 0.0)
        e = np.exp(np.where(w, z, 0.0) - top)
        x = e / e.sum(axis=1, keepdims=True)
        lse = top + np.log(e.sum(axis=1, keepdims=True))
        card = lambda v: np.where(w, np.abs(v) ** norm, 0.0).sum(axis=2)  # noqa: E731
        ce = np.where(w & (y != 0), y * (lse - np.where(w, z, 0.0)), 0.0).sum(axis=(1, 2))
    label_max = np.where(w, y, 0.0).max(axis=2) if n else np.zeros((b, c))
    stats = (card(x), card(y), card(x - y), label_max, ce, kept.sum(axis=1) * 1.0)
    return x, y, kept, stats


def reference_grad(x, y, kept, norm, w_prob, w_diff, w_ce, shape, class_axis):
    """d/dz of sum(w_prob |x|^p) + sum(w_diff |x - y|^p) + sum(w_ce ce), float64."""
    d = x - y
    g = w_prob[:, :, None] * norm * x ** (norm - 1)
    g = g + w_diff[:, :, None] * norm * np.abs(d) ** (norm - 1) * np.sign(d)
    g = np.where(kept[:, None, :], g, 0.0)
    grad = x * (g - (x * g).sum(axis=1, keepdims=True))
    grad = grad + w_ce[:, None, None] * (x * y.sum(axis=1, keepdims=True) - y)
    grad = np.where(kept[:, None, :], grad, 0.0)
    moved = list(shape)
    moved.insert(1, moved.pop(class_axis))
    return np.moveaxis(grad.reshape(moved), 1, class_axis)


def make_case(fw, shape, class_axis, *, hard, keep, ignore, dtype, norm=1, seed=0):
    """A FusedCase of the framework ``fw`` and its float64 host arrays (the logits
    and a soft label rounded to ``dtype`` first)."""
    rng = np.random.default_rng(seed)
    axis = class_axis % len(shape)
    c = shape[axis]
    pixels = shape[:axis] + shape[axis + 1 :]
    logits = fw.asarray(2 * rng.standard_normal(shape), dtype)
    if hard:
        label = rng.integers(0, max(c, 1), size=pixels)
        if ignore:
            label = np.where(rng.random(pixels) < 0.3, IGNORE, label)
        label = fw.asarray(label)
    else:
        soft = np.exp(3 * rng.standard_normal(shape))
        label = fw.asarray(soft / soft.sum(axis=axis, keepdims=True), dtype)
    mask = rng.random(pixels) < 0.7 if keep else None
    case = FusedCase(logits, label, fw.asarray(mask), axis, norm,
                     IGNORE if ignore else None, hard)  # fmt: skip
    return case, (fw.host(logits), fw.host(label), mask)


# The matrix: shapes that cross the tiles' boundaries (1 class; 5 and 19 inside one
# tile; 150 and 300 over several class tiles of 16 and 32; 527 pixels over several
# pixel blocks and programs), both class axes, 3-D, no spatial axes, empty batches and
# images; and per framework the label kinds, masks, norms and dtypes.
SHAPES = {
    "C5-odd-pixels": ((2, 5, 7, 9), 1),
    "C1": ((2, 1, 6, 5), 1),
    "C3-527-pixels": ((1, 3, 17, 31), 1),
    "C19-channels-last": ((2, 6, 7, 19), -1),
    "C150": ((1, 150, 3, 7), 1),
    "C300-channels-last": ((1, 3, 5, 300), -1),
    "3d": ((2, 4, 3, 5, 6), 1),
    "3d-channels-last": ((1, 3, 4, 5, 7), -1),
    "no-spatial-axes": ((6, 4), 1),
    "B0": ((0, 5, 4, 4), 1),
    "empty-image": ((2, 3, 0, 4), 1),
}
VARIANTS = {  # (hard, keep mask, ignore_index, norm, dtype) per framework
    "triton": [(True, False, False, 1, "float32"), (True, True, True, 1, "float32"),
               (True, False, True, 2, "float16"), (False, False, False, 1, "float32"),
               (False, True, False, 1.5, "bfloat16")],
    "pallas": [(True, False, False, 1, "float32"), (True, True, True, 1, "float64"),
               (False, False, False, 1, "float32"), (False, True, False, 1, "bfloat16"),
               (True, True, True, 2, "float32")],
}  # fmt: skip
# The variants of each shape (indices into VARIANTS; all by default): fewer where the
# interpreters are slowest (many class tiles; Pallas compiles each case).
SELECTED = {
    "triton": {"C150": (1, 2, 4), "C300-channels-last": (0, 3)},
    "pallas": {"C5-odd-pixels": (0, 3), "C1": (1,), "C3-527-pixels": (0,),
               "C19-channels-last": (1, 2, 4), "C150": (1, 3), "C300-channels-last": (0,),
               "3d": (2,), "3d-channels-last": (1,), "no-spatial-axes": (0,),
               "B0": (0, 2), "empty-image": (1, 3)},
}  # fmt: skip


def covered(fw_name, shape, class_axis, norm) -> bool:
    """Which matrix cases each kernel takes (its ``covers``): Triton every one of
    them, Pallas the L1 norm on a non-empty batch."""
    if fw_name == "triton":
        return True
    return norm == 1 and math.prod(shape) > 0


MATRIX = [
    pytest.param(fw, shape, axis, variant,
                 id=f"{fw.name}-{name}-{'hard' if variant[0] else 'soft'}"
                 f"{'-keep' if variant[1] else ''}{'-ignore' if variant[2] else ''}"
                 f"-p{variant[3]}-{variant[4]}")
    for fw in (Triton, Pallas)
    for name, (shape, axis) in SHAPES.items()
    for i, variant in enumerate(VARIANTS[fw.name])
    if i in SELECTED[fw.name].get(name, range(len(VARIANTS[fw.name])))
]  # fmt: skip


def _close(actual, expected, tol, name):
    atol = tol * max(1.0, np.abs(expected).max(initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=atol, err_msg=name)


@pytest.mark.parametrize("framework, shape, class_axis, variant", MATRIX)
def test_fused_statistics_gradient_and_ce_equal_float64_formulas(
    monkeypatch, framework, shape, class_axis, variant
):
    fw = framework()
    monkeypatch.setenv(fw.variable, fw.setting)
    hard, keep, ignore, norm, dtype = variant
    case, (z, y, mask) = make_case(fw, shape, class_axis, hard=hard, keep=keep,
                                   ignore=ignore, dtype=dtype, norm=norm)  # fmt: skip
    fused = fw.kernels().fused
    assert fused.covers(case) is covered(fw.name, shape, class_axis, norm)
    x, y64, kept, want = reference(z, y, mask, case.class_axis, norm, case.ignore_index,
                                   hard)  # fmt: skip
    if not fused.covers(case):  # the loss takes the step-by-step path instead
        stats, _ = jdt_statistics(
            case.logits, case.label, keep_mask=case.keep, class_axis=class_axis,
            norm=norm, ignore_index=case.ignore_index,
        )  # fmt: skip
        for got, w, name in zip(stats, want[:4], ("|x|", "|y|", "|x-y|", "max y"),
                                strict=True):  # fmt: skip
            _close(fw.host(got), w, fw.tolerance[dtype] * 10, name)
        return
    rng = np.random.default_rng(1)
    b, c = x.shape[:2]
    weights = [rng.standard_normal((b, c)), rng.standard_normal((b, c)),
               rng.standard_normal(b)]  # fmt: skip
    got, stats, grad = fw.statistics_and_grad(case, weights)
    tol = fw.tolerance[dtype]
    acc = "float64" if dtype == "float64" else "float32"
    names = ("|x|", "|y|", "|x-y|", "max y", "ce", "count")
    for g, s, w, name in zip(got, stats, want, names, strict=True):
        assert str(s.dtype).endswith(acc) and tuple(s.shape) == w.shape, name
        _close(g, w, tol, name)
    grad_want = reference_grad(x, y64, kept, norm, *weights, shape, case.class_axis)
    assert str(grad.dtype).endswith(dtype) and tuple(grad.shape) == shape
    _close(fw.host(grad), grad_want, 10 * tol, "gradient")


def test_the_matrix_covers_every_tile_of_the_launcher():
    """The matrix reaches one tile and several class tiles, and several pixel blocks
    and programs, of every kernel (the tiles are a function of the classes only)."""
    pytest.importorskip("triton")
    from jdt_array._kernels import triton_launch

    classes = {shape[axis] for shape, axis in SHAPES.values()}
    for kernel in ("statistics", "gradient"):
        tiles = {triton_launch.tile_for(kernel, c) for c in classes}
        assert any(t.one_tile for t in tiles) and any(not t.one_tile for t in tiles)
        several = [c for c in classes if c > triton_launch.tile_for(kernel, c).block_c]
        assert several, kernel
    pixels = max(math.prod(s) // s[a] for s, a in SHAPES.values() if len(s) > 2)
    assert pixels > triton_launch.tile_for("statistics", 3).block_n


def test_tiles_hold_every_class_count_in_a_bounded_tile():
    pytest.importorskip("triton")
    from jdt_array._kernels import triton_launch

    for kernel, tiles in triton_launch.TILES.items():
        for c in (1, 2, 3, 5, 8, 19, 32, 33, 150, 300, 4096, 50000):
            tile = triton_launch.tile_for(kernel, c)
            assert tile in tiles
            assert tile.block_c * tile.block_n <= 1024
            assert tile.one_tile == (c <= tile.block_c and tile.one_tile)
            if tile.one_tile:
                assert c <= tile.block_c  # one tile holds every class
            assert (tile.block_c & (tile.block_c - 1)) == 0  # powers of two
            assert (tile.block_n & (tile.block_n - 1)) == 0


# -- infinities and NaN ----------------------------------------------------------------


def _loss_and_grad(fw, fn, z, *args, **kwargs):
    """``fn(z, ...)`` and its gradient with respect to ``z``, on host."""
    if fw.name == "triton":
        t = z.clone().requires_grad_(True)
        loss = fn(t, *args, **kwargs)
        (grad,) = fw.torch.autograd.grad(loss, t)
        return float(loss), fw.host(grad)
    loss, grad = fw.jax.jit(fw.jax.value_and_grad(lambda w: fn(w, *args, **kwargs)))(z)
    return float(loss), fw.host(grad)


def _both(fw, monkeypatch, fn, z, *args, **kwargs):
    """(fused, plain) results of the same call."""
    out = {}
    for setting in (fw.setting, fw.plain):
        monkeypatch.setenv(fw.variable, setting)
        out[setting] = _loss_and_grad(fw, fn, z, *args, **kwargs)
    return out[fw.setting], out[fw.plain]


def _inf_logits(fw, shape, where, value, seed=0):
    rng = np.random.default_rng(seed)
    z = 2 * rng.standard_normal(shape)
    z[where] = value
    return fw.asarray(z, "float32")


@pytest.mark.parametrize(
    "name, shape, where",
    [
        ("a -inf class", (1, 3, 4, 4), np.s_[:, 1]),
        # The first class tile (of 16, 32 classes) all -inf at every pixel: the
        # running maximum starts at -inf (issue 24, item 3, for Pallas).
        ("first tile all -inf, C = 40", (2, 40, 3, 5), np.s_[:, :32]),
        ("first tile all -inf, channels last", (1, 3, 5, 37), np.s_[..., :32]),
    ],
)
def test_a_minus_inf_logit_is_a_probability_0_as_on_the_plain_path(
    fw, monkeypatch, name, shape, where
):
    """Issue 24, items 2 and 3: finite values and gradients equal to the native /
    XLA path's, from the CE + JDT loss (the cross-entropy from the fused pass)."""
    axis = 1 if "last" not in name else -1
    z = _inf_logits(fw, shape, where, -np.inf)
    pixels = shape[:1] + shape[2:] if axis == 1 else shape[:-1]
    label = fw.asarray(np.full(pixels, shape[axis] - 1))
    fused, plain = _both(fw, monkeypatch, jdt_array.ce_jdt_loss, z, label, class_axis=axis)
    assert np.isfinite(fused[0]) and np.isfinite(fused[1]).all()
    np.testing.assert_allclose(fused[0], plain[0], rtol=1e-5)
    np.testing.assert_allclose(fused[1], plain[1], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize(
    "name, value, where, label_class, expect",
    [
        ("-inf at the labelled class: ce = +inf", -np.inf, np.s_[0, 1], 1, np.inf),
        ("every logit of a kept pixel -inf", -np.inf, np.s_[0, :, 2, 3], 0, np.nan),
        ("NaN at a kept pixel", np.nan, np.s_[0, 2, 1, 1], 0, np.nan),
        ("+inf at a kept pixel", np.inf, np.s_[0, 2, 1, 1], 0, np.nan),
    ],
)
def test_non_finite_logits_at_kept_pixels_give_what_the_plain_path_gives(
    fw, monkeypatch, name, value, where, label_class, expect
):
    z = _inf_logits(fw, (1, 3, 4, 4), where, value)
    label = fw.asarray(np.full((1, 4, 4), label_class))
    for loss in (jdt_array.ce_jdt_loss, jdt_array.jaccard_loss):
        fused, plain = _both(fw, monkeypatch, loss, z, label)
        np.testing.assert_allclose(fused[0], plain[0], rtol=1e-5, equal_nan=True)
        # NaN in, NaN out: the gradient too (where the plain path has it)
        assert np.isnan(fused[1]).any() == np.isnan(plain[1]).any()
        if loss is jdt_array.ce_jdt_loss:  # +inf is the cross-entropy's
            np.testing.assert_equal(fused[0], expect)
        else:
            assert np.isnan(fused[0]) == np.isnan(expect)


def test_nan_and_inf_at_dropped_pixels_stay_inert(fw, monkeypatch):
    case, (z, y, mask) = make_case(fw, (2, 5, 6, 7), 1, hard=True, keep=True, ignore=True,
                                   dtype="float32")  # fmt: skip
    dropped = ~mask | (y == IGNORE)
    poisoned = np.where(dropped[:, None], np.nan, z)
    poisoned[:, 0] = np.where(dropped, np.inf, poisoned[:, 0])
    poisoned[:, 1] = np.where(dropped, -np.inf, poisoned[:, 1])
    outs = [
        _loss_and_grad(fw, jdt_array.ce_jdt_loss, fw.asarray(logits, "float32"),
                       case.label, keep_mask=case.keep, ignore_index=IGNORE)
        for logits in (z, poisoned)
    ]  # fmt: skip
    assert outs[0][0] == outs[1][0]
    np.testing.assert_array_equal(outs[0][1], outs[1][1])
    assert np.all(outs[1][1][np.broadcast_to(dropped[:, None], z.shape)] == 0)


def test_a_fully_ignored_batch_gives_zero_statistics_and_gradient(fw):
    case, _ = make_case(fw, (2, 4, 5, 6), 1, hard=True, keep=False, ignore=True,
                        dtype="float32")  # fmt: skip
    case = case._replace(label=fw.asarray(np.full((2, 5, 6), IGNORE)))
    got, _, grad = fw.statistics_and_grad(case, [np.ones((2, 4)), np.ones((2, 4)),
                                                 np.ones(2)])  # fmt: skip
    assert all(np.all(s == 0) for s in got)
    assert np.all(fw.host(grad) == 0)


# -- the losses through the fused kernels ---------------------------------------------

LOSS_OPTIONS = [
    pytest.param({}, id="jaccard-mIoUD"),
    pytest.param({"mIoUD": 0.0, "mIoUI": 0.5, "mIoUC": 0.5}, id="mIoUI-mIoUC"),
    pytest.param({"alpha": 0.5, "beta": 0.5, "norm": 2}, id="dice-L2"),
    pytest.param(
        {"alpha": 0.3, "beta": 0.7, "gamma": 1.5, "log_loss": True}, id="tversky-focal-log"
    ),
    pytest.param({"class_weights": [1.0, 2.0, 0.5, 1.0, 3.0]}, id="class-weights"),
]


def _loss_inputs(fw, hard, class_axis, dtype="float32", seed=0):
    shape = (2, 5, 6, 7) if class_axis == 1 else (2, 6, 7, 5)
    case, host = make_case(fw, shape, class_axis, hard=hard, keep=True, ignore=hard,
                           dtype=dtype, seed=seed)  # fmt: skip
    return case, host, ({"ignore_index": IGNORE} if hard else {})


@pytest.mark.parametrize("options", LOSS_OPTIONS)
@pytest.mark.parametrize("hard", [True, False], ids=["hard", "soft"])
@pytest.mark.parametrize("class_axis", [1, -1])
def test_jdt_loss_through_the_fused_kernel_equals_the_float64_reference(
    fw, options, hard, class_axis
):
    case, (z, y, mask), extra = _loss_inputs(fw, hard, class_axis)
    loss = jdt_array.jdt_loss(case.logits, case.label, keep_mask=case.keep,
                              class_axis=class_axis, **extra, **options)  # fmt: skip
    want = jdt_loss_reference(z, y, keep_mask=mask, class_axis=class_axis, **extra,
                              **options)  # fmt: skip
    np.testing.assert_allclose(float(loss), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("hard", [True, False], ids=["hard", "soft"])
def test_ce_jdt_loss_takes_its_cross_entropy_from_the_fused_pass(fw, monkeypatch, hard):
    case, (z, y, mask), extra = _loss_inputs(fw, hard, 1)
    calls = []
    fused = type(fw.kernels().fused)
    statistics = fused.statistics
    monkeypatch.setattr(fused, "statistics",
                        lambda self, c: calls.append(1) or statistics(self, c))  # fmt: skip
    loss = jdt_array.ce_jdt_loss(case.logits, case.label, keep_mask=case.keep, **extra)
    ce = cross_entropy_reference(z, y, keep_mask=mask, **extra)
    jdt = jdt_loss_reference(z, y, keep_mask=mask, **extra)
    np.testing.assert_allclose(float(loss), 0.25 * ce + 0.75 * jdt, rtol=1e-5)
    assert calls == [1]  # one fused pass gave the JDT statistics and the cross-entropy


def test_the_adapters_forms_give_the_plain_values_and_gradients(fw, monkeypatch):
    """The PyTorch modules (both backward modes) and the JAX custom_vjp forms."""
    case, _, _ = _loss_inputs(fw, True, 1)
    if fw.name == "triton":
        from jdt_array.backends import torch as jt

        forms = {
            "JaccardLoss": lambda z: jt.JaccardLoss(ignore_index=IGNORE)(z, case.label,
                                                                        case.keep),
            "DiceLoss-mIoUI": lambda z: jt.DiceLoss(ignore_index=IGNORE, mIoUI=1.0,
                                                    mIoUD=0.0)(z, case.label, case.keep),
            "TverskyLoss": lambda z: jt.TverskyLoss(alpha=0.3, beta=0.7,
                                                    ignore_index=IGNORE)(z, case.label,
                                                                         case.keep),
            "JDTLoss-autodiff": lambda z: jt.JDTLoss(ignore_index=IGNORE,
                                                     backward="autodiff")(z, case.label,
                                                                          case.keep),
            "CEJDTLoss": lambda z: jt.CEJDTLoss(ignore_index=IGNORE,
                                                class_weights=[1, 2, 1, 1, 3])(
                z, case.label, case.keep),
        }  # fmt: skip
    else:
        from jdt_array.backends import jax as jj

        forms = {
            "jaccard_loss": lambda z: jj.jaccard_loss(z, case.label, keep_mask=case.keep,
                                                      ignore_index=IGNORE),
            "dice_loss-mIoUI": lambda z: jj.dice_loss(z, case.label, keep_mask=case.keep,
                                                      ignore_index=IGNORE, mIoUI=1.0),
        }  # fmt: skip
    for name, form in forms.items():
        fused, plain = _both(fw, monkeypatch, form, case.logits)
        np.testing.assert_allclose(fused[0], plain[0], rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(fused[1], plain[1], rtol=1e-4, atol=1e-8,
                                   err_msg=name)  # fmt: skip


# -- second derivatives (issue 24, item 5) --------------------------------------------


def test_second_derivatives_through_the_fused_kernel_equal_the_plain_ones(fw, monkeypatch):
    """A backward that is itself differentiated (``create_graph=True``; ``jax.grad``
    of ``jax.grad``) gives the plain path's second derivative."""
    case, _, _ = _loss_inputs(fw, True, 1, seed=3)
    second = _torch_second_derivatives if fw.name == "triton" else _jax_second_derivatives
    results = {}
    for setting in (fw.setting, fw.plain):
        monkeypatch.setenv(fw.variable, setting)
        results[setting] = second(fw, case)
    for got, want in zip(results[fw.setting], results[fw.plain], strict=True):
        assert np.abs(want).max() > 0
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7)


def _torch_second_derivatives(fw, case):
    """The gradient and the gradient of its squared norm, of the JDT module with
    ``backward="autodiff"`` (``create_graph=True``)."""
    from jdt_array.backends import torch as jt

    z = case.logits.clone().requires_grad_(True)
    loss = jt.JDTLoss(ignore_index=IGNORE, backward="autodiff")(z, case.label, case.keep)
    (grad,) = fw.torch.autograd.grad(loss, z, create_graph=True)
    (second,) = fw.torch.autograd.grad((grad**2).sum(), z)
    return fw.host(grad), fw.host(second)


def _jax_second_derivatives(fw, case):
    """The gradient of the squared norm of the gradient, of the custom_vjp form and
    of the core function."""
    jax = fw.jax
    from jdt_array.backends import jax as jj

    def custom_vjp(w):
        return jj.jaccard_loss(w, case.label, keep_mask=case.keep, ignore_index=IGNORE,
                               mIoUI=1.0)  # fmt: skip

    def core(w):
        return jdt_array.jaccard_loss(w, case.label, keep_mask=case.keep,
                                      ignore_index=IGNORE)  # fmt: skip

    def squared_gradient(loss):
        return jax.jit(jax.grad(lambda w: (jax.grad(loss)(w) ** 2).sum()))

    return tuple(fw.host(squared_gradient(f)(case.logits)) for f in (custom_vjp, core))


# -- declined cases, the choice, errors --------------------------------------------------


def test_declined_cases_run_the_plain_kernels(fw, monkeypatch):
    fused = fw.kernels().fused
    case, _ = make_case(fw, (2, 4, 3, 5), 1, hard=True, keep=False, ignore=False,
                        dtype="float32")  # fmt: skip
    middle, _ = make_case(fw, (2, 3, 4, 5), 2, hard=True, keep=False, ignore=False,
                          dtype="float32")  # fmt: skip
    assert fused.covers(case)
    assert not fused.covers(middle)  # a class axis neither first nor last
    if fw.name == "triton":
        torch = fw.torch
        declined = [case._replace(logits=case.logits.double()),  # float64
                    case._replace(label=case.label.to(torch.uint16))]  # fmt: skip
        soft, _ = make_case(fw, (2, 4, 3, 5), 1, hard=False, keep=False, ignore=False,
                            dtype="float32")  # fmt: skip
        declined.append(soft._replace(label=soft.label.clone().requires_grad_(True)))
        assert not any(fused.covers(c) for c in declined)
        # the declined soft label with a gradient: autograd through the plain kernels
        loss = jdt_array.jaccard_loss(soft.logits.clone().requires_grad_(True),
                                      declined[-1].label)  # fmt: skip
        assert not _uses_the_fused_operator(loss)
        assert float(torch.autograd.grad(loss, declined[-1].label)[0].abs().sum()) > 0
        # torch.func: no batching rule; the plain kernels run
        grad, value = torch.func.grad_and_value(
            lambda z: jdt_array.jaccard_loss(z, soft.label)
        )(soft.logits)  # fmt: skip
        monkeypatch.setenv(fw.variable, fw.plain)
        np.testing.assert_allclose(float(value), float(jdt_array.jaccard_loss(
            soft.logits, soft.label)), rtol=1e-6)  # fmt: skip
        assert grad.shape == soft.logits.shape and float(grad.abs().sum()) > 0
    else:
        assert not fused.covers(case._replace(norm=2))
        assert not fused.covers(case._replace(logits=case.logits[:, :, :0]))
        jnp = fw.jax.numpy
        binary = (case.label[:, None] == jnp.arange(4)[None, :, None, None]) * 1
        program = str(
            fw.jax.make_jaxpr(
                fw.jax.grad(
                    lambda z: jdt_array.jaccard_loss(z, binary, activation="sigmoid")
                )
            )(case.logits)
        )
        assert "pallas_call" not in program  # a non-softmax activation is not fused
        assert "pallas_call" in str(
            fw.jax.make_jaxpr(fw.jax.grad(lambda z: jdt_array.jaccard_loss(z, case.label)))(
                jnp.asarray(case.logits)
            )
        )


def test_the_kernel_choice_is_made_in_kernels_for(fw, monkeypatch):
    for setting in VARIABLE_SETTINGS[fw.variable]:
        monkeypatch.setenv(fw.variable, setting)
        kernels = fw.kernels()
        assert (kernels.fused is not None) == (setting.strip().lower() == fw.setting)
        if kernels.fused is not None:
            assert kernels.fused.name == fw.name
    monkeypatch.delenv(fw.variable)
    assert fw.kernels().fused is None  # auto: the plain kernels until a GPU run


VARIABLE_SETTINGS = {TORCH: ("auto", "triton", "native", "generic", " Triton "),
                     JAX: ("auto", "xla", "pallas", "PALLAS", "")}  # fmt: skip


@pytest.mark.parametrize("value", ["cuda", "PALLAS!", "1"])
def test_an_unknown_kernel_setting_names_the_variable_and_its_values(
    fw, monkeypatch, value
):
    monkeypatch.setenv(fw.variable, value)
    case, _ = make_case(fw, (1, 2, 3, 4), 1, hard=True, keep=False, ignore=False,
                        dtype="float32")  # fmt: skip
    values = {TORCH: "auto, triton, native, generic", JAX: "auto, xla, pallas"}[fw.variable]
    with pytest.raises(ValueError, match=f"{fw.variable} must be one of {values}"):
        jdt_array.jaccard_loss(case.logits, case.label)


# -- PyTorch only --------------------------------------------------------------------


@pytest.fixture
def torch_triton(monkeypatch):
    framework = Triton()
    monkeypatch.setenv(TORCH, "triton")
    return framework


def _uses_the_fused_operator(loss) -> bool:
    seen, stack = set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if "fused_statistics" in node.name():
            return True
        stack.extend(f for f, _ in node.next_functions)
    return False


def test_the_triton_choice_runs_the_fused_operator_on_the_meta_device(
    torch_triton, monkeypatch
):
    from jdt_array.backends import torch as jt

    torch = torch_triton.torch
    logits = torch.randn(2, 5, 4, 4, device="meta", requires_grad=True)
    label = torch.zeros(2, 4, 4, dtype=torch.long, device="meta")
    for setting, fused in (("triton", True), ("native", False), ("auto", False)):
        monkeypatch.setenv(TORCH, setting)
        assert _uses_the_fused_operator(jdt_array.jaccard_loss(logits, label)) is fused
        assert _uses_the_fused_operator(jt.JaccardLoss()(logits, label)) is fused


def test_triton_on_cpu_without_the_interpreter_is_a_clear_error(monkeypatch):
    torch = pytest.importorskip("torch")
    pytest.importorskip("triton")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setenv(TORCH, "triton")
    logits, label = torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        jdt_array.jaccard_loss(logits, label)


@pytest.mark.parametrize("setting", ["generic", "native"])
def test_every_torch_kernel_choice_gives_the_same_loss(monkeypatch, setting):
    fw = Triton()
    case, (z, y, mask), extra = _loss_inputs(fw, True, 1)
    monkeypatch.setenv(TORCH, setting)
    loss = jdt_array.jaccard_loss(case.logits, case.label, keep_mask=case.keep, **extra)
    want = jdt_loss_reference(z, y, keep_mask=mask, **extra)
    np.testing.assert_allclose(float(loss), want, rtol=1e-5)


def test_triton_interpreter_launches_from_two_threads_are_serialized(torch_triton):
    """Issue 24, item 9: Triton's interpreter keeps its grid in module state; the
    launcher serializes interpreted launches, so threads give their own results."""
    from jdt_array._kernels import triton_launch
    from jdt_array.backends import torch as jt

    if not triton_launch.interpreting():
        pytest.skip("compiled launches are thread-safe; the lock is the interpreter's")
    cases = [_loss_inputs(torch_triton, True, 1, seed=s)[0] for s in (5, 6)]
    module = jt.CEJDTLoss(ignore_index=IGNORE)
    alone = [float(module(c.logits, c.label, c.keep)) for c in cases]
    results, errors = {}, []

    def run(i):
        try:
            for _ in range(3):
                results[i] = float(module(cases[i].logits, cases[i].label, cases[i].keep))
        except Exception as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert [results[0], results[1]] == alone


# -- JAX only ------------------------------------------------------------------------


@pytest.fixture
def jax_pallas(monkeypatch):
    framework = Pallas()
    monkeypatch.setenv(JAX, "pallas")
    return framework


def test_pallas_gradient_under_vmap_is_per_example(jax_pallas):
    jax = jax_pallas.jax
    from jdt_array.backends import jax as jj

    case, _, _ = _loss_inputs(jax_pallas, True, 1, seed=1)

    def one(z, y):
        return jj.dice_loss(z[None], y[None], mIoUI=1.0, ignore_index=IGNORE)

    batched = jax.jit(jax.vmap(jax.value_and_grad(one)))(case.logits, case.label)
    single = jax.jit(jax.value_and_grad(one))
    singles = [single(case.logits[i], case.label[i]) for i in range(2)]
    np.testing.assert_allclose(batched[0], [v for v, _ in singles], rtol=1e-6)
    np.testing.assert_allclose(batched[1], np.stack([g for _, g in singles]), rtol=1e-5,
                               atol=1e-8)  # fmt: skip


def test_a_soft_labels_own_gradient_is_the_same_with_pallas(jax_pallas, monkeypatch):
    jax = jax_pallas.jax
    from jdt_array.backends import jax as jj

    case, _, _ = _loss_inputs(jax_pallas, False, 1, dtype="float64", seed=2)
    grads = {}
    for setting in ("xla", "pallas"):
        monkeypatch.setenv(JAX, setting)
        for name, fn in (("custom_vjp", jj.jaccard_loss), ("core", jdt_array.jaccard_loss)):
            loss = lambda z, y, fn=fn: fn(z, y, keep_mask=case.keep)  # noqa: E731
            grads[setting, name] = jax.jit(jax.grad(loss, argnums=(0, 1)))(
                case.logits, case.label
            )
    for name in ("custom_vjp", "core"):
        for g_pallas, g_xla in zip(grads["pallas", name], grads["xla", name], strict=True):
            np.testing.assert_allclose(g_pallas, g_xla, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("check_vma", [False, True], ids=["pallas", "xla-inside"])
def test_pallas_under_shard_map_with_axis_name(jax_pallas, monkeypatch, check_vma):
    """Inside a shard_map Pallas runs (compiled on GPU; on CPU in its interpreter, or,
    where the interpreter cannot run, with check_vma=True, as the same XLA code)."""
    jax, jnp = jax_pallas.jax, jax_pallas.jax.numpy
    from jax.sharding import Mesh
    from jax.sharding import PartitionSpec as P

    from jdt_array.backends import jax as jj

    case, _, _ = _loss_inputs(jax_pallas, True, 1, dtype="float64", seed=5)
    mesh = Mesh(np.array(jax.devices()[:1]), ("batch",))
    results = {}
    for setting in ("xla", "pallas"):
        monkeypatch.setenv(JAX, setting)

        @jax.jit
        @jax.shard_map(mesh=mesh, in_specs=(P("batch"), P("batch")),
                       out_specs=(P(), P("batch")), check_vma=check_vma)  # fmt: skip
        def step(z, y):
            def loss(w):
                return jj.jaccard_loss(w, y, axis_name="batch", mIoUI=1.0,
                                       ignore_index=IGNORE)  # fmt: skip

            return jax.value_and_grad(loss)(z)

        results[setting] = step(case.logits, jnp.asarray(case.label))
        if setting == "pallas":
            assert "pallas_call" in str(jax.make_jaxpr(step)(case.logits, case.label))
    np.testing.assert_allclose(results["pallas"][0], results["xla"][0], rtol=1e-12)
    np.testing.assert_allclose(results["pallas"][1], results["xla"][1], rtol=1e-9,
                               atol=1e-14)  # fmt: skip


def test_pallas_is_chosen_at_trace_time(jax_pallas, monkeypatch):
    jax = jax_pallas.jax
    from jdt_array.backends import jax as jj

    case, _, _ = _loss_inputs(jax_pallas, True, 1)

    def program(setting: str | None) -> str:
        if setting is None:
            monkeypatch.delenv(JAX, raising=False)
        else:
            monkeypatch.setenv(JAX, setting)
        step = jax.grad(lambda z: jj.jdt_loss(z, case.label))
        return str(jax.make_jaxpr(step)(case.logits))

    assert "pallas_call" in program("pallas")
    assert "pallas_call" not in program("xla")
    assert "pallas_call" not in program("auto")  # XLA until a GPU run is recorded
    assert "pallas_call" not in program(None)
