"""What a new user runs into first: errors that say what to do (a channels-last
layout, float class ids, NumPy arrays given to a torch module, a missing library),
the warning for probabilities passed as logits, and the infinity rule of the sigmoid."""

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import jdt_array

ROOT = Path(jdt_array.__file__).resolve().parent.parent
rng = np.random.default_rng(24)


def test_channels_last_logits_with_the_default_class_axis_get_a_hint():
    logits, label = rng.normal(size=(2, 6, 7, 4)), rng.integers(0, 4, size=(2, 6, 7))
    with pytest.raises(ValueError, match="pass class_axis=-1"):
        jdt_array.jaccard_loss(logits, label)
    with pytest.raises(ValueError, match="pass class_axis=1"):
        jdt_array.jaccard_loss(np.moveaxis(logits, -1, 1), label, class_axis=-1)


def test_float_class_ids_are_told_to_be_cast_to_integers():
    logits, label = rng.normal(size=(2, 4, 6, 7)), rng.integers(0, 4, size=(2, 6, 7))
    with pytest.raises(TypeError, match="cast class ids to an integer dtype"):
        jdt_array.jaccard_loss(logits, label.astype(np.float32))


def test_a_torch_module_given_numpy_arrays_names_the_argument():
    jt = pytest.importorskip("jdt_array.backends.torch")
    torch = pytest.importorskip("torch")
    logits, label = rng.normal(size=(2, 4, 6, 7)), rng.integers(0, 4, size=(2, 6, 7))
    with pytest.raises(TypeError, match=r"logits is a numpy\.ndarray; convert it"):
        jt.JDTLoss()(logits, torch.asarray(label))
    with pytest.raises(TypeError, match=r"label is a numpy\.ndarray"):
        jt.CEJDTLoss()(torch.asarray(logits), label)
    with pytest.raises(TypeError, match=r"target_prob is a numpy\.ndarray"):
        jt.KLDivLoss()(torch.asarray(logits), rng.random((2, 4, 6, 7)))
    with pytest.raises(TypeError, match=r"keep_mask is a numpy\.ndarray"):
        jt.LovaszSoftmaxLoss()(
            torch.asarray(logits), torch.asarray(label), keep_mask=label > 0
        )


@pytest.mark.parametrize(
    ("module", "missing", "extra"),
    [
        ("jdt_array.backends.torch", "torch", "jdt-array[torch]"),
        ("jdt_array.backends.jax", "jax", "jdt-array[jax]"),
        ("jdt_array.backends.torchmetrics", "torchmetrics", "jdt-array[torchmetrics]"),
        ("jdt_array.backends.keras", "keras", "jdt-array[keras]"),
    ],
)
def test_importing_an_adapter_without_its_library_names_the_extra(module, missing, extra):
    code = (
        f"import sys; sys.modules[{missing!r}] = None\n"
        f"try:\n    import {module}\n"
        "except ImportError as err:\n    print(type(err).__name__, err)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=120, check=True)  # fmt: skip
    assert extra in done.stdout, done.stdout + done.stderr


def _probabilities(shape):
    z = rng.normal(size=shape)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_probabilities_passed_as_logits_warn():
    prob, label = _probabilities((2, 4, 6, 7)), rng.integers(0, 4, size=(2, 6, 7))
    with pytest.warns(UserWarning, match="look like probabilities") as caught:
        jdt_array.jaccard_loss(prob, label)
    assert caught[0].filename == __file__  # it points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jdt_array.jaccard_loss(prob, label, activation=None)  # what they are
        jdt_array.jaccard_loss(np.log(prob), label)  # logits: no warning


@pytest.mark.parametrize(
    "shape", [(0, 4, 6, 7), (2, 4, 0, 7)], ids=["no-images", "no-pixels"]
)
def test_an_empty_batch_does_not_look_like_probabilities(shape):
    logits, label = np.zeros(shape), np.zeros(shape[:1] + shape[2:], dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every value of nothing lies in [0, 1]
        assert float(jdt_array.jaccard_loss(logits, label)) == 0.0


def test_probabilities_passed_as_logits_warn_with_torch_on_cpu_only():
    torch = pytest.importorskip("torch")
    jt = pytest.importorskip("jdt_array.backends.torch")
    prob, label = _probabilities((2, 4, 6, 7)), rng.integers(0, 4, size=(2, 6, 7))
    with pytest.warns(UserWarning, match="look like probabilities"):
        jt.JDTLoss()(torch.asarray(prob), torch.asarray(label))
    with warnings.catch_warnings():  # no value is read off the CPU
        warnings.simplefilter("error")
        meta = torch.asarray(prob).to("meta").requires_grad_(True)
        jt.JDTLoss()(meta, torch.asarray(label).to("meta")).backward()


def test_probabilities_are_not_checked_under_jit():
    jax = pytest.importorskip("jax")
    prob, label = _probabilities((2, 4, 6, 7)), rng.integers(0, 4, size=(2, 6, 7))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        jax.jit(jdt_array.jaccard_loss)(jax.numpy.asarray(prob), jax.numpy.asarray(label))


def test_infinite_sigmoid_logits_are_certain_probabilities_and_nan_is_nan():
    """Under the sigmoid each class has its own logit, so +-inf are the probabilities 1
    and 0 (the limit is defined); under the softmax +inf gives NaN (inf / inf)."""
    logits = rng.normal(size=(2, 3, 5, 4))
    label = (rng.random((2, 3, 5, 4)) < 0.5).astype(np.int64)
    certain = np.where(label == 1, np.inf, -np.inf)
    mixed = np.where(rng.random(logits.shape) < 0.2, certain, logits)
    saturated = np.where(np.isinf(mixed), np.sign(mixed) * 60.0, mixed)
    for fn in (jdt_array.dice_loss, jdt_array.jaccard_loss, jdt_array.ce_jdt_loss):
        got = float(fn(mixed, label, activation="sigmoid"))
        want = float(fn(saturated, label, activation="sigmoid"))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    wrong = mixed.copy()
    wrong[0, 0, 0, 0] = np.inf if label[0, 0, 0, 0] == 0 else -np.inf
    assert float(jdt_array.ce_jdt_loss(wrong, label, activation="sigmoid")) == np.inf
    assert np.isfinite(float(jdt_array.dice_loss(wrong, label, activation="sigmoid")))
    nan = logits.copy()
    nan[1, 2, 3, 1] = np.nan
    assert np.isnan(float(jdt_array.dice_loss(nan, label, activation="sigmoid")))
    inf_softmax = logits.copy()
    inf_softmax[0, 1, 0, 0] = np.inf
    assert np.isnan(float(jdt_array.dice_loss(inf_softmax, label.argmax(axis=1))))
