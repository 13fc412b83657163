"""The documentation site (docs/, Sphinx) builds with no warning and holds what a user
looks for: a page with the signature of every public name, the guides, the search
index, and maths rendered by a MathJax copy inside the site (no network at build or
read time).

The build runs Sphinx as the README says, with ``-W --keep-going``: a broken
reference, a cross-reference no inventory resolves (``nitpicky``), bad reST in a
docstring or a public name without a docstring fails it.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import pkgutil
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
API_INDEX = DOCS / "api" / "index.rst"
FAQ = ("l1-or-l2", "cross-entropy", "hyper-parameters", "per-image-or-per-batch",
       "which-classes", "which-loss")  # fmt: skip
STUBS = ("boundary-iou", "evaluate-command", "per-class-metrics")


def documented_modules() -> list[str]:
    """The modules listed by the API reference's autosummary."""
    return re.findall(r"^   (jdt_array[\w.]*)$", API_INDEX.read_text(), re.MULTILINE)


def public_names(module_name: str) -> list[str]:
    """The names of a module's ``__all__`` that get a page (submodules have their own)."""
    if ".keras" in module_name:  # not imported here: Keras would fix its backend
        source = (ROOT / module_name.replace(".", "/") / "__init__.py").read_text()
        listed = re.search(r"__all__ = \[(.*?)\]", source, re.DOTALL)[1]
        return re.findall(r'"(\w+)"', listed)
    module = importlib.import_module(module_name)
    return [
        name
        for name in module.__all__
        if not name.startswith("__") and not inspect.ismodule(getattr(module, name))
    ]


def test_the_api_reference_lists_every_public_module_and_adapter():
    import jdt_array
    import jdt_array.backends

    submodules = [n for n in jdt_array.__all__ if inspect.ismodule(getattr(jdt_array, n))]
    adapters = [m.name for m in pkgutil.iter_modules(jdt_array.backends.__path__)
                if not m.name.startswith("_")]  # fmt: skip
    assert submodules and adapters
    listed = documented_modules()
    assert listed[0] == "jdt_array"
    for name in [*(f"jdt_array.{n}" for n in submodules),
                 *(f"jdt_array.backends.{n}" for n in adapters)]:  # fmt: skip
        assert name in listed, f"{name} is missing from docs/api/index.rst"


@pytest.mark.parametrize("path", sorted((DOCS / "_intersphinx").glob("*.txt")),
                         ids=lambda p: p.name)  # fmt: skip
def test_the_stored_inventories_are_well_formed(path):
    # "name domain:role priority uri display-name", as in a Sphinx objects.inv.
    entry = re.compile(r"^\S+ (py|std):\w+ -?\d+ \S+ .+$")
    lines = [
        line for line in path.read_text().splitlines() if line and not line.startswith("#")
    ]
    assert lines
    for line in lines:
        assert entry.match(line), f"{path.name}: malformed entry {line!r}"
        uri = line.split()[3]
        assert not uri.startswith(("http:", "https:", "/")), f"{uri}: relative to the base"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built as the README says, with warnings as errors."""
    for package in ("sphinx", "myst_parser", "furo"):
        pytest.importorskip(package)
    if importlib.util.find_spec("sphinx-mathjax-offline") is None:
        pytest.skip("sphinx-mathjax-offline is not installed")
    out = tmp_path_factory.mktemp("html")
    env = dict(os.environ)
    env.pop("JAX_ENABLE_X64", None)  # the docs show the defaults users have
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
         str(DOCS), str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    seconds = time.perf_counter() - started
    assert done.returncode == 0, (
        f"sphinx-build -W failed after {seconds:.0f} s:\n{done.stderr[-6000:]}"
    )
    print(f"the site built in {seconds:.0f} s")
    return out


@pytest.mark.slow
def test_every_public_name_has_a_page_with_its_signature(site):
    for module_name in documented_modules():
        page = site / "api" / "generated" / f"{module_name}.html"
        assert page.exists(), module_name
        for name in public_names(module_name):
            qualified = f"{module_name}.{name}"
            page = site / "api" / "generated" / f"{qualified}.html"
            assert page.exists(), f"no page for {qualified}"
            assert f'id="{qualified}"' in page.read_text(), f"no signature of {qualified}"


@pytest.mark.slow
def test_the_guides_examples_and_stubs_are_pages(site):
    for name in FAQ:
        assert (site / "faq" / f"{name}.html").exists(), name
    for name in ("metrics", "soft-labels", "binary-and-multilabel", "pytorch", "jax",
                 "torchmetrics-lightning", "keras", "numpy-cupy", "kernels-and-gpus",
                 "migrating", *STUBS):  # fmt: skip
        assert (site / "guide" / f"{name}.html").exists(), name
    for name in ("choosing-a-loss", "architecture", "examples", "changelog", "search"):
        assert (site / f"{name}.html").exists(), name
    examples = (site / "examples.html").read_text()
    for script in (ROOT / "examples").glob("*.py"):
        assert f"examples/{script.name}" in examples, script.name  # literalinclude


@pytest.mark.slow
def test_maths_and_search_need_no_network(site):
    assert (site / "_static" / "mathjax" / "tex-chtml.js").exists()
    page = (site / "api" / "generated" / "jdt_array.jdt_loss.html").read_text()
    assert 'src="../../_static/mathjax/tex-chtml.js' in page
    assert 'class="math' in page
    for html in site.rglob("*.html"):
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(https?://[^"]+)"',
                            html.read_text())  # fmt: skip
        assert not remote, f"{html.relative_to(site)} loads {remote}"
    index = (site / "searchindex.js").read_text()
    assert "jaccard_loss" in index and "FineGrainedMetrics" in index


@pytest.mark.slow
def test_references_to_other_projects_link_to_their_docs(site):
    generated = site / "api" / "generated"
    page = (generated / "jdt_array.backends.torch.JDTLoss.html").read_text()
    assert "https://docs.pytorch.org/docs/stable/generated/torch.nn.Module.html" in page
    jax_page = (site / "guide" / "jax.html").read_text()
    assert "https://docs.jax.dev/en/latest/_autosummary/jax.jit.html" in jax_page
