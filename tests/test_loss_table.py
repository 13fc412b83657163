"""The loss table (``jdt_array._loss_table``) is the one list of the losses: every row's
forms exist where it names them, with the options of the functional form, and
everything that lists the losses is built from it."""

import pytest
from _support.losses import (
    LOSSES,
    REFERENCES,
    TORCH_OWN,
    check_constructor,
    options_of,
    reference_of,
)

import jdt_array
from jdt_array.grad import HAND_GRADIENTS
from jdt_array.jdt import FIELDS

ROWS = pytest.mark.parametrize("entry", LOSSES, ids=lambda e: e.name)


@ROWS
def test_every_loss_is_public_with_its_hand_gradient_and_reference(entry):
    assert getattr(jdt_array, entry.name) is entry.function
    assert entry.name in jdt_array.__all__
    assert HAND_GRADIENTS[entry.function] is entry.hand_gradient
    assert callable(reference_of(entry))


def test_the_table_lists_every_loss_once_and_every_reference_is_used():
    names = [entry.name for entry in LOSSES]
    assert len(names) == len(set(names))
    assert set(HAND_GRADIENTS) == {entry.function for entry in LOSSES}
    assert {entry.reference for entry in LOSSES} == set(REFERENCES)


@pytest.mark.parametrize(
    "entry", [e for e in LOSSES if e.torch_module], ids=lambda e: e.torch_module
)
def test_the_torch_module_takes_the_options_of_its_function(entry):
    jt = pytest.importorskip("jdt_array.backends.torch")
    module = getattr(jt, entry.torch_module)
    assert entry.torch_module in jt.__all__
    check_constructor(entry, module, TORCH_OWN)


@pytest.mark.parametrize("entry", [e for e in LOSSES if e.jax_form], ids=lambda e: e.name)
def test_the_jax_form_is_public(entry):
    jj = pytest.importorskip("jdt_array.backends.jax")
    assert entry.jax_form in jj.__all__
    assert callable(getattr(jj, entry.jax_form))


def test_the_jdt_signatures_list_every_option_of_jdt_options():
    for entry in LOSSES[:4]:  # jdt_loss and the named losses
        fixed = {"alpha", "beta"} if entry.name in ("jaccard_loss", "dice_loss") else set()
        assert set(FIELDS) - fixed <= set(options_of(entry.function)), entry.name


@pytest.mark.parametrize(
    "module",
    ["jdt_array", "jdt_array.metrics", "jdt_array.soft_labels",
     "jdt_array.backends.torch", "jdt_array.backends.jax"],
)  # fmt: skip
def test_every_public_name_of_a_module_exists(module):
    imported = pytest.importorskip(module)
    missing = [name for name in imported.__all__ if not hasattr(imported, name)]
    assert not missing, missing
