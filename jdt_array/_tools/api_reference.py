"""The API reference, ``docs/api.md``, written from the public names and their docstrings.

    python -m jdt_array._tools.api_reference          # rewrite docs/api.md
    python -m jdt_array._tools.api_reference --check  # exit 1 if it is out of date

Every name in the ``__all__`` of each module in ``MODULES`` gets an entry: its
signature and its docstring; classes also list their public methods and properties.
The tests check that the committed file is what this module writes, so the reference
changes with the code. A new public module goes into ``MODULES``; every adapter in
``jdt_array.backends`` must be there (the tests check that too).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

# Keras loads its backend when first imported (TensorFlow unless told); the Keras
# adapter's reference is the same on each of the backends it runs on.
os.environ.setdefault("KERAS_BACKEND", "jax")

# The documented modules, in the order of the reference.
MODULES = (
    "jdt_array",
    "jdt_array.metrics",
    "jdt_array.soft_labels",
    "jdt_array.backends.torch",
    "jdt_array.backends.jax",
    "jdt_array.backends.keras",
    "jdt_array.backends.torchmetrics",
)
OUTPUT = Path(__file__).resolve().parents[2] / "docs" / "api.md"
COMMAND = "python -m jdt_array._tools.api_reference"

HEADER = f"""# API reference

Every public name of jdt-array, with its signature and docstring. This file is
generated from the code by `{COMMAND}`
(do not edit it by hand): the tests check that it matches. How to choose the options:
[the guide](choosing-a-loss.md); how the code is laid out:
[the architecture](architecture.md).
"""


def public_names(module: ModuleType) -> list[str]:
    """The names a module documents: its ``__all__``, less submodules and dunders
    (a submodule in ``__all__`` has its own section)."""
    return [
        name
        for name in module.__all__
        if not name.startswith("__") and not inspect.ismodule(getattr(module, name))
    ]


def generate(modules: tuple[str, ...] = MODULES) -> str:
    """The reference of ``modules``, as Markdown."""
    loaded = [importlib.import_module(name) for name in modules]
    parts = [HEADER, _contents(loaded)]
    for module in loaded:
        parts.append(_module_section(module))
    return "\n".join(parts).rstrip() + "\n"


def _contents(modules: list[ModuleType]) -> str:
    links = " · ".join(f"[`{m.__name__}`](#{_anchor(m.__name__)})" for m in modules)
    return f"Modules: {links}\n"


def _anchor(title: str) -> str:
    """GitHub's anchor of a heading ``title`` (word characters and dots)."""
    return title.lower().replace(".", "")


def _module_section(module: ModuleType) -> str:
    name = module.__name__
    lines = [f"## `{name}`", "", _doc(module), ""]
    if name == "jdt_array":
        # Not its value: a release would otherwise have to regenerate this file.
        lines += [
            "`jdt_array.__version__` is the version string (`jdt-array --version`).",
            "",
        ]
    lines += ["| name | summary |", "|---|---|"]
    for member in public_names(module):
        summary = _summary(getattr(module, member))
        lines.append(f"| [`{member}`](#{_anchor(f'{name}.{member}')}) | {summary} |")
    lines.append("")
    for member in public_names(module):
        lines.append(_entry(f"{name}.{member}", member, getattr(module, member)))
    return "\n".join(lines)


def _summary(obj: Any) -> str:
    """The first paragraph of the docstring (a constant: its value), for a table cell."""
    if not (inspect.isclass(obj) or callable(obj)):
        return f"`{obj!r}`"
    summary = _doc(obj).split("\n\n")[0].replace("\n", " ")
    return re.sub(r"(?<!\\)\|", r"\\|", summary)  # a bare | would end the cell


def _entry(qualified: str, name: str, obj: Any) -> str:
    lines = [f"### `{qualified}`", ""]
    if inspect.isclass(obj) or callable(obj):
        lines += ["```text", f"{_kind(obj)}{name}{_signature(obj)}", "```", ""]
        lines += [_doc(obj), ""]
    else:  # a constant: its value says what it is
        lines += ["```text", f"{name} = {obj!r}", "```", ""]
    if inspect.isclass(obj):
        for member, attribute in _public_members(obj):
            lines += _member(name, member, attribute)
    return "\n".join(lines)


def _kind(obj: Any) -> str:
    return "class " if inspect.isclass(obj) else ""


def _member(owner: str, name: str, attribute: Any) -> list[str]:
    if isinstance(attribute, property):
        lines = [f"#### `{owner}.{name}` (property)", ""]
    else:
        lines = [f"#### `{owner}.{name}`", "", "```text",
                 f"{name}{_signature(attribute, drop_self=True)}", "```", ""]  # fmt: skip
    doc = _own_doc(attribute)
    return [*lines, _markdown(doc), ""] if doc else lines


# Methods a framework calls, not the user (torch.nn.Module's printing hook).
FRAMEWORK_HOOKS = {"extra_repr"}


