"""Step time of every element-wise optimizer of the zoo (``gradchain.zoo.elementwise``) against
Optax's optimizer of the same name, in the same run.

    python benchmarks/zoo_step.py [--repeats 20] [--only lion adan] [--trees 0 1]

For each optimizer, ``gc.<name>(**kwargs)`` and ``optax.<name>(**kwargs)`` are built with the same
keyword arguments (``CASES`` below; ``noisy_sgd`` gets the same key on both sides, and
``polyak_sgd``'s ``update`` gets the same ``value=`` loss on both sides).  One optimizer step,
``tx.update`` + ``apply_updates``, is timed on the three trees of ``update_step.py`` (ResNet-50's
161 shapes; 2000 leaves of 512 floats; one leaf of 25.6M floats), with the timing method of
``update_step.py``: ``jit``-compiled steps with params and state donated, every runner called once in
turn (interleaved) so that machine noise hits all alike, medians of ``--repeats`` calls.

Columns, per tree:

* ``gc``: gradchain with per-leaf parameters.  The named optimizers pack a tree of many small
  leaves into one buffer per dtype by themselves (``gc.multi_tensor``), so this is gradchain's
  default path (``noisy_sgd`` alone runs leaf by leaf, to draw Optax's noise).
* ``flat``: gradchain with the parameters stored flat (``gc.flat.ravel``: one buffer per dtype).
* ``optax``: Optax with per-leaf parameters.
* ``optax/gc`` and ``optax/flat``: Optax's time over gradchain's.  **Above 1 gradchain is faster**
  (2.00: gradchain takes half Optax's time); below 1 Optax is faster.

The last row is the geometric mean of each ratio column over the optimizers timed.  A cell in
``OPTAX_SKIPS`` (Optax's ``polyak_sgd`` on 2000 leaves: its compile alone takes far over 5 minutes
and 12 GB on XLA:CPU) has no Optax time, and stays out of the mean; ``--no-skip`` times it anyway.

Most of a run is compilation, on the 2000-leaf tree (per leaf, both libraries: about a minute an
optimizer, four for ``noisy_sgd``, whose 2000 key splits and draws compile slowly on both sides),
not the ``--repeats``; ``--trees 0 2`` takes a few minutes.

Before timing, each pair is checked to compute the same thing: three steps (different gradients)
on a small tree of 40 leaves (enough to be packed) in float32; the new parameters of gradchain
(per leaf and flat) must agree with Optax's to 1e-5 relative (max |difference| over max |params|).
A pair that does not is marked ``MISMATCH`` in the check table and ``(!)`` in the timing table: its
times then compare different algorithms.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import jax
import numpy as np
import optax

import gradchain as gc
from gradchain.zoo import elementwise

sys.path.insert(0, str(Path(__file__).resolve().parent))
from update_step import TREES, flat_runner, jax_runner, make_tree, time_interleaved

# Keyword arguments given to both libraries: typical settings of each optimizer.
CASES: dict[str, dict[str, Any]] = {
    "adabelief": {"learning_rate": 1e-3},
    "adadelta": {"learning_rate": 1.0, "rho": 0.9, "eps": 1e-6},
    "adamax": {"learning_rate": 2e-3},
    "adamaxw": {"learning_rate": 2e-3, "weight_decay": 1e-4},
    "adan": {"learning_rate": 1e-3, "weight_decay": 0.02},
    "amsgrad": {"learning_rate": 1e-3},
    "lion": {"learning_rate": 1e-4, "weight_decay": 1e-2},
    "nadamw": {"learning_rate": 1e-3, "weight_decay": 1e-4},
    # an int seed, not a key array: a shared key in the state would be donated by the first runner
    "noisy_sgd": {"learning_rate": 1e-2, "eta": 0.01, "key": 0},
    "optimistic_adam_v2": {"learning_rate": 1e-3, "alpha": 1.0, "beta": 1.0},
    "optimistic_gradient_descent": {"learning_rate": 1e-2, "alpha": 1.0, "beta": 1.0},
    "polyak_sgd": {"max_learning_rate": 1.0, "f_min": 0.0},
    "radam": {"learning_rate": 1e-3},
    "rprop": {"learning_rate": 1e-3},
    "sign_sgd": {"learning_rate": 1e-3},
    "signum": {"learning_rate": 1e-3, "beta": 0.9},
    "yogi": {"learning_rate": 1e-2},
}

# Extra arguments of ``update``, passed to both libraries (Polyak's step size reads the loss).
EXTRA_ARGS: dict[str, dict[str, Any]] = {"polyak_sgd": {"value": 0.5}}

# (optimizer, tree index): why Optax's side of that cell is not timed (``--no-skip`` times it anyway).
OPTAX_SKIPS = {
    ("polyak_sgd", 1): "Optax's step compiles superlinearly in the leaves on XLA:CPU (4 s for 200 leaves "
    "of 512, 49 s for 500, over 5 min and 12 GB for 1000 and 2000)",
}

SHORT = {0: "resnet50", 1: "2000x512", 2: "1x25.6M"}  # column labels for TREES' entries
CHECK_SHAPES = [(3, 4), (7,), (2, 3, 5), (16,), (1,)] * 8  # 40 small leaves: packed by multi_tensor
CHECK_RTOL = 1e-5
SLOWER = 0.95  # ratios listed as "slower than Optax" at the end


class Bound(NamedTuple):
    """A transformation whose ``update`` has its extra arguments bound (``update_step``'s runners
    call ``tx.init(params)`` and ``tx.update(grads, state, params)`` only)."""

    init: Any
    update: Any


def build(library, name):
    tx = getattr(library, name)(**CASES[name])
    extra = EXTRA_ARGS.get(name)
    return Bound(tx.init, partial(tx.update, **extra)) if extra else tx


def optimizer_names():
    names = list(elementwise.__all__)
    missing = [name for name in names if name not in CASES]
    if missing:
        sys.exit(f"no keyword arguments in CASES for {missing}: add them")
    absent = [name for name in names if not hasattr(optax, name)]
    if absent:
        print(f"warning: Optax {optax.__version__} has no {absent}; skipped", file=sys.stderr)
    return [name for name in names if name not in absent]


# --- the check: the two libraries compute the same steps -----------------------------------------


def run_steps(tx, params, grads_list):
    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for grads in grads_list:
        params, state = step(params, state, grads)
    return params


def max_rel(a, b):
    """max |a - b| over max |b|, over all leaves."""
    a, b = (np.concatenate([np.ravel(np.asarray(x, np.float64)) for x in jax.tree.leaves(t)]) for t in (a, b))
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def check(name, steps=3):
    """(per-leaf error, flat error, update error) of gradchain against Optax after ``steps`` steps;
    the flat error is None for noisy_sgd (one buffer draws other normals than Optax's per leaf)."""
    params = make_tree(CHECK_SHAPES, jax.random.PRNGKey(0))
    grads_list = [make_tree(CHECK_SHAPES, jax.random.PRNGKey(10 + k)) for k in range(steps)]
    theirs = run_steps(build(optax, name), params, grads_list)
    ours = run_steps(build(gc, name), params, grads_list)
    flat_error = None
    if name != "noisy_sgd":
        flat_params, layout = gc.flat.ravel(params)
        flat_grads = [gc.flat.ravel(g)[0] for g in grads_list]
        flat_error = max_rel(layout.unravel(run_steps(build(gc, name), flat_params, flat_grads)), theirs)
    moved = lambda new: jax.tree.map(lambda x, x0: x - x0, new, params)
    if not any(np.any(leaf != 0) for leaf in jax.tree.leaves(moved(theirs))):
        raise ValueError("Optax's steps left the params where they were: nothing to compare")
    return max_rel(ours, theirs), flat_error, max_rel(moved(ours), moved(theirs))


def check_table(names):
    print(f"\n## Check: gradchain vs Optax after 3 float32 steps on {len(CHECK_SHAPES)} small leaves")
    print("(max |difference| / max |Optax's|: of the new params, per leaf and flat; of the total update)\n")
    print("| optimizer | params | flat params | update | |")
    print("|---|---:|---:|---:|---|")
    bad = set()
    for name in names:
        try:
            leaf, flat, update = check(name)
        except Exception as error:  # a pair that does not even run: report it, time the rest
            print(f"| {name} | - | - | - | ERROR {type(error).__name__}: {error} |", flush=True)
            bad.add(name)
            continue
        ok = leaf <= CHECK_RTOL and (flat is None or flat <= CHECK_RTOL)
        if not ok:
            bad.add(name)
        flat_cell = "n/a" if flat is None else f"{flat:.1e}"
        print(f"| {name} | {leaf:.1e} | {flat_cell} | {update:.1e} | {'ok' if ok else 'MISMATCH'} |", flush=True)
    return bad


# --- the timing ------------------------------------------------------------------------------------


def time_cell(name, shapes, repeats, optax_too=True):
    """Median seconds of one donated step: gradchain per leaf, gradchain flat, Optax per leaf
    (None without ``optax_too``)."""
    grads = make_tree(shapes, jax.random.PRNGKey(1))
    runners = {
        "gc": jax_runner(build(gc, name), shapes, grads),
        "flat": flat_runner(build(gc, name), shapes, grads),
        "optax": jax_runner(build(optax, name), shapes, grads) if optax_too else None,
    }
    times = time_interleaved(runners, repeats)  # skips the None runner
    del runners  # free the donated buffers before the next tree
    return {"optax": None, **times}


def ms(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def step_table(names, trees, repeats, bad, skips):
    print(f"\n## Step time, ms (median of {repeats}); ratio = optax / gradchain (> 1: gradchain faster)\n")
    for i in trees:
        print(f"- {SHORT[i]}: {list(TREES)[i]}")
    print()
    columns = ["gc", "flat", "optax", "optax/gc", "optax/flat"]
    header = ["optimizer"] + [f"{SHORT[i]} {c}" for i in trees for c in columns]
    print("| " + " | ".join(header) + " |")
    print("|---|" + "---:|" * (len(header) - 1))
    ratios = {(i, key): [] for i in trees for key in ("gc", "flat")}
    slower, skipped = [], []
    for name in names:
        cells = []
        for i in trees:
            if (name, i) in skips:
                skipped.append(f"{name} on {SHORT[i]}: {skips[name, i]}")
            t = time_cell(name, list(TREES.values())[i](), repeats, optax_too=(name, i) not in skips)
            cells += [ms(t["gc"]), ms(t["flat"]), ms(t["optax"])]
            for key in ("gc", "flat"):
                if t["optax"] is None:
                    cells.append("-")
                    continue
                r = t["optax"] / t[key]
                ratios[i, key].append(r)
                cells.append(f"{r:.2f}")
                if r < SLOWER:
                    slower.append(f"{name} ({'flat' if key == 'flat' else 'per leaf'}) on {SHORT[i]}: "
                                  f"{r:.2f} (Optax {1 / r:.2f}x as fast)")
        label = f"{name} (!)" if name in bad else name
        print(f"| {label} | " + " | ".join(cells) + " |", flush=True)
    geo = []
    for i in trees:
        geo += ["", "", ""]
        for key in ("gc", "flat"):
            values = ratios[i, key]
            geo.append(f"**{math.exp(sum(map(math.log, values)) / len(values)):.2f}**" if values else "-")
    print("| **geometric mean** | " + " | ".join(geo) + " |")
    if bad:
        print(f"\n(!) {sorted(bad)}: the check above failed; these rows may time different algorithms.")
    for line in skipped:
        print(f"\n- (not timed, Optax) {line}")
    print(f"\nSlower than Optax (ratio < {SLOWER}; closer to 1 is within a shared machine's noise): "
          + ("none" if not slower else ""))
    for line in slower:
        print(f"- {line}")


def main():
    names_all = optimizer_names()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--only", nargs="+", choices=names_all, metavar="NAME", help=f"of {names_all}")
    parser.add_argument("--trees", nargs="+", type=int, choices=range(len(TREES)), help="indices into TREES")
    parser.add_argument("--no-check", action="store_true", help="skip the check that both sides agree")
    parser.add_argument("--no-skip", action="store_true", help="time Optax also in the cells of OPTAX_SKIPS")
    args = parser.parse_args()
    start = time.perf_counter()
    names = [name for name in names_all if not args.only or name in args.only]
    trees = sorted(set(args.trees)) if args.trees else list(range(len(TREES)))

    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"jax {jax.__version__}, optax {optax.__version__}, gradchain {gc.__version__}, "
          f"backend {jax.default_backend()} ({jax.devices()[0].device_kind}), {os.cpu_count()} CPUs, "
          f"load average {load} (1, 5, 15 min), median of {args.repeats}")
    bad = set() if args.no_check else check_table(names)
    step_table(names, trees, args.repeats, bad, {} if args.no_skip else OPTAX_SKIPS)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nload average at the end: {load}; {(time.perf_counter() - start) / 60:.1f} min in all")


if __name__ == "__main__":
    main()
