"""The one list of array libraries, with one small adapter per library.

Tools that build the same inputs on every backend (the consistency report, the demo,
the tests, the benchmarks, the examples) get them from here. Each adapter moves NumPy
data onto its library and device and back; frameworks are imported only when used.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ArrayLibrary:
    """One array library on one device (``"cpu"`` or ``"cuda"``)."""

    module: str
    device: str = "cpu"

    @property
    def name(self) -> str:
        return self.module if self.device == "cpu" else f"{self.module}-{self.device}"

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None

    def available(self) -> bool:
        """Installed, and (for ``cuda``) a CUDA device is visible to it."""
        if not self.installed():
            return False
        try:
            return _ADAPTERS[self.module].has_device(self.device)
        except Exception:  # a library without a build for this device raises its own errors
            return False

    def supports(self, dtype: str) -> bool:
        return _ADAPTERS[self.module].supports(dtype)

    def from_numpy(self, a: Any, dtype: str | None = None) -> Any:
        """``a`` on this library and device; floating data cast to ``dtype`` if given."""
        a = np.asarray(a)
        if dtype is not None and a.dtype.kind == "f":
            return _ADAPTERS[self.module].from_numpy(a, self.device, dtype)
        return _ADAPTERS[self.module].from_numpy(a, self.device, None)

    def to_numpy(self, x: Any) -> np.ndarray:
        return _ADAPTERS[self.module].to_numpy(x)

    def synchronize(self) -> None:
        """Wait for the work queued on this device (for timings); a no-op on CPU."""
        if self.device != "cpu":
            _ADAPTERS[self.module].synchronize()

    @property
    def can_jit(self) -> bool:
        return self.module == "jax"

    def jit(self, fn: Any) -> Any:
        """``fn`` compiled by the library's tracing compiler (JAX only)."""
        if not self.can_jit:
            raise ValueError(f"{self.module} has no jit compiler in this package")
        return importlib.import_module("jax").jit(fn)


class _Adapter:
    """What every adapter provides; the defaults suit a CPU-only library."""

    @staticmethod
    def synchronize():
        pass


class _NumPy(_Adapter):
    @staticmethod
    def has_device(device):
        return device == "cpu"

    @staticmethod
    def supports(dtype):
        return dtype in ("float16", "float32", "float64")

    @staticmethod
    def from_numpy(a, device, dtype):
        return a if dtype is None else a.astype(dtype)

    @staticmethod
    def to_numpy(x):
        return np.asarray(x)


class _Strict(_Adapter):
    @staticmethod
    def has_device(device):
        return device == "cpu"

    @staticmethod
    def supports(dtype):
        return dtype in ("float32", "float64")

    @staticmethod
    def from_numpy(a, device, dtype):
        xp = importlib.import_module("array_api_strict")
        return xp.asarray(a if dtype is None else a.astype(dtype))

    @staticmethod
    def to_numpy(x):
        xp = importlib.import_module("array_api_strict")
        return np.asarray(xp.asarray(x, device=xp.Device("CPU_DEVICE"))._array)


class _Torch(_Adapter):
    @staticmethod
    def synchronize():
        importlib.import_module("torch").cuda.synchronize()

    @staticmethod
    def has_device(device):
        torch = importlib.import_module("torch")
        return device == "cpu" or (device == "cuda" and torch.cuda.is_available())

    @staticmethod
    def supports(dtype):
        return dtype in ("float16", "bfloat16", "float32", "float64")

    @staticmethod
    def from_numpy(a, device, dtype):
        torch = importlib.import_module("torch")
        t = torch.asarray(np.ascontiguousarray(a).copy(), device=device)
        return t if dtype is None else t.to(getattr(torch, dtype))

    @staticmethod
    def to_numpy(x):
        torch = importlib.import_module("torch")
        return (
            x.detach().to("cpu", torch.float64 if x.is_floating_point() else None).numpy()
        )


class _Jax(_Adapter):
    @staticmethod
    def _devices(device):
        jax = importlib.import_module("jax")
        return jax.devices("gpu" if device == "cuda" else "cpu")

    @classmethod
    def has_device(cls, device):
        return bool(cls._devices(device))

    @staticmethod
    def supports(dtype):
        if dtype != "float64":
            return dtype in ("float16", "bfloat16", "float32")
        return bool(importlib.import_module("jax").config.jax_enable_x64)

    @classmethod
    def from_numpy(cls, a, device, dtype):
        jax = importlib.import_module("jax")
        jnp = importlib.import_module("jax.numpy")
        x = jax.device_put(jnp.asarray(a), cls._devices(device)[0])
        return x if dtype is None else x.astype(getattr(jnp, dtype))

    @staticmethod
    def to_numpy(x):
        a = np.asarray(x)
        return a.astype(np.float64) if a.dtype.kind in "fV" else a


class _CuPy(_Adapter):
    @staticmethod
    def synchronize():
        importlib.import_module("cupy").cuda.Device().synchronize()

    @staticmethod
    def has_device(device):
        cupy = importlib.import_module("cupy")
        return device == "cuda" and cupy.cuda.runtime.getDeviceCount() > 0

    @staticmethod
    def supports(dtype):
        return dtype in ("float16", "float32", "float64")

    @staticmethod
    def from_numpy(a, device, dtype):
        cupy = importlib.import_module("cupy")
        return cupy.asarray(a if dtype is None else a.astype(dtype))

    @staticmethod
    def to_numpy(x):
        return x.get()


_ADAPTERS = {
    "numpy": _NumPy,
    "array_api_strict": _Strict,
    "torch": _Torch,
    "jax": _Jax,
    "cupy": _CuPy,
}

LIBRARIES = (
    ArrayLibrary("numpy"),
    ArrayLibrary("array_api_strict"),
    ArrayLibrary("torch"),
    ArrayLibrary("jax"),
    ArrayLibrary("torch", "cuda"),
    ArrayLibrary("jax", "cuda"),
    ArrayLibrary("cupy", "cuda"),
)


# How to install each library, for messages about a missing one.
INSTALL_HINTS = {
    "numpy": "pip install numpy",
    "array_api_strict": "pip install array-api-strict",
    "torch": 'pip install "jdt-array[torch]"',
    "jax": 'pip install "jdt-array[jax]"',
    "cupy": 'pip install "jdt-array[cupy]" (CUDA 12) or "jdt-array[cupy-cuda13]"',
}


def available_libraries() -> list[ArrayLibrary]:
    """The libraries (and devices) usable on this machine, NumPy first."""
    return [lib for lib in LIBRARIES if lib.available()]
