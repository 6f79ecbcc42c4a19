"""The lecture's seven-step recipe for choosing hyperparameters, as a library call on your model.

    summary = gc.tuning.recipe(trainable, data, space, test=(x_test, y_test), out="report")

1. check the initial loss              5. refine around the best, train longer (no decay)
2. overfit a small sample              6. look at the loss curves and act on them
3. find a learning rate                7. GOTO 5 — until the selected metric stops improving;
4. coarse grid, a few epochs              then the final run (cosine decay, early stopping,
                                          an ensemble) and the test metric, looked at once

Step 6 reads the chosen run's curves and changes the next refinement: **overfitting** (a growing
train/validation gap) widens the regularization ranges (weight decay, dropout, augmentation:
every key named in ``regularizers``); **underfitting** or a validation metric still improving at
the end trains longer; **divergence** moves the learning-rate range down and a **plateau** up.
The loop stops when the selected metric improves by less than ``min_delta``, after
``max_rounds`` refinements or when ``budget`` seconds are spent.  Every decision goes into the
report with its reason.

Every trial is a pure run (:func:`gradchain.tuning.make_fit`); each stage trains its population
as one compiled program.  Finished trials are appended to ``out/trials.jsonl`` keyed on
everything that decides their result (config, stage, epochs, batch size, seed, a fingerprint of
the model and the data), so a rerun resumes without repeating one and a changed setting never
reuses an old result; the report and every picture are rebuilt from the records on each run.
Ctrl-C stops cleanly: the finished stages are written as a partial report.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
import types
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import gradchain as gc
from gradchain.data import Split
from gradchain.protocol import Trainable
from gradchain.tuning import curves
from gradchain.tuning.lr_finder import DEFAULT_RATES, _robust_drop, pick_rate
from gradchain.tuning.search import LogUniform, TrialStore, Uniform, _check_space, refine, sample
from gradchain.tuning.training import check_data, choose_strategy, make_fit, stack_configs, train_population

REGULARIZERS = ("weight_decay", "dropout", "augment", "l2", "l1", "mixup", "cutout", "drop_path")
CAPS = {"dropout": 0.7, "augment": 1.0, "drop_path": 0.5, "mixup": 1.0}  # widening never passes these


def default_optimizer(config: Mapping[str, Any], learning_rate: Any) -> gc.GradientTransformation:
    """AdamW without decay on biases and norm scales; ``learning_rate`` a number or a schedule."""
    return gc.adamw(learning_rate, weight_decay=config.get("weight_decay", 0.0), mask=gc.decay_mask)


class Interrupted(Exception):
    """Raised by :func:`recipe` after Ctrl-C, once the partial report is written."""


def recipe(
    trainable: Trainable,
    data: Split,
    space: Mapping[str, Any],
    *,
    test: tuple[Any, Any] | None = None,
    make_optimizer: Callable[[Mapping[str, Any], Any], Any] = default_optimizer,
    select: str = "val_accuracy",
    mode: str = "max",
    out: str | os.PathLike = "gradchain-report",
    epochs: Mapping[str, int] | None = None,
    batch_size: int = 64,
    population: int = 8,
    regularizers: Sequence[str] | None = None,
    min_delta: float = 1e-3,
    max_rounds: int = 3,
    budget: float | None = None,
    ensemble: int = 8,
    seed: int = 0,
    title: str = "",
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run the seven steps on ``trainable`` and ``data``; write ``out/report.md`` and its pictures.

    Args:
      trainable: the model with its loss and metrics (:func:`gradchain.supervised`).
      data: training and validation splits (every choice is made on validation).
      space: the hyperparameters to search besides the learning rate (which the LR finder sets):
        ``name -> LogUniform | Uniform | list``.  Each name must be read by the model, the loss,
        the augmentation or ``make_optimizer``.  An empty dict searches the learning rate alone.
      test: ``(x, y)`` looked at once, after the final stage.
      make_optimizer: ``(config, learning_rate) -> GradientTransformation``; the learning rate is
        ``config["learning_rate"]`` in steps 3–5 and a cosine schedule of it in the final stage.
      select, mode: the metric every choice is made on (``"val_accuracy"``, ``"max"``; for a
        regression ``"val_mse"``, ``"min"``).
      epochs: ``{"coarse": 4, "refine": 15, "final": 40, "max_refine": 60}`` (any subset).
      batch_size, population: minibatch size; trials trained at once per compiled program.
      regularizers: the names in ``space`` that overfitting widens (default: those containing
        one of ``REGULARIZERS``).
      min_delta, max_rounds, budget: when step 7's loop stops (improvement, rounds, seconds).
      ensemble: members of the final ensemble (1: no ensemble).
      seed: all randomness (inits, minibatch orders, search draws) derives from it.
      title: a line for the report's header (what the model and data are).

    Returns:
      A summary dict: the chosen config, the test metrics of the average member and of the
      ensemble, the decisions of step 7 and the seconds taken.  Raises :class:`Interrupted`
      after Ctrl-C (the partial report is written first).
    """
    data = check_data(data)
    run = _Recipe(trainable, data, dict(space), test=test, make_optimizer=make_optimizer, select=select, mode=mode,
                  out=os.fspath(out), epochs=epochs, batch_size=batch_size, population=population,
                  regularizers=regularizers, min_delta=min_delta, max_rounds=max_rounds, budget=budget,
                  ensemble=ensemble, seed=seed, title=title, progress=progress)
    return run.run()


