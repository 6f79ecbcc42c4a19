"""Steps 4–5 of the recipe: coarse grid or random search, then refine around the best.

Search spaces are dicts ``name -> list of values`` (grid) or ``name -> distribution`` (random).
Random search draws trial *i* from ``fold_in(key, i)``, so a search is reproducible and an
interrupted one resumes with the same configurations.  Trials are evaluated a population at a
time (``evaluate(list_of_configs) -> list_of_metrics``); each result is appended to a JSON-lines
file as soon as it is known (flushed and fsynced), and a search started again on the same file
skips the trials already there: nothing finished is lost or repeated, even after SIGKILL.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import os
import types
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


def check_space(space: Mapping[str, Any], grid: bool) -> None:
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
    check_space(space, grid=True)
    names = sorted(space)
    return [dict(zip(names, map(float, combo))) for combo in itertools.product(*(space[n] for n in names))]


def sample(space: Mapping[str, Any], num_trials: int, key: jax.Array) -> list[Config]:
    """``num_trials`` configurations; trial i depends only on ``fold_in(key, i)``."""
    check_space(space, grid=False)
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


def trial_id(config: Config, fingerprint: str = "") -> str:
    """A stable name for a trial: a hash of the configuration's sorted, repr-exact values and the
    ``fingerprint`` of what evaluates it (:func:`fingerprint`)."""
    text = json.dumps({"config": {k: repr(float(v)) for k, v in sorted(config.items())}, "fingerprint": fingerprint})
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def fingerprint(evaluate: Any, example: Config | None = None) -> str:
    """A hash of what ``evaluate`` computes, so a changed evaluation never reuses a stored trial.

    An object with a ``fingerprint()`` method (a population of runs: :func:`population_evaluate`)
    names itself; a Python function is hashed from its code, defaults, closure values and the
    globals it reads (numbers, strings, arrays, tuples, other functions, recursively; modules by
    name; lists, dicts and sets by type only: they are usually logs and caches).
    Pass ``fingerprint=`` to :func:`run_trials` when the evaluation depends on something else (a
    file it reads, an object without a stable ``repr``).
    """
    method = getattr(evaluate, "fingerprint", None)
    if callable(method) and not isinstance(evaluate, type):  # it names itself, from an example config
        return str(method(example) if example is not None else method())
    digest = hashlib.sha1()
    _feed(digest, evaluate, depth=0, seen=set())
    return digest.hexdigest()[:16]


def _feed(digest, value: Any, depth: int, seen: set) -> None:
    if depth > 8 or id(value) in seen:
        digest.update(b"<deep>")
        return
    if value is None or isinstance(value, (bool, int, float, complex, str, bytes)):
        digest.update(repr(value).encode())
    elif isinstance(value, (np.ndarray, jax.Array)) or hasattr(value, "__array__"):
        array = np.asarray(value)
        digest.update(f"{array.dtype}{array.shape}".encode() + np.ascontiguousarray(array).tobytes())
    elif isinstance(value, (list, tuple)):
        digest.update(type(value).__name__.encode())
        for item in value:
            _feed(digest, item, depth + 1, seen)
    elif isinstance(value, Mapping):
        for k in sorted(value, key=repr):
            digest.update(repr(k).encode())
            _feed(digest, value[k], depth + 1, seen)
    elif isinstance(value, types.ModuleType):
        digest.update(value.__name__.encode())
    elif isinstance(value, functools.partial):
        for part in (value.func, value.args, value.keywords):
            _feed(digest, part, depth + 1, seen)
    elif hasattr(value, "__code__"):
        seen = seen | {id(value)}
        code = value.__code__
        _feed_code(digest, code)
        _feed(digest, value.__defaults__, depth + 1, seen)
        _feed(digest, value.__kwdefaults__, depth + 1, seen)
        for cell in value.__closure__ or ():
            try:
                _feed_captured(digest, cell.cell_contents, depth + 1, seen)
            except ValueError:  # an empty cell
                digest.update(b"<empty>")
        for name in _global_names(code):
            if name in getattr(value, "__globals__", {}):
                digest.update(name.encode())
                _feed_captured(digest, value.__globals__[name], depth + 1, seen)
    else:  # an object: its type and its attributes
        digest.update(f"{type(value).__module__}.{type(value).__qualname__}".encode())
        state = getattr(value, "__dict__", None)
        if state is not None:
            _feed(digest, state, depth + 1, seen | {id(value)})


def _feed_captured(digest, value: Any, depth: int, seen: set) -> None:
    """A value a function closes over or reads as a global: a mutable container (a list the
    function appends its calls to, a dict it caches in) counts by its type only, so a log that
    grows does not make every rerun new; everything else by value."""
    if isinstance(value, (list, dict, set)):
        digest.update(type(value).__name__.encode())
    else:
        _feed(digest, value, depth, seen)


def _feed_code(digest, code: types.CodeType) -> None:
    digest.update(code.co_code + repr(code.co_names).encode())
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            _feed_code(digest, const)
        else:
            digest.update(repr(const).encode())


def _global_names(code: types.CodeType) -> list[str]:
    names = list(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names += _global_names(const)
    return sorted(set(names))


class TrialStore:
    """Append-only JSON-lines record of finished trials, for one writer at a time.

    In a multi-process job (``jax.distributed``) every process opens the store and keeps every
    record in memory; only process 0 writes (``writer``), and a store that the processes see
    differently (a path only process 0 can see) is an error.

    A line is only complete once its newline is on disk; a process killed half-way through a
    write leaves a torn last line, which opening the store cuts off (that trial was not
    finished), so the next record starts on a clean line.  The path must be a regular file (or
    not exist yet) in an existing folder; a line that is not a record ``{"id": ..., ...}`` is an
    error naming the line, so a foreign or damaged file is never half-read.
    """

    def __init__(self, path: str | os.PathLike | None, *, writer: bool | None = None):
        self.path = None if path is None else os.fspath(path)
        self.results: dict[str, dict] = {}
        # In a multi-process job every process computes every result; one writes them down.
        self.writer = jax.process_index() == 0 if writer is None else bool(writer)
        if self.path is None:
            return
        if os.path.exists(self.path) and not os.path.isfile(self.path):
            raise ValueError(f"store={self.path!r} is not a regular file (a folder or a device): give a path to a "
                             ".jsonl file")
        folder = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"store={self.path!r}: the folder {folder!r} does not exist; create it first")
        if not os.access(folder, os.W_OK) or (os.path.exists(self.path) and not os.access(self.path, os.W_OK)):
            raise PermissionError(f"store={self.path!r} is not writable")
        if os.path.exists(self.path):
            _drop_torn_tail(self.path)
            with open(self.path, encoding="utf-8") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError:
                        raise ValueError(f"store={self.path!r}, line {number}: not JSON ({line[:60]!r}); a trial "
                                         "store holds one JSON record per line") from None
                    if not (isinstance(record, dict) and isinstance(record.get("id"), str)):
                        raise ValueError(f"store={self.path!r}, line {number}: a record must be a JSON object with "
                                         f"a string \"id\", got {line.strip()[:60]!r}")
                    self.results[record["id"]] = record
        _check_same_view(self.path, len(self.results))

    def add(self, config: Config, metrics: Metrics, fingerprint: str = "") -> dict:
        return self.add_record({"id": trial_id(config, fingerprint), "config": config, "metrics": metrics})

    def add_record(self, record: dict) -> dict:
        """Append a finished trial ``{"id": ..., ...}`` (any JSON-serialisable fields)."""
        if not (isinstance(record, dict) and isinstance(record.get("id"), str)):
            raise ValueError(f"a record must be a dict with a string 'id', got {record!r}")
        line = json.dumps(record, allow_nan=True)
        self.results[record["id"]] = record
        if self.path and self.writer:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
        return record


def _check_same_view(path: str, count: int) -> None:
    """In a multi-process job, every process must read the same store (a shared filesystem):
    a store only process 0 can see would make the others redo, and disagree on, every trial."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    counts = np.asarray(multihost_utils.process_allgather(np.int64(count)))
    if len(set(counts.tolist())) > 1:
        raise ValueError(f"store={path!r}: the processes of this job see different stores (records per process: "
                         f"{counts.tolist()}); put it on a filesystem every process shares")


