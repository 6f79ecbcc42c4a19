"""Optional dependencies: one clear line saying what to install, before any work is done.

    from gradchain._optional import require
    require("matplotlib", extra="plot")   # raises ModuleNotFoundError: "... pip install 'gradchain[plot]'"

``require`` returns the imported module; ``missing`` returns the message (or ``None``) without
raising, for a command line that wants to print it and exit.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

__all__ = ["missing", "require"]

# import name -> distribution name, where they differ
_DISTRIBUTIONS = {"PIL": "pillow", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}


def missing(*modules: str, extra: str, purpose: str = "") -> str | None:
    """The one-line install message if any of ``modules`` is not importable, else ``None``."""
    absent = [m for m in modules if importlib.util.find_spec(m) is None]
    if not absent:
        return None
    names = ", ".join(_DISTRIBUTIONS.get(m, m) for m in absent)
    what = f" {purpose}" if purpose else ""
    return f"gradchain{what} needs {names}: pip install 'gradchain[{extra}]'"


def require(module: str, *, extra: str, purpose: str = "") -> ModuleType:
    """Import ``module``, or raise ``ModuleNotFoundError`` with the one-line install message."""
    message = missing(module, extra=extra, purpose=purpose)
    if message is not None:
        raise ModuleNotFoundError(message, name=module)
    return importlib.import_module(module)
