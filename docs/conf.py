"""Sphinx configuration: MyST Markdown pages, autodoc + napoleon for the Google-style docstrings,
one autosummary page per public name (``gradchain.__all__``).  Built with warnings as errors:
``make docs`` (``sphinx-build -W --keep-going -b html docs docs/_build/html``)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import gradchain  # noqa: E402

project = "gradchain"
author = "The gradchain authors"
copyright = "the gradchain authors, Apache-2.0"  # noqa: A001
release = gradchain.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "api/generated/*.md"]
myst_enable_extensions = ["colon_fence", "dollarmath"]
myst_heading_anchors = 3

autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": False, "show-inheritance": False}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
# Type aliases and protocols whose targets Sphinx cannot resolve inside annotations.
nitpicky = False
suppress_warnings = ["autosummary.import_cycle"]

html_theme = "alabaster"
html_title = f"gradchain {release}"


def _api_page() -> str:
    """``api.md``: every public name, grouped by the module that defines it, one autosummary
    entry (and page) each; type aliases and constants in a table; namespaces by module."""
    groups: dict[str, list[str]] = {}
    plain: list[str] = []
    namespaces: list[str] = []
    for name in gradchain.__all__:
        obj = getattr(gradchain, name)
        if inspect.ismodule(obj):
            namespaces.append(name)
            continue
        module = getattr(obj, "__module__", "") or ""
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or not module.startswith("gradchain"):
            plain.append(name)
            continue
        groups.setdefault(module.split(".")[1], []).append(name)
    lines = [
        "# API reference",
        "",
        "Every public name, importable from the top-level `gradchain` namespace "
        "(`gradchain.__all__`). Each page gives the formula, the arguments, what is returned and "
        "the paper.",
        "",
    ]
    for group in sorted(groups):
        lines += [f"## {group}", "", "```{eval-rst}", ".. autosummary::", "   :toctree: generated", ""]
        lines += [f"   gradchain.{name}" for name in sorted(groups[group])]
        lines += ["```", ""]
    lines += ["## Types and constants", "", "| name | value |", "|---|---|"]
    for name in sorted(plain):
        text = repr(getattr(gradchain, name)).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `gradchain.{name}` | `{text[:120]}` |")
    lines.append("")
    for name in namespaces:
        module = getattr(gradchain, name)
        lines += [f"## gradchain.{name}", "", "```{eval-rst}", f".. automodule:: gradchain.{name}", ""]
        members = [
            m for m in getattr(module, "__all__", [])
            if inspect.isfunction(getattr(module, m)) or inspect.isclass(getattr(module, m))
        ]
        constants = [m for m in getattr(module, "__all__", []) if m not in members]
        if constants:
            lines += ["", "Constants: " + ", ".join(f"``gradchain.{name}.{m}``" for m in constants), ""]
        if members:
            lines += [".. autosummary::", "   :toctree: generated", ""]
            lines += [f"   gradchain.{name}.{m}" for m in sorted(members)]
        lines += ["```", ""]
    return "\n".join(lines)


(Path(__file__).parent / "api.md").write_text(_api_page())
