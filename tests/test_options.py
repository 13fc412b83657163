"""The JDT options are defined once (``JDTOptions``); every explicit signature that
lists them agrees with that definition."""

import dataclasses
import inspect

import numpy as np
import pytest

import jdt_array
from jdt_array.jdt import FIELDS, JDTOptions

DEFAULTS = {f.name: f.default for f in dataclasses.fields(JDTOptions)}

# The reference JDTLoss constructor's positional order, which JDTLoss keeps.
REFERENCE_ORDER = (
    "mIoUD", "mIoUI", "mIoUC", "alpha", "beta", "gamma", "smooth", "threshold", "norm",
    "log_loss", "ignore_index", "class_weights", "active_classes_mode_hard",
    "active_classes_mode_soft",
)  # fmt: skip


def _defaults(fn):
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


def test_jdt_loss_signature_lists_every_option_with_its_default():
    defaults = _defaults(jdt_array.jdt_loss)
    assert {name: defaults[name] for name in FIELDS} == DEFAULTS


def test_torch_module_signature_lists_every_option_with_its_default():
    jt = pytest.importorskip("jdt_array.backends.torch")
    defaults = _defaults(jt.JDTLoss.__init__)
    assert {name: defaults[name] for name in FIELDS} == DEFAULTS
    positional = [
        name
        for name, p in inspect.signature(jt.JDTLoss.__init__).parameters.items()
        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and name != "self"
    ]
    assert tuple(positional) == REFERENCE_ORDER


def test_torch_module_keeps_the_checked_options_object():
    jt = pytest.importorskip("jdt_array.backends.torch")
    module = jt.JDTLoss(0.5, 0.5, alpha=0.3, class_axis=-1, ignore_index=255)
    assert module.options == JDTOptions(
        mIoUD=0.5, mIoUI=0.5, alpha=0.3, class_axis=-1, ignore_index=255
    )
    with pytest.raises(ValueError, match="gamma"):
        jt.JDTLoss(gamma=0.5)


def test_options_are_frozen_and_hashable():
    options = JDTOptions(mIoUI=1.0)
    assert hash(options) == hash(JDTOptions(mIoUI=1.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.mIoUI = 0.0


def test_options_of_picks_only_the_options():
    arguments = {"logits": None, "reduce": None, "alpha": 0.5, "class_axis": -1}
    assert JDTOptions.of(arguments) == JDTOptions(alpha=0.5, class_axis=-1)


CHANGED = {
    "class_axis": -1, "mIoUD": 0.5, "mIoUI": 0.5, "mIoUC": 0.5, "alpha": 0.3,
    "beta": 0.7, "gamma": 2.0, "smooth": 0.5, "threshold": 0.5, "norm": 2,
    "log_loss": True, "ignore_index": 2, "active_classes_mode_hard": "ALL",
    "active_classes_mode_soft": "PRESENT", "class_agnostic": True,
    "activation": "sigmoid", "classes": [0, 2], "reduction": "none",
}  # fmt: skip
# Options that need others set: the image-level losses of reduction="none"; threshold
# acts where soft labels count only their present classes.
BASES = {
    "reduction": {"mIoUD": 0.0, "mIoUI": 1.0},
    "threshold": {"active_classes_mode_soft": "PRESENT"},
}


def _inputs(name):
    """Inputs on which the option ``name`` changes the loss."""
    rng = np.random.default_rng(0)
    shape = (2, 4, 5, 3) if name == "class_axis" else (2, 3, 4, 5)
    logits = rng.standard_normal(shape)
    if name in ("active_classes_mode_soft", "threshold"):  # soft labels, class 2 weak
        weak = 0.0 if name == "active_classes_mode_soft" else 0.1  # absent / below 0.5
        soft = rng.random(shape) * np.array([1.0, 1.0, weak])[:, None, None]
        return logits, soft / soft.sum(axis=1, keepdims=True)
    if name == "activation":  # a multi-label 0/1 label shaped like the logits
        return logits, rng.integers(0, 2, size=shape)
    label = rng.integers(0, 3, size=(2, 4, 5))
    if name == "active_classes_mode_hard":
        label = np.where(label == 2, 0, label)  # class 2 absent: "ALL" counts it
    return logits, label


@pytest.mark.parametrize("name", FIELDS)
def test_every_option_reaches_the_loss_in_every_form(name):
    """Each option, set away from its default, changes the functional loss and gives
    the torch module and the JAX form the same value."""
    assert set(CHANGED) == set(FIELDS)
    logits, label = _inputs(name)
    base = BASES.get(name, {})
    options = {**base, name: CHANGED[name]}
    value = np.asarray(jdt_array.jdt_loss(logits, label, **options))
    if name not in ("class_axis", "activation"):  # (the defaults do not fit the inputs)
        before = np.asarray(jdt_array.jdt_loss(logits, label, **base))
        assert value.shape != before.shape or not np.allclose(value, before)  # it acts
    jt = pytest.importorskip("jdt_array.backends.torch")
    import torch

    module = jt.JDTLoss(**options)
    np.testing.assert_allclose(
        module(torch.asarray(logits), torch.asarray(label)).numpy(), value, rtol=1e-12
    )
    jj = pytest.importorskip("jdt_array.backends.jax")
    import jax.numpy as jnp

    np.testing.assert_allclose(
        jj.jdt_loss(jnp.asarray(logits), jnp.asarray(label), **options), value,
        rtol=1e-6,
    )  # fmt: skip
