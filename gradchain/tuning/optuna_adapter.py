"""Searches bigger than one machine: Optuna drives gradchain populations.

Optuna keeps the search state in its storage (SQLite locally, a server database such as
PostgreSQL for many workers), so several processes on several machines can share one study;
each worker asks Optuna for ``population`` trials at a time, trains them as one gradchain
population (one compiled program) and tells Optuna the results.  ``optuna`` is an optional
dependency (``pip install optuna``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from gradchain.tuning.search import Config, LogUniform, Metrics, Uniform, as_record, check_space, is_diverged


def _suggest(trial, name: str, dist: Any) -> float:
    if isinstance(dist, LogUniform):
        return trial.suggest_float(name, dist.low, dist.high, log=True)
    if isinstance(dist, Uniform):
        return trial.suggest_float(name, dist.low, dist.high)
    return float(trial.suggest_categorical(name, [float(v) for v in dist]))


def optuna_search(study, space: Mapping[str, Any], evaluate: Callable[[list[Config]], list[Metrics]],
                  num_trials: int, *, metric: str, population: int = 8) -> list[dict]:
    """Run ``num_trials`` more trials of ``study``, ``population`` at a time.

    ``space`` uses gradchain's distributions (``LogUniform``, ``Uniform``, lists); ``metric`` is
    the key of ``evaluate``'s result that the study optimises (its direction is the study's).
    ``evaluate`` may return metrics dicts or records with ``"metrics"`` (as
    :func:`gradchain.tuning.population_evaluate` does); a diverged trial or a non-finite metric
    is reported to Optuna as a failed trial, never as a value.
    Returns the new records ``{"number", "config", "metrics", "status"}``.
    """
    import optuna

    check_space(space, grid=False)
    for name, value in (("num_trials", num_trials), ("population", population)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    records = []
    remaining = num_trials
    while remaining > 0:
        trials = [study.ask() for _ in range(min(population, remaining))]
        configs = [{name: _suggest(t, name, dist) for name, dist in sorted(space.items())} for t in trials]
        results = list(evaluate(configs))
        if len(results) != len(configs):
            raise ValueError(f"evaluate returned {len(results)} results for {len(configs)} configurations")
        for trial, config, result in zip(trials, configs, results):
            record = as_record(result)
            if metric not in record["metrics"]:
                raise ValueError(f"metric={metric!r} is not in evaluate's result; it has {sorted(record['metrics'])}")
            if is_diverged(record, metric):
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, record["metrics"][metric])
            records.append({"number": trial.number, "config": config, **record})
        remaining -= len(trials)
    return records
