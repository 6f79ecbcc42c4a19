"""Searches bigger than one machine: Optuna drives gradchain populations.

Optuna keeps the search state in its storage (SQLite locally, a server database such as
PostgreSQL for many workers), so several processes on several machines can share one study;
each worker asks Optuna for ``population`` trials at a time, trains them as one gradchain
population (one compiled program) and tells Optuna the results.  ``optuna`` is an optional
dependency (``pip install optuna``).

:func:`worker_storage` builds the storage a worker should use: heartbeats, so that the trials of
a worker that died are failed (and retried) by the others instead of staying ``RUNNING``
forever, and, for SQLite, transactions that take the write lock up front, without which two
workers can both take the same queued trial.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import os
import socket
import threading
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from gradchain.tuning.search import Config, LogUniform, Metrics, Uniform, as_record, check_space, is_diverged

try:  # optional dependency: the functions below say how to install it
    import optuna
except ImportError:  # pragma: no cover - exercised only where optuna is missing
    optuna = None

_logger = logging.getLogger(__name__)

WORKER_ATTR = "worker"    # user attribute: the worker that ran the trial (last, for a retried one)
FAILURE_ATTR = "failure"  # user attribute: why this worker told a trial FAIL


def _require_optuna():
    if optuna is None:
        raise ImportError("gradchain.tuning.optuna_adapter needs optuna: pip install optuna (or gradchain[optuna])")
    return optuna


def _suggest(trial, name: str, dist: Any) -> float:
    if isinstance(dist, LogUniform):
        return trial.suggest_float(name, dist.low, dist.high, log=True)
    if isinstance(dist, Uniform):
        return trial.suggest_float(name, dist.low, dist.high)
    return float(trial.suggest_categorical(name, [float(v) for v in dist]))


# --- the storage ----------------------------------------------------------------------------------

def _serialise_sqlite(engine) -> None:
    """Make every transaction on ``engine`` (SQLite) ``BEGIN IMMEDIATE``.

    Python's sqlite3 driver starts a transaction only at the first write, so Optuna's
    read-check-write steps (take a WAITING trial: read its state, then set RUNNING; fail a stale
    trial once) are not atomic across processes: two workers read WAITING, both set RUNNING and
    both run the trial (measured here: 17 of 120 queued trials taken twice by 3 processes).
    Taking the write lock when the transaction begins makes them atomic; PostgreSQL and MySQL
    need nothing (Optuna locks the row with ``SELECT ... FOR UPDATE``)."""
    from sqlalchemy import event

    if getattr(engine, "_gradchain_serialised", False):
        return

    def begin(connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    event.listen(engine, "begin", begin)
    engine._gradchain_serialised = True
    engine.dispose()  # pooled connections were made before the hook: start afresh


if optuna is not None:
    class _SerialisedRDBStorage(optuna.storages.RDBStorage):
        """An RDBStorage whose SQLite transactions take the write lock when they begin (see
        :func:`worker_storage`), also after pickling into another process; on any other database
        it is RDBStorage itself."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._gradchain_serialise()

        def __setstate__(self, state: dict[Any, Any]) -> None:  # a new engine in the new process
            super().__setstate__(state)
            self._gradchain_serialise()

        def _gradchain_serialise(self) -> None:
            if self.engine.name == "sqlite":
                _serialise_sqlite(self.engine)


def _positive_int(name: str, value: Any, *, none_ok: bool = False, zero_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if zero_ok else 1):
        kind = "a non-negative int" if zero_ok else "a positive int"
        raise ValueError(f"{name} must be {kind}{' or None' if none_ok else ''}, got {value!r}")


