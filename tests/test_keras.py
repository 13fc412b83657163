"""The Keras 3 losses and metrics on each installed Keras backend (JAX, PyTorch).

Keras fixes its backend when it is first imported, so each backend runs the checks of
tests/_support/keras_checks.py in a process of its own (all checks in one process, to
pay the imports once); a failing check fails the test with its message.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

import jdt_array

CHECKS = Path(__file__).parent / "_support" / "keras_checks.py"
ROOT = Path(jdt_array.__file__).resolve().parent.parent


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_keras_losses_and_metrics_work_natively_on_the_backend(backend):
    # Not imported here: Keras would load its configured backend in this process.
    if importlib.util.find_spec("keras") is None:
        pytest.skip("keras is not installed")
    pytest.importorskip(backend)
    env = dict(
        os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    )  # fmt: skip
    env.pop("JAX_ENABLE_X64", None)  # Keras' own float32 default, as users run it
    done = subprocess.run(
        [sys.executable, str(CHECKS)], env=env, capture_output=True, text=True,
        timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    ran = [line for line in done.stdout.splitlines() if line.startswith("ok check_")]
    assert len(ran) == CHECKS.read_text().count("\ndef check_"), done.stdout


def test_importing_the_keras_adapter_without_keras_names_the_extra():
    code = (
        "import sys; sys.modules['keras'] = None\n"
        "try:\n    import jdt_array.backends.keras\n"
        "except ImportError as err:\n    print(err)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout  # fmt: skip
    assert "jdt-array[keras]" in out