class _Recipe:
    def __init__(self, trainable, data, space, *, test, make_optimizer, select, mode, out, epochs, batch_size,
                 population, regularizers, min_delta, max_rounds, budget, ensemble, seed, title, progress):
        if not isinstance(trainable, Trainable):
            raise TypeError(f"trainable must be a gradchain.Trainable (gradchain.supervised(model, ...)), got {type(trainable).__name__}")
        if not isinstance(space, dict) or "learning_rate" in space:
            raise ValueError(f"space must be a dict of hyperparameters besides learning_rate (the LR finder sets it), got {space!r}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.epochs = {"coarse": 4, "refine": 15, "final": 40, "max_refine": 60} | dict(epochs or {})
        for name, value in self.epochs.items():
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"epochs[{name!r}] must be a positive int, got {value!r}")
        for name, value in (("population", population), ("max_rounds", max_rounds), ("ensemble", ensemble), ("batch_size", batch_size)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if budget is not None and not budget > 0:
            raise ValueError(f"budget must be a positive number of seconds or None, got {budget!r}")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        if space:
            _check_space(space, grid=False)
        self.regularizers = [n for n in space if any(r in n for r in REGULARIZERS)] if regularizers is None else list(regularizers)
        unknown = [n for n in self.regularizers if n not in space]
        if unknown:
            raise ValueError(f"regularizers {unknown} are not in space (it has {sorted(space)})")
        self.trainable, self.data, self.space, self.test = trainable, data, space, test
        self.make_optimizer, self.select, self.mode, self.out = make_optimizer, select, mode, out
        self.batch_size, self.population, self.min_delta, self.max_rounds = batch_size, population, min_delta, max_rounds
        self.budget, self.ensemble, self.seed, self.title, self.progress = budget, ensemble, seed, title, progress
        self.sign = 1.0 if mode == "max" else -1.0
        self.key = jax.random.PRNGKey(seed)
        self.per_epoch = max(1, len(data.y_train) // min(batch_size, len(data.y_train)))
        self.sections: list[list[str]] = []
        self.decisions: list[dict[str, Any]] = []
        self.start = time.perf_counter()
        try:
            os.makedirs(out, exist_ok=True)
            probe = os.path.join(out, ".write-test")
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as error:
            raise OSError(f"out={out!r} is not a writable folder: {error.strerror or error}") from None
        self.store = TrialStore(os.path.join(out, "trials.jsonl"))
        # one optimizer factory per kind of learning rate: runs that share it share compiled steps
        self.constant_rate = lambda config: self.make_optimizer(config, config["learning_rate"])
        self.fingerprint = self._fingerprint()

    # -- bookkeeping ----------------------------------------------------------------------------

    def _fingerprint(self) -> str:
        """A hash of what decides every result besides the config: model, loss, data, seed."""
        params, state = jax.eval_shape(self.trainable.init, self.key)
        batch = jax.tree.map(lambda a: a[:2], (self.data.x_train, self.data.y_train))
        example = dict.fromkeys(self.space, 0.5) | {"learning_rate": 1e-3}
        program = jax.make_jaxpr(lambda p, s: self.trainable.loss(p, s, batch, self.key, example))(
            *jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), (params, state)))
        digest = hashlib.sha1(str(program).encode())
        for array in jax.tree.leaves(self.data):
            digest.update(np.ascontiguousarray(np.asarray(array)).tobytes())
        digest.update(repr((self.seed, self.batch_size, self.select, self.mode)).encode())
        return digest.hexdigest()[:16]

    def _id(self, config, stage) -> str:
        text = json.dumps({"config": {k: repr(float(v)) for k, v in sorted(config.items())}, "stage": stage,
                           "fingerprint": self.fingerprint}, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:16]

    def _section(self, *lines: str) -> None:
        lines = lines + (f"_({self._elapsed():.0f} s so far)_", "")
        self.sections.append(list(lines))
        for line in lines:
            print(line, flush=True)

    def _elapsed(self) -> float:
        return time.perf_counter() - self.start

    def _better(self, a: float, b: float) -> bool:
        return self.sign * (a - b) > 0

    # -- training a stage -------------------------------------------------------------------------

    def _train(self, configs: list[dict], stage: dict, desc: str) -> list[dict]:
        """Train the configs not yet in the store (``population`` at a time); return all records."""
        epochs = stage["epochs"]
        steps = epochs * self.per_epoch
        eval_every = self.per_epoch if stage.get("eval_every_epoch", True) else steps
        patience = stage.get("patience")

        fit = make_fit(self.trainable, self.constant_rate, self.data, steps=steps, batch_size=self.batch_size,
                       eval_every=eval_every, patience=patience, select=self.select, mode=self.mode)
        strategy = choose_strategy(fit, self.batch_size)
        ids = [self._id(c, stage) for c in configs]
        todo = [(i, c) for i, c in zip(ids, configs) if i not in self.store.results]
        todo = list({i: (i, c) for i, c in todo}.values())
        keys = jnp.broadcast_to(jax.random.fold_in(self.key, 1), (self.population, 2))  # same init and batches: a fair race
        for start in range(0, len(todo), self.population):
            chunk = todo[start : start + self.population]
            result = train_population(fit, stack_configs([c for _, c in chunk]), keys[: len(chunk)], strategy=strategy,
                                      progress=self.progress, desc=f"{desc} ({start + len(chunk)}/{len(todo)})")
            for j, (trial, config) in enumerate(chunk):
                self.store.add_record({"id": trial, "config": config, "stage": stage, "best_step": int(result.best_step[j]),
                                       "metrics": {k: float(v[j, -1]) for k, v in result.metrics.items()},
                                       "history": _history(result, j)})
        return [self.store.results[i] for i in ids]

    def _best(self, records):
        finite = [r for r in records if math.isfinite(r["metrics"].get(self.select, math.nan))]
        if not finite:
            return None
        return max(finite, key=lambda r: self.sign * r["metrics"][self.select])

    # -- the seven steps -----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"fingerprint": self.fingerprint}
        header = ["# gradchain recipe report", "", self.title or "", "",
                  f"{len(self.data.y_train)} training / {len(self.data.y_val)} validation examples"
                  f"{'' if self.test is None else f' / {len(self.test[1])} test'}; selecting on {self.select} "
                  f"({self.mode}); batch {self.batch_size}; seed {self.seed}; backend {jax.default_backend()}.", ""]
        stage_name = "1. initial loss"
        try:
            base = self._base_config()
            self._initial_loss(base, summary)
            stage_name = "2. overfit a small sample"
            self._overfit(base, summary)
            stage_name = "3. learning-rate finder"
            lr = self._lr_finder(base, summary)
            stage_name = "4. coarse grid"
            chosen = self._coarse(lr, summary)
            stage_name = "5–7. refine and read the curves"
            chosen = self._refine_loop(chosen, lr, summary)
            stage_name = "final stage"
            self._final(chosen, summary)
        except KeyboardInterrupt:
            self._write(header, partial=stage_name)
            raise Interrupted(f"interrupted during {stage_name}; partial report: {os.path.join(self.out, 'report.md')}") from None
        summary["seconds"] = self._elapsed()
        self.sections.append([f"Total time: {summary['seconds']:.0f} s.", ""])
        self._write(header)
        return summary

    def _base_config(self) -> dict:
        """The middle of every range, regularization off: the config of the sanity checks."""
        base = {name: _at(dist, 0.5) for name, dist in self.space.items()}
        for name in self.regularizers:
            base[name] = _at(self.space[name], 0.0) if not isinstance(self.space[name], LogUniform) else 0.0
        return base

    def _initial_loss(self, base, summary):
        params, state = self.trainable.init(self.key)
        n = min(512, len(self.data.y_train))
        batch = jax.tree.map(lambda a: a[:n], (self.data.x_train, self.data.y_train))
        loss = float(self.trainable.evaluate(params, state, batch, base | {"learning_rate": 0.0})["loss"])
        summary["initial_loss"] = loss
        c = self.trainable.num_classes
        if c is None and jnp.issubdtype(self.data.y_train.dtype, jnp.integer):
            c = int(jnp.max(self.data.y_train)) + 1
        if c is not None and c >= 2:
            ok = abs(loss / math.log(c) - 1) <= 0.1
            text = (f"initial loss {loss:.4f} ≈ log({c}) = {math.log(c):.4f}: as expected" if ok else
                    f"initial loss {loss:.4f} against log({c}) = {math.log(c):.4f}: check the output layer's "
                    "initial scale (a softmax classifier should start near uniform)")
        else:
            text = f"initial loss {loss:.4g} (no closed-form expectation for this loss: compare with predicting the mean)"
        self._section("## 1. Initial loss", "", text, "")

    def _overfit(self, base, summary):
        n = min(len(self.data.y_train), 5 * min(32, self.batch_size))
        small = Split(self.data.x_train[:n], self.data.y_train[:n], self.data.x_val, self.data.y_val)
        steps = 200
        fit = make_fit(self.trainable, self.constant_rate, small, steps=steps,
                       batch_size=min(32, n), eval_every=25, select=self.select, mode=self.mode)
        result = train_population(fit, stack_configs([base | {"learning_rate": 1e-3}]), self.key[None],
                                  strategy="sequential", progress=self.progress, desc="2. overfit")
        result = jax.tree.map(lambda a: a[0], result)
        losses = np.asarray(result.losses)
        summary["overfit_final_loss"] = float(np.mean(losses[-10:]))
        drop = 1 - np.mean(losses[-10:]) / np.mean(losses[:10])
        train_acc = result.metrics.get("train_accuracy")
        reached = None if train_acc is None else next((25 * (i + 1) for i, a in enumerate(np.asarray(train_acc)) if a >= 1.0), None)
        if not np.all(np.isfinite(losses)):
            text = "the loss became non-finite on a small sample: learning rate too high or a bug in the loss"
        elif reached is not None:
            text = f"100% training accuracy on {n} examples after {reached} steps (loss {losses[0]:.3f} → {losses[-1]:.3g})"
        else:
            text = f"training loss on {n} examples fell by {drop:.0%} in {steps} steps ({losses[0]:.3g} → {np.mean(losses[-10:]):.3g})"
        curves.plot_loss_curves({f"{n} examples, regularization off": losses}, os.path.join(self.out, "overfit.png"),
                                window=10, title="Step 2: overfit a small sample")
        self._section("## 2. Overfit a small sample", "", text, "", "![overfit](overfit.png)", "")

    def _lr_finder(self, base, summary) -> float:
        rates = np.asarray(DEFAULT_RATES)
        stage = {"name": "lr_finder", "epochs": max(1, -(-100 // self.per_epoch)), "eval_every_epoch": False}
        configs = [base | {"learning_rate": float(r)} | {n: 1e-4 if "weight_decay" in n else base[n] for n in self.regularizers} for r in rates]
        records = self._train(configs, stage, "3. LR finder")
        losses = np.asarray([r["history"]["losses"] for r in records])
        drops = np.array([_robust_drop(run, 10) for run in losses])
        if not np.any(np.isfinite(drops) & (drops > 0)):
            lr, text = 1e-3, "no learning rate made the loss go down; continuing at 1e-3 — check the model and the data"
        else:
            pick = pick_rate(rates, drops)
            lr = float(rates[pick])
            text = (f"learning rate {lr:.3g}: loss drop {drops[pick]:.0%} in {losses.shape[1]} steps; "
                    f"{int(np.sum(~np.isfinite(drops)))} of {len(rates)} rates diverged")
        summary["lr_finder"] = lr
        _plot_lr_finder(rates, losses, drops, lr, os.path.join(self.out, "lr_finder.png"))
        self._section("## 3. Find a learning rate that makes the loss go down", "", text, "", "![lr finder](lr_finder.png)", "")
        return lr

    def _coarse(self, lr, summary) -> dict:
        levels = [0.0, 0.5, 1.0] if self.regularizers else [None]
        configs = []
        for rate in (lr / 3, lr, 3 * lr):
            for level in levels:
                config = {name: _at(dist, 0.5) for name, dist in self.space.items()} | {"learning_rate": rate}
                if level is not None:
                    config |= {name: _at(self.space[name], level) for name in self.regularizers}
                configs.append(config)
        stage = {"name": "coarse", "epochs": self.epochs["coarse"]}
        records = self._train(configs, stage, "4. coarse grid")
        top = self._best(records)
        if top is None:
            raise RuntimeError("every coarse-grid trial diverged: lower the learning-rate range or check the model")
        self._section(f"## 4. Coarse grid, {stage['epochs']} epochs", "", _table(records, self.select, self.sign), "",
                      f"Best: {_describe(top['config'])}, {self.select} {top['metrics'][self.select]:.4f}", "")
        summary["coarse_best"] = top["metrics"][self.select]
        return top

    def _refine_loop(self, top, lr, summary) -> dict:
        space = {"learning_rate": LogUniform(top["config"]["learning_rate"] / 3, top["config"]["learning_rate"] * 3)}
        space |= refine(self.space, top["config"], shrink=2.0) if self.space else {}
        epochs = self.epochs["refine"]
        best, previous, first_round = None, None, None
        for round_ in range(1, self.max_rounds + 1):
            stage = {"name": "refine", "round": round_, "epochs": epochs, "space": _describe_space(space)}
            configs = [_rounded(c) for c in sample(space, self.population, jax.random.fold_in(self.key, 100 + round_))]
            records = self._train(configs, stage, f"5. refine, round {round_}")
            chosen = self._best(records)
            if chosen is None:
                raise RuntimeError(f"every trial of refinement round {round_} diverged: lower the learning-rate range")
            value = chosen["metrics"][self.select]
            first_round = value if first_round is None else first_round
            if best is None or self._better(value, best["metrics"][self.select]):
                best = chosen
            improved = previous is None or self.sign * (value - previous) > self.min_delta
            path = f"command_center_{round_}.png"
            figure = curves.command_center([dict(title=_describe(r["config"]), **r["history"]) for r in records],
                                           os.path.join(self.out, path), metric=self.select.removeprefix("val_"),
                                           window=max(1, self.per_epoch // 2))
            figure.savefig(os.path.join(self.out, "command_center.png"), dpi=110)  # the latest round
            notes = curves.diagnose(chosen["history"]["losses"], *self._metric_pair(chosen))
            previous = value if previous is None or self._better(value, previous) else previous
            lines = [f"## 5. Refine, round {round_}: {epochs} epochs, constant learning rate", "",
                     f"Space: {stage['space']}", "", _table(records, self.select, self.sign), "",
                     f"Best: {_describe(chosen['config'])}, {self.select} {value:.4f}", "",
                     f"## 6. Loss curves, round {round_}", "", f"![command center]({path})", ""]
            lines += [f"- {n}" for n in notes] + [""]
            stop_reason = None
            if not improved:
                stop_reason = (f"{self.select} {value:.4f} does not beat the best so far ({previous:.4f}) by more "
                               f"than min_delta={self.min_delta}")
            elif round_ == self.max_rounds:
                stop_reason = f"max_rounds={self.max_rounds} refinements done"
            elif self.budget is not None and self._elapsed() > self.budget:
                stop_reason = f"budget of {self.budget:.0f} s spent ({self._elapsed():.0f} s)"
            if stop_reason:
                self.decisions.append({"round": round_, "action": "stop", "reason": stop_reason})
                lines += [f"**Step 7: stop** — {stop_reason}.", ""]
                self._section(*lines)
                break
            space, epochs, acts = self._act(notes, chosen, records, space, epochs)
            for act in acts:
                self.decisions.append({"round": round_, **act})
            lines += ["**Step 7: GOTO 5** —"] + [f"- {a['action']}: {a['reason']}" for a in acts] + [""]
            self._section(*lines)
        assert best is not None  # max_rounds >= 1: at least one round ran
        summary["first_refinement_best"] = first_round
        summary["refined_best"] = best["metrics"][self.select]
        summary["decisions"] = self.decisions
        summary["config"] = best["config"]
        return best

    def _metric_pair(self, record):
        metric = self.select.removeprefix("val_")
        h = record["history"]
        train, val = h.get(f"train_{metric}"), h.get(f"val_{metric}")
        if train is None or val is None:
            return None, None
        if self.mode == "min":  # diagnose reads "higher is better": flip losses and errors
            return [-v for v in train], [-v for v in val]
        return train, val

    def _act(self, notes, chosen, records, space, epochs):
        """Step 7: turn what the curves say into the next round's space and length."""
        acts = []
        text = " ".join(notes)
        diverged = sum(not all(math.isfinite(v) for v in r["history"]["losses"]) for r in records)
        metric = self.select.removeprefix("val_")
        h = chosen["history"]
        val = np.asarray(h.get(self.select, [math.nan]), np.float64) * self.sign
        train = np.asarray(h.get(f"train_{metric}", val), np.float64) * self.sign
        gap = train[-1] - val[-1]
        lr_dist = space["learning_rate"]
        if diverged > len(records) // 2 or "too high" in text:
            space = space | {"learning_rate": LogUniform(lr_dist.low / 3, lr_dist.high / 3)}
            acts.append({"action": "learning-rate range ÷3", "reason": f"{diverged} of {len(records)} runs diverged or the loss rose at the end"})
        elif "not going down" in text:
            space = space | {"learning_rate": LogUniform(lr_dist.low * 3, lr_dist.high * 3)}
            acts.append({"action": "learning-rate range ×3", "reason": "the loss plateaued"})
        overfit = "overfitting" in text or gap > 0.02 * max(abs(val[-1]), 1e-3)
        if overfit and self.regularizers:
            widened = {n: _widen(n, space[n], chosen["config"][n]) for n in self.regularizers}
            space = space | widened
            acts.append({"action": "regularization widened: " + ", ".join(f"{n} {_describe_dist(d)}" for n, d in widened.items()),
                         "reason": f"train/validation gap {gap:.3g} on {metric}: overfitting"})
        elif overfit:
            acts.append({"action": "none for the gap", "reason": "overfitting, but space names no regularizer to widen"})
        still_rising = len(val) >= 2 and val[-1] > np.max(val[: max(1, int(0.8 * len(val)))]) + self.min_delta
        if ("underfitting" in text or still_rising) and epochs < self.epochs["max_refine"]:
            new = min(2 * epochs, self.epochs["max_refine"])
            why = "underfitting: no train/validation gap" if "underfitting" in text else f"{self.select} still improving at the last epoch"
            acts.append({"action": f"train longer: {epochs} → {new} epochs", "reason": why})
            epochs = new
        if not acts:
            space = space | {"learning_rate": LogUniform(chosen["config"]["learning_rate"] / 2, chosen["config"]["learning_rate"] * 2)}
            acts.append({"action": "narrow the search around the best", "reason": "healthy curves"})
        return space, epochs, acts

    def _final(self, chosen, summary):
        """Cosine decay, early stopping, ``ensemble`` members from their own inits.  The members are
        needed in memory for the test, so this stage always trains (it is not resumed)."""
        config = chosen["config"]
        epochs = self.epochs["final"]
        steps = epochs * self.per_epoch

        def optimizer(c):
            return self.make_optimizer(c, gc.cosine_schedule(c["learning_rate"], steps))

        fit = make_fit(self.trainable, optimizer, self.data, steps=steps, batch_size=self.batch_size,
                       eval_every=self.per_epoch, patience=10, select=self.select, mode=self.mode)
        keys = jax.random.split(jax.random.fold_in(self.key, 7), self.ensemble)
        result = train_population(fit, stack_configs([config] * self.ensemble), keys,
                                  strategy=choose_strategy(fit, self.batch_size), progress=self.progress,
                                  desc="7. final members")
        curves.plot_band(np.asarray(result.losses), os.path.join(self.out, "final.png"), window=self.per_epoch,
                         title=f"Final stage: {self.ensemble} members, cosine decay, early stopping")
        best_epochs = ", ".join(str(int(s) // self.per_epoch) for s in np.asarray(result.best_step))
        lines = [f"## 7. Final model: {epochs} epochs, cosine decay, early stopping on {self.select}", "",
                 f"Config: {_describe(config)}.", "", f"Best snapshots at epochs {best_epochs}.", "",
                 "![final](final.png)", ""]
        if self.test is not None:
            lines += self._test_metrics(config, result, summary)
        self._section(*lines)

    def _test_metrics(self, config, result, summary):
        x, y = self.test
        config = {k: jnp.float32(v) for k, v in config.items()}
        params, states = result.params, result.model_state
        per_member = jax.vmap(lambda p, s: self.trainable.evaluate(p, s, (x, y), config))(params, states)
        metric = self.select.removeprefix("val_")
        single = float(np.mean(per_member[metric]))
        members = self.ensemble
        lines = [f"| test, looked at once | {metric} |", "|---|---|", f"| single model (mean of {members}) | {single:.4f} |"]
        summary["test_single"] = single
        summary["test_accuracy" if metric == "accuracy" else f"test_{metric}"] = single
        predict = self.trainable.predict
        if predict is not None and members > 1:
            outputs = jax.vmap(lambda p, s: predict(p, s, x, config))(params, states)
            if metric == "accuracy":  # the lecture: average the predicted distributions, then argmax
                ens = float(jnp.mean(jnp.argmax(jnp.mean(jax.nn.softmax(outputs), 0), -1) == y))
            else:
                from gradchain.protocol import METRICS

                fn = METRICS.get(metric)
                ens = float("nan") if fn is None else float(jnp.mean(fn(jnp.mean(outputs, 0), y)))
            how = "mean probabilities, then argmax" if metric == "accuracy" else "mean output"
            lines += [f"| ensemble of {members} ({how}) | {ens:.4f} |", f"| gain | {self.sign * (ens - single):+.4f} |"]
            summary["test_ensemble"] = ens
            summary["ensemble_accuracy" if metric == "accuracy" else f"ensemble_{metric}"] = ens
        return lines + [""]

    # -- the report -------------------------------------------------------------------------------

    def _write(self, header, partial: str | None = None):
        lines = list(header)
        if partial:
            lines += [f"**Partial report: interrupted during {partial}.** The sections below are the finished stages.", ""]
        for section in self.sections:
            lines += section
        with open(os.path.join(self.out, "report.md"), "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        print(f"report: {os.path.join(self.out, 'report.md')}", flush=True)


# -- small helpers ------------------------------------------------------------------------------


def _at(dist, level: float) -> float:
    """The point at ``level`` in [0, 1] of a range (geometric for LogUniform) or a list."""
    if isinstance(dist, LogUniform):
        return float(math.exp(math.log(dist.low) + level * (math.log(dist.high) - math.log(dist.low))))
    if isinstance(dist, Uniform):
        return float(dist.low + level * (dist.high - dist.low))
    values = sorted(float(v) for v in dist)
    return values[round(level * (len(values) - 1))]


def _widen(name, dist, center):
    """Overfitting: move a regularizer's range up from the chosen value, capped where it must be."""
    cap = next((v for k, v in CAPS.items() if k in name), math.inf)
    if isinstance(dist, LogUniform):
        return LogUniform(max(dist.low, center), dist.high * 10)
    if isinstance(dist, Uniform):
        high = min(cap, max(2 * dist.high, dist.high + 0.2))
        low = min(center, high - 1e-6)
        return Uniform(low, high)
    values = sorted(float(v) for v in dist)
    step = values[-1] - values[-2] if len(values) > 1 else max(values[-1], 1e-4)
    return [v for v in values if v >= center] + [min(cap, values[-1] + step)]


def _history(result, j) -> dict[str, list[float]]:
    """Member ``j``'s curves (minibatch losses, metrics per evaluation) for the trial record."""
    return {"losses": _round(result.losses[j]), **{k: _round(v[j]) for k, v in result.metrics.items()}}


def _round(values) -> list[float]:
    return [float(f"{v:.6g}") for v in np.asarray(values, np.float64).ravel()]


def _rounded(config: dict) -> dict:
    return {k: float(f"{v:.4g}") for k, v in config.items()}


def _describe(config: Mapping[str, float]) -> str:
    return ", ".join(f"{k.replace('_', ' ')} {v:.3g}" for k, v in sorted(config.items()) if not k.startswith("_"))


def _describe_dist(dist) -> str:
    if isinstance(dist, (LogUniform, Uniform)):
        return f"{type(dist).__name__}({dist.low:.3g}, {dist.high:.3g})"
    return "[" + ", ".join(f"{v:.3g}" for v in dist) + "]"


def _describe_space(space) -> str:
    return ", ".join(f"{k} {_describe_dist(d)}" for k, d in sorted(space.items()))


def _table(records, select, sign) -> str:
    names = sorted({k for r in records for k in r["config"] if not k.startswith("_")})
    metrics = [m for m in sorted(records[0]["metrics"]) if m.startswith(("train_", "val_"))]
    rows = ["| " + " | ".join(names + metrics) + " |", "|" + "---|" * (len(names) + len(metrics))]
    key = lambda r: -sign * r["metrics"].get(select, math.nan) if math.isfinite(r["metrics"].get(select, math.nan)) else math.inf
    for r in sorted(records, key=key):
        rows.append("| " + " | ".join([f"{r['config'][n]:.3g}" for n in names] + [f"{r['metrics'][m]:.4f}" for m in metrics]) + " |")
    return "\n".join(rows)


def _plot_lr_finder(rates, losses, drops, pick, path):
    """Loss curves coloured by rate on a log colormap (with a colorbar), and the drop per rate."""
    import matplotlib
    from matplotlib import cm, colors
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    left, right = fig.subplots(1, 2)
    norm = colors.LogNorm(vmin=float(np.min(rates)), vmax=float(np.max(rates)))
    cmap = matplotlib.colormaps["viridis"]
    for rate, run in zip(rates, losses):
        left.plot(curves.moving_average(run, 10), lw=1, color=cmap(norm(rate)))
    left.set(yscale="log", xlabel="step", ylabel="training loss (moving average of 10)", title="loss per learning rate")
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=left, label="learning rate")
    right.semilogx(rates, drops, "o-", color="C0", label="robust loss drop")
    right.axvline(pick, color="C3", ls="--", label=f"pick {pick:.2g}")
    right.set(xlabel="learning rate", ylabel="1 − median(last 10) / initial loss", title="LR finder (NaN: diverged)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


class _CallableModule(types.ModuleType):
    """``gradchain.tuning.recipe`` is this module and, called, the :func:`recipe` function."""

    def __call__(self, *args, **kwargs):
        return recipe(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


def __getattr__(name: str):
    """The digits main job's pieces, where earlier versions defined them (``main``, ``make_task``,
    ``adamw_from_config``, ``SIZES``): kept importable from here, defined in the demo module."""
    if name in ("main", "make_task", "adamw_from_config", "SIZES"):
        from gradchain import digits_recipe

        return getattr(digits_recipe, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
