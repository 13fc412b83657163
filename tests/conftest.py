import os

# The float64 reference comparisons need JAX in double precision; set before any import.
os.environ.setdefault("JAX_ENABLE_X64", "1")

import pytest
from _support.backends import BACKENDS


@pytest.fixture(params=BACKENDS, ids=lambda b: b.name)
def backend(request):
    b = request.param
    b.setup()
    with b.context():
        yield b
