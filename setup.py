"""The package index page: README.md with its relative links made absolute.

Everything else lives in pyproject.toml. README.md links to files of the repository
(``docs/...``, ``examples/...``) by relative paths, which work on GitHub and in a
checkout but not on a package index page; the long description points them at the
repository named in ``[project.urls] Repository`` instead.
"""

from __future__ import annotations

import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the build requires tomli there
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
# A Markdown link or image target that is neither absolute nor an in-page anchor.
RELATIVE_LINK = re.compile(r"(\]\()(?![a-z][a-z0-9+.-]*:|#)([^)\s]+)(\))")


def repository_url() -> str:
    project = tomllib.loads((HERE / "pyproject.toml").read_text())["project"]
    return project["urls"]["Repository"].rstrip("/")


def absolute_links(markdown: str, base: str) -> str:
    """``markdown`` with every relative link ``](path)`` made ``](base/path)``."""
    return RELATIVE_LINK.sub(lambda m: f"{m[1]}{base}/{m[2]}{m[3]}", markdown)


def long_description() -> str:
    readme = (HERE / "README.md").read_text(encoding="utf-8")
    return absolute_links(readme, f"{repository_url()}/blob/main")


if __name__ == "__main__":
    from setuptools import setup

    setup(
        long_description=long_description(),
        long_description_content_type="text/markdown",
    )
