"""The notebooks' install line comes from one place: pyproject.toml, [tool.gradchain]
notebook-install (the notebooks draw, and three import scikit-learn or pillow)."""

import json
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
INSTALL = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["gradchain"]["notebook-install"]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _install_lines(path):
    cells = json.loads(path.read_text())["cells"]
    source = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
    return [m.group(1) for s in source for m in re.finditer(r"pip install -q \"([^\"]+)\"", s)]


def test_install_line_names_the_extras_the_notebooks_need():
    extras = set(re.match(r"gradchain\[([^\]]*)\]", INSTALL).group(1).split(","))
    assert {"plot", "samples", "flax"} <= extras


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_installs_with_the_one_line(path):
    assert _install_lines(path) == [INSTALL]
