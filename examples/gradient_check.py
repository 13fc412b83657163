"""Gradient check: ``jdt_array.value_and_grad`` against central finite differences.

NumPy and CuPy have no autodiff, so for them ``value_and_grad`` returns the gradient
derived by hand in the package (``jdt_array.grad.HAND_GRADIENTS`` lists the losses that
have one). This script checks that gradient, entry by entry, against the central
difference (f(z + h e_i) - f(z - h e_i)) / 2h in float64, for the option sets of the
JDT losses that change the gradient's formula (hard and soft labels, ignored pixels,
the three mIoU levels, L2 norm, focal, log, class weights, class-agnostic) and for the
other losses of the package that have a hand gradient (cross-entropy, KL distillation,
CE + JDT, generalized Dice, Lovasz). It runs on NumPy and, where a CUDA GPU and CuPy
are present, on CuPy.

    python examples/gradient_check.py                 # NumPy (and CuPy if usable)
    python examples/gradient_check.py --library numpy --shape 2 3 5 5

The check passes when the largest error, relative to the largest gradient entry, is
below ``--tolerance`` (1e-6 by default; the finite differences themselves are accurate
to about 1e-9 here).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import jdt_array
from jdt_array._tools.libraries import ArrayLibrary
from jdt_array.grad import HAND_GRADIENTS


@dataclass(frozen=True)
class Case:
    name: str
    loss_fn: Callable
    label: str  # "hard", "ignored" (with 255s), "soft" or "binary" (0/1, one score)
    options: dict


def case(name: str, loss_fn: Callable, *, label: str = "hard", **options: Any) -> Case:
    return Case(name, loss_fn, label, options)


J = jdt_array
# The JDT options that change the gradient's formula, with hard and soft labels.
JDT_CASES = (
    case("jaccard, hard label", J.jaccard_loss),
    case("jaccard, soft label", J.jaccard_loss, label="soft"),
    case("dice, soft label, per image", J.dice_loss, label="soft", mIoUD=0.0, mIoUI=1.0),
    case(
        "tversky 0.3/0.7, per class, ignored pixels",
        J.tversky_loss,
        alpha=0.3,
        beta=0.7,
        mIoUD=0.0,
        mIoUC=1.0,
        label="ignored",
        ignore_index=255,
    ),
    case("jdt, L2 norm, gamma 2, log loss", J.jdt_loss, norm=2, gamma=2.0, log_loss=True),
    case(
        "jaccard, present classes, class weights",
        J.jaccard_loss,
        label="soft",
        active_classes_mode_soft="PRESENT",
        class_weights="ramp",
    ),
    case("jaccard, class-agnostic", J.jaccard_loss, class_agnostic=True),
)

# Other losses are checked if (and only if) the package derives their gradient by hand.
OTHER_CASES = (
    case(
        "cross-entropy, ignored pixels", J.cross_entropy, label="ignored", ignore_index=255
    ),
    case("focal cross-entropy, soft label", J.cross_entropy, label="soft", gamma=2.0),
    case("KL distillation, T = 2", J.kl_div, label="soft", temperature=2.0),
    case("CE + JDT (0.25 : 0.75)", J.ce_jdt_loss),
    case("generalized Dice, per image", J.generalized_dice_loss, per_image=True),
    case("Lovasz-Softmax", J.lovasz_softmax_loss),
    case(
        "Lovasz-Softmax, per image, all classes",
        J.lovasz_softmax_loss,
        per_image=True,
        classes="all",
    ),
    case("Lovasz hinge (binary)", J.lovasz_hinge_loss, label="binary"),
)


def cases() -> list[Case]:
    return list(JDT_CASES) + [c for c in OTHER_CASES if c.loss_fn in HAND_GRADIENTS]


def make_inputs(shape: tuple[int, ...], seed: int) -> dict[str, tuple[np.ndarray, ...]]:
    """(logits, label) pairs in float64 for each kind of label."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=shape)
    batch, classes, *spatial = shape
    hard = rng.integers(0, classes, size=(batch, *spatial))
    soft = np.moveaxis(rng.dirichlet(np.ones(classes), size=(batch, *spatial)), -1, 1)
    return {
        "hard": (logits, hard),
        "ignored": (logits, np.where(rng.random(hard.shape) < 0.1, 255, hard)),
        "soft": (logits, soft),
        "binary": (logits[:, 0], hard % 2),  # one score per pixel, 0/1 label
    }


def finite_difference(f: Callable, z: np.ndarray, h: float) -> np.ndarray:
    """Central differences of the scalar function ``f`` of a NumPy array, entry by entry."""
    grad = np.zeros_like(z)
    for i in np.ndindex(z.shape):
        step = np.zeros_like(z)
        step[i] = h
        grad[i] = (f(z + step) - f(z - step)) / (2 * h)
    return grad


def check_case(lib: ArrayLibrary, case: Case, inputs, h: float) -> float:
    """The largest error of the hand gradient relative to its largest entry."""
    logits, label = inputs[case.label]
    options = dict(case.options)
    if options.get("class_weights") == "ramp":  # one weight per class, 0.5 to 2
        options["class_weights"] = np.linspace(0.5, 2.0, logits.shape[1]).tolist()
    on_lib = functools.partial(lib.from_numpy, dtype="float64")
    label_x = on_lib(label)
    _, grad = jdt_array.value_and_grad(case.loss_fn, on_lib(logits), label_x, **options)

    def value(z: np.ndarray) -> float:
        return float(lib.to_numpy(case.loss_fn(on_lib(z), label_x, **options)))

    expected = finite_difference(value, logits, h)
    got = lib.to_numpy(grad)
    return float(np.max(np.abs(got - expected)) / max(np.max(np.abs(expected)), 1e-12))


def libraries(names: list[str] | None) -> list[ArrayLibrary]:
    candidates = [ArrayLibrary("numpy"), ArrayLibrary("cupy", "cuda")]
    chosen = [lib for lib in candidates if names is None or lib.module in names]
    usable = [lib for lib in chosen if lib.available()]
    for lib in chosen:
        if lib not in usable:
            print(f"{lib.name}: not available here, skipped")
    return usable


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--library", nargs="+", choices=("numpy", "cupy"), help="default: both if usable"
    )
    parser.add_argument(
        "--shape", type=int, nargs="+", default=[2, 3, 4, 4], help="B C *spatial"
    )
    parser.add_argument("--step", type=float, default=1e-5, help="finite-difference step")
    parser.add_argument("--tolerance", type=float, default=1e-6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    inputs = make_inputs(tuple(args.shape), args.seed)
    errors: dict[str, dict[str, float]] = {}
    for lib in libraries(args.library):
        errors[lib.name] = {}
        for case in cases():
            error = check_case(lib, case, inputs, args.step)
            errors[lib.name][case.name] = error
            verdict = "ok" if error < args.tolerance else "FAILED"
            print(f"{lib.name:>10}  {case.name:<44} relative error {error:.1e}  {verdict}")
    worst = max((e for per_lib in errors.values() for e in per_lib.values()), default=0.0)
    passed = bool(errors) and worst < args.tolerance
    print("gradient check passed" if passed else "gradient check FAILED")
    return {"errors": errors, "worst": worst, "passed": passed}


if __name__ == "__main__":
    raise SystemExit(0 if main()["passed"] else 1)
