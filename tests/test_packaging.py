"""What a user who installs the package gets: a wheel with the license and the typing
marker, a self-contained sdist (every file of the checkout's tests, examples, docs and
benchmarks, and a subset of the tests passing from it), and a package index page
whose links lead somewhere.

The build runs offline (``python -m build --no-isolation``: the sdist, then the wheel
from the unpacked sdist), with the setuptools and build of this environment (the
``test`` extra installs them).
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What the sdist must carry besides the package: the tests run from it as from a checkout.
SOURCE_TREES = ("tests", "examples", "docs", "benchmarks")
TOP_LEVEL_FILES = (
    "LICENSE", "README.md", "CHANGELOG.md", "CITATION.cff", "constraints.txt", ".ci/run",
)  # fmt: skip


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """The sdist of this tree and the wheel built from that sdist (as ``python -m
    build`` does by default, so the wheel also proves the sdist builds)."""
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="module")
def sdist(dists) -> Path:
    return dists["sdist"]


@pytest.fixture(scope="module")
def unpacked_sdist(sdist, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(sdist) as archive:
        archive.extractall(out, filter="data")
    (tree,) = out.iterdir()
    return tree


def checkout_files() -> set[str]:
    """The files of SOURCE_TREES that belong in a source distribution: every file git
    tracks there (every file, outside a git checkout), so that a test, example or page
    that runs in the checkout finds what it reads in the unpacked sdist too."""
    tracked = subprocess.run(
        ["git", "ls-files", "--", *SOURCE_TREES], cwd=ROOT, capture_output=True,
        text=True, check=False,
    )  # fmt: skip
    if tracked.returncode == 0 and tracked.stdout.strip():
        return set(tracked.stdout.split())
    built = ("results", "_build", "generated", "__pycache__")
    return {
        "/".join(path.relative_to(ROOT).parts)
        for tree in SOURCE_TREES
        for path in (ROOT / tree).rglob("*")
        if path.is_file() and not set(path.relative_to(ROOT).parts) & set(built)
    }


def test_the_sdist_holds_the_license_the_typing_marker_and_every_test_helper(sdist):
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    missing = {*TOP_LEVEL_FILES, "jdt_array/py.typed", *checkout_files()} - names
    assert not missing, f"the sdist lacks {sorted(missing)}"
    assert "tests/conftest.py" in names and "tests/_support/backends.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def test_the_wheel_holds_the_license_and_the_typing_marker_and_no_tests(dists):
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = set(wheel.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        fields = Parser().parsestr(wheel.read(metadata).decode())
    assert "jdt_array/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "examples/"))]
    import jdt_array

    assert fields["Version"] == jdt_array.__version__  # one source for the version
    assert fields["License-Expression"] == "MIT"
    assert "Typing :: Typed" in fields.get_all("Classifier")
    assert relative_links(fields.get_payload()) == []


def relative_links(markdown: str) -> list[str]:
    """The link targets of ``markdown`` that are neither absolute nor in-page anchors."""
    targets = re.findall(r"\]\(([^)\s]+)\)", markdown)
    return [t for t in targets if not re.match(r"[a-z][a-z0-9+.-]*:|#", t)]


def load_setup_py():
    spec = importlib.util.spec_from_file_location("jdt_array_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # not __main__: setup() does not run
    return module


def test_the_index_page_points_every_relative_link_at_an_existing_repository_file():
    setup_py = load_setup_py()
    readme = (ROOT / "README.md").read_text()
    assert relative_links(readme), "README.md has no relative link left to check"
    page = setup_py.long_description()
    assert relative_links(page) == []
    base = f"{setup_py.repository_url()}/blob/main/"
    for target in re.findall(r"\]\(([^)\s]+)\)", page):
        if target.startswith(base):
            path = target[len(base) :].partition("#")[0]
            assert (ROOT / path).exists(), f"the index page links to missing {path}"


def test_absolute_links_keep_urls_anchors_and_code_spans_untouched():
    absolute_links = load_setup_py().absolute_links
    text = "[a](docs/x.md#h) [b](https://e.org/y) [c](#here) ![i](img/p.png) `f(x)` (z)"
    assert absolute_links(text, "https://r") == (
        "[a](https://r/docs/x.md#h) [b](https://e.org/y) [c](#here) "
        "![i](https://r/img/p.png) `f(x)` (z)"
    )


@pytest.mark.slow
def test_a_subset_of_the_tests_passes_from_the_unpacked_sdist(unpacked_sdist):
    # The documents' links and the examples' list need the files the sdist carries;
    # one backend-parametrized module (on NumPy, to keep it short) needs the helpers.
    done = run_pytest(
        unpacked_sdist, "-q", "-p", "no:cacheprovider",
        "tests/test_docs.py::test_links_within_the_docs_resolve",
        "tests/test_examples.py::test_every_example_is_tested",
        "tests/test_soft_labels.py", "-k", "links or every_example or numpy",
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert " passed" in done.stdout.splitlines()[-1]


def run_pytest(tree: Path, *args: str) -> subprocess.CompletedProcess:
    """pytest in the unpacked ``tree``, importing the package from there."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", *args], cwd=tree,
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    imported = subprocess.run(
        [sys.executable, "-c", "import jdt_array; print(jdt_array.__file__)"], cwd=tree,
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert Path(imported.stdout.strip()).is_relative_to(tree)  # not this checkout's copy
    return done
