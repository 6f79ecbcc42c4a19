"""The lecture's seven-step recipe for choosing hyperparameters, as a library call on your model.

    summary = gc.tuning.recipe(trainable, data, space, test=(x_test, y_test), out="report")

1. check the initial loss              5. refine around the best, train longer (no decay)
2. overfit a small sample              6. look at the loss curves and act on them
3. find a learning rate                7. GOTO 5 — until the selected metric stops improving;
4. coarse grid, a few epochs              then the final run (cosine decay, early stopping,
                                          an ensemble) and the test metric, looked at once

Each step is one call of a public function, with the same arguments a user would give it
alone (``docs/recipe_steps.md`` runs them one by one): :func:`check_initial_loss`,
:func:`overfit_small_sample`, :func:`lr_finder`, :func:`run_trials` of a
:func:`population_evaluate` (steps 4 and 5), :func:`diagnose` (step 6),
:func:`next_round` (step 7's policy), :func:`train_population` and :func:`evaluate_ensemble`
(the final stage).

Step 7 switches on the kinds of :func:`diagnose`'s findings: **overfitting** widens the
regularization ranges, **underfitting** or a validation metric still improving at the end trains
longer, **diverged** runs or a **rising** loss move the learning-rate range down and a
**plateau** up.  Trials are stored in ``out/trials.jsonl`` keyed on their config and a
fingerprint of their whole run (model, loss, data, optimizer factory, initialisation, lengths,
key), so a rerun reuses exactly the finished trials; the report is rewritten after every step
and says it is partial until the recipe has finished.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradchain.optimizers import adamw
from gradchain.protocol import Split, Trainable, check_data, check_labels, check_pair, num_outputs
from gradchain.schedules import cosine_schedule
from gradchain.transforms.wrappers import decay_mask
from gradchain.tuning import curves
from gradchain.tuning.ensemble import evaluate_ensemble
from gradchain.tuning.lr_finder import DEFAULT_RATES, lr_finder
from gradchain.tuning.sanity import check_initial_loss, overfit_small_sample
from gradchain.tuning.search import LogUniform, TrialStore, Uniform, best, check_space, refine, run_trials, sample
from gradchain.tuning.settings import RecipeSettings
from gradchain.tuning.training import check_trainable, choose_strategy, make_fit, population_evaluate, train_padded

REGULARIZERS = ("weight_decay", "dropout", "augment", "l2", "l1", "mixup", "cutout", "drop_path")
CAPS = {"dropout": 0.7, "augment": 1.0, "drop_path": 0.5, "mixup": 1.0}  # widening never passes these


def default_optimizer(config: Mapping[str, Any]):
    """AdamW without decay on biases and norm scales.

    Reads ``config["learning_rate"]`` (a number, a traced array or a schedule: the recipe's
    final stage puts a cosine schedule there) and ``config["weight_decay"]`` (0 when absent).
    """
    return adamw(config["learning_rate"], weight_decay=config.get("weight_decay", 0.0), mask=decay_mask)


class Interrupted(Exception):
    """Raised by :func:`recipe` after Ctrl-C, once the partial report is written."""


class _Override(Mapping):
    """``config`` with some values replaced; reads of the others pass through (and are recorded)."""

    def __init__(self, config: Mapping[str, Any], **values: Any):
        self._config, self._values = config, values

    def __getitem__(self, name):
        return self._values[name] if name in self._values else self._config[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._config)

    def __len__(self) -> int:
        return len(self._config)


def recipe(trainable: Trainable, data: Split, space: Mapping[str, Any], *, test: tuple[Any, Any] | None = None,
           make_optimizer: Callable[[Mapping[str, Any]], Any] = default_optimizer,
           settings: RecipeSettings | Mapping[str, Any] | None = None,
           out: str | os.PathLike = "gradchain-report") -> dict[str, Any]:
    """Run the seven steps on ``trainable`` and ``data``; write ``out/report.md`` and its pictures.

    Args:
      trainable: the model with its loss and metrics (:func:`gradchain.supervised`).
      data: training and validation splits (every choice is made on validation).
      space: the hyperparameters to search besides the learning rate (which the LR finder sets):
        ``name -> LogUniform | Uniform | list``.  Each name must be read by the model, the loss,
        the augmentation or ``make_optimizer``.  An empty dict searches the learning rate alone.
      test: ``(x, y)`` looked at once, after the final stage (checked before anything trains).
      make_optimizer: ``config -> GradientTransformation``, the convention of every tuning
        function; ``config["learning_rate"]`` is a number in steps 2–5 and a cosine schedule in
        the final stage.
      settings: a :class:`RecipeSettings` (or a dict of its fields): epochs, batch size,
        population, step 7's stopping rule, ensemble, seed, selection, title, progress.
      out: the report folder (created; ``trials.jsonl`` there makes a rerun resume).

    Returns:
      A summary dict: the chosen config, the test metrics of the average member and of the
      ensemble, the decisions of step 7 and the seconds taken.  Raises :class:`Interrupted`
      after Ctrl-C (the partial report is written first).
    """
    s = RecipeSettings.of(settings)
    check_trainable(trainable)
    data = check_data(data)
    space = _check_recipe_space(space)
    regularizers = _regularizers(space, s.regularizers)
    if not callable(make_optimizer):
        raise TypeError(f"make_optimizer must be a function config -> GradientTransformation, got {make_optimizer!r}")
    if test is not None:
        test = _check_test(trainable, data, test, _base_config(space, regularizers) | {"learning_rate": 0.0})
    run = _Run(trainable, data, space, regularizers, test, make_optimizer, s, os.fspath(out))
    return run.all_steps()


class _Run:
    """One recipe run: its report, its trial store, its keys (all derived from ``settings.seed``)."""

    def __init__(self, trainable, data, space, regularizers, test, make_optimizer, settings: RecipeSettings, out):
        self.trainable, self.data, self.space, self.regularizers = trainable, data, space, regularizers
        self.test, self.make_optimizer, self.s, self.out = test, make_optimizer, settings, out
        self.sign = 1.0 if settings.mode == "max" else -1.0
        self.key = jax.random.PRNGKey(settings.seed)
        self.race_key = jax.random.fold_in(self.key, 1)  # every search trial: same init and batches
        self.per_epoch = max(1, len(data.y_train) // min(settings.batch_size, len(data.y_train)))
        self.writer = jax.process_index() == 0  # a multi-process job: one report, one set of pictures
        self.report = _Report(out, self._header(), writer=self.writer)
        if jax.process_count() > 1:  # process 0 has made the folder before anyone opens the store
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices("gradchain recipe: report folder")
        if not self.writer:  # progress bars on process 0 only
            self.s = settings = settings.replace(progress=False)
        self.store = TrialStore(os.path.join(out, "trials.jsonl"))
        self.decisions: list[dict[str, Any]] = []
        self.start = time.perf_counter()

    def _header(self) -> list[str]:
        s, d = self.s, self.data
        test = "" if self.test is None else f" / {len(self.test[1])} test"
        return ["# gradchain recipe report", "", s.title, "",
                f"{len(d.y_train)} training / {len(d.y_val)} validation examples{test}; selecting on {s.select} "
                f"({s.mode}); batch {s.batch_size}; seed {s.seed}; backend {jax.default_backend()}.", "",
                "Tables measure both splits on the test-time path (no dropout or augmentation, batch-norm running "
                "statistics); the curves show the training path's minibatch loss.", ""]

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def section(self, *lines: str) -> None:
        self.report.add(list(lines) + [f"_({self.elapsed():.0f} s so far)_", ""])

    def stage(self, epochs: int, *, patience: int | None = None, schedule: bool = False):
        """The run of a stage: ``epochs`` epochs, evaluated every epoch; with ``schedule`` the
        learning rate decays along a cosine (the final stage)."""
        steps = epochs * self.per_epoch
        make = self.make_optimizer
        if schedule:
            make = lambda c: self.make_optimizer(_Override(c, learning_rate=cosine_schedule(c["learning_rate"], steps)))
        return make_fit(self.trainable, make, self.data, steps=steps, batch_size=self.s.batch_size,
                        eval_every=self.per_epoch, patience=patience, select=self.s.select, mode=self.s.mode)

    def trials(self, configs: list[dict], epochs: int, desc: str) -> list[dict]:
        """Steps 4 and 5: the configs trained ``population`` at a time, finished ones reused."""
        fit = self.stage(epochs)
        evaluate = population_evaluate(fit, self.race_key, strategy=choose_strategy(fit, self.s.batch_size),
                                       progress=self.s.progress, desc=desc)
        return run_trials(configs, evaluate, store=self.store, population=self.s.population, progress=False)

    def best(self, records: list[dict]) -> dict | None:
        try:
            return best(records, self.s.select, self.s.mode)
        except ValueError:
            return None

    # -- the seven steps -----------------------------------------------------------------------

    def all_steps(self) -> dict[str, Any]:
        summary: dict[str, Any] = {}
        step = "1. initial loss"
        try:
            base = _base_config(self.space, self.regularizers)
            self.initial_loss(base, summary)
            step = "2. overfit a small sample"
            self.overfit(base, summary)
            step = "3. learning-rate finder"
            lr = self.find_rate(base, summary)
            step = "4. coarse grid"
            chosen = self.coarse(lr, summary)
            step = "5–7. refine and read the curves"
            chosen = self.refine_loop(chosen, summary)
            step = "the final stage"
            self.final(chosen, summary)
        except KeyboardInterrupt:
            self.report.write(partial=f"interrupted during {step}")
            raise Interrupted(f"interrupted during {step}; partial report: {self.report.path}") from None
        summary["seconds"] = self.elapsed()
        summary["diverged_trials"] = sum(r.get("status") == "diverged" for r in self.store.results.values())
        self.report.add([f"Total time: {summary['seconds']:.0f} s.", ""])
        self.report.write()
        return summary

    def initial_loss(self, base, summary):
        found = check_initial_loss(self.trainable, self.data, self.key, base | {"learning_rate": 0.0})
        summary["initial_loss"] = found.loss
        self.section("## 1. Initial loss", "", found.message, "")

    def overfit(self, base, summary):
        small_batch = min(32, self.s.batch_size)
        found = overfit_small_sample(self.trainable, self.make_optimizer, self.data, base | {"learning_rate": 1e-3},
                                     self.key, num_examples=5 * small_batch, batch_size=small_batch,
                                     select=self.s.select, mode=self.s.mode, progress=self.s.progress)
        summary["overfit_final_loss"] = float(np.mean(found.losses[-10:]))
        if self.writer:
            curves.plot_loss_curves({f"{found.num_examples} examples, regularization off": found.losses},
                                    os.path.join(self.out, "overfit.png"), window=10, title="Step 2: overfit a small sample")
        self.section("## 2. Overfit a small sample", "", found.message, "", "![overfit](overfit.png)", "")

    def find_rate(self, base, summary) -> float:
        config = base | {n: 1e-4 for n in self.regularizers if "weight_decay" in n}
        steps = max(1, -(-100 // self.per_epoch)) * self.per_epoch  # whole epochs, at least 100 steps
        found = lr_finder(self.trainable, self.make_optimizer, self.data, self.race_key, config, steps=steps,
                          batch_size=self.s.batch_size, select=self.s.select, mode=self.s.mode, store=self.store,
                          progress=self.s.progress)
        lr, text = found.learning_rate, found.message
        if found.kind == "none_decreased":
            lr, text = 1e-3, text + "; continuing at 1e-3"
        summary["lr_finder"] = lr
        if self.writer:
            _plot_lr_finder(found.rates, found.losses, found.drops, lr, os.path.join(self.out, "lr_finder.png"))
        self.section("## 3. Find a learning rate that makes the loss go down", "", text, "",
                     "![lr finder](lr_finder.png)", "")
        return lr

    def coarse(self, lr, summary) -> dict:
        """A grid of three learning rates (lr/3, lr, 3·lr) crossed with three levels of
        regularization; the regularizers move together (all at the bottom, middle or top of
        their ranges): a diagonal, not a full grid, so the grid stays 9 trials."""
        levels = [0.0, 0.5, 1.0] if self.regularizers else [None]
        configs = []
        for rate in (lr / 3, lr, 3 * lr):
            for level in levels:
                config = {name: _at(dist, 0.5) for name, dist in self.space.items()} | {"learning_rate": rate}
                if level is not None:
                    config |= {name: _at(self.space[name], level) for name in self.regularizers}
                configs.append(config)
        epochs = self.s.epochs["coarse"]
        records = self.trials(configs, epochs, "4. coarse grid")
        top = self.best(records)
        if top is None:
            raise RuntimeError("every coarse-grid trial diverged: lower the learning-rate range or check the model")
        how = ("3 learning rates × 3 regularization levels; the regularizers "
               f"({', '.join(self.regularizers)}) move together, at the bottom, middle and top of their ranges"
               if self.regularizers else "3 learning rates")
        self.section(f"## 4. Coarse grid, {epochs} epochs", "", how + ".", "", _table(records, self.s.select, self.sign),
                     "", f"Best: {_describe(top['config'])}, {self.s.select} {top['metrics'][self.s.select]:.4f}", "")
        summary["coarse_best"] = top["metrics"][self.s.select]
        return top

    def refine_loop(self, top, summary) -> dict:
        s = self.s
        rate = top["config"]["learning_rate"]
        space = {"learning_rate": LogUniform(rate / 3, rate * 3)}
        space |= refine(self.space, top["config"], shrink=2.0) if self.space else {}
        epochs = s.epochs["refine"]
        chosen_best, previous, first_round = None, None, None
        for round_ in range(1, s.max_rounds + 1):
            configs = [_rounded(c) for c in sample(space, s.population, jax.random.fold_in(self.key, 100 + round_))]
            records = self.trials(configs, epochs, f"5. refine, round {round_}")
            chosen = self.best(records)
            if chosen is None:
                raise RuntimeError(f"every trial of refinement round {round_} diverged: lower the learning-rate range")
            value = chosen["metrics"][s.select]
            first_round = value if first_round is None else first_round
            if chosen_best is None or self.sign * (value - chosen_best["metrics"][s.select]) > 0:
                chosen_best = chosen
            improved = previous is None or self.sign * (value - previous) > s.min_delta
            picture = f"command_center_{round_}.png"
            if self.writer:
                curves.command_center([dict(title=_describe(r["config"]) + (" (diverged)" if r.get("status") == "diverged"
                                                                             else ""), **r["history"]) for r in records],
                                      os.path.join(self.out, picture), metric=s.select.removeprefix("val_"),
                                      window=max(1, self.per_epoch // 2))
            findings = self.read_curves(chosen)
            previous = value if previous is None or self.sign * (value - previous) > 0 else previous
            lines = [f"## 5. Refine, round {round_}: {epochs} epochs, constant learning rate", "",
                     f"Space: {_describe_space(space)}", "", _table(records, s.select, self.sign), "",
                     f"Best: {_describe(chosen['config'])}, {s.select} {value:.4f}", "",
                     f"## 6. Loss curves, round {round_}", "", f"![command center]({picture})", ""]
            lines += [f"- {f.message}" for f in findings] + [""]
            stop = None
            if not improved:
                stop = (f"{s.select} {value:.4f} does not beat the best so far ({previous:.4f}) by more than "
                        f"min_delta={s.min_delta}")
            elif round_ == s.max_rounds:
                stop = f"max_rounds={s.max_rounds} refinements done"
            elif s.budget is not None and self.elapsed() > s.budget:
                stop = f"budget of {s.budget:.0f} s spent ({self.elapsed():.0f} s)"
            if stop:
                self.decisions.append({"round": round_, "action": "stop", "reason": stop})
                self.section(*lines, f"**Step 7: stop** — {stop}.", "")
                break
            space, epochs, acts = next_round(findings, chosen, records, space, epochs, regularizers=self.regularizers,
                                             select=s.select, mode=s.mode, min_delta=s.min_delta,
                                             max_epochs=s.epochs["max_refine"])
            self.decisions += [{"round": round_, **a} for a in acts]
            self.section(*lines, "**Step 7: GOTO 5** —", *[f"- {a['action']}: {a['reason']}" for a in acts], "")
        assert chosen_best is not None  # max_rounds >= 1: at least one round ran
        summary.update(first_refinement_best=first_round, refined_best=chosen_best["metrics"][s.select],
                       decisions=self.decisions, config=chosen_best["config"])
        return chosen_best

    def read_curves(self, record) -> list[curves.Finding]:
        metric = self.s.select.removeprefix("val_")
        h = record["history"]
        return curves.diagnose(h["losses"], h.get(f"train_{metric}"), h.get(f"val_{metric}"),
                               higher_is_better=self.s.mode == "max")

    def final(self, chosen, summary):
        """Cosine decay, early stopping, ``ensemble`` members from their own inits.  The members
        are needed in memory for the test, so this stage always trains (it is not resumed)."""
        s, config = self.s, chosen["config"]
        epochs = s.epochs["final"]
        fit = self.stage(epochs, patience=10, schedule=True)
        keys = jax.random.split(jax.random.fold_in(self.key, 7), s.ensemble)
        result = train_padded(fit, [config] * s.ensemble, keys, strategy=choose_strategy(fit, s.batch_size),
                              progress=s.progress, desc="7. final members")
        if self.writer:
            curves.plot_band(np.asarray(result.losses), os.path.join(self.out, "final.png"), window=self.per_epoch,
                             title=f"Final stage: {s.ensemble} members, cosine decay, early stopping")
        best_epochs = ", ".join(str(int(b) // self.per_epoch) for b in np.asarray(result.best_step))
        diverged = int(np.sum(np.asarray(result.diverged)))
        lines = [f"## 7. Final model: {epochs} epochs, cosine decay, early stopping on {s.select}", "",
                 f"Config: {_describe(config)}.", "", f"Best snapshots at epochs {best_epochs}.", "",
                 "![final](final.png)", ""]
        if diverged:
            lines += [f"**{diverged} of {s.ensemble} members diverged**; the test metrics use the others.", ""]
        if self.test is not None:
            lines += self.test_metrics(config, result, summary)
        self.section(*lines)

    def test_metrics(self, config, result, summary):
        keep = ~np.asarray(result.diverged)
        if not keep.any():
            return ["Every final member diverged: no test metric.", ""]
        members = jax.tree.map(lambda a: a[keep], (result.params, result.model_state))
        metric = self.s.select.removeprefix("val_")
        arrays = {k: jnp.float32(v) for k, v in config.items()}
        params, states = members
        report = evaluate_ensemble(self.trainable, params, states, self.test, arrays, metric=metric,
                                   higher_is_better=self.s.mode == "max")
        single, count = float(np.mean(report.members)), int(keep.sum())
        summary["test_single"] = single
        summary["test_accuracy" if metric == "accuracy" else f"test_{metric}"] = single
        lines = [f"| test, looked at once | {metric} |", "|---|---|", f"| single model (mean of {count}) | {single:.4f} |"]
        if count > 1:
            lines += [f"| ensemble of {count} ({report.how}) | {report.ensemble:.4f} |", f"| gain | {report.gain:+.4f} |"]
            summary["test_ensemble"] = report.ensemble
            summary["ensemble_accuracy" if metric == "accuracy" else f"ensemble_{metric}"] = report.ensemble
        return lines + [""]


def next_round(findings: list[curves.Finding], chosen: dict, records: list[dict], space: dict[str, Any], epochs: int, *,
               regularizers: tuple[str, ...] | list[str], select: str = "val_accuracy", mode: str = "max",
               min_delta: float = 1e-3, max_epochs: int = 60) -> tuple[dict[str, Any], int, list[dict[str, str]]]:
    """Step 7's policy: the next refinement's space and length from the chosen trial's findings.

    Switches on :class:`gradchain.tuning.Finding` kinds, never on their wording:
    more than half the trials diverged, or ``diverged``/``rising`` → learning-rate range ÷3;
    ``plateau`` → ×3; ``overfitting`` (or a train/validation gap above 2% of the metric) → the
    ``regularizers`` widened; ``underfitting`` or the validation metric still rising over the last
    fifth → twice the epochs (at most ``max_epochs``); nothing → narrow around the best.
    Returns ``(space, epochs, actions)``, each action ``{"action", "reason"}``.
    """
    kinds = {f.kind for f in findings}
    sign = 1.0 if mode == "max" else -1.0
    acts = []
    diverged = sum(r.get("status") == "diverged" for r in records)
    metric = select.removeprefix("val_")
    h = chosen["history"]
    val = np.asarray(h.get(select, [math.nan]), np.float64) * sign
    train = np.asarray(h.get(f"train_{metric}", val), np.float64) * sign
    gap = train[-1] - val[-1]
    rates = space["learning_rate"]
    if diverged > len(records) // 2 or kinds & {"diverged", "rising"}:
        space = space | {"learning_rate": LogUniform(rates.low / 3, rates.high / 3)}
        acts.append({"action": "learning-rate range ÷3",
                     "reason": f"{diverged} of {len(records)} runs diverged or the loss rose at the end"})
    elif "plateau" in kinds:
        space = space | {"learning_rate": LogUniform(rates.low * 3, rates.high * 3)}
        acts.append({"action": "learning-rate range ×3", "reason": "the loss plateaued"})
    overfit = "overfitting" in kinds or gap > 0.02 * max(abs(val[-1]), 1e-3)
    if overfit and regularizers:
        widened = {n: _widen(n, space[n], chosen["config"][n]) for n in regularizers}
        space = space | widened
        acts.append({"action": "regularization widened: " + ", ".join(f"{n} {_describe_dist(d)}" for n, d in widened.items()),
                     "reason": f"train/validation gap {gap:.3g} on {metric}: overfitting"})
    elif overfit:
        acts.append({"action": "none for the gap", "reason": "overfitting, but space names no regularizer to widen"})
    still_rising = len(val) >= 2 and val[-1] > np.max(val[: max(1, int(0.8 * len(val)))]) + min_delta
    if ("underfitting" in kinds or still_rising) and epochs < max_epochs:
        new = min(2 * epochs, max_epochs)
        why = "underfitting: no train/validation gap" if "underfitting" in kinds else f"{select} still improving at the last epoch"
        acts.append({"action": f"train longer: {epochs} → {new} epochs", "reason": why})
        epochs = new
    if not acts:
        rate = chosen["config"]["learning_rate"]
        space = space | {"learning_rate": LogUniform(rate / 2, rate * 2)}
        acts.append({"action": "narrow the search around the best", "reason": "healthy curves"})
    return space, epochs, acts


# -- the report ---------------------------------------------------------------------------------


class _Report:
    """``out/report.md``, rewritten after every section; partial until :meth:`write` without a reason.
    Only the writer (process 0 of a multi-process job) touches the folder."""

    def __init__(self, out: str, header: list[str], writer: bool = True):
        self.writer = writer
        if not writer:  # another process of a multi-process job: process 0 writes
            self.path, self.header, self.sections = os.path.join(out, "report.md"), header, []
            return
        try:
            os.makedirs(out, exist_ok=True)
            probe = os.path.join(out, ".write-test")
            with open(probe, "w"):
                pass
            os.remove(probe)
        except OSError as error:
            raise OSError(f"out={out!r} is not a writable folder: {error.strerror or error}") from None
        self.path = os.path.join(out, "report.md")
        self.header, self.sections = header, []

    def add(self, lines: list[str]) -> None:
        self.sections.append(lines)
        if not self.writer:
            return
        for line in lines:
            print(line, flush=True)
        self.write(partial="still running (a report that stays like this was stopped before the end)")

    def write(self, partial: str | None = None) -> None:
        if not self.writer:
            return
        lines = list(self.header)
        if partial:
            lines += [f"**Partial report: {partial}.** The sections below are the finished steps.", ""]
        for section in self.sections:
            lines += section
        with open(self.path, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        if not partial or partial.startswith("interrupted"):
            print(f"report: {self.path}", flush=True)


# -- checks and small helpers ----------------------------------------------------------------------


def _check_recipe_space(space: Any) -> dict[str, Any]:
    if not isinstance(space, Mapping):
        raise TypeError(f"space must be a dict name -> LogUniform | Uniform | list, got {type(space).__name__}")
    if "learning_rate" in space:
        raise ValueError("space must be a dict of hyperparameters besides learning_rate (the LR finder sets it), "
                         f"got {dict(space)!r}")
    if space:
        check_space(space, grid=False)
    return dict(space)


def _regularizers(space: dict[str, Any], names: tuple[str, ...] | None) -> tuple[str, ...]:
    if names is None:
        return tuple(n for n in space if any(r in n for r in REGULARIZERS))
    unknown = [n for n in names if n not in space]
    if unknown:
        raise ValueError(f"regularizers {unknown} are not in space (it has {sorted(space)})")
    return tuple(names)


def _check_test(trainable: Trainable, data: Split, test: Any, config: dict) -> tuple[Any, jax.Array]:
    """The test split checked before anything trains: its shapes against the training inputs', its
    labels against the model's outputs."""
    if not (isinstance(test, tuple) and len(test) == 2):
        raise TypeError(f"test must be a pair (x_test, y_test), got {type(test).__name__}")
    x, y = check_pair(*test, "test[0]", "test[1]")
    rows = lambda tree: [(a.shape[1:], a.dtype) for a in jax.tree.leaves(tree)]
    if rows(x) != rows(data.x_train) or jax.tree.structure(x) != jax.tree.structure(data.x_train):
        raise ValueError(f"test inputs have rows of shape/dtype {rows(x)}, the training inputs {rows(data.x_train)}: "
                         "they must match")
    if jnp.shape(y)[1:] != jnp.shape(data.y_train)[1:] or jnp.issubdtype(y.dtype, jnp.integer) != jnp.issubdtype(
            data.y_train.dtype, jnp.integer):
        raise ValueError(f"test targets of shape {jnp.shape(y)} ({y.dtype}) do not match the training targets "
                         f"{jnp.shape(data.y_train)} ({data.y_train.dtype})")
    if trainable.classification and trainable.predict is not None:
        check_labels(y, num_outputs(trainable, x, config), "test[1]")
    return x, y


def _base_config(space, regularizers) -> dict:
    """The middle of every range, regularization off: the config of the sanity checks."""
    base = {name: _at(dist, 0.5) for name, dist in space.items()}
    for name in regularizers:
        base[name] = _at(space[name], 0.0) if not isinstance(space[name], LogUniform) else 0.0
    return base


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
    rows = ["| " + " | ".join(names + metrics + ["status"]) + " |", "|" + "---|" * (len(names) + len(metrics) + 1)]
    ok = lambda r: r.get("status") != "diverged" and math.isfinite(r["metrics"].get(select, math.nan))
    key = lambda r: -sign * r["metrics"][select] if ok(r) else math.inf
    for r in sorted(records, key=key):
        rows.append("| " + " | ".join([f"{r['config'][n]:.3g}" for n in names] + [f"{r['metrics'][m]:.4f}" for m in metrics]
                                      + [r.get("status", "ok")]) + " |")
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


__all__ = ["REGULARIZERS", "DEFAULT_RATES", "Interrupted", "RecipeSettings", "default_optimizer", "next_round", "recipe"]
