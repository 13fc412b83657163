"""docs/api.md is the API reference that the code writes (jdt_array._tools.api_reference)
and names every public function, class and module; the docstring conversion to
Markdown keeps what the docstrings say."""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil

import pytest

from jdt_array._tools import api_reference


@pytest.fixture(scope="module")
def generated() -> str:
    for name in api_reference.MODULES:
        try:
            importlib.import_module(name)
        except ImportError as err:  # an adapter whose framework is not installed here
            pytest.skip(f"{name} needs {err.name}, which is not installed")
    return api_reference.generate()


def test_the_committed_api_reference_is_what_the_code_writes(generated):
    committed = api_reference.OUTPUT.read_text()
    diff = list(
        difflib.unified_diff(committed.splitlines(), generated.splitlines(), lineterm="")
    )
    assert not diff, (
        f"docs/api.md is out of date: run {api_reference.COMMAND}\n" + "\n".join(diff[:40])
    )


def test_every_public_name_has_an_entry_with_its_docstring(generated):
    for module_name in api_reference.MODULES:
        module = importlib.import_module(module_name)
        assert f"\n## `{module_name}`\n" in generated
        for name in api_reference.public_names(module):
            assert f"\n### `{module_name}.{name}`\n" in generated, f"{module_name}.{name}"
    for name in ("kl_div", "lovasz_hinge_loss", "FineGrainedMetrics", "JDTLoss"):
        assert f".{name}`\n" in generated
    assert "(no docstring)" not in generated  # every public function says what it does


def test_every_public_submodule_and_adapter_has_a_section():
    import jdt_array
    import jdt_array.backends

    submodules = [n for n in jdt_array.__all__ if inspect.ismodule(getattr(jdt_array, n))]
    adapters = [m.name for m in pkgutil.iter_modules(jdt_array.backends.__path__)
                if not m.name.startswith("_")]  # fmt: skip
    assert submodules and adapters
    for name in [*(f"jdt_array.{n}" for n in submodules),
                 *(f"jdt_array.backends.{n}" for n in adapters)]:  # fmt: skip
        assert name in api_reference.MODULES, f"{name} is missing from MODULES"


def test_check_fails_on_a_stale_reference_and_passes_on_a_fresh_one(generated, tmp_path):
    stale = tmp_path / "api.md"
    stale.write_text(generated.replace("jaccard_loss", "jacard_loss", 1))
    assert api_reference.main(["--check", "--output", str(stale)]) == 1
    assert api_reference.main(["--output", str(stale)]) == 0
    assert stale.read_text() == generated
    assert api_reference.main(["--check", "--output", str(stale)]) == 0


def test_docstrings_become_markdown():
    doc = """Summary with :func:`jdt_loss` and :math:`T^2`.

    .. math::
        T = tp / (tp + fp)

    Usage::

        loss(x)

    Args:
        logits, label: the inputs, over
            two lines.
        **options: the rest.

    Returns:
        A 0-d array,
        on the device of ``logits``.
    """
    assert api_reference._markdown(inspect.cleandoc(doc)) == (
        "Summary with `jdt_loss` and $T^2$.\n\n"
        "```math\nT = tp / (tp + fp)\n```\n\n"
        "Usage:\n\n    loss(x)\n\n"
        "**Args**\n\n"
        "- `logits`, `label`: the inputs, over two lines.\n"
        "- `**options`: the rest.\n\n"
        "**Returns**\n\n"
        "A 0-d array, on the device of ``logits``."
    )


def test_signatures_keep_keyword_only_markers_annotations_and_defaults():
    def f(a: int, /, b: str = "x", *, c: float | None = None, **kw: object) -> bool:
        """Doc."""

    assert api_reference._signature(f) == (
        "(a: int, /, b: str = 'x', *, c: float | None = None, **kw: object) -> bool"
    )