def worker_storage(url: str, *, heartbeat_interval: int = 60, grace_period: int | None = None,
                   max_retry: int | None = 1, engine_kwargs: Mapping[str, Any] | None = None):
    """The Optuna storage for one worker of a search that several workers share.

    ``url`` is a SQLAlchemy URL: ``"sqlite:///study.db"`` for the processes of one machine,
    ``"postgresql://user:password@host/dbname"`` (or MySQL) for a cluster.  Each worker builds its
    own storage from the same URL and opens the study with ``optuna.create_study(...,
    storage=storage, load_if_exists=True)``.

    * **Heartbeats.** While :func:`optuna_search` trains a population it records a heartbeat
      for each of its trials every ``heartbeat_interval`` seconds.  A ``RUNNING`` trial whose
      heartbeat is older than ``grace_period`` seconds (default ``2 * heartbeat_interval``) belongs
      to a worker that died: the next round of any worker marks it ``FAIL``.  The grace period must
      be longer than the interval plus any pause of a worker's threads, and SQLite's clock counts
      whole seconds, so give it a few seconds more than the interval.
    * **Retries.** A configuration whose trial was failed this way is queued again (``WAITING``,
      the same parameters, Optuna's ``RetryHeartbeatStaleTrialCallback``: the new trial's
      ``system_attrs["failed_trial"]`` is the number of the first one) up to ``max_retry`` times
      (default 1), and the next worker that asks runs it; ``0`` never queues it again, ``None``
      without end (a configuration that itself kills its worker, say by running out of memory,
      would then kill every worker in turn).  A trial told FAIL by its worker (diverged, or
      ``evaluate`` raised) is a result, not a death, and is not retried.
    * **SQLite** gets ``timeout=30`` (seconds a process waits for the lock) unless
      ``engine_kwargs["connect_args"]`` says otherwise, and transactions that take the write lock
      when they begin, so that two workers never take the same queued trial or retry one
      failure twice (Python's sqlite3 driver alone lets them; server databases lock the row).

    Returns an ``optuna.storages.RDBStorage`` (a subclass that keeps the SQLite locking when
    pickled into another process).
    """
    optuna = _require_optuna()
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(f"url must be a database URL such as 'sqlite:///study.db' or "
                         f"'postgresql://user:password@host/dbname', got {url!r}")
    _positive_int("heartbeat_interval", heartbeat_interval)
    _positive_int("grace_period", grace_period, none_ok=True)
    if grace_period is not None and grace_period <= heartbeat_interval:
        raise ValueError(f"grace_period must be longer than heartbeat_interval={heartbeat_interval}, got "
                         f"{grace_period!r}: a live worker's trials would be failed between two heartbeats")
    _positive_int("max_retry", max_retry, none_ok=True, zero_ok=True)
    if engine_kwargs is not None and not isinstance(engine_kwargs, Mapping):
        raise TypeError(f"engine_kwargs must be a dict of sqlalchemy.create_engine arguments, got {engine_kwargs!r}")
    kwargs = dict(engine_kwargs or {})
    if url.startswith("sqlite"):
        connect_args = dict(kwargs.get("connect_args", {}))
        connect_args.setdefault("timeout", 30)
        # no implicit BEGIN from the driver: _serialise_sqlite begins every transaction itself
        connect_args["isolation_level"] = None
        kwargs["connect_args"] = connect_args
    storages = optuna.storages
    retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    # optuna >= 4.9 names the argument heartbeat_stale_trial_callback; before, failed_trial_callback
    parameters = inspect.signature(storages.RDBStorage.__init__).parameters
    callback_name = "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in parameters \
        else "failed_trial_callback"
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna: this module relies on them
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        callback = {} if max_retry == 0 else {callback_name: retry(max_retry=max_retry)}
        return _SerialisedRDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat_interval,
                                     grace_period=grace_period, **callback)


# --- heartbeats of the trials in flight -------------------------------------------------------------

def _heartbeat_interval(storage) -> int | None:
    if not (hasattr(storage, "record_heartbeat") and callable(getattr(storage, "get_heartbeat_interval", None))):
        return None
    return storage.get_heartbeat_interval()


