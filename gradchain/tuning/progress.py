"""Progress bars for long calls: tqdm when attached to a terminal, silent otherwise."""

from __future__ import annotations

import contextlib
import sys


class _Silent:
    def update(self, n: int = 1) -> None:
        pass


def wants_progress(enable: bool | None) -> bool:
    """``None``: a bar only when stderr is a terminal."""
    return sys.stderr.isatty() if enable is None else bool(enable)


@contextlib.contextmanager
def progress_bar(total: int, desc: str, enable: bool | None = None, unit: str = "it"):
    """A tqdm bar (with its rate and ETA) when wanted and tqdm is installed, else a silent one."""
    bar = None
    if wants_progress(enable):
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, desc=desc, leave=False, unit=unit)
        except ImportError:
            bar = None
    try:
        yield bar if bar is not None else _Silent()
    finally:
        if bar is not None:
            bar.close()
