"""The array backends every test runs on, behind one small interface.

A test asks for the ``backend`` fixture (see conftest.py) and builds its inputs with
``backend.asarray(numpy_array)``; ``backend.call(fn, *arrays, **options)`` runs a
function eagerly, or under ``jax.jit`` for the jitted JAX backend.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@dataclass
class Backend:
    name: str
    module: str  # the library, for skipping when it is not installed
    float_dtype: str = "float64"
    device: str = "cpu"
    jit: bool = False
    strict_flags: dict = field(default_factory=dict)
    xp: Any = None

    @property
    def rtol(self) -> float:
        return 1e-10 if self.float_dtype == "float64" else 2e-5

    @property
    def atol(self) -> float:
        return 1e-12 if self.float_dtype == "float64" else 2e-6

    def setup(self) -> None:
        """Import the library; skip when it (or the device) is missing."""
        if not installed(self.module):
            pytest.skip(f"{self.module} is not installed")
        if self.device == "cuda" and not _cuda_available(self.module):
            pytest.skip(f"no CUDA device for {self.module}")
        from array_api_compat import array_namespace

        self.xp = array_namespace(self.asarray(np.zeros(1)))

    def context(self):
        if self.strict_flags:
            import array_api_strict

            return array_api_strict.ArrayAPIStrictFlags(**self.strict_flags)
        return contextlib.nullcontext()

    def asarray(self, a: Any) -> Any:
        """A NumPy array (or scalar) on this backend; floating data in its float dtype."""
        a = np.asarray(a)
        if a.dtype.kind == "f":
            a = a.astype(self.float_dtype)
        return _CONVERTERS[self.module](a, self.device)

    def to_numpy(self, x: Any) -> np.ndarray:
        if self.module == "torch":
            return x.detach().cpu().numpy()
        if self.module == "cupy":
            return x.get()
        if self.module == "array_api_strict":
            return np.asarray(x._array)
        return np.asarray(x)

    def call(self, fn: Callable, *arrays: Any, **options: Any) -> Any:
        if self.jit:
            import jax

            return jax.jit(functools.partial(fn, **options))(*arrays)
        return fn(*arrays, **options)


def _torch(a, device):
    import torch

    return torch.asarray(a.copy(), device=device)


def _jax(a, device):
    import jax
    import jax.numpy as jnp

    return jax.device_put(jnp.asarray(a), jax.devices("gpu" if device == "cuda" else "cpu")[0])


def _cupy(a, device):
    import cupy

    return cupy.asarray(a)


def _strict(a, device):
    import array_api_strict

    return array_api_strict.asarray(a)


_CONVERTERS = {
    "numpy": lambda a, device: a,
    "array_api_strict": _strict,
    "torch": _torch,
    "jax": _jax,
    "cupy": _cupy,
}


def _cuda_available(module: str) -> bool:
    try:
        if module == "torch":
            import torch

            return torch.cuda.is_available()
        if module == "jax":
            import jax

            return bool(jax.devices("gpu"))
        if module == "cupy":
            import cupy

            return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # a library without a GPU build raises its own error types
        return False
    return False


BACKENDS = [
    Backend("numpy", "numpy"),
    Backend("array_api_strict", "array_api_strict"),
    Backend(
        "array_api_strict-nodynamic",
        "array_api_strict",
        strict_flags={"boolean_indexing": False, "data_dependent_shapes": False},
    ),
    Backend("torch-float32", "torch", float_dtype="float32"),
    Backend("torch-float64", "torch"),
    Backend("jax", "jax"),
    Backend("jax-jit", "jax", jit=True),
    Backend("torch-cuda", "torch", float_dtype="float32", device="cuda"),
    Backend("jax-cuda-jit", "jax", device="cuda", jit=True),
    Backend("cupy", "cupy", device="cuda"),
]