class _Heartbeat:
    """Records a heartbeat for each trial of the round every ``interval`` seconds, in a thread,
    from the moment each is asked until the round's results are told (what ``study.optimize``
    does for its one trial; ``ask``/``tell`` does not)."""

    def __init__(self, storage, interval: int):
        self.storage, self.interval = storage, interval
        self.trial_ids: list[int] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="gradchain-optuna-heartbeat", daemon=True)
        self.thread.start()

    def add(self, trial_id: int) -> None:
        self.storage.record_heartbeat(trial_id)  # at once: a trial with no heartbeat is never failed
        with self.lock:
            self.trial_ids.append(trial_id)

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            with self.lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                try:
                    self.storage.record_heartbeat(trial_id)
                except Exception as error:  # a database hiccup must not stop the heartbeats for good
                    _logger.warning("heartbeat of trial id %s not recorded: %r", trial_id, error)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


@contextlib.contextmanager
def _heartbeats(study) -> Iterator[_Heartbeat | None]:
    interval = _heartbeat_interval(study._storage)
    if interval is None:
        yield None
        return
    beat = _Heartbeat(study._storage, interval)
    try:
        yield beat
    finally:
        beat.close()


def _fail_stale_trials(study) -> None:
    """Fail the RUNNING trials whose heartbeat stopped (their worker died); with a retry callback
    in the storage, queue them again.  ``study.optimize`` does this before each trial; ``ask`` does
    not, so every round of :func:`optuna_search` starts with it."""
    if _heartbeat_interval(study._storage) is None:
        return
    optuna = _require_optuna()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _ask(study):
    with warnings.catch_warnings():  # "heartbeat is supposed to be used with Study.optimize": done here
        warnings.filterwarnings("ignore", message=".*[Hh]eartbeat.*")
        return study.ask()


def _fail(study, trials, reason: str) -> None:
    """Tell ``trials`` FAIL (those not already finished), saying why in a user attribute."""
    optuna = _require_optuna()
    for trial in trials:
        try:
            if study._storage.get_trial(trial._trial_id).state.is_finished():
                continue
            trial.set_user_attr(FAILURE_ATTR, reason)
            study.tell(trial, state=optuna.trial.TrialState.FAIL, skip_if_finished=True)
        except Exception as error:  # keep failing the others; the first error is being raised anyway
            _logger.warning("trial %s could not be told FAIL: %r", trial.number, error)


# --- the search -------------------------------------------------------------------------------------

