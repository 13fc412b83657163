"""Sphinx configuration of the jdt-array documentation site.

Build it (offline; ``-W`` turns every warning into an error, as the tests do)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

The API reference is generated at build time from the docstrings: ``api/index.md``
lists the public modules, and autosummary gives every name in each module's
``__all__`` a page (so a new public name gets its page with no edit here). The
guides are MyST Markdown. Maths is rendered by a MathJax copy served from the built
site, and the cross-references to PyTorch, JAX, NumPy, Keras, torchmetrics and
Python use inventories kept in ``_intersphinx/``: nothing is fetched from the network.
"""

from __future__ import annotations

import os
import re
import sys
import zlib
from pathlib import Path

# Keras loads its backend when first imported (TensorFlow unless told): the Keras
# adapter's documentation is the same on each backend it runs on. JAX in float32, as
# a user has it (the tests switch float64 on; the docs show the defaults).
os.environ.setdefault("KERAS_BACKEND", "jax")

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # document this checkout's package, not an installed one

from sphinx.util import logging  # noqa: E402

import jdt_array  # noqa: E402

project = "jdt-array"
author = "The jdt-array authors"
copyright = "the jdt-array authors (MIT License)"
release = version = jdt_array.__version__
REPOSITORY = "https://github.com/jdt-array/jdt-array"
# The modules of the API reference: the one list is docs/api/index.rst's autosummary.
PUBLIC_MODULES = tuple(
    re.findall(r"^   (jdt_array[\w.]*)$", (DOCS / "api" / "index.rst").read_text(), re.M)
)

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "myst_parser",
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static/mathjax: no CDN
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_intersphinx", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]
# Broken references of any kind are warnings, and -W makes them errors.
nitpicky = True

# -- API reference -------------------------------------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False  # a module's pages are the names in its __all__
autosummary_imported_members = True  # the package re-exports names from submodules
# The module template lists a module's constants (names of __all__ that are neither
# functions, classes nor documented modules) itself: autosummary finds only those
# with a doc comment in the module's own source.
autosummary_context = {"documented_modules": PUBLIC_MODULES}
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "signature"
# A method's page shows its own docstring, not the framework's (torch.nn.Module.forward).
autodoc_inherit_docstrings = False
autodoc_preserve_defaults = True
# ``Array`` (jdt_array._array) is ``Any``: say "Array" in signatures, as the code does.
autodoc_type_aliases = {"Array": "Array"}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True

# -- Guides (MyST) --------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
# GitHub-style anchors for headings, so links such as choosing-a-loss.md#3-... work on
# GitHub and on the site alike.
myst_heading_anchors = 3
# ```python no-run blocks (shown, not run by tests/test_docs.py) are Python code.
highlight_language = "python3"

# -- HTML ----------------------------------------------------------------------------
html_theme = "furo"
html_title = f"jdt-array {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {
    "source_repository": REPOSITORY,
    "source_branch": "main",
    "source_directory": "docs/",
}
html_show_sourcelink = False

# -- Cross-references to other projects: inventories kept in the repository --------
# Each _intersphinx/<name>.txt is the plain-text body of a Sphinx objects.inv (one
# "name domain:role priority uri display-name" line per object) listing the objects
# these docs refer to, at the URIs of the projects' own documentation. They are
# compiled below into objects.inv files, so the build needs no network. With
# JDT_ARRAY_DOCS_ONLINE_INVENTORIES=1 the projects' published inventories are tried
# first (the full ones), the stored ones remaining the fallback.
INVENTORY_BASES = {
    "python": "https://docs.python.org/3/",
    "numpy": "https://numpy.org/doc/stable/",
    "torch": "https://docs.pytorch.org/docs/stable/",
    "jax": "https://docs.jax.dev/en/latest/",
    "keras": "https://keras.io/",
    "torchmetrics": "https://lightning.ai/docs/torchmetrics/stable/",
}
# keras.io is not a Sphinx site and publishes no objects.inv: its stored one is all.
PUBLISHED_INVENTORIES = {"python", "numpy", "torch", "jax", "torchmetrics"}


