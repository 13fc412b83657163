import os

# The float64 reference comparisons need JAX in double precision; set before any import.
os.environ.setdefault("JAX_ENABLE_X64", "1")
# One intra-op thread for PyTorch (and BLAS): the suite's arrays are tiny, so a thread
# pool costs more than it gives, and on a busy machine a pool thread waiting for a core
# stalls every small operation (a JDTLoss step of a (2, 3, 4, 4) batch: 3 ms on one
# thread, 13 ms on two with another process running). Subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


# The Triton kernels run on CPU tensors in Triton's interpreter, which has to be on
# before triton is first imported; where CUDA is, they run compiled instead.
if "TRITON_INTERPRET" not in os.environ and not _has_cuda():
    os.environ["TRITON_INTERPRET"] = "1"

import pytest  # noqa: E402

# The helpers' asserts (backends.run, metrics.assert_matches, ...) report their values
# like the tests' own; registered before anything imports _support.
pytest.register_assert_rewrite("_support")

from _support.backends import BACKENDS, GRID_BACKENDS  # noqa: E402
from _support.tiers import GRID_ONLY  # noqa: E402


def _backend(request):
    b = request.param
    b.setup()
    with b.context():
        yield b


# Every backend: for a smoke set of cases of each function.
backend = pytest.fixture(params=BACKENDS, ids=lambda b: b.name)(_backend)
# NumPy and one autodiff library: for the grids of options, shapes and kernels.
grid_backend = pytest.fixture(params=GRID_BACKENDS, ids=lambda b: b.name)(_backend)


# The slow part of the suite, run by default and in CI: `python -m pytest -m "not slow"`
# leaves it out for quick local work. Listed here, by module and by library, so that a
# new test of these kinds is marked without an edit of its module.
SLOW_MODULES = {
    "test_distributed_jax.py",  # a subprocess with 4 XLA CPU devices
    "test_distributed_lovasz.py",  # gloo processes and shard_map
    "test_distributed_metrics.py",  # gloo processes and shard_map / pmap
    "test_distributed_torch.py",  # gloo processes, DDP
    "test_docs.py",  # every snippet of the docs, in subprocesses
    "test_docs_site.py",  # a Sphinx build of the site
    "test_docstring_examples.py",  # every docstring example, in subprocesses
    "test_examples.py",  # the example scripts, in subprocesses
    "test_fused_kernels.py",  # Triton and Pallas in their interpreters
    "test_gpu_check.py",  # the GPU check's CPU smoke run, in a subprocess
    "test_jax_adapter.py",  # jit, vmap and custom_vjp compilations
    "test_jax_kernels.py",  # JAX's kernels under jit, their second derivatives
    "test_kernel_compile.py",  # the fused kernels compiled for CUDA (no GPU needed)
    "test_keras.py",  # one Keras process per Keras backend
    "test_long_run.py",  # thousands of training steps per module
    "test_packaging.py",  # a wheel and an sdist built and installed
    "test_torch_compile.py",  # inductor and aot_eager compilations
}
# JAX dispatches every operation eagerly at about 10x NumPy's cost and compiles every
# jitted call: a test with "jax" in its name or its parameters' ids (the jax and
# jax-jit backends among them) is slow; the quick subset runs NumPy, PyTorch and
# array-api-strict.
GRID_NAMES = {b.name for b in GRID_BACKENDS}
# Modules of long single tests (a minute or more in a subprocess or a module fixture),
# collected first: pytest-xdist hands each worker a first run of consecutive tests,
# so these start at once, on one worker (one compile of the kernels, not one per
# worker), and the run ends on short tests instead of waiting for a long one.
LONG_FIRST = (
    "test_kernel_compile.py",  # every kernel compiled for three GPU generations
    "test_keras.py",
    "test_docs_site.py",
    "test_docstring_examples.py",
    "test_distributed_jax.py",
    "test_gpu_check.py",
)


def _backend_of(item):
    params = getattr(item, "callspec", None)
    return None if params is None else params.params.get("backend")


def pytest_collection_modifyitems(config, items):
    kept, deselected = [], []
    for item in items:
        backend = _backend_of(item)
        if (
            backend is not None
            and item.get_closest_marker(GRID_ONLY)
            and backend.name not in GRID_NAMES
        ):
            deselected.append(item)  # a grid case off the grid backends (tiers.py)
            continue
        name = getattr(item, "originalname", item.name)
        if item.path.name in SLOW_MODULES or "compile" in name or "jax" in item.name:
            item.add_marker(pytest.mark.slow)
        kept.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
    first = {name: rank for rank, name in enumerate(LONG_FIRST)}
    items[:] = sorted(kept, key=lambda item: first.get(item.path.name, len(first)))


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Skipped tests counted by reason: one line per missing library or GPU.

    Every test of a backend whose library or device is missing here is skipped with
    the same reason; pytest's own -rs lists each (test, reason) pair instead.
    """
    if "s" in config.option.reportchars or "a" in config.option.reportchars:
        return  # pytest lists them itself
    reasons: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else "skipped"
        reason = reason.removeprefix("Skipped: ")
        reasons[reason] = reasons.get(reason, 0) + 1
    if reasons:
        terminalreporter.section("skipped tests by reason (-rs lists each)", sep="-")
        for reason, count in sorted(reasons.items(), key=lambda kv: -kv[1]):
            terminalreporter.write_line(f"SKIPPED {count:>5}  {reason}")
