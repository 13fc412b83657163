"""Every loss of the table in every form, on a smoke set of cases (the loss tester,
tests/_support/loss_tester.py): functional against the float64 reference on every
backend, ``value_and_grad`` on every backend against the NumPy hand gradient, the hand
gradient against PyTorch autograd, the PyTorch module and the JAX form against the
functional form, and the data-parallel ``reduce``. The grids of each loss's options
live in its own module (test_jdt.py, test_lovasz.py, ...)."""

import pytest
from _support.loss_tester import ROW_CASES, LossTester, syncs
from _support.losses import LOSSES
from _support.tiers import tiered

BY_NAME = {entry.name: entry for entry in LOSSES}
ALL = [(entry, case) for entry in LOSSES for case in ROW_CASES[entry.name]]


def _first_case(entry):
    return ROW_CASES[entry.name][0]


def _cases(rows, *, tiers=False):
    """Parametrize over (row, case) pairs; with ``tiers``, each row's first case is the
    smoke set every backend runs, the rest run on the grid backends."""
    params = [pytest.param(e, c, id=f"{e.name}-{c.name}") for e, c in rows]
    if tiers:
        params = tiered(params, smoke=lambda p: p.values[1] is _first_case(p.values[0]))
    return pytest.mark.parametrize(("entry", "case"), params)


def test_every_row_of_the_table_has_cases():
    assert set(ROW_CASES) == set(BY_NAME)
    assert all(ROW_CASES.values())


@_cases(ALL, tiers=True)
def test_functional_form_equals_the_reference(backend, entry, case):
    LossTester(entry, case).check_reference(backend)


@_cases([(entry, ROW_CASES[entry.name][0]) for entry in LOSSES])
def test_value_and_grad_equals_the_hand_gradient(backend, entry, case):
    LossTester(entry, case).check_value_and_grad(backend)


@_cases(ALL)
def test_hand_gradient_equals_autodiff(entry, case):
    LossTester(entry, case).check_hand_gradient()


@_cases([(e, c) for e, c in ALL if e.torch_module])
def test_torch_module_equals_the_functional_form(entry, case):
    LossTester(entry, case).check_module()


@_cases([(e, c) for e, c in ALL if e.jax_form])
def test_jax_form_equals_the_core_under_jit(entry, case):
    LossTester(entry, case).check_jax_form()


@_cases([(e, c) for e, c in ALL if syncs(e, c)])
def test_reduce_over_replicas_gives_the_loss_and_gradient_slices_of_the_batch(entry, case):
    LossTester(entry, case).check_reduce()
