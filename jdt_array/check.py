"""The cross-backend consistency report: every installed library against NumPy float64.

Each case runs a loss on the same fixed random inputs on every installed array library,
device and dtype, and compares the value with the NumPy float64 result.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .backends.arrays import ArrayLibrary, available_libraries
from .jdt import dice_loss, jaccard_loss, jdt_loss, tversky_loss

IGNORE = 255  # the void label of the hard-label inputs

# Largest relative difference from NumPy float64 that counts as agreement.
TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "float16": 1e-2, "bfloat16": 2e-2}


@dataclass(frozen=True)
class Case:
    name: str
    fn: Callable[..., Any]
    soft: bool
    options: dict


CASES = (
    Case("jaccard mIoUD", jaccard_loss, False, {}),
    Case("dice mIoUD", dice_loss, False, {}),
    Case(
        "tversky 0.3/0.7", functools.partial(tversky_loss, alpha=0.3, beta=0.7), False, {}
    ),
    Case(
        "jaccard mIoUI+mIoUC",
        jaccard_loss,
        False,
        {"mIoUD": 0.0, "mIoUI": 1.0, "mIoUC": 1.0},
    ),
    Case("jaccard soft label", jaccard_loss, True, {"mIoUI": 1.0}),
    Case("dice soft, L2 norm", dice_loss, True, {"norm": 2}),
    Case(
        "jdt log, gamma 2", jdt_loss, False, {"log_loss": True, "gamma": 2.0, "mIoUC": 1.0}
    ),
    Case("jdt class-agnostic", jdt_loss, True, {"class_agnostic": True}),
)


@dataclass(frozen=True)
class Result:
    case: str
    backend: str
    dtype: str
    value: float
    expected: float
    rel_diff: float
    passed: bool
    error: str = ""


def make_inputs(seed: int, shape: Sequence[int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=shape)
    label = rng.integers(0, shape[1], size=(shape[0], *shape[2:]))
    label = np.where(rng.random(label.shape) < 0.05, IGNORE, label)
    soft = np.exp(rng.normal(scale=1.5, size=shape))
    return {"logits": logits, "hard": label, "soft": soft / soft.sum(axis=1, keepdims=True)}


def run_checks(
    libraries: Sequence[ArrayLibrary] | None = None,
    dtypes: Sequence[str] = ("float32", "float64"),
    *,
    seed: int = 0,
    shape: Sequence[int] = (2, 5, 16, 16),
    cases: Sequence[Case] = CASES,
) -> list[Result]:
    """Run every case on every library (and dtype it supports) against NumPy float64."""
    inputs = make_inputs(seed, shape)
    numpy = ArrayLibrary("numpy")
    results = []
    for case in cases:
        expected = float(_run(case, numpy, "float64", inputs, jit=False))
        for lib in available_libraries() if libraries is None else libraries:
            for dtype in (d for d in dtypes if lib.supports(d)):
                for jit in (False, True) if lib.can_jit else (False,):
                    name = f"{lib.name}{' jit' if jit else ''}"
                    results.append(_compare(case, lib, name, dtype, inputs, expected, jit))
    return results


def _run(case: Case, lib: ArrayLibrary, dtype: str, inputs: dict, *, jit: bool) -> Any:
    logits = lib.from_numpy(inputs["logits"], dtype)
    label = lib.from_numpy(inputs["soft"] if case.soft else inputs["hard"], dtype)
    options = case.options if case.soft else {"ignore_index": IGNORE, **case.options}
    fn = functools.partial(case.fn, **options)
    return lib.to_numpy((lib.jit(fn) if jit else fn)(logits, label))


def _compare(case, lib, name, dtype, inputs, expected, jit) -> Result:
    try:
        value = float(_run(case, lib, dtype, inputs, jit=jit))
    except Exception as err:  # a failing backend is a reported result, not a crash
        return Result(case.name, name, dtype, float("nan"), expected, float("inf"), False,
                      f"{type(err).__name__}: {err}")  # fmt: skip
    rel = abs(value - expected) / max(abs(expected), 1e-12)
    passed = bool(np.isfinite(value)) and rel <= TOLERANCE[dtype]
    return Result(case.name, name, dtype, value, expected, rel, passed)


def format_report(results: Sequence[Result]) -> str:
    header = (
        f"{'case':<22} {'backend':<18} {'dtype':<9} {'value':>12} {'rel. diff':>10}  ok"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        mark = "PASS" if r.passed else "FAIL"
        numbers = f"{r.value:>12.8f} {r.rel_diff:>10.1e}"
        error = f"  {r.error}" if r.error else ""
        lines.append(f"{r.case:<22} {r.backend:<18} {r.dtype:<9} {numbers}  {mark}{error}")
    failed = sum(not r.passed for r in results)
    backends = sorted({r.backend for r in results})
    lines.append(
        f"\n{len(results) - failed} passed, {failed} failed "
        f"(backends: {', '.join(backends)}; reference: NumPy float64)"
    )
    return "\n".join(lines)


def as_dicts(results: Sequence[Result]) -> list[dict]:
    return [asdict(r) for r in results]
