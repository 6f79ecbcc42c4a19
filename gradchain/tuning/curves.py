"""Learning curves: losses are noisy, so plot the raw points and a moving average."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def moving_average(values, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start); NaNs are skipped.

    Same length as ``values``, so it plots against the same steps.
    """
    if not isinstance(window, int) or window <= 0:
        raise ValueError(f"window must be a positive int, got {window!r}")
    v = np.asarray(values, np.float64)
    if v.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {v.shape}")
    finite = np.isfinite(v)
    sums = np.cumsum(np.where(finite, v, 0.0))
    counts = np.cumsum(finite)
    lagged = lambda a: np.concatenate([np.zeros(window), a[:-window]]) if len(a) > window else np.zeros_like(a)
    n = counts - lagged(counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (sums - lagged(sums)) / np.maximum(n, 1), np.nan)


def plot_loss_curves(curves: Mapping[str, np.ndarray], path: str | None = None, window: int = 25, title: str = ""):
    """One panel: for each run, raw losses as faint points and their moving average as a line."""
    if path is None:  # interactive: let pyplot show it (notebooks)
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 5))
    else:  # a file: no GUI backend needed
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 5))
        ax = fig.subplots()
    for i, (name, losses) in enumerate(curves.items()):
        losses = np.asarray(losses)
        steps = np.arange(len(losses))
        color = f"C{i % 10}"
        ax.scatter(steps, losses, s=2, alpha=0.15, color=color)
        ax.plot(steps, moving_average(losses, window), color=color, label=name)
    ax.set(xlabel="step", ylabel="training loss", yscale="log", title=title)
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
