import os

# The float64 reference comparisons need JAX in double precision; set before any import.
os.environ.setdefault("JAX_ENABLE_X64", "1")

import pytest

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
