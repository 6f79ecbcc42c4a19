"""Progress bars for long calls: tqdm when attached to a terminal, silent otherwise."""

from __future__ import annotations

import contextlib
import sys


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


@contextlib.contextmanager
def progress_bar(total: int, desc: str, enable: bool | None = None):
    """``enable=None``: show a bar only when stderr is a terminal and tqdm is installed."""
    if enable is None:
        enable = sys.stderr.isatty()
    bar = None
    if enable:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=desc, leave=False)
        except ImportError:
            bar = None
    try:
        yield bar if bar is not None else _Silent()
    finally:
        if bar is not None:
            bar.close()