def _public_members(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties that this package's classes define, base first."""
    members: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        if not klass.__module__.startswith("jdt_array"):
            continue
        for name, attribute in vars(klass).items():
            if name.startswith("_") or name in FRAMEWORK_HOOKS:
                continue
            if isinstance(attribute, staticmethod | classmethod):
                attribute = attribute.__func__
            if inspect.isfunction(attribute) or isinstance(attribute, property):
                members[name] = attribute
    return list(members.items())


def _signature(obj: Any, *, drop_self: bool = False) -> str:
    """``(a: T = default, *, b: U) -> R`` with annotations as written in the source."""
    signature = inspect.signature(obj)
    params = list(signature.parameters.values())
    if drop_self and params and params[0].name in ("self", "cls"):
        params = params[1:]
    signature = signature.replace(parameters=params)
    text = []
    previous = None
    for param in params:
        if param.kind is param.KEYWORD_ONLY and previous not in (
            param.KEYWORD_ONLY, param.VAR_POSITIONAL
        ):  # fmt: skip
            text.append("*")
        if previous is param.POSITIONAL_ONLY and param.kind is not param.POSITIONAL_ONLY:
            text.append("/")
        text.append(_parameter(param))
        previous = param.kind
    if previous is inspect.Parameter.POSITIONAL_ONLY:
        text.append("/")
    result = f"({', '.join(text)})"
    if signature.return_annotation is not inspect.Signature.empty:
        result += f" -> {_annotation(signature.return_annotation)}"
    return result


def _parameter(param: inspect.Parameter) -> str:
    prefix = {param.VAR_POSITIONAL: "*", param.VAR_KEYWORD: "**"}.get(param.kind, "")
    text = prefix + param.name
    if param.annotation is not param.empty:
        text += f": {_annotation(param.annotation)}"
    if param.default is not param.empty:
        text += f" = {param.default!r}" if ":" in text else f"={param.default!r}"
    return text


def _annotation(annotation: Any) -> str:
    if isinstance(annotation, str):
        return annotation
    if hasattr(annotation, "__forward_arg__"):  # typing.ForwardRef (dataclass fields)
        return annotation.__forward_arg__
    return inspect.formatannotation(annotation)


def _own_doc(obj: Any) -> str | None:
    """The docstring ``obj`` itself has: not one inherited from a base class (as
    ``inspect.getdoc`` gives), nor a constant's type's."""
    if inspect.isclass(obj):
        doc = vars(obj).get("__doc__")
    elif inspect.ismodule(obj) or inspect.isroutine(obj) or isinstance(obj, property):
        doc = obj.__doc__
    else:
        doc = None
    return inspect.cleandoc(doc) if doc else None


def _doc(obj: Any) -> str:
    doc = _own_doc(obj)
    return _markdown(doc) if doc else "(no docstring)"


# Google-style docstring sections; those of ITEM_SECTIONS list "name: text" items.
SECTION = re.compile(r"^(Args|Returns|Raises|Yields|Attributes|Examples?|Notes?):\s*$")
ITEM_SECTIONS = {"Args", "Raises", "Attributes"}
ITEM = re.compile(r"^(\*{0,2}[\w.]+(?:, \*{0,2}[\w.]+)*):(?:\s+|$)(.*)$")
ROLE = re.compile(r":(?:func|class|meth|attr|mod|data|obj|exc):`~?([^`]+)`")
MATH_ROLE = re.compile(r":math:`([^`]+)`")


def _markdown(doc: str) -> str:
    """A docstring (reST roles, ``.. math::``, Google sections) as GitHub Markdown."""
    doc = MATH_ROLE.sub(lambda m: f"${m[1]}$", ROLE.sub(lambda m: f"`{m[1]}`", doc))
    lines, out, i = doc.splitlines(), [], 0
    while i < len(lines):
        line, header = lines[i], SECTION.match(lines[i])
        if line.strip() != ".. math::" and not header:
            # reST's "text::" before a literal block is "text:" in Markdown, where the
            # indented block after the blank line is code already.
            out.append(line[:-1] if line.endswith("::") else line)
            i += 1
            continue
        block, i = _indented_block(lines, i + 1)
        if not header:
            out += ["```math", *block, "```"]
        elif header[1] in ITEM_SECTIONS:
            out += ["", f"**{header[1]}**", "", *_items(block), ""]
        else:
            out += ["", f"**{header[1]}**", "", " ".join(s.strip() for s in block if s), ""]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def _items(block: list[str]) -> list[str]:
    """The "name: text" items of a section (continuations indented) as a list."""
    items: list[str] = []
    for line in filter(str.strip, block):
        match = None if line.startswith(" ") else ITEM.match(line)
        if match:
            names = ", ".join(f"`{name.strip()}`" for name in match[1].split(","))
            items.append(f"- {names}: {match[2]}".rstrip())
        elif items:
            items[-1] += " " + line.strip()
        else:
            items.append(line.strip())
    return items


def _indented_block(lines: list[str], start: int) -> tuple[list[str], int]:
    """The lines from ``start`` indented deeper than ``lines[start - 1]`` (blank lines
    inside included), dedented; and the index after them."""
    base = len(lines[start - 1]) - len(lines[start - 1].lstrip())
    end = start
    while end < len(lines) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > base
    ):
        end += 1
    while end > start and not lines[end - 1].strip():
        end -= 1  # trailing blank lines belong to what follows
    block = [line[base + 4 :] if line.strip() else "" for line in lines[start:end]]
    return block, end


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"exit 1 if {OUTPUT.name} differs from the code's reference",
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help="default: docs/api.md")
    args = parser.parse_args(argv)  # fmt: skip
    text = generate()
    if args.check:
        current = args.output.read_text() if args.output.is_file() else ""
        if current != text:
            print(f"{args.output} is out of date: run {COMMAND}", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
