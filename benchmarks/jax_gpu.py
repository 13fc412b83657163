"""The JAX forms on a GPU: the XLA and the Pallas pixel-level passes of the
``custom_vjp`` Jaccard loss, timed on the GPU training sizes.

    python -m benchmarks.jax_gpu                 # the GPU sizes, a JSON line per row
    python -m benchmarks.jax_gpu --sizes 2,4,64,64,64

For the one-command GPU check, which calls :func:`run` and prints its rows beside the
PyTorch kernels. Each row: the kernel ("xla" or "pallas", set through
``JDT_ARRAY_JAX_KERNEL`` before the step is traced; the Pallas form compiles through
Pallas's Triton lowering, which its ``compiler_params`` pin), the median ms of one jitted
forward + backward step, the multiple of the bandwidth floor (12 bytes per float32
logit: the logits read twice, the gradient written once) when the card is known, the
extra peak device memory over the logits (the allocator's peak so far in this process
minus what was in use before the step: exact for the largest size when it runs first,
as here), and XLA's compiled temporary memory over the logits; or an ``error`` (a
Pallas lowering failure, say) instead of the figures.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

GPU_SIZES = ((8, 19, 512, 1024), (16, 150, 512, 512), (2, 4, 128, 128, 128))
KERNELS = ("xla", "pallas")


def run(sizes=GPU_SIZES, *, reps: int = 10, kernels=KERNELS) -> list[dict]:
    """One row per (size, kernel); see the module docstring."""
    import jax

    rows = []
    for shape in sizes:
        for kernel in kernels:
            row = {
                "shape": list(shape),
                "kernel": kernel,
                "device": jax.devices()[0].device_kind,
            }
            try:
                row.update(_measure(tuple(shape), kernel, reps))
            except Exception as err:  # a row that fails must not hide the others
                row["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            rows.append(row)
    return rows


def _measure(shape, kernel, reps):
    import jax
    import jax.numpy as jnp
    import numpy as np

    from jdt_array._kernels import choice
    from jdt_array.backends import jax as jj

    from .suite import bandwidth_floor_ms

    with choice.setting("jax", kernel):
        rng = np.random.default_rng(0)
        logits = jnp.asarray(rng.standard_normal(shape, dtype=np.float32))
        label = jnp.asarray(rng.integers(0, shape[1], size=(shape[0], *shape[2:]),
                                         dtype=np.int32))  # fmt: skip
        step = jax.jit(jax.value_and_grad(lambda z: jj.jaccard_loss(z, label)))
        compiled = step.lower(logits).compile()  # traced here, under this kernel
        temp = compiled.memory_analysis().temp_size_in_bytes
        device = jax.devices()[0]
        before = _in_use(device)
        jax.block_until_ready(compiled(logits))  # warm up
        jax.block_until_ready(compiled(logits))
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            jax.block_until_ready(compiled(logits))
            times.append(time.perf_counter() - start)
        peak = _peak(device)
        in_program = "pallas_call" in str(jax.make_jaxpr(step)(logits))
    median = float(np.median(times) * 1e3)
    floor = bandwidth_floor_ms(shape, device.device_kind)
    result = {
        "median_ms": median,
        "min_ms": float(min(times) * 1e3),
        "floor_ms": floor,
        "x_floor": median / floor if floor else None,
        "xla_temp_over_logits": temp / logits.nbytes,
        "pallas_in_program": in_program,
    }
    if peak is not None and before is not None:
        result["extra_peak_over_logits"] = max(peak - before, 0) / logits.nbytes
    return result


def _in_use(device):
    stats = device.memory_stats() or {}
    return stats.get("bytes_in_use")


def _peak(device):
    stats = device.memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", help="comma-separated shapes (default: GPU sizes)")
    p.add_argument("--reps", type=int, default=10)
    args = p.parse_args(argv)
    sizes = [tuple(int(n) for n in s.split(",")) for s in args.sizes] if args.sizes \
        else GPU_SIZES  # fmt: skip
    rows = run(sizes, reps=args.reps)
    for row in rows:
        print(json.dumps(row))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