def _drop_torn_tail(path: str) -> None:
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def is_diverged(record: Mapping[str, Any], metric: str | None = None) -> bool:
    """A trial that must never be selected: marked ``"diverged"`` or with a non-finite ``metric``."""
    if record.get("status") == "diverged":
        return True
    return metric is not None and not math.isfinite(record["metrics"].get(metric, math.nan))


def run_trials(configs: list[Config], evaluate: Callable[[list[Any]], list[Any]], *,
               store: str | os.PathLike | TrialStore | None = None, population: int = 8,
               fingerprint: str | None = None, progress: bool | None = None, desc: str = "trials") -> list[dict]:
    """Evaluate the configurations not yet in ``store``, ``population`` at a time.

    ``evaluate(configs)`` returns one result per configuration: a dict of metrics, or a record
    ``{"metrics": {...}, ...}`` with more fields (curves, ``"status": "diverged"``).  A trial is
    keyed on its config and the ``fingerprint`` of the evaluation (default:
    :func:`fingerprint` of ``evaluate``), so a changed evaluation never returns an old result and
    an unchanged one always does.  Returns every record (old and new), in the order of ``configs``.
    """
    if not isinstance(population, int) or isinstance(population, bool) or population <= 0:
        raise ValueError(f"population must be a positive int, got {population!r}")
    if not callable(evaluate):
        raise TypeError(f"evaluate must be a function list of configs -> list of metrics, got {evaluate!r}")
    if isinstance(configs, Mapping) or not all(isinstance(c, Mapping) for c in configs):
        raise TypeError(f"configs must be a list of dicts name -> number, got {configs!r:.80}")
    records = store if isinstance(store, TrialStore) else TrialStore(store)
    tag = str(fingerprint) if fingerprint is not None else _fingerprint(evaluate, configs[0]) if configs else ""
    ids = [trial_id(c, tag) for c in configs]
    todo = list({i: c for i, c in zip(ids, configs) if i not in records.results}.items())  # a config listed twice runs once
    from gradchain.tuning.progress import progress_bar

    with progress_bar(total=len(todo), desc=desc, enable=progress) as bar:
        for start in range(0, len(todo), population):
            batch = todo[start : start + population]
            results = list(evaluate([c for _, c in batch]))
            if len(results) != len(batch):
                raise ValueError(f"evaluate returned {len(results)} results for {len(batch)} configurations")
            for (trial, config), result in zip(batch, results):
                records.add_record({"id": trial, "config": dict(config), **as_record(result)})
            bar.update(len(batch))
    return [records.results[i] for i in ids]


