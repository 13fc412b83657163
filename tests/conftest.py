import os

# The float64 reference comparisons need JAX in double precision; set before any import.
os.environ.setdefault("JAX_ENABLE_X64", "1")


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

from _support.backends import BACKENDS  # noqa: E402


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request):
    b = request.param
    b.setup()
    with b.context():
        yield b