def compile_inventory(source: Path, target: Path, project: str) -> None:
    """Write the objects.inv (format version 2) of the plain-text body ``source``."""
    lines = [
        line
        for line in source.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    header = (
        "# Sphinx inventory version 2\n"
        f"# Project: {project}\n"
        "# Version: \n"
        "# The remainder of this file is compressed using zlib.\n"
    )
    target.write_bytes(
        header.encode() + zlib.compress(("\n".join(lines) + "\n").encode("utf-8"), 9)
    )


def _inventories() -> dict[str, tuple[str, object]]:
    compiled = DOCS / "_build" / "intersphinx"
    compiled.mkdir(parents=True, exist_ok=True)
    online = os.environ.get("JDT_ARRAY_DOCS_ONLINE_INVENTORIES") == "1"
    mapping = {}
    for name, base in INVENTORY_BASES.items():
        target = compiled / f"{name}.inv"
        compile_inventory(DOCS / "_intersphinx" / f"{name}.txt", target, name)
        locations = (
            (None, str(target))
            if online and name in PUBLISHED_INVENTORIES
            else (str(target),)
        )
        mapping[name] = (base, locations)
    return mapping


intersphinx_mapping = _inventories()
intersphinx_timeout = 5

# -- Checks and conventions of the API reference ----------------------------------
logger = logging.getLogger("jdt_array.docs")
DOCUMENTED_KINDS = {"function", "class", "method", "property", "module", "data"}


# Filled when the build starts (the frameworks are imported by then anyway).
_NAMES: dict[str, dict] = {}


def reexported_constant_docs(app, what, name, obj, options, lines) -> None:
    """A constant re-exported by a package (``backends.torch.BACKWARDS``) has its
    ``#:`` doc comment in the submodule that assigns it: use that one."""
    if what != "data" or _says_something(obj, lines):
        return
    from sphinx.pycode import ModuleAnalyzer

    package, _, attribute = name.rpartition(".")
    lines.clear()  # not the docstring of the constant's type (tuple, str)
    for module_name, module in sorted(sys.modules.items()):
        defines = getattr(module, attribute, None) is obj
        if module_name.startswith(f"{package}.") and defines:
            docs = ModuleAnalyzer.for_module(module_name).find_attr_docs()
            if ("", attribute) in docs:
                lines.extend(docs["", attribute])
                return


def _says_something(obj, lines) -> bool:
    """Whether ``lines`` document ``obj`` itself: not empty, and for a constant not
    the docstring of its type, which autodoc shows when the constant has none."""
    text = " ".join(" ".join(lines).split())
    type_doc = " ".join((type(obj).__doc__ or "").split())
    return bool(text) and not (type_doc and text == type_doc)


def require_docstrings(app, what, name, obj, options, lines) -> None:
    """A public object rendered without a docstring is a build warning (an error
    under -W): every public name must say what it does."""
    if what in DOCUMENTED_KINDS and not (
        _says_something(obj, lines) if what == "data" else any(map(str.strip, lines))
    ):
        logger.warning("%s %s has no docstring", what, name, type="jdt_array")


# The docstrings write array shapes as (B, C, *spatial) and keyword arguments as
# **options, as Python does; in reST a bare * starts emphasis. Outside inline code and
# literal or maths blocks, a * or ** before a name is escaped.
STARRED_NAME = re.compile(r"(?<![\\\w*`])(\*{1,2})(?=[A-Za-z_])")
INLINE_CODE = re.compile(r"(``.+?``|`[^`]+`)")


def escape_starred_names(app, what, name, obj, options, lines) -> None:
    block_indent = None  # indentation of the line that opened a literal block
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if block_indent is not None:
            if not line.strip() or indent > block_indent:
                continue
            block_indent = None
        if line.rstrip().endswith("::"):
            block_indent = indent
        parts = INLINE_CODE.split(line)
        for k in range(0, len(parts), 2):  # the even parts are outside inline code
            parts[k] = STARRED_NAME.sub(lambda m: "\\*" * len(m[1]), parts[k])
        lines[i] = "".join(parts)


def _documented_names() -> dict[int, str]:
    """id(object) -> the public name under which the API reference documents it."""
    import importlib

    names = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for member in module.__all__:
            names.setdefault(id(getattr(module, member)), f"{module_name}.{member}")
    return names


# Classes of other libraries by the name their documentation uses; their
# module-qualified names (torch.nn.modules.module.Module, keras.src....) are found
# when the frameworks are imported.
FRAMEWORK_PUBLIC_NAMES = (
    "torch.Tensor",
    "torch.nn.Module",
    "torch.distributed.ProcessGroup",
    "jax.Array",
    "keras.losses.Loss",
    "keras.metrics.Metric",
    "torchmetrics.Metric",
)


def _framework_aliases() -> dict[str, str]:
    import importlib

    aliases = {}
    for public in FRAMEWORK_PUBLIC_NAMES:
        module_name, _, attribute = public.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError):
            continue
        aliases[f"{obj.__module__}.{obj.__qualname__}"] = public
    return aliases


