"""docs/optimizers.md documents every optimizer: each one of the lecture's, of the zoo and of
``gradchain.contrib`` has a section heading and a row in the summary table, and no section names
an optimizer that does not exist.

The optimizers are found from the public lists, so a new one fails this test until the page has
it: the lecture's are what ``gradchain.optimizers`` exports at the top level, the zoo's and
contrib's are their ``__all__`` minus the transforms, pieces and types (below)."""

import inspect
import re
from pathlib import Path

import gradchain as gc

PAGE = Path(__file__).resolve().parent.parent / "docs" / "optimizers.md"

# Names in gradchain.zoo.__all__ / gradchain.contrib.__all__ that are building blocks, not
# optimizers: transforms by prefix, and the few pieces and helpers named otherwise.
TRANSFORM_PREFIXES = ("scale_by_", "clip_", "adaptive_grad_clip", "centralize", "normalize", "orthogonalize_")
NOT_OPTIMIZERS = {
    "hutchinson_estimator_diag_hessian",  # Sophia's Hessian estimate
    "schedule_free",  # the wrapper the schedule-free optimizers are built from
    "schedule_free_eval_params",  # where to evaluate a schedule-free optimizer
}
# gradchain.optimizers exports these next to the optimizers: a wrapper, documented as one.
LECTURE_WRAPPERS = {"inject_hyperparams"}


def is_optimizer(namespace, name: str) -> bool:
    obj = getattr(namespace, name)
    return inspect.isfunction(obj) and not name.startswith(TRANSFORM_PREFIXES) and name not in NOT_OPTIMIZERS


def lecture_optimizers() -> list[str]:
    return [
        name
        for name in gc.__all__
        if inspect.isfunction(getattr(gc, name))
        and getattr(gc, name).__module__ == "gradchain.optimizers"
        and name not in LECTURE_WRAPPERS
    ]


def documented_optimizers() -> list[str]:
    names = lecture_optimizers()
    names += [name for name in gc.zoo.__all__ if is_optimizer(gc.zoo, name)]
    names += [name for name in gc.contrib.__all__ if is_optimizer(gc.contrib, name)]
    return names


def read_page(path: Path | None = None) -> str:
    return (PAGE if path is None else path).read_text(encoding="utf-8")


def headings(text: str) -> set[str]:
    """The names of the ``### `name` `` section headings."""
    return set(re.findall(r"^#{2,4}\s+`([A-Za-z_][A-Za-z0-9_]*)`\s*$", text, flags=re.MULTILINE))


def table_rows(text: str) -> set[str]:
    """The names in the first column of the page's tables (``| `name` | ...``)."""
    return set(re.findall(r"^\|\s*`([A-Za-z_][A-Za-z0-9_]*)`\s*\|", text, flags=re.MULTILINE))


def missing(text: str, names: list[str]) -> dict[str, list[str]]:
    heads, rows = headings(text), table_rows(text)
    return {
        "no section heading": [n for n in names if n not in heads],
        "no summary-table row": [n for n in names if n not in rows],
    }


def test_the_optimizer_lists_are_what_the_page_is_checked_against():
    """The filters keep the optimizers and drop the transforms (a guard on the guard)."""
    names = documented_optimizers()
    assert {"sgd", "adagrad", "rmsprop", "adam", "adamw", "nadam"} <= set(names)
    assert {"lion", "yogi", "adafactor", "lamb", "lars", "sm3"} <= set(names)
    assert {"muon", "sophia", "sam", "prodigy", "schedule_free_adamw"} <= set(names)
    for transform in (
        "scale_by_trust_ratio",
        "clip_by_block_rms",
        "adaptive_grad_clip",
        "centralize",
        "scale_by_muon",
        "normalize",
        "schedule_free",
        "inject_hyperparams",
    ):
        assert transform not in names
    assert len(names) == len(set(names)), "an optimizer name appears in two namespaces"


def test_every_optimizer_has_a_section_and_a_summary_row():
    gaps = missing(read_page(), documented_optimizers())
    assert gaps == {"no section heading": [], "no summary-table row": []}, (
        f"docs/optimizers.md is missing optimizers: {gaps}"
    )


def test_every_section_names_an_existing_optimizer():
    known = set(documented_optimizers())
    stale = sorted(headings(read_page()) - known)
    assert not stale, f"docs/optimizers.md has sections for names that are not optimizers: {stale}"


def test_the_check_fails_when_a_name_is_removed(tmp_path):
    """The completeness check can fail: a copy of the page without Lion's heading and row."""
    text = read_page()
    lines = [line for line in text.splitlines() if "`lion`" not in line]
    copy = tmp_path / "optimizers.md"
    copy.write_text("\n".join(lines), encoding="utf-8")
    gaps = missing(read_page(copy), documented_optimizers())
    assert gaps == {"no section heading": ["lion"], "no summary-table row": ["lion"]}
