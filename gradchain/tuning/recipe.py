"""The main job: the lecture's seven-step recipe for choosing hyperparameters, end to end.

``python -m gradchain recipe`` runs it on scikit-learn's digits with an MLP and writes a report
folder (``report.md`` and PNGs).  Every training run is a pure function; each stage trains its
whole population of configurations as one compiled program.

1. check the initial loss            5. refine the grid, train longer (no decay)
2. overfit a small sample            6. look at the loss curves (the command center)
3. find a learning rate              7. final model with early stopping; ensemble; test accuracy
4. coarse grid, ~1–5 epochs
"""

from __future__ import annotations

import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import gradchain as gc
from gradchain.data import Split, digits
from gradchain.models import cross_entropy, mlp_apply, mlp_init
from gradchain.tuning import curves
from gradchain.tuning.ensemble import evaluate_ensemble
from gradchain.tuning.lr_finder import lr_finder
from gradchain.tuning.sanity import check_initial_loss, overfit_small_sample
from gradchain.tuning.search import LogUniform, best, grid_search, random_search, refine
from gradchain.tuning.training import Task, choose_strategy, make_fit, stack_configs, train_population

SIZES = (64, 128, 128, 10)


def adamw_from_config(config):
    """The optimizer every stage tunes: AdamW, no decay on biases."""
    return gc.adamw(config["learning_rate"], weight_decay=config["weight_decay"], mask=gc.decay_mask)


def make_task(seed: int = 0) -> tuple[Task, Split]:
    """Digits split three ways: train / validation (for every choice) / test (looked at once)."""
    full = digits(jax.random.PRNGKey(seed), val_fraction=0.2)
    n_val = len(full.y_val)
    data = Split(full.x_train[n_val:], full.y_train[n_val:], full.x_train[:n_val], full.y_train[:n_val])
    task = Task(init=functools.partial(mlp_init, sizes=SIZES, output_scale=0.01), apply=mlp_apply, data=data)
    return task, full


def _population_evaluator(task, steps, batch_size, key, eval_every=None):
    fit = make_fit(task, adamw_from_config, steps=steps, batch_size=batch_size, eval_every=eval_every)
    strategy = choose_strategy(task, batch_size)
    history = {}

    def evaluate(configs):
        keys = jnp.broadcast_to(key, (len(configs),) + key.shape)
        result = train_population(fit, stack_configs(configs), keys, strategy=strategy)
        out = []
        for i, config in enumerate(configs):
            history[gc.tuning.trial_id(config)] = {
                "losses": np.asarray(result.losses[i]), "train_acc": np.asarray(result.train_acc[i]),
                "val_acc": np.asarray(result.val_acc[i])}
            out.append({"val_acc": float(result.val_acc[i, -1]), "train_acc": float(result.train_acc[i, -1]),
                        "val_loss": float(result.val_loss[i, -1])})
        return out

    return evaluate, history


def _title(config):
    return f"lr {config['learning_rate']:.2g}, wd {config['weight_decay']:.0e}"


