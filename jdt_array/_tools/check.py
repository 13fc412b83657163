"""The cross-backend consistency report: every installed library against NumPy float64.

Each case runs a loss (its value and its gradient with respect to the logits, through
:func:`jdt_array.value_and_grad`) or the fine-grained metrics on the same fixed random
inputs on every installed array library, device and dtype (eagerly, and under
``jax.jit`` for JAX), and compares the results with the NumPy float64 ones.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..compound import ce_jdt_loss, generalized_dice_loss
from ..cross_entropy import cross_entropy, kl_div
from ..grad import value_and_grad
from ..jdt import jdt_loss
from ..lovasz import lovasz_hinge_loss, lovasz_softmax_loss
from ..metrics import FineGrainedMetrics
from ..named_losses import dice_loss, jaccard_loss, tversky_loss
from .libraries import ArrayLibrary, available_libraries

IGNORE = 255  # the void label of the hard-label inputs

# Largest relative difference from NumPy float64 that counts as agreement (for the
# gradient: relative to its largest entry; for the metrics, in percentage points).
TOLERANCE = {"float64": 1e-9, "float32": 1e-4, "float16": 1e-2, "bfloat16": 2e-2}


@dataclass(frozen=True)
class Case:
    name: str
    fn: Callable[..., Any]
    label: str  # "hard", "soft" or "binary"
    options: dict


def _metrics(logits, label, **options):
    """The fine-grained metrics of softmax(logits), as one array of values."""
    from array_api_compat import array_namespace

    xp = array_namespace(logits)
    z = xp.exp(logits - xp.max(logits, axis=1, keepdims=True))
    metrics = FineGrainedMetrics(logits.shape[1], **options)
    metrics.update(z / xp.sum(z, axis=1, keepdims=True), label)
    return metrics


CASES = (
    Case("jaccard mIoUD", jaccard_loss, "hard", {}),
    Case("dice mIoUD", dice_loss, "hard", {}),
    Case("tversky 0.3/0.7", functools.partial(tversky_loss, alpha=0.3, beta=0.7), "hard",
         {}),
    Case("jaccard mIoUI+mIoUC", jaccard_loss, "hard",
         {"mIoUD": 0.0, "mIoUI": 1.0, "mIoUC": 1.0}),
    Case("jaccard soft label", jaccard_loss, "soft", {"mIoUI": 1.0}),
    Case("dice soft, L2 norm", dice_loss, "soft", {"norm": 2}),
    Case("jdt log, gamma 2", jdt_loss, "hard",
         {"log_loss": True, "gamma": 2.0, "mIoUC": 1.0}),
    Case("jdt class-agnostic", jdt_loss, "soft", {"class_agnostic": True}),
    Case("lovasz-softmax", lovasz_softmax_loss, "hard", {}),
    Case("lovasz hinge", lovasz_hinge_loss, "binary", {}),
    Case("cross-entropy focal", cross_entropy, "hard", {"gamma": 2.0}),
    Case("kl_div T=2", kl_div, "soft", {"temperature": 2.0}),
    Case("ce + jdt", ce_jdt_loss, "hard", {}),
    Case("generalized dice", generalized_dice_loss, "hard", {}),
    Case("metrics", _metrics, "hard", {"calibration": True}),
)  # fmt: skip


@dataclass(frozen=True)
class Result:
    case: str
    backend: str
    dtype: str
    value: float
    expected: float
    rel_diff: float
    grad_diff: float
    passed: bool
    error: str = ""


def make_inputs(seed: int, shape: Sequence[int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=shape)
    spatial = (shape[0], *shape[2:])
    label = rng.integers(0, shape[1], size=spatial)
    void = rng.random(spatial) < 0.05
    soft = np.exp(rng.normal(scale=1.5, size=shape))
    return {
        "logits": logits,
        "hard": np.where(void, IGNORE, label),
        "binary": np.where(void, IGNORE, label % 2),
        "soft": soft / soft.sum(axis=1, keepdims=True),
    }


def run_checks(
    libraries: Sequence[ArrayLibrary] | None = None,
    dtypes: Sequence[str] = ("float32", "float64"),
    *,
    seed: int = 0,
    shape: Sequence[int] = (2, 5, 16, 16),
    cases: Sequence[Case] = CASES,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[Result]:
    """Run every case on every library (and dtype it supports) against NumPy float64;
    ``progress(done, total, text)`` after each run."""
    inputs = make_inputs(seed, shape)
    numpy = ArrayLibrary("numpy")
    libraries = available_libraries() if libraries is None else libraries
    runs = [(lib, dtype, jit) for lib in libraries
            for dtype in dtypes if lib.supports(dtype)
            for jit in ((False, True) if lib.can_jit else (False,))]  # fmt: skip
    total, done = len(cases) * (len(runs) + 1), 0
    results = []
    for case in cases:
        expected = _run(case, numpy, "float64", inputs, jit=False)
        done += 1
        for lib, dtype, jit in runs:
            name = f"{lib.name}{' jit' if jit else ''}"
            results.append(_compare(case, lib, name, dtype, inputs, expected, jit))
            done += 1
            if progress:
                progress(done, total, f"{case.name}: {name} {dtype}")
    return results


def _run(case: Case, lib: ArrayLibrary, dtype: str, inputs: dict, *, jit: bool):
    """(value, gradient) of a loss, or (metrics dict, None), as NumPy float64."""
    logits = inputs["logits"][:, 0] if case.label == "binary" else inputs["logits"]
    x, y = lib.from_numpy(logits, dtype), lib.from_numpy(inputs[case.label], dtype)
    options = dict(case.options)
    if case.label != "soft":
        options["ignore_index"] = IGNORE
    if case.fn is _metrics:
        values = _metrics(x, y, **options).compute()
        return np.array([values[k] for k in sorted(values)]), None
    fn = functools.partial(value_and_grad, case.fn, **options)
    value, grad = (lib.jit(fn) if jit else fn)(x, y)
    return lib.to_numpy(value), lib.to_numpy(grad)


def _compare(case, lib, name, dtype, inputs, expected, jit) -> Result:
    if jit and case.fn is _metrics:
        jit = False  # metrics keep Python state; their per-batch function is tested jitted
    try:
        value, grad = _run(case, lib, dtype, inputs, jit=jit)
    except Exception as err:  # a failing backend is a reported result, not a crash
        return Result(case.name, name, dtype, float("nan"), float("nan"), float("inf"),
                      float("inf"), False, f"{type(err).__name__}: {err}")  # fmt: skip
    want, want_grad = expected
    if grad is None:  # metrics, in percent: compare in points
        rel = float(np.max(np.abs(value - want))) / 100
        grad_diff = 0.0
        shown, shown_want = float(np.mean(value)), float(np.mean(want))
    else:
        rel = float(abs(value - want) / max(abs(want), 1e-12))
        grad_diff = float(
            np.max(np.abs(grad - want_grad)) / max(np.max(np.abs(want_grad)), 1e-12)
        )
        shown, shown_want = float(value), float(want)
    ok = np.isfinite(shown) and max(rel, grad_diff) <= TOLERANCE[dtype]
    return Result(case.name, name, dtype, shown, shown_want, rel, grad_diff, bool(ok))


def format_report(results: Sequence[Result]) -> str:
    header = (
        f"{'case':<22} {'backend':<18} {'dtype':<9} {'value':>12} {'rel. diff':>10} "
        f"{'grad diff':>10}  ok"
    )
    lines = [header, "-" * len(header)]
    for r in results:
        mark = "PASS" if r.passed else "FAIL"
        numbers = f"{r.value:>12.8f} {r.rel_diff:>10.1e} {r.grad_diff:>10.1e}"
        error = f"  {r.error}" if r.error else ""
        lines.append(f"{r.case:<22} {r.backend:<18} {r.dtype:<9} {numbers}  {mark}{error}")
    failed = sum(not r.passed for r in results)
    backends = sorted({r.backend for r in results})
    lines.append(
        f"\n{len(results) - failed} passed, {failed} failed "
        f"(backends: {', '.join(backends)}; reference: NumPy float64; gradients from "
        f"value_and_grad; metrics compared in percentage points)"
    )
    return "\n".join(lines)


def as_dicts(results: Sequence[Result]) -> list[dict]:
    return [asdict(r) for r in results]
