"""One Optuna study searched by several worker processes sharing one SQLite file, and a worker
SIGKILLed in the middle of its trials.

The workers are this file run as a script (``python tests/test_optuna_workers.py ARGS``), so the
workers and the single-worker reference use the same ``evaluate``: a closed-form "validation
loss" of the config, returned as :func:`gradchain.tuning.population_evaluate` returns records.
(A real population of a tiny Trainable costs each fresh process about 5 s of compilation per
population size on a loaded 2-core machine, ten processes' worth in these two tests.)  Every
trial comes from a list of enqueued configs, so "the same trials" is exact: the study's best must
equal a one-worker study's on the same list, bit for bit.

Synchronisation is by files (a worker is ready, may go, has started its trials), never by
guessed delays.  The two sleeps in the fault test are lower bounds Optuna's heartbeat rule needs
(a heartbeat older than ``GRACE`` seconds is stale), not races: the first proves a blocked but
live worker keeps its trials, the second lets a dead one's heartbeats go stale.  Every wait has a
deadline and then fails with the workers' output.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from gradchain import tuning  # noqa: E402  (after the skip: these import optuna)
from gradchain.tuning.optuna_adapter import optuna_search, worker_storage  # noqa: E402

SPACE = {"learning_rate": tuning.LogUniform(1e-4, 1.0), "weight_decay": [0.0, 1e-4, 1e-3]}
CONFIGS = [{"learning_rate": 10 ** (-4 + 0.5 * i), "weight_decay": wd} for i in range(8) for wd in (0.0, 1e-4, 1e-3)]
DIVERGING = {"learning_rate": 0.9, "weight_decay": 0.0}  # its loss is NaN: told FAIL, a result, never retried
HEARTBEAT, GRACE = 1, 4  # seconds; GRACE leaves 3 s beyond the interval (SQLite's clock counts whole seconds)
DEADLINE = 120           # seconds any one wait may take on a loaded machine before the test fails
REPO = Path(__file__).resolve().parent.parent
COMPLETE, FAIL = optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL


def validation_loss(config):
    """Minimum near learning_rate 1e-2 and no weight decay; NaN (a diverged run) above 0.5."""
    if config["learning_rate"] > 0.5:
        return math.nan
    return (math.log10(config["learning_rate"]) + 2.2) ** 2 + 100 * config["weight_decay"]


def evaluate(configs):
    records = []
    for c in configs:
        loss = validation_loss(c)
        records.append({"metrics": {"val_loss": loss, "val_accuracy": math.exp(-loss) if math.isfinite(loss) else 0.0},
                        "status": "ok" if math.isfinite(loss) else "diverged"})
    return records


def key(params):
    return (params["learning_rate"], params["weight_decay"])


def storage(url):
    return worker_storage(url, heartbeat_interval=HEARTBEAT, grace_period=GRACE, max_retry=1)


def new_study(url, configs):
    study = optuna.create_study(storage=storage(url), study_name="search", direction="minimize")
    for config in configs:
        study.enqueue_trial(config)
    return study


def single_worker_best(configs):
    """The same enqueued trials in one process, in memory: the reference for the shared study."""
    study = optuna.create_study(direction="minimize")
    for config in configs:
        study.enqueue_trial(config)
    optuna_search(study, SPACE, evaluate, len(configs), metric="val_loss", population=3, worker="alone")
    return study.best_value, study.best_params


# --- the worker process --------------------------------------------------------------------------------

def worker_main(args):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage(args["url"]), study_name="search", direction="minimize",
                                load_if_exists=True)
    Path(args["ready"]).touch()
    wait_for(Path(args["go"]), [], "the go signal")

    def blocked(configs):  # the victim: say which trials it holds, then train "forever"
        Path(args["started"]).write_text(json.dumps(configs))
        while True:
            time.sleep(60)

    run = blocked if args.get("started") else evaluate
    records = optuna_search(study, SPACE, run, args["num_trials"], metric="val_loss", population=3,
                            worker=args["name"])
    Path(args["out"]).write_text(json.dumps(records))


# --- the parent's side -----------------------------------------------------------------------------------

class Workers:
    """Worker processes with their logs; every one still running is SIGKILLed on exit."""

    def __init__(self, tmp_path, url):
        self.tmp, self.url, self.procs, self.go = tmp_path, url, {}, tmp_path / "go"

    def start(self, name, num_trials, victim=False, go=None):
        args = {"url": self.url, "name": name, "num_trials": num_trials, "go": str(go or self.go),
                "ready": str(self.tmp / f"{name}.ready"), "out": str(self.tmp / f"{name}.json")}
        if victim:
            args["started"] = str(self.tmp / f"{name}.started")
        log = open(self.tmp / f"{name}.log", "w")
        env = {**os.environ, "JAX_PLATFORMS": "cpu"}
        self.procs[name] = subprocess.Popen([sys.executable, __file__, json.dumps(args)], cwd=REPO, env=env,
                                            stdout=log, stderr=subprocess.STDOUT)
        log.close()
        return self.procs[name]

    def logs(self):
        return "\n".join(f"--- {name} (rc {p.poll()}):\n{(self.tmp / f'{name}.log').read_text()[-3000:]}"
                         for name, p in self.procs.items())

    def wait_ready(self, *names):
        for name in names:
            wait_for(self.tmp / f"{name}.ready", [self.procs[n] for n in names], f"worker {name} to start", self)

    def finish(self, *names):
        """Wait for ``names`` to exit cleanly; their records."""
        deadline = time.monotonic() + DEADLINE
        for name in names:
            try:
                rc = self.procs[name].wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pytest.fail(f"worker {name} still running after {DEADLINE} s\n{self.logs()}")
            assert rc == 0, f"worker {name} failed (rc {rc})\n{self.logs()}"
        return {name: json.loads((self.tmp / f"{name}.json").read_text()) for name in names}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for p in self.procs.values():
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=DEADLINE)


def wait_for(path, procs, what, workers=None):
    deadline = time.monotonic() + DEADLINE
    while not path.exists():
        for p in procs:
            if p.poll() is not None:
                pytest.fail(f"a worker exited (rc {p.returncode}) while waiting for {what}\n"
                            f"{workers.logs() if workers else ''}")
        if time.monotonic() > deadline:
            message = f"no {what} after {DEADLINE} s"
            if workers is None:  # inside a worker: stop with a message in its log
                raise TimeoutError(message)
            pytest.fail(f"{message}\n{workers.logs()}")
        time.sleep(0.05)


def check_records_match_study(records, trials):
    """Each worker's records are exactly the trials the study says it ran, and no two workers
    share one."""
    by_number = {t.number: t for t in trials}
    seen = set()
    for name, recs in records.items():
        numbers = {r["number"] for r in recs}
        assert not numbers & seen, f"{name} reports trials another worker reports: {sorted(numbers & seen)}"
        seen |= numbers
        assert numbers == {t.number for t in trials if t.user_attrs.get("worker") == name}, name
        for r in recs:
            t = by_number[r["number"]]
            assert r["worker"] == name and r["state"] == t.state.name and key(r["config"]) == key(t.params), (r, t)
    return seen


# --- the tests ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_three_workers_share_one_study_and_run_every_trial_once(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    new_study(url, CONFIGS)
    shares = {"w0": 8, "w1": 8, "w2": 8}  # 24 = len(CONFIGS), rounds of 3, 3, 2 each
    with Workers(tmp_path, url) as workers:
        for name, share in shares.items():
            workers.start(name, share)
        workers.wait_ready(*shares)
        workers.go.touch()  # all three ask at once: the contention the SQLite locking is for
        records = workers.finish(*shares)

    shared = optuna.load_study(storage=storage(url), study_name="search")
    trials = shared.trials
    assert len(trials) == len(CONFIGS) and all(t.state == COMPLETE for t in trials), \
        [(t.number, t.state.name) for t in trials]
    assert sorted(key(t.params) for t in trials) == sorted(key(c) for c in CONFIGS)  # each config exactly once
    assert check_records_match_study(records, trials) == {t.number for t in trials}
    assert {name: len(recs) for name, recs in records.items()} == shares
    assert len({validation_loss(c) for c in CONFIGS}) == len(CONFIGS)  # one best: the comparison is meaningful
    assert (shared.best_value, shared.best_params) == single_worker_best(CONFIGS)


@pytest.mark.slow
def test_a_worker_killed_mid_trial_has_its_trials_failed_and_retried_by_the_others(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    configs = CONFIGS[:9] + [DIVERGING]
    study = new_study(url, configs)
    with Workers(tmp_path, url) as workers:
        victim = workers.start("victim", 3, victim=True)
        workers.go.touch()
        wait_for(tmp_path / "victim.started", [victim], "trials started by the victim", workers)
        held = json.loads((tmp_path / "victim.started").read_text())
        assert sorted(map(key, held)) == sorted(map(key, configs[:3]))

        # Alive and blocked for longer than the grace period: its heartbeat thread keeps its trials.
        time.sleep(GRACE + 2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
        running = [t for t in study.get_trials() if t.user_attrs.get("worker") == "victim"]
        assert [t.state.name for t in running] == ["RUNNING"] * 3, "a live worker's trials were failed"

        os.kill(victim.pid, signal.SIGKILL)
        killed = time.monotonic()
        assert victim.wait(timeout=DEADLINE) == -signal.SIGKILL

        # The study goes on: 7 queued configs + 3 retries of the victim's = 10 trials for two workers.
        go = tmp_path / "go-survivors"
        workers.start("b", 5, go=go)
        workers.start("c", 5, go=go)
        workers.wait_ready("b", "c")
        time.sleep(max(0.0, killed + GRACE + 2 - time.monotonic()))  # the victim's heartbeats are stale now
        go.touch()
        records = workers.finish("b", "c")

    trials = optuna.load_study(storage=storage(url), study_name="search").trials
    assert not [t.number for t in trials if not t.state.is_finished()], "a trial was left RUNNING or WAITING"
    dead = [t for t in trials if t.user_attrs.get("worker") == "victim"]
    assert len(dead) == 3 and all(t.state == FAIL and "failure" not in t.user_attrs for t in dead)
    retries = {t.system_attrs["failed_trial"]: t for t in trials if "failed_trial" in t.system_attrs}
    assert sorted(retries) == sorted(t.number for t in dead)
    for t in dead:  # each dead trial rerun once, with its parameters, by a surviving worker
        again = retries[t.number]
        assert again.state == COMPLETE and again.params == t.params and again.user_attrs["worker"] in ("b", "c")
    diverged = [t for t in trials if t.user_attrs.get("failure") == "diverged"]
    assert [key(t.params) for t in diverged] == [key(DIVERGING)] and diverged[0].state == FAIL
    assert diverged[0].number not in retries  # a result, not a death
    finished = [t for t in trials if t.state == COMPLETE] + diverged
    assert sorted(key(t.params) for t in finished) == sorted(map(key, configs))  # every config exactly once
    assert len(trials) == len(configs) + 3

    reported = check_records_match_study(records, trials)
    assert reported == {t.number for t in finished}
    retry_of = {r["number"]: r["retry_of"] for recs in records.values() for r in recs if r["retry_of"] is not None}
    assert retry_of == {again.number: number for number, again in retries.items()}
    shared = optuna.load_study(storage=storage(url), study_name="search")
    assert (shared.best_value, shared.best_params) == single_worker_best(configs)


def test_worker_storage_and_optuna_search_name_bad_arguments(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    for kwargs, message in [({"heartbeat_interval": 0}, "heartbeat_interval must be a positive int, got 0"),
                            ({"heartbeat_interval": 5, "grace_period": 5}, "grace_period must be longer than"),
                            ({"max_retry": -1}, "max_retry must be a non-negative int or None, got -1"),
                            ({"engine_kwargs": 3}, "engine_kwargs must be a dict")]:
        with pytest.raises((ValueError, TypeError), match=message):
            worker_storage(url, **kwargs)
    with pytest.raises(ValueError, match="url must be a database URL"):
        worker_storage("study.db")
    study = optuna.create_study(direction="minimize")
    for kwargs, message in [({"worker": ""}, "worker must be a non-empty str"),
                            ({"population": True}, "population must be a positive int, got True"),
                            ({"metric": "loss"}, "metric='loss' is not in evaluate's result")]:
        with pytest.raises(ValueError, match=message):
            optuna_search(study, SPACE, evaluate, 2, **{"metric": "val_loss", **kwargs})
    # evaluate's failure leaves nothing RUNNING: its trials are told FAIL with the reason
    assert [t.state for t in study.trials] == [FAIL, FAIL]
    assert study.trials[0].user_attrs["failure"].startswith("evaluate raised ValueError: metric='loss'")
    with pytest.raises(TypeError, match="study must be an optuna.Study"):
        optuna_search("search", SPACE, evaluate, 2, metric="val_loss")


def test_a_storage_with_heartbeats_pickles_with_its_sqlite_locking(tmp_path):
    import pickle

    url = f"sqlite:///{tmp_path / 'study.db'}"
    copy = pickle.loads(pickle.dumps(storage(url)))
    assert copy.engine._gradchain_serialised and copy.get_heartbeat_interval() == HEARTBEAT
    study = optuna.create_study(storage=copy, direction="minimize")
    for config in CONFIGS[:2]:  # not the sampler's: a learning rate above 0.5 would diverge
        study.enqueue_trial(config)
    records = optuna_search(study, SPACE, evaluate, 2, metric="val_loss", population=2, worker="one")
    assert [(r["worker"], r["state"]) for r in records] == [("one", "COMPLETE")] * 2, records


if __name__ == "__main__":
    worker_main(json.loads(sys.argv[1]))