def main(out: str = "gradchain-report", small: bool = False, seed: int = 0, progress: bool | None = None) -> dict:
    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    task, full = make_task(seed)
    key = jax.random.PRNGKey(seed + 1)
    batch = 64
    per_epoch = len(task.data.y_train) // batch
    epochs = dict(coarse=2, refine=6, final=15, ensemble_members=5) if small else dict(coarse=4, refine=15, final=40, ensemble_members=8)
    lines = ["# gradchain recipe report", "",
             f"Data: scikit-learn digits, {len(task.data.y_train)} train / {len(task.data.y_val)} validation / "
             f"{len(full.y_val)} test. Model: MLP {'-'.join(map(str, SIZES))}. Optimizer: AdamW "
             f"(no decay on biases). Backend: {jax.default_backend()}.", ""]
    summary = {}

    def log(text=""):
        print(text, flush=True)
        lines.append(text)

    # 1. Initial loss
    params = task.init(key)
    loss_fn = lambda p, b: cross_entropy(mlp_apply(p, b[0]), b[1])
    report = check_initial_loss(loss_fn, params, (task.data.x_train, task.data.y_train), task.num_classes)
    log("## 1. Initial loss"); log(""); log(report.message); log("")
    summary["initial_loss"] = report.loss

    # 2. Overfit a small sample
    overfit = overfit_small_sample(task, adamw_from_config, {"learning_rate": 1e-3, "weight_decay": 0.0}, key,
                                   num_batches=5, batch_size=32, max_steps=300 if small else 500)
    curves.plot_loss_curves({"5 minibatches of 32": overfit.losses}, os.path.join(out, "overfit.png"), window=10,
                            title="Step 2: overfit a small sample")
    log("## 2. Overfit a small sample"); log(""); log(overfit.message); log(""); log("![overfit](overfit.png)"); log("")
    summary["overfit_steps"] = overfit.steps_to_100

    # 3. Learning-rate finder
    found = lr_finder(task, adamw_from_config, key, steps=100, batch_size=batch, weight_decay=1e-4)
    _plot_lr_finder(found, os.path.join(out, "lr_finder.png"))
    log("## 3. Find a learning rate that makes the loss go down"); log(""); log(found.message); log("")
    log("![lr finder](lr_finder.png)"); log("")
    lr = found.learning_rate if np.isfinite(found.learning_rate) else 1e-3
    summary["lr_finder"] = lr

    # 4. Coarse grid, a few epochs
    space = {"learning_rate": [lr / 3, lr, 3 * lr], "weight_decay": [1e-4, 1e-5, 0.0]}
    evaluate, history = _population_evaluator(task, epochs["coarse"] * per_epoch, batch, key)
    coarse = grid_search(space, evaluate, store=os.path.join(out, "coarse_trials.jsonl"), population_size=9, progress=progress)
    top = best(coarse, "val_acc")
    log(f"## 4. Coarse grid, {epochs['coarse']} epochs"); log("")
    log(_table(coarse)); log(""); log(f"Best: {_title(top['config'])}, val acc {top['metrics']['val_acc']:.3f}"); log("")

    # 5. Refine around the best, train longer without decay of the learning rate
    fine_space = refine({"learning_rate": LogUniform(lr / 10, lr * 10), "weight_decay": [1e-4, 1e-5, 0.0]},
                        top["config"], shrink=4.0)
    fine_space["weight_decay"] = [top["config"]["weight_decay"]] + [w for w in (1e-4, 1e-5) if w != top["config"]["weight_decay"]][:1]
    evaluate, history = _population_evaluator(task, epochs["refine"] * per_epoch, batch, key, eval_every=per_epoch)
    fine = random_search(fine_space, evaluate, 8, jax.random.fold_in(key, 5),
                         store=os.path.join(out, "refine_trials.jsonl"), population_size=8, progress=progress)
    chosen = best(fine, "val_acc")
    log(f"## 5. Refine, {epochs['refine']} epochs, constant learning rate"); log("")
    log(_table(fine)); log(""); log(f"Best: {_title(chosen['config'])}, val acc {chosen['metrics']['val_acc']:.3f}"); log("")

    # 6. Look at the curves: the command center
    runs = [dict(title=_title(r["config"]), **history[r["id"]]) for r in fine if r["id"] in history]
    if runs:
        curves.command_center(runs, os.path.join(out, "command_center.png"))
        log("## 6. Loss curves (the command center)"); log(""); log("![command center](command_center.png)"); log("")
        h = history.get(chosen["id"])
        if h is not None:
            for note in curves.diagnose(h["losses"], h["train_acc"], h["val_acc"]):
                log(f"- {note}")
            log("")

    # 7. Final model: cosine decay, early stopping on validation accuracy; then an ensemble
    config = chosen["config"]
    steps = epochs["final"] * per_epoch
    final_opt = lambda c: gc.adamw(gc.cosine_schedule(c["learning_rate"], steps), weight_decay=c["weight_decay"], mask=gc.decay_mask)
    fit = make_fit(task, final_opt, steps=steps, batch_size=batch, eval_every=per_epoch, patience=10)
    members = epochs["ensemble_members"]
    keys = jax.random.split(jax.random.fold_in(key, 7), members)
    result = train_population(fit, stack_configs([config] * members), keys, strategy=choose_strategy(task, batch))
    ens = evaluate_ensemble(mlp_apply, result.params, full.x_val, full.y_val)
    single = float(np.mean(np.asarray(ens.member_accuracies)))
    curves.plot_loss_curves({f"member {i}": np.asarray(result.losses[i]) for i in range(min(members, 4))},
                            os.path.join(out, "final.png"), window=per_epoch, title="Step 7: final training (cosine decay)")
    log(f"## 7. Final model: {epochs['final']} epochs, cosine decay, early stopping (best snapshot by validation accuracy)"); log("")
    log(f"Best snapshots at epochs {', '.join(str(int(s) // per_epoch) for s in np.asarray(result.best_step))}.")
    log(""); log("![final](final.png)"); log("")
    log("| | test accuracy |"); log("|---|---|")
    log(f"| single model (mean of {members}) | {single:.4f} |")
    log(f"| ensemble of {members} (mean probabilities, then argmax) | {ens.ensemble_accuracy:.4f} |")
    log(f"| gain | {ens.gain:+.4f} |"); log("")
    seconds = time.perf_counter() - start
    log(f"Total time: {seconds:.0f} s.")
    summary.update(test_accuracy=single, ensemble_accuracy=ens.ensemble_accuracy, ensemble_gain=ens.gain,
                   config=config, seconds=seconds)
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    print(f"report: {os.path.join(out, 'report.md')}")
    return summary


def _table(records) -> str:
    rows = ["| learning rate | weight decay | train acc | val acc | val loss |", "|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: -r["metrics"]["val_acc"]):
        c, m = r["config"], r["metrics"]
        rows.append(f"| {c['learning_rate']:.3g} | {c['weight_decay']:.0e} | {m['train_acc']:.3f} | {m['val_acc']:.3f} | {m['val_loss']:.3f} |")
    return "\n".join(rows)


def _plot_lr_finder(found, path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    left, right = fig.subplots(1, 2)
    for i, rate in enumerate(found.rates):
        losses = found.losses[i]
        left.plot(curves.moving_average(losses, 10), lw=1, label=f"{rate:.0e}" if i % 3 == 0 else None)
    left.set(yscale="log", xlabel="step", ylabel="loss (moving average)", title="loss per learning rate")
    left.legend(fontsize=6)
    right.semilogx(found.rates, found.drops, "o-")
    right.axvline(found.learning_rate, color="C3", ls="--", label=f"pick {found.learning_rate:.2g}")
    right.set(xlabel="learning rate", ylabel="robust loss drop in 100 steps", title="LR finder")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
