"""The namespace shim: the one place that knows how arrays of different libraries differ.

Everything else in the package asks this module for the array namespace ``xp`` of its
inputs and then writes plain array-API code against it. Nothing here imports a
framework: a tracing compiler is recognised by the type of the value it hands over.
"""

from __future__ import annotations

import sys
from numbers import Number
from typing import Any

from array_api_compat import array_namespace
from array_api_compat import device as _compat_device

__all__ = [
    "Array",
    "array_namespace",
    "compute_dtype",
    "device",
    "eager_any",
    "is_traced",
    "library_name",
    "namespace_of",
    "on_accelerator",
    "readable_on_host",
    "zero_d",
]

Array = Any  # an array of any array-API library (the standard has no common type)


def library_name(x: Any) -> str:
    """A short name for the library that owns ``x`` (for error messages)."""
    return type(x).__module__.split(".")[0]


def namespace_of(**arrays: Any) -> Any:
    """The array namespace shared by the named ``arrays`` (``None`` values are skipped).

    Raises ``TypeError`` naming the arguments when they come from different libraries
    and ``ValueError`` when they live on different devices, instead of letting a
    library fail later with a message about some internal operation.
    """
    named = {k: v for k, v in arrays.items() if v is not None}
    first_name, first = next(iter(named.items()))
    compiled = _compiled_torch_namespace(named.values())
    if compiled is not None:
        return compiled
    try:
        xp = array_namespace(*named.values())
    except TypeError as err:
        libs = ", ".join(f"{k} is a {library_name(v)} array" for k, v in named.items())
        raise TypeError(
            f"all array arguments must come from one array library: {libs}; "
            f"convert them with the namespace of {first_name!r} first"
        ) from err
    if not any(is_traced(v) for v in named.values()):
        where = device(first)
        for name, value in named.items():
            if device(value) != where:
                raise ValueError(
                    f"{name} is on device {device(value)} but {first_name} is on "
                    f"device {where}; move them to one device"
                )
    return xp


def device(x: Any) -> Any:
    """The device of ``x`` (array-api-compat's ``device``, read straight off PyTorch
    tensors, which ``torch.compile`` traces without array-api-compat's caches)."""
    if _library(x) == "torch":
        return x.device
    return _compat_device(x)


def _compiled_torch_namespace(arrays: Any) -> Any:
    """array-api-compat's PyTorch namespace while ``torch.compile`` traces PyTorch
    tensors, or None. Dynamo warns at each ``functools.lru_cache`` it traces through,
    and array-api-compat finds namespaces with such caches; the namespace module is
    imported already (an eager call, or the PyTorch adapter, imported it)."""
    arrays = list(arrays)
    if not all(_library(a) == "torch" for a in arrays):
        return None
    if not sys.modules["torch"].compiler.is_compiling():
        return None
    return sys.modules.get("array_api_compat.torch")


def _library(x: Any) -> str:
    return type(x).__module__.split(".")[0]


def is_traced(x: Any) -> bool:
    """True while ``x`` is an abstract value of a tracing compiler or transform, whose
    contents cannot be read: a JAX tracer; any tensor while ``torch.compile`` traces;
    a tensor inside a ``torch.func`` transform (``vmap``, ``grad``).

    Value checks are skipped for traced values.
    """
    module = type(x).__module__.split(".")[0]
    if module in ("jax", "jaxlib"):
        return any(k.__name__ == "Tracer" for k in type(x).__mro__)
    if module == "torch":
        # torch is imported if x is a tensor; dynamo cannot trace importlib calls.
        torch = sys.modules["torch"]
        return torch.compiler.is_compiling() or in_torch_func(x)
    return False


def in_torch_func(x: Any) -> bool:
    """Whether the tensor ``x`` is wrapped by a ``torch.func`` transform (never while
    ``torch.compile`` traces, which cannot trace the question)."""
    torch = sys.modules["torch"]
    if torch.compiler.is_compiling():
        return False
    return torch._C._functorch.is_functorch_wrapped_tensor(x)


def eager_any(xp: Any, condition: Any, message: str) -> bool:
    """``any(condition)`` as a Python bool where it can be read without waiting for a
    device; otherwise ``False``, after handing the check to the device.

    Used only for input validation, before raising with a detailed message. A traced
    condition cannot be read without breaking compilation: the check is skipped there
    (and documented as such). Reading a PyTorch tensor on an accelerator would stall
    the host until the device catches up at every call, so there the check becomes an
    asynchronous device-side assertion with ``message`` (it fails the next
    synchronising call, as CUDA reports errors); on the meta device it is a no-op.
    """
    if is_traced(condition):
        return False
    if on_accelerator(condition):
        sys.modules["torch"]._assert_async(xp.logical_not(xp.any(condition)), message)
        return False
    return bool(xp.any(condition))


def on_accelerator(x: Any) -> bool:
    """Whether ``x`` is a PyTorch tensor off the CPU (CUDA, meta, ...), whose values
    a check must not read on the host."""
    if type(x).__module__.split(".")[0] != "torch":
        return False
    return x.device.type != "cpu"


def readable_on_host(x: Any) -> bool:
    """Whether reading values of ``x`` costs no wait for a device: NumPy and
    array-api-strict arrays, PyTorch CPU tensors and JAX arrays on CPU, none of them
    traced (CuPy arrays live on a GPU)."""
    library = _library(x)
    if is_traced(x) or library == "cupy":
        return False
    if library == "torch":
        return x.device.type == "cpu"
    if library in ("jax", "jaxlib"):
        return all(d.platform == "cpu" for d in x.devices())
    return True


def zero_d(xp: Any, value: Any) -> Any:
    """``value`` as an array: NumPy turns 0-d results of arithmetic into scalars.

    Arrays pass through untouched (``asarray`` on a PyTorch tensor that requires grad
    warns), so only Python and NumPy scalars, which are ``Number``s, are wrapped.
    """
    return xp.asarray(value) if isinstance(value, Number) else value


def compute_dtype(xp: Any, dtype: Any) -> Any:
    """The floating dtype that statistics are accumulated in.

    float64 stays float64; float32 and the half types (float16, bfloat16) accumulate
    in float32, so that sums over millions of pixels do not lose their precision.
    """
    return xp.float64 if dtype == xp.float64 else xp.float32