def optuna_search(study, space: Mapping[str, Any], evaluate: Callable[[list[Config]], list[Metrics]],
                  num_trials: int, *, metric: str, population: int = 8, worker: str | None = None) -> list[dict]:
    """Run ``num_trials`` more trials of ``study``, ``population`` at a time.

    ``space`` uses gradchain's distributions (``LogUniform``, ``Uniform``, lists); ``metric`` is
    the key of ``evaluate``'s result that the study optimises (its direction is the study's).
    ``evaluate`` may return metrics dicts or records with ``"metrics"`` (as
    :func:`gradchain.tuning.population_evaluate` does); a diverged trial or a non-finite metric
    is reported to Optuna as a failed trial, never as a value.

    **Several workers.** Any number of processes, on any machines, may run ``optuna_search`` on
    the same study (the same storage URL and study name), each for its own ``num_trials``: Optuna
    hands each asked trial, a queued (``enqueue_trial``) one or a new one, to one worker only.  Give
    every worker a storage from :func:`worker_storage` (heartbeats and retries; SQLite locking;
    with a plain SQLite URL two workers can take the same queued trial), and then no trial is
    lost or run twice:

    * each round first fails the trials whose worker died (``RUNNING``, heartbeat older than the
      storage's ``grace_period``) and, with the storage's retry callback, queues them again with
      the same parameters; the next ``ask``, by this worker or another, runs them;
    * while a population trains, a thread records its trials' heartbeats every
      ``heartbeat_interval`` seconds (a worker that is alive but stuck keeps its trials);
    * an exception in ``evaluate`` (or a Ctrl-C) tells the round's trials FAIL, with the reason in
      their user attribute ``"failure"``, and is raised again: nothing is left ``RUNNING``.

    A dead worker's trials are found only by a later round: when it died during the last rounds of
    a search, run one more round after ``grace_period`` (say ``optuna_search(study, ..., 1)``), or
    call ``optuna.storages.fail_stale_trials(study)``.  Without heartbeats in the storage (a plain
    URL) a dead worker's trials stay ``RUNNING``, visibly unfinished but never rerun.  A
    ``jax.distributed`` job counts as one worker only if one process asks and the others are told
    the configs; ``optuna_search`` does not coordinate the processes of such a job.

    ``worker`` names this worker (default ``"hostname:pid"``); it is stored in each trial's user
    attribute ``"worker"``.  Returns this worker's new records ``{"number", "worker", "retry_of",
    "state", "config", "metrics", "status", ...}``: the Optuna trial number, ``retry_of`` the number
    of the dead worker's trial this one reruns (else ``None``), and ``state`` the trial's state in
    the study (``"COMPLETE"`` or ``"FAIL"``).
    """
    optuna = _require_optuna()
    if not isinstance(study, optuna.Study):
        raise TypeError(f"study must be an optuna.Study (optuna.create_study / load_study), got {study!r:.80}")
    check_space(space, grid=False)
    for name, value in (("num_trials", num_trials), ("population", population)):
        _positive_int(name, value)
    if not callable(evaluate):
        raise TypeError(f"evaluate must be a function list of configs -> list of metrics, got {evaluate!r}")
    if not isinstance(metric, str):
        raise TypeError(f"metric must be the name of a metric of evaluate's result, got {metric!r}")
    if worker is None:
        worker = f"{socket.gethostname()}:{os.getpid()}"
    elif not isinstance(worker, str) or not worker:
        raise ValueError(f"worker must be a non-empty str naming this worker, got {worker!r}")
    FAIL = optuna.trial.TrialState.FAIL
    records = []
    remaining = num_trials
    while remaining > 0:
        _fail_stale_trials(study)
        trials: list = []
        with _heartbeats(study) as beat:
            try:
                for _ in range(min(population, remaining)):
                    trial = _ask(study)
                    trials.append(trial)
                    if beat is not None:
                        beat.add(trial._trial_id)
                    trial.set_user_attr(WORKER_ATTR, worker)
                configs = [{name: _suggest(t, name, dist) for name, dist in sorted(space.items())} for t in trials]
                results = list(evaluate(configs))
                if len(results) != len(configs):
                    raise ValueError(f"evaluate returned {len(results)} results for {len(configs)} configurations")
                told = [as_record(result) for result in results]
                for record in told:
                    if metric not in record["metrics"]:
                        raise ValueError(f"metric={metric!r} is not in evaluate's result; it has "
                                         f"{sorted(record['metrics'])}")
            except BaseException as error:
                _fail(study, trials, f"evaluate raised {type(error).__name__}: {error}"[:500])
                raise
            for trial, config, record in zip(trials, configs, told):
                frozen = study._storage.get_trial(trial._trial_id)
                retry_of = frozen.system_attrs.get("failed_trial")
                if frozen.state.is_finished():  # failed as stale by another worker while this one trained it
                    warnings.warn(f"trial {trial.number} was marked {frozen.state.name} by another worker while "
                                  f"this one ({worker}) trained it: its heartbeats stopped for longer than the "
                                  "storage's grace_period; its result is in the record only (raise grace_period)",
                                  RuntimeWarning, stacklevel=2)
                elif is_diverged(record, metric):
                    trial.set_user_attr(FAILURE_ATTR, "diverged")
                    frozen = study.tell(trial, state=FAIL, skip_if_finished=True)
                else:
                    frozen = study.tell(trial, record["metrics"][metric], skip_if_finished=True)
                records.append({"number": trial.number, "worker": worker, "retry_of": retry_of,
                                "state": frozen.state.name, "config": config, **record})
        remaining -= len(trials)
    return records
