"""Step 3 of the recipe: find a learning rate that makes the loss drop within ~100 iterations.

All candidate rates train at once as one population (``vmap``), on all the data, with a small
weight decay.  Each candidate is scored by the *robust* drop of its loss: the median of the last
``window`` losses against the initial loss — a median, so a single spike does not fool the finder
(peer finders that pick the steepest slope or the point before the minimum of a raw or
exponentially smoothed curve are moved by spikes).  Runs that produce a NaN or Inf, or whose
running median rises above 1.5× the initial loss, are disqualified.  The "good" rates are those whose drop is at least ``tolerance`` × the
best drop; the finder returns the next rate below the largest good one when that one is good too
(the largest good rate is often at the edge of divergence), else the largest good rate.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from gradchain.protocol import Split, Trainable
from gradchain.tuning.search import TrialStore, run_trials
from gradchain.tuning.training import make_fit, population_evaluate

DEFAULT_RATES = tuple(float(r) for r in np.logspace(0, -5, 16))  # 1e0 ... 1e-5, includes 1e-1..1e-4


class LRFinderResult(NamedTuple):
    kind: str  # "found" or "none_decreased"
    learning_rate: float  # NaN when no rate made the loss go down
    rates: np.ndarray
    drops: np.ndarray  # robust relative loss drop per rate (NaN: diverged)
    losses: np.ndarray  # [rates, steps]
    message: str


def lr_finder(trainable: Trainable, make_optimizer: Callable[[Mapping[str, Any]], Any], data: Split, key: jax.Array,
              config: Mapping[str, Any] | None = None, *, rates=DEFAULT_RATES, steps: int = 100, batch_size: int = 64,
              window: int = 10, tolerance: float = 0.9, select: str = "val_accuracy", mode: str = "max",
              store: str | os.PathLike | TrialStore | None = None, progress: bool | None = None) -> LRFinderResult:
    """Step 3: train ``len(rates)`` runs of ``steps`` steps as one population and pick the rate.

    Every run starts from ``key`` (same init, same minibatches); ``make_optimizer`` receives
    ``config | {"learning_rate": rate}`` (``config``: every other hyperparameter the run reads; a
    small weight decay is the lecture's advice; ``select`` names a metric ``evaluate`` reports, as
    for :func:`make_fit`).  With ``store`` the runs are trial records
    (:func:`gradchain.tuning.run_trials`): a rerun reuses them.
    """
    rates = np.asarray(rates, np.float64)
    if rates.ndim != 1 or len(rates) < 2 or not np.all(np.isfinite(rates)) or np.any(rates <= 0):
        raise ValueError(f"rates must be at least two positive finite numbers, got {rates!r}")
    if not isinstance(window, int) or not 0 < 2 * window <= steps:
        raise ValueError(f"window must be a positive int with 2*window <= steps={steps}, got {window!r}")
    if not 0 < tolerance <= 1:
        raise ValueError(f"tolerance must be in (0, 1], got {tolerance!r}")
    config = dict(config or {})
    if "learning_rate" in config:
        raise ValueError(f"config must not hold 'learning_rate' (the finder sets it), got {config['learning_rate']!r}")
    fit = make_fit(trainable, make_optimizer, data, steps=steps, batch_size=batch_size, select=select, mode=mode)
    configs = [config | {"learning_rate": float(r)} for r in rates]
    evaluate = population_evaluate(fit, key, progress=progress, desc="3. LR finder")
    records = run_trials(configs, evaluate, store=store, population=len(configs), progress=False)
    losses = np.asarray([r["history"]["losses"] for r in records])
    drops = np.array([_robust_drop(run, window) for run in losses])
    if not np.any(np.isfinite(drops) & (drops > 0)):
        return LRFinderResult("none_decreased", float("nan"), rates, drops, losses,
                              "no learning rate made the loss go down: check the model and the data")
    best = np.nanmax(drops)
    pick = pick_rate(rates, drops, tolerance)
    lr = float(rates[pick])
    message = (f"learning rate {lr:.3g}: loss drop {drops[pick]:.0%} in {steps} steps "
               f"(best drop {best:.0%} at {rates[np.nanargmax(drops)]:.3g}); "
               f"{int(np.sum(~np.isfinite(drops)))} of {len(rates)} rates diverged")
    return LRFinderResult("found", lr, rates, drops, losses, message)


def pick_rate(rates: np.ndarray, drops: np.ndarray, tolerance: float = 0.9) -> int:
    """The index of the chosen rate: the next rate below the largest "good" one (drop ≥
    ``tolerance`` × the best) when that one is good too, else the largest good rate.  At least one
    drop must be finite and positive."""
    good = np.isfinite(drops) & (drops >= tolerance * np.nanmax(drops))
    order = np.argsort(rates)[::-1]  # largest first
    largest_good = next(i for i in order if good[i])
    position = list(order).index(largest_good)
    return int(order[position + 1] if position + 1 < len(order) and good[order[position + 1]] else largest_good)


def _robust_drop(losses: np.ndarray, window: int) -> float:
    """``1 - median(last window) / initial loss``; NaN when the run was not stable.

    The initial loss is the first minibatch's, measured before any update (the same for every
    rate).  A run is unstable when it produced a NaN/Inf or when the running median over
    ``window`` steps ever rose above 1.5× the initial loss — a median, so a lone spike does not
    disqualify a good rate, but a sustained blow-up does.
    """
    if not np.all(np.isfinite(losses)):
        return float("nan")
    initial = float(losses[0])
    if initial <= 0:
        return float("nan")
    windows = np.lib.stride_tricks.sliding_window_view(losses, window)
    if np.max(np.median(windows, axis=1)) > 1.5 * initial:
        return float("nan")
    return float(1.0 - np.median(losses[-window:]) / initial)
