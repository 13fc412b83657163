"""Keras itself, imported once with an error that says what to install or set, and
the backends whose tensors the core can take."""

from __future__ import annotations

try:
    import keras
except ModuleNotFoundError as err:  # pragma: no cover - depends on the environment
    if err.name != "keras":  # Keras is there, its configured backend is not
        raise ImportError(
            f"Keras could not load its backend ({err.name} is missing); "
            f"jdt_array.backends.keras runs on Keras' JAX and PyTorch backends: set "
            f"KERAS_BACKEND=jax or KERAS_BACKEND=torch before importing keras",
            name=err.name,
        ) from err
    raise ImportError(
        "jdt_array.backends.keras needs Keras 3: pip install 'jdt-array[keras]'",
        name="keras",
    ) from err

__all__ = ["BACKENDS", "PACKAGE", "check_backend", "keras"]

BACKENDS = ("jax", "torch", "numpy")
PACKAGE = "jdt_array"  # the package name of the serialized objects


def check_backend(owner: str) -> str:
    """The Keras backend, if the core can run on its tensors."""
    backend = keras.backend.backend()
    if backend not in BACKENDS:
        raise RuntimeError(
            f"{owner} runs on Keras' {', '.join(BACKENDS)} backends, whose tensors are "
            f"array-API arrays; the {backend!r} backend has none. Set KERAS_BACKEND=jax "
            f"or KERAS_BACKEND=torch before importing keras"
        )
    return backend
