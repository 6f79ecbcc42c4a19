"""The wheel, installed with its core dependencies only in a fresh venv, runs from an empty
directory: ``import gradchain``, the README's first optimizer example, and the main job's small
setting (``SMOKE_COMMAND``).  Slow (a venv and an install): CI runs it with ``--runslow``.

Change the main job's command in one place: ``SMOKE_COMMAND`` below, or the environment variable
``GRADCHAIN_SMOKE_COMMAND`` (words split on spaces, run with the venv's python).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from readme_blocks import blocks

ROOT = Path(__file__).resolve().parent.parent
SMOKE_COMMAND = os.environ.get("GRADCHAIN_SMOKE_COMMAND", "-m gradchain recipe --small --out report")

pytestmark = pytest.mark.slow


def _run(cmd, cwd, timeout=900, check=True):
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory):
    """A venv with the built wheel and only its declared core dependencies."""
    work = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(work / "dist"), str(ROOT)], cwd=work)
    (wheel,) = (work / "dist").glob("gradchain-*.whl")
    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=work)
    python = venv / "bin" / "python"
    # -c constraints.txt: the versions the suite runs with (and pip's cache already has)
    _run([str(python), "-m", "pip", "install", "-q", "-c", str(ROOT / "constraints.txt"), str(wheel)], cwd=work)
    empty = work / "empty"
    empty.mkdir()
    return python, empty, wheel


def test_core_dependencies_are_small():
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(">")[0].split("=")[0].split("[")[0].strip().lower() for d in core}
    assert names <= {"jax", "numpy", "tqdm"}, names  # no scikit-learn, scipy, matplotlib


def test_wheel_ships_the_data_license_and_types(fresh_venv):
    _, _, wheel = fresh_venv
    import zipfile

    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"gradchain/py.typed", "gradchain/_data/digits.csv.gz", "gradchain/_data/README.md"} <= names
    assert any(n.endswith("licenses/LICENSE") for n in names), sorted(n for n in names if "dist-info" in n)


def test_fresh_install_imports_and_runs_the_readme_example(fresh_venv):
    python, empty, _ = fresh_venv
    freeze = _run([str(python), "-m", "pip", "freeze"], cwd=empty).stdout.lower()
    for heavy in ("scikit-learn", "matplotlib", "flax", "optax", "pillow"):  # scipy comes with jax
        assert f"\n{heavy}==" not in f"\n{freeze}", f"{heavy} installed with the core wheel"
    _, first_block = blocks()[0]
    script = first_block + "\nprint(jax.tree.map(lambda x: x.shape, step(params, state, params)[0]))\n"
    out = _run([str(python), "-c", script], cwd=empty)
    assert "'w': (3, 2)" in out.stdout
    digits = _run([str(python), "-c", "import gradchain.examples.digits as d; s = d.digits(); print(s.x_train.shape, s.x_val.shape)"], cwd=empty)
    assert "(1438, 64) (359, 64)" in digits.stdout
    size = _run([str(python), "-c", "import sysconfig, json; print(json.dumps(sysconfig.get_paths()['purelib']))"], cwd=empty)
    site = Path(json.loads(size.stdout))
    total = sum(f.stat().st_size for f in site.rglob("*") if f.is_file()) / 2**20
    print(f"\ncore install: {total:.0f} MiB in {site}")


def test_fresh_install_runs_the_main_job_or_says_what_to_install(fresh_venv):
    python, empty, _ = fresh_venv
    result = _run([str(python), *SMOKE_COMMAND.split()], cwd=empty, timeout=1200, check=False)
    if result.returncode == 0:
        return
    # Otherwise it must stop before any work with one line naming what to install.
    err = result.stderr.strip()
    assert "Traceback" not in err and "pip install" in err and len(err.splitlines()) == 1, err[-3000:]


def teardown_module(module):
    shutil.rmtree(ROOT / "build", ignore_errors=True)
