"""The kernel settings: one environment variable per array library, read and checked
here and nowhere else.

* ``JDT_ARRAY_TORCH_KERNEL`` (PyTorch tensors): ``auto`` (the default), ``triton``,
  ``native`` or ``generic``.
* ``JDT_ARRAY_JAX_KERNEL`` (JAX arrays): ``auto`` (the default), ``xla`` or ``pallas``.

``auto`` resolves to ``native`` / ``xla`` until a run on a real GPU has verified the
fused kernels and recorded their figures in benchmarks/README.md (none has yet).
Values are case-insensitive and may carry spaces; an empty value is ``auto``; anything
else is an error naming the variable and the values it takes.
:func:`jdt_array._kernels.kernels_for` calls :func:`resolved` once per call and
returns the kernel set of the result.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["AUTO", "SETTINGS", "VARIABLES", "resolved", "setting"]

# library -> (variable, allowed values; the first is the default)
VARIABLES = {
    "torch": ("JDT_ARRAY_TORCH_KERNEL", ("auto", "triton", "native", "generic")),
    "jax": ("JDT_ARRAY_JAX_KERNEL", ("auto", "xla", "pallas")),
}
SETTINGS = {library: choices for library, (_, choices) in VARIABLES.items()}
# What ``auto`` means today, per library.
AUTO = {"torch": "native", "jax": "xla"}


def read(library: str) -> str:
    """The checked value of ``library``'s variable (``auto`` when unset or empty)."""
    variable, choices = VARIABLES[library]
    raw = os.environ.get(variable, "")
    value = raw.strip().lower() or "auto"
    if value not in choices:
        raise ValueError(
            f"the environment variable {variable} must be one of "
            f"{', '.join(choices)}; got {raw!r}"
        )
    return value


def resolved(library: str) -> str:
    """The kernel choice of ``library`` now: its variable, with ``auto`` resolved."""
    value = read(library)
    return AUTO[library] if value == "auto" else value


@contextlib.contextmanager
def setting(library: str, value: str) -> Iterator[None]:
    """Set ``library``'s variable to ``value`` for the duration (benchmarks, reports
    and tests; the variable is process-wide, so not for concurrent threads)."""
    variable, choices = VARIABLES[library]
    if value not in choices:
        raise ValueError(f"{variable} must be one of {', '.join(choices)}; got {value!r}")
    before = os.environ.get(variable)
    os.environ[variable] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(variable, None)
        else:
            os.environ[variable] = before