def as_record(result: Any) -> dict:
    """A metrics dict or a record with ``"metrics"`` as the stored fields: float metrics and a
    ``"status"`` (``"diverged"`` when not given and a metric is not finite, else ``"ok"``)."""
    if not isinstance(result, Mapping):
        raise TypeError(f"evaluate must return a dict of metrics (or a record with 'metrics') per config, got {result!r}")
    record: dict[str, Any] = dict(result) if isinstance(result.get("metrics"), Mapping) else {"metrics": dict(result)}
    metrics = {k: float(v) for k, v in record["metrics"].items()}
    record["metrics"] = metrics
    if "status" not in record:
        record["status"] = "ok" if all(math.isfinite(v) for v in metrics.values()) else "diverged"
    return record


_fingerprint = fingerprint


def best(records: list[dict], metric: str, mode: str = "max") -> dict:
    """The record with the best finite ``metric``; a diverged trial (NaN/Inf loss or parameters,
    ``"status": "diverged"``) never wins, whatever its other metrics say."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if records and not any(metric in r["metrics"] for r in records):
        raise ValueError(f"metric={metric!r} is not in the records; they have {sorted(records[0]['metrics'])}")
    finite = [r for r in records if not is_diverged(r, metric)]
    if not finite:
        raise ValueError(f"no trial has a finite {metric!r}: every run failed or diverged")
    pick = max if mode == "max" else min
    return pick(finite, key=lambda r: r["metrics"][metric])


def grid_search(space, evaluate, *, store=None, population=8, fingerprint=None, progress=None) -> list[dict]:
    """Coarse grid search: evaluate every combination of ``space``'s values (:func:`run_trials`)."""
    return run_trials(grid(space), evaluate, store=store, population=population, fingerprint=fingerprint,
                      progress=progress)


def random_search(space, evaluate, num_trials: int, key, *, store=None, population=8, fingerprint=None,
                  progress=None) -> list[dict]:
    """Random search (Bergstra & Bengio 2012): with few important hyperparameters it tries many
    more distinct values of each than a grid of the same budget (:func:`run_trials`)."""
    return run_trials(sample(space, num_trials, key), evaluate, store=store, population=population,
                      fingerprint=fingerprint, progress=progress)


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
