"""Every notebook runs top to bottom in its small setting (GRADCHAIN_SMALL=1)."""

import importlib.util
import json
import pathlib
import re

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
# What a notebook may import beyond gradchain's core dependencies (jax, numpy): each comes with
# an extra or the test extra, so a checkout without it skips that notebook, saying what to install.
OPTIONAL = {"matplotlib": "matplotlib", "sklearn": "scikit-learn", "flax": "flax", "optax": "optax", "optuna": "optuna",
            "PIL": "pillow", "scipy": "scipy", "IPython": "ipython", "torch": "torch", "torchvision": "torchvision"}


def imported_modules(path):
    """The top-level modules the notebook's code cells import."""
    cells = json.loads(path.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    return set(re.findall(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)", code, flags=re.M))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel", reason="the notebooks run in a python3 Jupyter kernel: pip install ipykernel")
    missing = sorted(OPTIONAL[m] for m in imported_modules(path) & set(OPTIONAL) if importlib.util.find_spec(m) is None)
    if missing:
        pytest.skip(f"{path.name} imports {', '.join(missing)}: pip install {' '.join(missing)}")
    monkeypatch.setenv("GRADCHAIN_SMALL", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
