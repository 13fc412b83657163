"""Backend tiers: a grid of cases runs whole on the grid backends, its smoke set on all.

A test on the ``backend`` fixture runs on every backend (NumPy, array-api-strict in
both flag sets, PyTorch in float32 and float64, JAX eager and jitted, and the GPU ones
where present). For a grid of options, shapes or kernels that is the grid times ten;
the cases that take no backend-specific branch gain little from it. ``tiered`` marks
every case outside the smoke set ``grid_only``: conftest.py deselects those on all but
the grid backends (NumPy, whose hand gradients are the code every library without
autodiff runs, and PyTorch in float64), so every case still runs, and every backend
still runs the smoke set.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pytest

GRID_ONLY = "grid_only"


def tiered(
    cases: Iterable[Any], *, smoke: Iterable[str] | Callable[[Any], bool]
) -> list[Any]:
    """``cases`` (``pytest.param`` objects with ids) with every case outside the smoke
    set marked ``grid_only``; ``smoke`` holds the ids of the smoke set, or tells a
    smoke case from its ``pytest.param``."""
    cases = list(cases)
    if not callable(smoke):
        ids = set(smoke)
        unknown = ids - {case.id for case in cases}
        assert not unknown, f"smoke ids {sorted(unknown)} name no case"
        smoke = lambda case: case.id in ids  # noqa: E731
    chosen = [smoke(case) for case in cases]
    assert any(chosen), "an empty smoke set: no backend but the grid ones would run"
    return [
        case if is_smoke
        else pytest.param(*case.values, id=case.id,
                          marks=[*case.marks, getattr(pytest.mark, GRID_ONLY)])
        for case, is_smoke in zip(cases, chosen, strict=True)
    ]  # fmt: skip


def tiered_dict(cases: Mapping[str, Any], *, smoke: Iterable[str]) -> list[Any]:
    """``tiered`` of a table of cases keyed by id, one value per case."""
    return tiered([pytest.param(v, id=k) for k, v in cases.items()], smoke=smoke)
