"""Every Python block of the README runs on its own (a fresh namespace, an empty directory)."""

import importlib.util
import os

import pytest
from readme_blocks import TYPING_FILE, blocks, render_typing_file

BLOCKS = blocks()


def test_readme_has_blocks():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("line, code", BLOCKS, ids=[f"line{line}" for line, _ in BLOCKS])
def test_readme_block_runs_standalone(line, code, tmp_path):
    if "sample_images" in code and not all(importlib.util.find_spec(m) for m in ("sklearn", "PIL")):
        pytest.skip("needs gradchain[samples]")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(code, f"README.md:{line}", "exec"), {"__name__": "__readme__"})
    finally:
        os.chdir(cwd)


def test_typing_file_is_up_to_date():
    # pyright checks tests/typing/readme_examples.py; regenerate: python tests/readme_blocks.py
    assert TYPING_FILE.read_text() == render_typing_file()
