"""The loss tester: one row of the loss table, on one case, checked in every form.

In the manner of torchmetrics' ``MetricTester``: for a row of
``jdt_array._loss_table.LOSSES`` and a :class:`LossCase` (inputs and options),

* :meth:`LossTester.check_reference`: the functional form on a backend (under
  ``jax.jit`` for the jitted ones) equals the float64 reference of the row, and its
  result is a 0-d array of the logits' library, device and dtype;
* :meth:`LossTester.check_value_and_grad`: ``value_and_grad`` on a backend equals the
  NumPy hand-derived value and gradient;
* :meth:`LossTester.check_hand_gradient`: the NumPy hand-derived gradient equals
  PyTorch autograd of the functional form in float64;
* :meth:`LossTester.check_module`: the PyTorch module's forward and backward equal the
  functional form and the hand-derived gradient;
* :meth:`LossTester.check_jax_form`: the JAX form of the adapter (its ``custom_vjp``
  or ``axis_name`` form) under ``jit`` equals the core's value and ``jax.grad``;
* :meth:`LossTester.check_reduce`: with ``reduce`` over two replicas (threads) of
  half a batch each, every replica returns the loss of the whole batch and its
  hand-derived gradient is its slice of the whole batch's.

The Keras classes are checked in their own processes (``keras_checks.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import jdt_array
from _support.inputs import (
    IGNORE,
    make_hard_label,
    make_keep_mask,
    make_logits,
    make_soft_label,
)
from _support.losses import reference_of
from _support.replicas import Replicas
from jdt_array._loss_table import LossEntry

SHAPE = (2, 4, 5, 6)


@dataclass(frozen=True)
class LossCase:
    """Inputs and options of one check: ``kind`` "hard", "soft" or "binary" (one
    score per pixel and 0/1 labels, for the hinge)."""

    name: str
    kind: str
    options: dict = field(default_factory=dict)
    keep: bool = False  # also a keep mask
    seed: int = 0

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        rng = np.random.default_rng(self.seed)
        logits = make_logits(rng, SHAPE)
        keep = make_keep_mask(rng, SHAPE) if self.keep else None
        if self.kind == "hard":
            label = make_hard_label(rng, SHAPE, absent=(2,), ignore_fraction=0.1)
        elif self.kind == "soft":
            label = make_soft_label(rng, SHAPE)
        else:  # binary: one score per pixel
            logits = logits[:, 0]
            label = rng.integers(0, 2, size=logits.shape)
            label = np.where(rng.random(label.shape) < 0.1, IGNORE, label)
        return logits, label, keep

    def all_options(self) -> dict[str, Any]:
        """The options, with ``ignore_index`` for the labels that hold IGNORE."""
        extra = {"ignore_index": IGNORE} if self.kind != "soft" else {}
        return {**extra, **self.options}


class LossTester:
    """The checks of one table row on one case (see the module docstring)."""

    def __init__(self, entry: LossEntry, case: LossCase) -> None:
        self.entry, self.case = entry, case
        self.fn: Callable = entry.function
        self.options = case.all_options()
        self.logits, self.label, self.keep = case.arrays()

    def _keep_options(self, convert: Callable) -> dict[str, Any]:
        return {} if self.keep is None else {"keep_mask": convert(self.keep)}

    def reference(self) -> float:
        return reference_of(self.entry)(
            self.logits, self.label, **self.options, **self._keep_options(np.asarray)
        )

    def hand(self) -> tuple[float, np.ndarray]:
        """The NumPy hand-derived value and gradient."""
        loss, grad = jdt_array.value_and_grad(
            self.fn, self.logits, self.label, **self.options,
            **self._keep_options(np.asarray),
        )  # fmt: skip
        return float(loss), grad

    def _call_on(self, backend, fn: Callable) -> Any:
        """``fn(logits, label, [keep_mask,] **options)`` on ``backend``."""
        arrays = [backend.asarray(self.logits), backend.asarray(self.label)]
        if self.keep is not None:
            arrays.append(backend.asarray(self.keep))

        def call(z, y, keep=None, **options):
            extra = {} if keep is None else {"keep_mask": keep}
            return fn(z, y, **extra, **options)

        return backend.call(call, *arrays, **self.options), arrays[0]

    # -- the checks ------------------------------------------------------------------

    def check_reference(self, backend) -> None:
        from array_api_compat import array_namespace, device

        result, logits = self._call_on(backend, self.fn)
        assert not isinstance(result, (float, np.generic))  # a 0-d array, no scalar
        assert tuple(result.shape) == ()
        assert array_namespace(result) is array_namespace(logits)
        assert device(result) == device(logits)
        assert result.dtype == logits.dtype
        np.testing.assert_allclose(
            backend.to_numpy(result), self.reference(), rtol=backend.rtol,
            atol=backend.atol,
        )  # fmt: skip

    def check_value_and_grad(self, backend) -> None:
        loss, grad = self.hand()

        def both(z, y, **options):
            return jdt_array.value_and_grad(self.fn, z, y, **options)

        (b_loss, b_grad), _ = self._call_on(backend, both)
        np.testing.assert_allclose(backend.to_numpy(b_loss), loss, rtol=backend.rtol * 10)
        np.testing.assert_allclose(
            backend.to_numpy(b_grad), grad, rtol=backend.rtol * 100,
            atol=backend.atol * 10,
        )  # fmt: skip

    def check_hand_gradient(self) -> None:
        torch = pytest.importorskip("torch")
        loss, grad = self.hand()
        z = torch.asarray(self.logits).requires_grad_(True)
        value = self.fn(z, torch.asarray(self.label), **self.options,
                        **self._keep_options(torch.asarray))  # fmt: skip
        value.backward()
        np.testing.assert_allclose(loss, value.item(), rtol=1e-12)
        np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-6, atol=1e-14)
        assert np.any(grad != 0)  # a check of something

    def check_module(self) -> None:
        torch = pytest.importorskip("torch")
        jt = pytest.importorskip("jdt_array.backends.torch")
        module = getattr(jt, self.entry.torch_module)(**self.options)
        assert isinstance(module, torch.nn.Module)
        z = torch.asarray(self.logits).requires_grad_(True)
        keep = None if self.keep is None else torch.asarray(self.keep)
        value = module(z, torch.asarray(self.label), keep)
        value.backward()
        loss, grad = self.hand()
        np.testing.assert_allclose(value.item(), loss, rtol=1e-12)
        np.testing.assert_allclose(z.grad.numpy(), grad, rtol=1e-6, atol=1e-14)

    def check_jax_form(self) -> None:
        jax = pytest.importorskip("jax")
        jj = pytest.importorskip("jdt_array.backends.jax")
        jnp = jax.numpy
        form = getattr(jj, self.entry.jax_form)
        y = jnp.asarray(self.label)
        keep = self._keep_options(jnp.asarray)

        def core(z):
            return self.fn(z, y, **self.options, **keep)

        def adapter(z):
            return form(z, y, **self.options, **keep)

        z = jnp.asarray(self.logits)
        v1, g1 = jax.jit(jax.value_and_grad(core))(z)
        v2, g2 = jax.jit(jax.value_and_grad(adapter))(z)
        np.testing.assert_allclose(v2, v1, rtol=1e-12)
        np.testing.assert_allclose(g2, g1, rtol=1e-9, atol=1e-15)

    def check_reduce(self) -> None:
        """Two replicas (threads summing behind a barrier, ``_support.replicas``) of
        one image each: each gets the loss of the batch and the slice of its gradient."""
        loss, grad = self.hand()
        halves = [slice(0, 1), slice(1, 2)]

        def replica(part, reduce):
            keep = {} if self.keep is None else {"keep_mask": self.keep[part]}
            return jdt_array.value_and_grad(
                self.fn, self.logits[part], self.label[part], reduce=reduce,
                **self.options, **keep,
            )  # fmt: skip

        for (r_loss, r_grad), part in zip(
            Replicas(2).run(replica, halves), halves, strict=True
        ):
            np.testing.assert_allclose(float(r_loss), loss, rtol=1e-12)
            np.testing.assert_allclose(r_grad, grad[part], rtol=1e-9, atol=1e-15)


def _cases(*cases: tuple) -> list[LossCase]:
    return [LossCase(*case) if isinstance(case, tuple) else case for case in cases]


# The cases of each row of the table, by loss name: a smoke set of each loss's options
# and label kinds (the grids of options live in the loss's own test module).
ROW_CASES: dict[str, list[LossCase]] = {
    "jdt_loss": _cases(
        LossCase("hard-levels", "hard", {"mIoUD": 0.5, "mIoUI": 0.25, "mIoUC": 0.25}),
        LossCase("soft-l2-keep", "soft", {"norm": 2, "mIoUI": 1.0}, keep=True),
    ),
    "jaccard_loss": _cases(
        ("hard-weights", "hard", {"class_weights": [1.0, 2.0, 0.5, 1.0]}),
    ),
    "dice_loss": _cases(("soft-class-level", "soft", {"mIoUD": 0.0, "mIoUC": 1.0})),
    "tversky_loss": _cases(
        ("hard-focal", "hard", {"alpha": 0.3, "beta": 0.7, "gamma": 2.0, "mIoUI": 1.0}),
    ),
    "lovasz_softmax_loss": _cases(
        ("hard", "hard", {}),
        ("all-per-image", "hard", {"classes": "all", "per_image": True}),
        LossCase("listed-keep", "hard", {"classes": [3, 1, 1]}, keep=True),
    ),
    "lovasz_hinge_loss": _cases(
        ("per-image", "binary", {}),
        LossCase("pooled-keep", "binary", {"per_image": False}, keep=True),
    ),
    "cross_entropy": _cases(
        ("hard", "hard", {}),
        ("focal", "hard", {"gamma": 2.0}),
        ("focal-fractional", "hard", {"gamma": 0.5}),
        LossCase("soft-keep", "soft", {}, keep=True),
        ("soft-focal", "soft", {"gamma": 1.5}),
    ),
    "kl_div": _cases(LossCase("soft-keep", "soft", {"temperature": 2.0}, keep=True)),
    "ce_jdt_loss": _cases(
        ("hard-image", "hard", {"mIoUI": 1.0}),
        LossCase("soft-keep", "soft", {"ce_weight": 0.5}, keep=True),
    ),
    "generalized_dice_loss": _cases(
        ("hard", "hard", {}),
        ("soft-per-image", "soft", {"per_image": True}),
    ),
}


def syncs(entry: LossEntry, case: LossCase) -> bool:
    """Whether the loss takes ``reduce`` in this case (the pooled Lovasz losses sort
    the global batch and refuse it)."""
    import inspect

    if "reduce" not in inspect.signature(entry.function).parameters:
        return False
    if entry.name.startswith("lovasz"):
        default = entry.name == "lovasz_hinge_loss"  # the hinge is per image by default
        return case.options.get("per_image", default)
    return True
