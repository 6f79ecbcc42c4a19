"""Learning curves: losses are noisy, so plot the raw points and a moving average."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from typing import NamedTuple

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


class Finding(NamedTuple):
    """What a learning curve shows: ``kind`` (one of :data:`FINDINGS`), the ``evidence`` (the
    numbers it was read from) and a ``message`` for people.  Policies switch on ``kind``; reports
    print ``message`` (``str(finding)``)."""

    kind: str
    message: str
    evidence: dict[str, float]

    def __str__(self) -> str:
        return self.message


FINDINGS = ("diverged", "plateau", "bad_init", "rising", "overfitting", "underfitting", "healthy")


def diagnose(losses, train_metric=None, val_metric=None, *, higher_is_better: bool = True,
             gap_threshold: float = 0.05) -> list[Finding]:
    """What the lecture reads from curves, as :class:`Finding` s.

    - ``diverged``: a NaN/Inf loss (learning rate too high, or bad initialisation);
    - ``plateau``: the median of the last tenth of the losses above 0.95 × the first tenth's;
    - ``bad_init``: flat at the start (second tenth > 0.97 × first), then falling below half;
    - ``rising``: the last tenth 1.5 × above the lowest moving average (decay the rate);
    - ``overfitting``: a train/validation gap of the metric above ``gap_threshold`` that grew by
      more than 0.02 since the first evaluation;
    - ``underfitting``: a gap below 0.01 while the training metric is still short of 0.99 (for
      a metric where higher is better, e.g. accuracy);
    - ``healthy``: none of these.

    ``train_metric`` / ``val_metric`` are the metric at each evaluation (higher is better unless
    ``higher_is_better=False``: a loss or an error, whose sign is flipped before comparing).
    """
    losses = np.asarray(losses, np.float64)
    if losses.ndim != 1 or len(losses) == 0:
        raise ValueError(f"losses must be a non-empty 1-d sequence, got shape {losses.shape}")
    if not np.all(np.isfinite(losses)):
        step = int(np.argmin(np.isfinite(losses)))
        return [Finding("diverged", f"loss became {losses[step]} at step {step}: learning rate too high (or bad "
                        "initialisation)", {"step": step})]
    notes = []
    n = len(losses)
    w = max(1, n // 10)
    start, early, end = np.median(losses[:w]), np.median(losses[w : 2 * w]) if n >= 2 * w else np.nan, np.median(losses[-w:])
    evidence = {"start": float(start), "end": float(end)}
    if end > 0.95 * start:
        notes.append(Finding("plateau", f"loss not going down ({start:.3g} → {end:.3g}): learning rate too low, or a "
                             "bug in the loss", evidence))
    elif np.isfinite(early) and early > 0.97 * start and end < 0.5 * start:
        notes.append(Finding("bad_init", "flat at the start, then falling: bad initialisation",
                             evidence | {"early": float(early)}))
    lowest = float(np.min(moving_average(losses, w)))
    if end > 1.5 * lowest:
        notes.append(Finding("rising", f"loss rising at the end ({lowest:.3g} → {end:.3g}): learning rate too high "
                             "for this stage, decay it", evidence | {"lowest": lowest}))
    if train_metric is not None and val_metric is not None and len(np.atleast_1d(train_metric)) >= 2:
        sign = 1.0 if higher_is_better else -1.0
        train, val = sign * np.asarray(train_metric, np.float64), sign * np.asarray(val_metric, np.float64)
        gap = train - val
        numbers = {"gap": float(gap[-1]), "first_gap": float(gap[0]), "train": float(sign * train[-1]),
                   "val": float(sign * val[-1])}
        if not np.all(np.isfinite(gap)):
            pass  # a metric went NaN: the loss finding says why
        elif gap[-1] > gap_threshold and gap[-1] > gap[0] + 0.02:
            notes.append(Finding("overfitting", f"train/val gap growing to {gap[-1]:.3g}: overfitting — more "
                                 "regularisation or more data", numbers))
        elif gap[-1] < 0.01 and higher_is_better and train[-1] < 0.99:
            notes.append(Finding("underfitting", f"no train/val gap and the training metric at {train[-1]:.3g}: "
                                 "underfitting — train longer or use a bigger model", numbers))
    return notes or [Finding("healthy", "healthy: loss falls and the train/val gap is small", evidence)]


def command_center(runs: list[dict], path: str | None = None, window: int = 25, columns: int = 4,
                   metric: str = "accuracy"):
    """The lecture's "cross-validation command center": a small panel per configuration with the
    raw training losses and their moving average (left axis, log scale) and the train and
    validation ``metric`` (right axis), with labelled axes and one legend for the whole figure.

    Each run: ``{"title": str, "losses": [...], "train_<metric>": [...], "val_<metric>": [...]}``
    (metrics at evenly spaced evaluations; ``"train_acc"``/``"val_acc"`` are read too).
    """
    if not runs:
        raise ValueError("runs must hold at least one run, got an empty list")
    if path is None:
        import matplotlib.pyplot as plt

        make = lambda **kw: plt.figure(**kw)
    else:
        from matplotlib.figure import Figure

        make = lambda **kw: Figure(**kw)
    columns = min(columns, len(runs))
    rows = -(-len(runs) // columns)
    fig = make(figsize=(3.4 * columns, 2.6 * rows + 0.6))
    axes = fig.subplots(rows, columns, squeeze=False)
    handles = {}
    for i, (ax, run) in enumerate(zip(axes.flat, runs)):
        losses = np.asarray(run["losses"], np.float64)
        steps = np.arange(1, len(losses) + 1)
        handles["raw loss"] = ax.scatter(steps, losses, s=1, alpha=0.25, color="C0")
        (handles[f"loss, moving average of {window}"],) = ax.plot(steps, moving_average(losses, window), color="C0")
        ax.set_yscale("log")
        ax.set_title(textwrap.fill(run.get("title", ""), 34), fontsize=7)  # wrapped: neighbours' titles never touch
        ax.tick_params(labelsize=6)
        if i % columns == 0:
            ax.set_ylabel("training loss", fontsize=7)
        if i >= (rows - 1) * columns or i + columns >= len(runs):
            ax.set_xlabel("step", fontsize=7)
        train = run.get(f"train_{metric}", run.get("train_acc"))
        val = run.get(f"val_{metric}", run.get("val_acc"))
        if val is not None:
            other = ax.twinx()
            evals = np.linspace(len(losses) / len(val), len(losses), len(val))
            if train is not None:
                (handles[f"train {metric}"],) = other.plot(evals, train, color="C2", lw=1.2)
            (handles[f"validation {metric}"],) = other.plot(evals, val, color="C3", lw=1.2)
            if metric == "accuracy":
                other.set_ylim(0, 1.02)
            other.tick_params(labelsize=6)
            if i % columns == columns - 1 or i == len(runs) - 1:
                other.set_ylabel(metric, fontsize=7)
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    fig.legend(list(handles.values()), list(handles), loc="upper center", ncol=len(handles), fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def plot_band(losses, path: str | None = None, window: int = 25, title: str = ""):
    """Many runs of one configuration (ensemble members, seeds): the median of their moving
    averages as a line, the band between the lowest and highest member, every member faint."""
    runs = np.asarray(losses, np.float64)
    if runs.ndim != 2 or runs.shape[0] == 0:
        raise ValueError(f"losses must be [runs, steps], got shape {runs.shape}")
    if path is None:
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(8, 5))
    else:
        from matplotlib.figure import Figure

        fig = Figure(figsize=(8, 5))
        ax = fig.subplots()
    smooth = np.stack([moving_average(r, window) for r in runs])
    steps = np.arange(1, runs.shape[1] + 1)
    for r in smooth:
        ax.plot(steps, r, color="C0", lw=0.5, alpha=0.3)
    ax.fill_between(steps, np.nanmin(smooth, 0), np.nanmax(smooth, 0), color="C0", alpha=0.2,
                    label=f"all {len(runs)} members (min–max)")
    ax.plot(steps, np.nanmedian(smooth, 0), color="C0", lw=2, label="median member")
    ax.set(xlabel="step", ylabel=f"training loss (moving average of {window})", yscale="log", title=title)
    ax.legend()
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig
