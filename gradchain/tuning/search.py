"""Steps 4–5 of the recipe: coarse grid or random search, then refine around the best.

Search spaces are dicts ``name -> list of values`` (grid) or ``name -> distribution`` (random).
Random search draws trial *i* from ``fold_in(key, i)``, so a search is reproducible and an
interrupted one resumes with the same configurations.  Trials are evaluated a population at a
time (``evaluate(list_of_configs) -> list_of_metrics``); each result is appended to a JSON-lines
file as soon as it is known (flushed and fsynced), and a search started again on the same file
skips the trials already there: nothing finished is lost or repeated, even after SIGKILL.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import numpy as np

Config = dict[str, float]
Metrics = dict[str, float]


class LogUniform(NamedTuple):
    """log x ~ U[log low, log high] — the right prior for rates (Bergstra & Bengio, JMLR 2012)."""

    low: float
    high: float

    def sample(self, u: float) -> float:
        return float(math.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low))))


class Uniform(NamedTuple):
    low: float
    high: float

    def sample(self, u: float) -> float:
        return float(self.low + u * (self.high - self.low))


def _check_space(space: Mapping[str, Any], grid: bool) -> None:
    if not isinstance(space, Mapping) or not space:
        raise ValueError(f"space must be a non-empty dict of hyperparameter -> values, got {space!r}")
    for name, values in space.items():
        if grid:
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
                raise ValueError(f"space[{name!r}] must be a non-empty list of values, got {values!r}")
        elif isinstance(values, (LogUniform, Uniform)):
            low, high = values
            if not (math.isfinite(low) and math.isfinite(high) and low < high) or (isinstance(values, LogUniform) and low <= 0):
                raise ValueError(f"space[{name!r}] needs finite low < high (and low > 0 for LogUniform), got {values!r}")
        elif isinstance(values, Sequence) and not isinstance(values, (str, bytes)) and len(values) > 0:
            pass  # a list: uniform choice
        else:
            raise ValueError(f"space[{name!r}] must be LogUniform, Uniform or a non-empty list, got {values!r}")


def grid(space: Mapping[str, Sequence[float]]) -> list[Config]:
    """Every combination of the values, in a fixed order."""
    _check_space(space, grid=True)
    names = sorted(space)
    return [dict(zip(names, map(float, combo))) for combo in itertools.product(*(space[n] for n in names))]


def sample(space: Mapping[str, Any], num_trials: int, key: jax.Array) -> list[Config]:
    """``num_trials`` configurations; trial i depends only on ``fold_in(key, i)``."""
    _check_space(space, grid=False)
    if not isinstance(num_trials, int) or num_trials <= 0:
        raise ValueError(f"num_trials must be a positive int, got {num_trials!r}")
    names = sorted(space)
    configs = []
    for i in range(num_trials):
        u = np.asarray(jax.random.uniform(jax.random.fold_in(key, i), (len(names),)), np.float64)
        config = {}
        for name, ui in zip(names, u):
            dist = space[name]
            if isinstance(dist, (LogUniform, Uniform)):
                config[name] = dist.sample(float(ui))
            else:
                config[name] = float(dist[min(int(ui * len(dist)), len(dist) - 1)])
        configs.append(config)
    return configs


def trial_id(config: Config) -> str:
    """A stable name for a configuration (a hash of its sorted, repr-exact values)."""
    text = json.dumps({k: repr(float(v)) for k, v in sorted(config.items())})
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class TrialStore:
    """Append-only JSON-lines record of finished trials, for one writer at a time.

    A line is only complete once its newline is on disk; a process killed half-way through a
    write leaves a torn last line, which opening the store cuts off (that trial was not
    finished), so the next record starts on a clean line.
    """

    def __init__(self, path: str | os.PathLike | None):
        self.path = None if path is None else os.fspath(path)
        self.results: dict[str, dict] = {}
        if self.path and os.path.exists(self.path):
            _drop_torn_tail(self.path)
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a write cut short by a kill: that trial was not finished
                    self.results[record["id"]] = record

    def add(self, config: Config, metrics: Metrics) -> dict:
        return self.add_record({"id": trial_id(config), "config": config, "metrics": metrics})

    def add_record(self, record: dict) -> dict:
        """Append a finished trial ``{"id": ..., ...}`` (any JSON-serialisable fields)."""
        self.results[record["id"]] = record
        if self.path:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
                os.fsync(f.fileno())
        return record


def _drop_torn_tail(path: str) -> None:
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def run_trials(configs: list[Config], evaluate: Callable[[list[Config]], list[Metrics]], *,
               store: str | os.PathLike | None = None, population_size: int = 8,
               progress: bool | None = None) -> list[dict]:
    """Evaluate the configurations not yet in ``store``, ``population_size`` at a time.

    Returns every record (old and new), in the order of ``configs``.
    """
    if not isinstance(population_size, int) or population_size <= 0:
        raise ValueError(f"population_size must be a positive int, got {population_size!r}")
    records = TrialStore(store)
    todo = [c for c in configs if trial_id(c) not in records.results]
    todo = list({trial_id(c): c for c in todo}.values())  # a config listed twice runs once
    from gradchain.tuning.progress import progress_bar

    with progress_bar(total=len(todo), desc="trials", enable=progress) as bar:
        for start in range(0, len(todo), population_size):
            batch = todo[start : start + population_size]
            metrics = evaluate(batch)
            if len(metrics) != len(batch):
                raise ValueError(f"evaluate returned {len(metrics)} results for {len(batch)} configurations")
            for config, m in zip(batch, metrics):
                records.add(config, {k: float(v) for k, v in m.items()})
            bar.update(len(batch))
    return [records.results[trial_id(c)] for c in configs]


def best(records: list[dict], metric: str, mode: str = "max") -> dict:
    """The record with the best finite ``metric`` (NaN and Inf never win)."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    finite = [r for r in records if math.isfinite(r["metrics"].get(metric, math.nan))]
    if not finite:
        raise ValueError(f"no trial has a finite {metric!r}: every run failed")
    pick = max if mode == "max" else min
    return pick(finite, key=lambda r: r["metrics"][metric])


def grid_search(space, evaluate, *, store=None, population_size=8, progress=None) -> list[dict]:
    """Coarse grid search: evaluate every combination of ``space``'s values."""
    return run_trials(grid(space), evaluate, store=store, population_size=population_size, progress=progress)


def random_search(space, evaluate, num_trials: int, key, *, store=None, population_size=8, progress=None) -> list[dict]:
    """Random search (Bergstra & Bengio 2012): with few important hyperparameters it tries many
    more distinct values of each than a grid of the same budget."""
    return run_trials(sample(space, num_trials, key), evaluate, store=store, population_size=population_size, progress=progress)


def refine(space: Mapping[str, Any], center: Config, shrink: float = 4.0) -> dict[str, Any]:
    """A narrower random-search space around ``center``: each range shrinks ``shrink``-fold
    (in log space for LogUniform), clipped to the original range; lists stay lists."""
    if not shrink > 1:
        raise ValueError(f"shrink must be > 1, got {shrink!r}")
    new = {}
    for name, dist in space.items():
        c = center[name]
        if isinstance(dist, LogUniform):
            half = (math.log(dist.high) - math.log(dist.low)) / (2 * shrink)
            new[name] = LogUniform(max(dist.low, c * math.exp(-half)), min(dist.high, c * math.exp(half)))
        elif isinstance(dist, Uniform):
            half = (dist.high - dist.low) / (2 * shrink)
            new[name] = Uniform(max(dist.low, c - half), min(dist.high, c + half))
        else:
            new[name] = dist
    return new
