"""The array backends every test runs on, behind one small interface.

They are the array libraries the package lists (``LIBRARIES``), each in its test
variants (``VARIANTS``). A test asks for the ``backend`` fixture (see conftest.py)
and builds its inputs with ``backend.asarray(numpy_array)``;
``backend.call(fn, *arrays, **options)`` runs a function eagerly, or under
``jax.jit`` for the jitted JAX backends.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from jdt_array._tools.libraries import LIBRARIES, ArrayLibrary


@dataclass
class Backend:
    name: str
    library: ArrayLibrary
    float_dtype: str = "float64"
    jit: bool = False
    strict_flags: dict = field(default_factory=dict)
    xp: Any = None

    @property
    def module(self) -> str:
        return self.library.module

    @property
    def device(self) -> str:
        return self.library.device

    @property
    def rtol(self) -> float:
        return 1e-10 if self.float_dtype == "float64" else 2e-5

    @property
    def atol(self) -> float:
        return 1e-12 if self.float_dtype == "float64" else 2e-6

    def setup(self) -> None:
        """Import the library; skip when it (or its GPU) is missing on this machine."""
        if not self.library.installed():
            pytest.skip(f"{self.module} is not installed")
        if not self.library.available():
            pytest.skip(f"no {self.library.device} device for {self.module}")
        from array_api_compat import array_namespace

        self.xp = array_namespace(self.asarray(np.zeros(1)))

    def context(self):
        if self.strict_flags:
            import array_api_strict

            return array_api_strict.ArrayAPIStrictFlags(**self.strict_flags)
        return contextlib.nullcontext()

    def asarray(self, a: Any) -> Any:
        """A NumPy array (or scalar) on this backend; floating data in its float dtype."""
        return self.library.from_numpy(a, self.float_dtype)

    def to_numpy(self, x: Any) -> np.ndarray:
        return self.library.to_numpy(x)

    def call(self, fn: Callable, *arrays: Any, **options: Any) -> Any:
        if self.jit:
            import jax

            return jax.jit(functools.partial(fn, **options))(*arrays)
        return fn(*arrays, **options)


# The test variants of each library, by backend name (the test ids): a float dtype,
# jit, array-api-strict flags. A library of LIBRARIES without an entry gets one
# default backend named after it.
VARIANTS: dict[ArrayLibrary, dict[str, dict[str, Any]]] = {
    ArrayLibrary("numpy"): {"numpy": {}},
    ArrayLibrary("array_api_strict"): {
        "array_api_strict": {},
        "array_api_strict-nodynamic": {
            "strict_flags": {"boolean_indexing": False, "data_dependent_shapes": False}
        },
    },
    ArrayLibrary("torch"): {
        "torch-float32": {"float_dtype": "float32"},
        "torch-float64": {},
    },
    ArrayLibrary("jax"): {"jax": {}, "jax-jit": {"jit": True}},
    ArrayLibrary("torch", "cuda"): {"torch-cuda": {"float_dtype": "float32"}},
    ArrayLibrary("jax", "cuda"): {"jax-cuda-jit": {"jit": True}},
    ArrayLibrary("cupy", "cuda"): {"cupy": {}},
}


def backends_of(library: ArrayLibrary) -> list[Backend]:
    """The test backends of one library: its variants, or one default backend."""
    variants = VARIANTS.get(library, {library.name: {}})
    return [Backend(name, library, **options) for name, options in variants.items()]


BACKENDS = [backend for library in LIBRARIES for backend in backends_of(library)]

# The backends of the case grids (every option set, shape and kernel): NumPy, whose
# hand gradients are the array-API code every library without autodiff runs, and one
# autodiff library in float64. The ``backend`` fixture runs the whole list above on
# smoke sets of cases; ``grid_backend`` runs these on the grids.
GRID_BACKENDS = [b for b in BACKENDS if b.name in ("numpy", "torch-float64")]


def run(backend, fn, arrays, expected, **options):
    """``fn(*arrays, **options)`` on ``backend`` (keep_mask as a third array) vs float64."""
    args = [backend.asarray(a) for a in arrays]
    if len(args) == 3:
        call = lambda a, b, k, **kw: fn(a, b, keep_mask=k, **kw)  # noqa: E731
    else:
        call = fn
    loss = backend.call(call, *args, **options)
    assert loss.shape == ()
    assert backend.module != "numpy" or isinstance(loss, np.ndarray)  # not a NumPy scalar
    np.testing.assert_allclose(
        backend.to_numpy(loss), expected, rtol=backend.rtol, atol=backend.atol
    )
    return loss