def _private(cls: type) -> bool:
    """A private name, or a class of a private module (``backends.keras._base``)."""
    parts = [*cls.__module__.split("."), cls.__name__]
    return any(part.startswith("_") for part in parts)


def public_bases(app, name, obj, options, bases) -> None:
    """Show a class's bases by their public names: an undocumented private base of
    this package is replaced by its own bases, a framework class by its documented
    name, and a lone ``object`` is left out."""
    documented = _NAMES["documented"]
    aliases = _NAMES["aliases"]
    shown: list[str] = []

    def add(base: type) -> None:
        if base is object:
            return
        if id(base) in documented:
            shown.append(f":py:class:`~{documented[id(base)]}`")
        elif base.__module__.startswith("jdt_array") and _private(base):
            for grand in base.__bases__:
                add(grand)
        else:
            qualified = f"{base.__module__}.{base.__qualname__}"
            shown.append(f":py:class:`{aliases.get(qualified, qualified)}`")

    for base in list(bases):
        add(base)
    bases[:] = list(dict.fromkeys(shown))


def public_annotation_names(app, env, node, contnode):
    """A reference to a framework class by its module-qualified name (as annotations
    give it) resolves as its public name, through the stored inventories."""
    from sphinx.ext import intersphinx

    target = node.get("reftarget")
    public = _NAMES["aliases"].get(target)
    if public is None:
        return None
    node["reftarget"] = public
    return intersphinx.missing_reference(app, env, node, contnode)


def plain_alias_names(app, what, name, obj, options, signature, return_annotation):
    """``tuple[Array, Array]``: Sphinx writes the alias inside a generic as
    ``TypeAliasForwardRef('Array')``; the reference should say ``Array``."""
    alias = re.compile(r"TypeAliasForwardRef\('([^']+)'\)")
    if signature:
        signature = alias.sub(r"\1", signature)
    if return_annotation:
        return_annotation = alias.sub(r"\1", return_annotation)
    return signature, return_annotation


def skip_framework_hooks(app, what, name, obj, skip, options):
    """Leave out methods that a framework calls rather than the user."""
    if name in {"extra_repr"}:
        return True
    return None


# Relative links from a guide to repository files outside docs/ (source modules,
# benchmarks/README.md, examples/README.md) work on GitHub and in a checkout; on the
# site they become links to the file on GitHub, as setup.py does for the README.
RELATIVE_LINK = re.compile(r"(\]\()(?![a-z][a-z0-9+.-]*:|#)([^)\s#]+)(#[^)\s]*)?(\))")


def link_repository_files(app, docname, source) -> None:
    path = Path(app.env.doc2path(docname))
    if path.suffix != ".md":
        return

    def absolute(match: re.Match) -> str:
        target = (path.parent / match[2]).resolve()
        if target.is_relative_to(DOCS) or not target.exists():
            return match[0]
        where = target.relative_to(ROOT).as_posix()
        return f"{match[1]}{REPOSITORY}/blob/main/{where}{match[3] or ''}{match[4]}"

    source[0] = RELATIVE_LINK.sub(absolute, source[0])


def setup(app) -> None:
    _NAMES["documented"] = _documented_names()
    _NAMES["aliases"] = _framework_aliases()
    app.connect("autodoc-process-docstring", reexported_constant_docs)
    app.connect("autodoc-process-docstring", require_docstrings)
    app.connect("autodoc-process-docstring", escape_starred_names)
    app.connect("autodoc-process-bases", public_bases)
    app.connect("autodoc-process-signature", plain_alias_names)
    app.connect("missing-reference", public_annotation_names)
    app.connect("autodoc-skip-member", skip_framework_hooks)
    app.connect("source-read", link_repository_files)
