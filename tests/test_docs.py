"""The Python snippets of README.md, examples/README.md and the documentation site's
Markdown pages (docs/**/*.md) run, so the documentation cannot go stale: each file's
```python blocks are executed in order in one namespace, and any exception (a failed
``assert`` included) fails the test. Links between the documents must lead to a file
and a heading.

A block that cannot run here (a multi-GPU fragment, say) is fenced as
```python no-run``: GitHub and the site still highlight it, and it must still compile.
A document whose blocks import Keras runs in a process of its own with
``KERAS_BACKEND=jax``: Keras fixes its backend when first imported.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The site's pages; the build's own output and generated stubs are not documents.
SITE_PAGES = [
    p
    for p in (ROOT / "docs").rglob("*.md")
    if not p.relative_to(ROOT / "docs").parts[0].startswith("_")
    and "generated" not in p.parts
]
DOCUMENTS = sorted([ROOT / "README.md", ROOT / "examples" / "README.md", *SITE_PAGES])
# Pages whose snippets compile JAX training steps or fit a Keras model (20-40 s on a
# shared 2-core CPU): in the slow part of the suite, which CI runs.
SLOW_DOCUMENTS = {ROOT / "docs" / "guide" / "jax.md", ROOT / "docs" / "guide" / "keras.md"}
GUIDE = ROOT / "docs" / "choosing-a-loss.md"

FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def python_blocks(text: str) -> list[tuple[int, str, bool]]:
    """(first line number, source, runs) of every ```python block."""
    blocks = []
    for match in FENCE.finditer(text):
        words = match.group(1).split()
        if words and words[0] == "python":
            line = text.count("\n", 0, match.start(2)) + 1
            blocks.append((line, match.group(2), words[1:] != ["no-run"]))
    return blocks


def run_document(path: Path) -> int:
    """Run the blocks of ``path`` in order in one namespace; returns how many ran."""
    namespace: dict = {"__name__": f"doc_{path.stem}"}
    ran = 0
    for line, source, runs in python_blocks(path.read_text()):
        # Pad with newlines so tracebacks show the line number in the Markdown file.
        code = compile("\n" * (line - 1) + source, str(path), "exec")
        if not runs:
            continue
        try:
            exec(code, namespace)
        except Exception as err:
            # Report the Markdown line, not the whole file as pytest's context.
            frames = [
                f
                for f in traceback.extract_tb(err.__traceback__)
                if f.filename == str(path)
            ]
            where = f"{path.name}:{frames[-1].lineno}" if frames else f"{path.name}:{line}"
            pytest.fail(
                f"the snippet starting at {path.name}:{line} failed at {where}: "
                f"{type(err).__name__}: {err}",
                pytrace=False,
            )
        ran += 1
    return ran


def test_the_block_parser_finds_runnable_and_marked_blocks():
    text = (
        "intro\n```python\nx = 1\n```\n\n```sh\nls\n```\n"
        "```python no-run\ny = undefined\n```\n```py\nz = 3\n```\n"
    )
    assert python_blocks(text) == [(3, "x = 1\n", True), (10, "y = undefined\n", False)]


def test_a_failing_snippet_fails_with_its_markdown_line(tmp_path):
    doc = tmp_path / "broken.md"
    doc.write_text(
        "# t\n\n```python\nx = 1\n```\n\ntext\n\n```python\ny = 2\nassert x == y\n```\n"
    )
    with pytest.raises(pytest.fail.Exception, match=r"broken.md:10 failed at broken.md:11"):
        run_document(doc)


def imports_keras(path: Path) -> bool:
    code = "\n".join(source for _, source, _ in python_blocks(path.read_text()))
    return re.search(r"^\s*(import|from) keras\b", code, re.MULTILINE) is not None


def run_in_own_process(path: Path) -> subprocess.CompletedProcess:
    """``run_document(path)`` in a fresh interpreter with Keras on its JAX backend."""
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")]
    )
    env.pop("JAX_ENABLE_X64", None)  # Keras' own float32 default, as users run it
    script = (
        "import sys; from pathlib import Path; from test_docs import run_document; "
        f"print('ran', run_document(Path({str(path)!r})))"
    )
    return subprocess.run(
        [sys.executable, "-c", script], env=env, cwd=ROOT, capture_output=True,
        text=True, timeout=600, check=False,
    )  # fmt: skip


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=[pytest.mark.slow] if p in SLOW_DOCUMENTS else [])
        for p in DOCUMENTS
    ],
    ids=lambda p: str(p.relative_to(ROOT)),
)
# A page whose logits trip the probabilities warning teaches readers to ignore it.
@pytest.mark.filterwarnings("error:the logits of the first image:UserWarning")
def test_snippets_run(path, capsys):
    if imports_keras(path):
        if importlib.util.find_spec("keras") is None:  # not imported: see the docstring
            pytest.skip("keras is not installed")
        done = run_in_own_process(path)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "ran 0" not in done.stdout
        return
    # JAX may hold float64 (tests/conftest.py enables it); the snippets work either way.
    ran = run_document(path)
    assert ran > 0 or not python_blocks(path.read_text())


def test_the_site_pages_are_documents_here():
    names = {str(p.relative_to(ROOT)) for p in DOCUMENTS}
    assert {
        "docs/index.md",
        "docs/faq/per-image-or-per-batch.md",
        "docs/guide/keras.md",
    } <= names
    assert imports_keras(ROOT / "docs" / "guide" / "keras.md")
    assert not imports_keras(GUIDE)


def test_the_guide_runs_a_snippet_for_every_option_it_explains():
    blocks = [source for _, source, runs in python_blocks(GUIDE.read_text()) if runs]
    code = "\n".join(blocks)
    for name in (
        "norm=", "alpha", "beta", "tversky_loss", "dice_loss", "mIoUD=", "mIoUI=",
        "active_classes_mode_hard=", "active_classes_mode_soft=", "threshold=",
        "class_agnostic=True", "generalized_dice_loss", "ce_jdt_loss", "JDTLoss",
        "lovasz_softmax_loss", "label_smoothing", "average_annotators",
        "teacher_probabilities", "FineGrainedMetrics", "value_and_grad",
    ):  # fmt: skip
        assert name in code, f"no snippet of docs/choosing-a-loss.md uses {name}"
    assert code.count("assert ") >= 20  # the claims are checked, not just shown


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_within_the_docs_resolve(path):
    text = path.read_text()
    prose = FENCE.sub("", text)
    anchors = {github_anchor(h) for h in re.findall(r"^#+ (.+)$", prose, re.MULTILINE)}
    for target in re.findall(r"\]\(([^)\s]+)\)", prose):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        assert linked.exists(), f"{path.name}: link to missing file {target}"
        if anchor and linked.suffix == ".md":
            linked_prose = FENCE.sub("", linked.read_text())
            headings = re.findall(r"^#+ (.+)$", linked_prose, re.MULTILINE)
            known = anchors if linked == path else {github_anchor(h) for h in headings}
            assert anchor in known, f"{path.name}: no heading for #{anchor}"
