"""The ``Examples:`` sections of the package's docstrings run as doctests, so an example
on the documentation site that stops being true fails the tests.

An example is written as a doctest (``>>>`` lines and the output they print), not as a
literal block (``Example::``), which nothing would run. The Keras adapter's examples run
in a process of their own with ``KERAS_BACKEND=jax``: Keras fixes its backend when it
is first imported.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import jdt_array

PACKAGE = Path(jdt_array.__file__).resolve().parent
ROOT = PACKAGE.parent
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
# A literal block introduced as an example: it shows code that no test runs.
LITERAL_EXAMPLE = re.compile(r"^\s*(?:.*\s)?(Examples?|Usage)::\s*$", re.MULTILINE)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


SOURCES = sorted(PACKAGE.rglob("*.py"))
WITH_EXAMPLES = [module_name(p) for p in SOURCES if ">>> " in p.read_text()]


def run_doctests(name: str) -> doctest.TestResults:
    """The doctests of module ``name``; failures are printed (pytest shows them)."""
    return doctest.testmod(importlib.import_module(name), optionflags=FLAGS)


def test_the_package_has_docstring_examples_to_run():
    assert {"jdt_array.named_losses", "jdt_array.metrics._fine_grained"} <= set(
        WITH_EXAMPLES
    )
    assert any("keras" in name for name in WITH_EXAMPLES)


KERAS = [name for name in WITH_EXAMPLES if ".keras" in name]


@pytest.mark.parametrize("name", [n for n in WITH_EXAMPLES if n not in KERAS])
def test_docstring_examples_run(name):
    results = run_doctests(name)
    assert results.failed == 0, f"{results.failed} docstring example(s) of {name} failed"
    assert results.attempted > 0


@pytest.mark.slow  # imports Keras and fits a model: about 15 s on a shared 2-core CPU
def test_keras_docstring_examples_run():
    if importlib.util.find_spec("keras") is None:  # not imported: see the docstring
        pytest.skip("keras is not installed")
    assert KERAS
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.pop("JAX_ENABLE_X64", None)  # Keras' own float32 default, as users run it
    script = (
        "import doctest, importlib, sys\n"
        f"for name in {KERAS!r}:\n"
        f"    r = doctest.testmod(importlib.import_module(name), optionflags={FLAGS})\n"
        "    print(name, 'attempted', r.attempted, 'failed', r.failed)\n"
        "    if r.failed or not r.attempted: sys.exit(1)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True,
        text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_are_doctests_not_literal_blocks(path):
    found = LITERAL_EXAMPLE.search(path.read_text())
    assert found is None, (
        f"{path.relative_to(ROOT)}: {found[0].strip()!r} shows code that no test runs; "
        "write it as an 'Examples:' section of >>> lines with their output"
    )


def test_a_wrong_example_fails(tmp_path, monkeypatch):
    module = tmp_path / "wrong_example.py"
    module.write_text(
        'def f():\n    """Twice.\n\n    Examples:\n        >>> f()\n        3\n    """\n'
        "    return 2\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    results = run_doctests("wrong_example")
    assert (results.attempted, results.failed) == (1, 1)
