"""gradchain._optional: one line saying what to install, before any work."""

import importlib.util

import pytest

from gradchain._optional import missing, require


def test_require_returns_the_module():
    assert require("json", extra="plot").dumps([1]) == "[1]"


def test_require_names_the_extra_in_one_line():
    with pytest.raises(ModuleNotFoundError) as info:
        require("gradchain_no_such_module", extra="plot", purpose="the recipe's pictures")
    message = str(info.value)
    assert "\n" not in message and "pip install 'gradchain[plot]'" in message
    assert message.startswith("gradchain the recipe's pictures needs gradchain_no_such_module")


def test_missing_uses_distribution_names(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    assert missing("PIL", "sklearn", extra="samples") == (
        "gradchain needs pillow, scikit-learn: pip install 'gradchain[samples]'"
    )
    monkeypatch.undo()
    assert missing("json", extra="plot") is None
