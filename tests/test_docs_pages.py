"""The hand-written docs pages of ``gradchain.tuning``, kept true by running them.

``docs/tuning.md`` (the reference) must list every name of ``gradchain.tuning.__all__``.
``docs/recipe_steps.md`` is a walk-through: its Python blocks run in order, in one namespace, in
an empty folder — the recipe's steps one by one (the default run), then the recipe itself on the
same trial store, which must reuse every stored trial and give the same numbers (``--runslow``:
it compiles the sanity checks and the final stage again).
"""

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGE = DOCS / "recipe_steps.md"


def python_blocks(path: Path) -> list[tuple[int, str]]:
    """``(line number, code)`` of every ```` ```python ```` block of a Markdown page."""
    text = path.read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 2, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", text, flags=re.M | re.S)]


BLOCKS = python_blocks(PAGE)
STEPS = [b for b in BLOCKS if "tuning.recipe(" not in b[1]]
RECIPE = [b for b in BLOCKS if "tuning.recipe(" in b[1]]


def _run(blocks, namespace):
    for line, code in blocks:
        exec(compile(code, f"docs/recipe_steps.md:{line}", "exec"), namespace)


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    """The page's steps, run once in an empty folder: ``(folder, namespace)``."""
    folder = tmp_path_factory.mktemp("recipe_steps")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MPLBACKEND", "Agg")
        namespace = {"__name__": "__docs__"}
        _run(STEPS, namespace)
    return folder, namespace


def test_tuning_reference_lists_every_public_name():
    from gradchain import tuning

    text = (DOCS / "tuning.md").read_text(encoding="utf-8")
    missing = [name for name in tuning.__all__ if f"gradchain.tuning.{name}" not in text]
    assert not missing, f"docs/tuning.md does not document {missing}: add them to a group's autosummary"


def test_recipe_steps_page_calls_every_step():
    text = PAGE.read_text(encoding="utf-8")
    code = "\n".join(c for _, c in BLOCKS)
    for heading in ("## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "## 6.", "## 7.", "## The final stage"):
        assert heading in text
    for call in ("check_initial_loss(", "overfit_small_sample(", "lr_finder(", "population_evaluate(", "make_fit(",
                 "run_trials(", "refine(", "sample(", "diagnose(", "next_round(", "train_population(",
                 "evaluate_ensemble(", "tuning.recipe("):
        assert call in code, call
    assert len(RECIPE) == 1 and RECIPE[0] == BLOCKS[-1]  # the recipe comes last: the steps do not need it


def test_recipe_steps_page_runs_in_order(steps):
    folder, ns = steps
    assert (folder / "report" / "trials.jsonl").stat().st_size > 0
    assert ns["found"].kind == "as_expected"
    assert {f.kind for f in ns["findings"]} <= set(ns["tuning"].FINDINGS)
    assert 0.5 < ns["report"].ensemble <= 1.0 and len(ns["report"].members) == ns["settings"].ensemble


@pytest.mark.slow
def test_recipe_reuses_the_pages_trials_and_gives_its_numbers(steps):
    folder, ns = steps
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv("MPLBACKEND", "Agg")
        _run(RECIPE, ns)  # the block asserts: nothing searched again, same choices, same test numbers
    assert (folder / "report" / "report.md").is_file()
