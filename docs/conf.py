"""Sphinx configuration: MyST Markdown pages, autodoc + napoleon for the Google-style docstrings,
one autosummary page per public name (``gradchain.__all__``), and the notebooks of ``notebooks/``
rendered by MyST-NB, executed during the build in their small setting (``GRADCHAIN_SMALL=1``) so
that their pictures are on the pages (``GRADCHAIN_DOCS_EXECUTE=0``: not executed, a quick build).
``tuning.md`` and ``recipe_steps.md`` are hand-written (the tuning reference and its walk-through).
Built with warnings as errors: ``make docs`` (``sphinx-build -W --keep-going -b html docs
docs/_build/html``)."""

from __future__ import annotations

import inspect
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# The notebooks run in their small setting (inherited by the kernels).  Their figures need the
# kernel's inline backend (no display needed): MPLBACKEND=Agg, which the tests use, would make
# plt.show() draw nothing, so it is replaced here.
os.environ.setdefault("GRADCHAIN_SMALL", "1")
if os.environ.get("MPLBACKEND", "").lower() in ("", "agg"):
    os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"

import gradchain  # noqa: E402

project = "gradchain"
author = "The gradchain authors"
copyright = "the gradchain authors, Apache-2.0"  # noqa: A001
release = gradchain.__version__

extensions = [
    "myst_nb",  # MyST-NB: includes myst_parser, and reads and executes the .ipynb files
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
# ".rst" first: autosummary writes its generated stubs (reStructuredText) with the first suffix
# whose parser reads reStructuredText, and it takes ".md" for one; stubs named ".md" would be read
# by MyST and show their directives as text instead of the docstrings.
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
# notebooks/*/: what the notebooks write while they run (05's recipe report), not pages;
# generated/*.md: stubs an older build wrote under the wrong suffix.
exclude_patterns = ["_build", "api/generated/*.md", "generated/*.md", "notebooks/*/**"]
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

# Notebooks: executed on every build (no cache), in their own folder (05 shows the pictures its
# report wrote there); an error in a cell fails the build.  GRADCHAIN_DOCS_EXECUTE=0 renders them
# unexecuted (they are stored without outputs), for a quick check of the other pages; `make docs`
# and CI leave it unset and execute every notebook.
nb_execution_mode = "off" if os.environ.get("GRADCHAIN_DOCS_EXECUTE", "1") == "0" else "force"
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_output_stderr = "show"

# sphinx-book-theme (on pydata-sphinx-theme): the article takes the whole width between the
# sidebars (no fixed ~60-character column; long code lines scroll), a page table of contents on
# the right, and the built-in search box (Sphinx's own index) in the left sidebar.
html_theme = "sphinx_book_theme"
html_title = f"gradchain {release}"
html_theme_options = {
    "repository_url": "https://github.com/gradchain/gradchain",
    "repository_branch": "main",
    "path_to_docs": "docs",
    "use_repository_button": True,
    "use_issues_button": True,
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "show_toc_level": 2,
}


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
        alias = inspect.isclass(obj) and obj.__name__ != name  # `NewName = OldClass`: a row, not a page
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or not module.startswith("gradchain") or alias:
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
        obj = getattr(gradchain, name)
        if inspect.isclass(obj) and obj.__name__ != name:
            lines.append(f"| `gradchain.{name}` | alias of `{obj.__module__}.{obj.__qualname__}` |")
            continue
        text = repr(obj).replace("|", "\\|").replace("\n", " ")
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


def _copy_notebooks() -> None:
    """``docs/notebooks/``: a fresh copy of ``notebooks/*.ipynb`` on every build (git-ignored), so
    that nothing a previous run wrote there (05's resumable recipe folder) is reused."""
    target = Path(__file__).parent / "notebooks"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir()
    for notebook in sorted((ROOT / "notebooks").glob("*.ipynb")):
        shutil.copy2(notebook, target / notebook.name)


_copy_notebooks()


def _report_images(app, doctree) -> None:
    """A notebook that shows a Markdown report it wrote (05: ``recipe-nnx-cnn/report.md``) links
    the report's pictures relative to the report's folder; point such a link at the one picture
    of that name in a folder the notebook wrote, before Sphinx collects the images."""
    from docutils import nodes

    docname = app.env.docname
    if not docname.startswith("notebooks/"):
        return
    here = Path(app.srcdir) / docname
    for node in doctree.findall(nodes.image):
        uri = node["uri"]
        if "://" in uri or uri.startswith("data:") or (here.parent / uri).exists():
            continue
        found = sorted(here.parent.glob(f"*/{uri}"))
        if len(found) == 1:
            node["uri"] = found[0].relative_to(here.parent).as_posix()


def setup(app):
    app.connect("doctree-read", _report_images, priority=400)  # before the image collector (500)
