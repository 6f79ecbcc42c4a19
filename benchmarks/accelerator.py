"""The accelerator record (issue 18): one command that measures gradchain on a GPU in under 8
minutes and writes ``report.md`` and ``report.json`` (every raw number) to ``--out``.

    python benchmarks/accelerator.py --out DIR [--budget 420] [--only steps tests] [--smoke]

Sections, each in its own process with its own time limit (a share of ``--budget``; time a
section leaves unused passes on to the next).  A section that fails or runs out of time records
its error, or its rows so far, and the run goes on.  All ratios are measured side by side in
this run.

- ``env``: date, device, backend, versions (jax, jaxlib, flax, optax, chex, torch, CUDA).
- ``bandwidth``: device-to-device copy and triad, JAX and torch, GB/s (bytes read + written).
- ``steps``: Adam, SGD+momentum, AdamW on the three trees of ``update_step.py``, per leaf and
  flat (``gc.flat``), against Optax and torch (fused, foreach), and each as a fraction of the
  copy bandwidth of ``bandwidth`` (ideal traffic: 28 bytes per parameter for Adam(W), 20 for SGD
  with momentum).
- ``compile``: compile time of the issue-8 chain on 161 and 2000 leaves (``update_step.py``).
- ``packing``: Adam on N leaves of S elements, packed by ``multi_tensor`` and not, the data
  behind ``MIN_LEAVES`` and ``MAX_LEAF_SIZE``.
- ``population``: ``population.py``'s models, ``vmap`` and ``lax.map`` against sequential runs,
  and what ``choose_strategy`` picks; a CNN row when ``population.py`` has one (see
  ``population_models``).
- ``augment``: augmentation at 224×224, batch 256: gradchain against torchvision v2 on the same
  device (when importable).
- ``kfac``: K-FAC on the autoencoder race: ``benchmarks/kfac.py``'s timing, race and
  population parts, each kept as it ends (see ``kfac``).
- ``tests``: ``pytest -m "not slow" -x -q`` on this backend, under the section's time limit.

Timings: each runner ``run(n)`` makes ``n`` calls and waits for the last (dispatch overlaps
as in a training loop); ``n`` is set so that one round takes ≥ 20 ms; runners of one row are
timed interleaved, median of the rounds.  ``--smoke`` runs every section tiny on the CPU
(``tests/test_accelerator.py``), so the script cannot rot before a device is lent.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import math
import os
import pathlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import typing

ROOT = pathlib.Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
GRACE_S = 20  # past a section's limit (a compile cannot be interrupted) before it is killed


# ---------------------------------------------------------------------------------------------
# The registry, the record a section writes, the timing helper


class Section(typing.NamedTuple):
    name: str
    title: str
    share: float  # of --budget
    run: typing.Callable
    tables: list | None = None  # [(caption, columns)]; None: one table of every column


SECTIONS: dict[str, Section] = {}


def section(name, title, share, tables=None):
    def register(fn):
        SECTIONS[name] = Section(name, title, share, fn, tables)
        return fn

    return register


class Record:
    """What a section measured; saved after every change, so a section killed at its time
    limit still reports its rows so far."""

    def __init__(self, path, smoke, limit):
        self.path, self.smoke = pathlib.Path(path), smoke
        self.deadline = time.monotonic() + limit
        self.data = {"rows": [], "notes": [], "values": {}, "error": None}
        self.save()

    def row(self, **cells):
        self.data["rows"].append(cells)
        self.save()
        return cells  # update it in place, then save()

    def note(self, text):
        print(text, flush=True)
        self.data["notes"].append(text)
        self.save()

    def value(self, **values):
        self.data["values"].update(values)
        self.save()

    def left(self):
        return self.deadline - time.monotonic()

    def save(self):
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, default=str))
        os.replace(tmp, self.path)


def per_call(runners, repeats, min_round=0.02, max_calls=2000):
    """Seconds per call of each runner: median of ``repeats`` interleaved rounds.  ``run(n)``
    makes n calls and blocks on the last; n is chosen so a round takes at least ``min_round``."""
    runners = {name: run for name, run in runners.items() if run is not None}
    calls = {}
    for name, run in runners.items():
        run(1)  # warm-up (the runner compiled when it was built)
        start = time.perf_counter()
        run(1)
        calls[name] = max(1, min(max_calls, int(min_round / max(time.perf_counter() - start, 1e-7))))
    times = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run(calls[name])
            times[name].append((time.perf_counter() - start) / calls[name])
    return {name: statistics.median(t) for name, t in times.items()}


def timing(rec, repeats):
    """``per_call``'s settings: ``repeats`` rounds of ≥ 20 ms, or a token few in smoke mode."""
    return dict(repeats=3, min_round=0.002) if rec.smoke else dict(repeats=repeats, min_round=0.02)


def jax_loop(call):
    """``run(n)`` for a call that dispatches without waiting and returns its outputs."""
    import jax

    def run(n):
        for _ in range(n):
            out = call()
        jax.block_until_ready(out)

    return run


def torch_loop(call, device):
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run(n):
        for _ in range(n):
            call()
        sync()

    return run


def torch_device(smoke):
    try:
        import torch
    except ImportError:
        return None
    return "cuda" if torch.cuda.is_available() and not smoke else "cpu"


def imported(name):
    """A module of benchmarks/ (update_step, population, augment, kfac)."""
    if str(BENCH) not in sys.path:
        sys.path.insert(0, str(BENCH))
    return importlib.import_module(name)


# ---------------------------------------------------------------------------------------------
# Sections


@section("env", "Environment", 0.03)
def env(rec):
    import jax

    versions = {}
    for name in ("jax", "jaxlib", "flax", "optax", "chex", "numpy", "torch", "torchvision"):
        try:
            versions[name] = importlib.import_module(name).__version__
        except Exception as err:  # noqa: BLE001 - a missing package is a fact of the record
            versions[name] = f"n/a ({type(err).__name__})"
    device = jax.devices()[0]
    info = dict(date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                backend=jax.default_backend(), device_kind=device.device_kind, devices=jax.device_count(),
                python=sys.version.split()[0], cpus=os.cpu_count(), **versions)
    try:
        from jax.extend.backend import get_backend

        info["jax platform version"] = get_backend().platform_version
    except Exception as err:  # noqa: BLE001
        info["jax platform version"] = f"n/a ({err})"
    try:
        import torch

        info["torch CUDA"] = torch.version.cuda or "none (CPU build)"
        if torch.cuda.is_available():
            info["torch device"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        info["nvidia-smi"] = smi.stdout.strip() or smi.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as err:
        info["nvidia-smi"] = f"n/a ({type(err).__name__})"
    try:
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                     text=True, timeout=10).stdout.strip() or "n/a"
    except (OSError, subprocess.TimeoutExpired):
        info["git"] = "n/a"
    rec.value(**info)
    rec.value(environment_info=jax.print_environment_info(return_string=True))


@section("bandwidth", "Memory bandwidth (bytes read + written per second)", 0.04)
def bandwidth(rec):
    import jax
    import jax.numpy as jnp

    sizes = [1 << 20] if rec.smoke else [25_557_032, 1 << 28]  # float32: 1M; 25.6M (the leaf), 1 GiB
    device = torch_device(rec.smoke)
    best = {}
    for n in sizes:
        # In place, as the steps are and as torch's copy_: the output takes the donated buffer
        # (kept, though unread, by keep_unused), so no call allocates.
        copy = jax.jit(lambda dst, src: jnp.copy(src), donate_argnums=0, keep_unused=True)  # HLO `copy`
        triad = jax.jit(lambda a, c: 0.5 * a + 1.0001 * c, donate_argnums=0)
        x, c = jnp.ones(n), jnp.full(n, 2.0)
        carry = {"copy": copy(jnp.zeros(n), x), "triad": triad(jnp.ones(n), c)}

        def call(name, fn, arg):
            def once():
                carry[name] = fn(carry[name], arg)
                return carry[name]

            return jax_loop(once)

        runners = {"jax copy": call("copy", copy, x), "jax triad": call("triad", triad, c)}
        if device is not None:
            import torch

            a, b, d = (torch.ones(n, device=device) for _ in range(3))
            runners["torch copy"] = torch_loop(lambda: b.copy_(a), device)
            runners["torch triad"] = torch_loop(lambda: torch.add(a, d, alpha=1.0001, out=b), device)
        for name, seconds in per_call(runners, **timing(rec, 20)).items():
            traffic = (8 if "copy" in name else 12) * n
            rec.row(kernel=name, elements=n, MB=traffic / 1e6, ms=seconds * 1e3, **{"GB/s": traffic / seconds / 1e9})
            best[name] = max(best.get(name, 0.0), traffic / seconds / 1e9)
        del x, c, carry, runners
    rec.value(copy_GBps=best["jax copy"], triad_GBps=best["jax triad"], torch_copy_GBps=best.get("torch copy"),
              reference="jax copy, best over the sizes: the bandwidth the steps are measured against")


BYTES_PER_PARAM = {"adam": 28, "sgd+momentum": 20, "adamw": 28}  # read p, g (, m, v); write p (, m, v)
IMPLS = ("gradchain", "flat", "optax", "torch fused", "torch foreach")


def step_trees(smoke):
    """Name -> shapes of the three trees (tiny stand-ins in smoke mode)."""
    if smoke:
        return {"smoke: 24 leaves": [(3, 3, 16, 16), (16,), (16,)] * 8, "smoke: 40 x 512": [(512,)] * 40,
                "smoke: one leaf of 200k": [(200_000,)]}
    us = imported("update_step")
    return {name: make() for name, make in us.TREES.items()}


@section("steps", "Optimizer step: gradchain per leaf and flat against Optax and torch", 0.27, tables=[
    ("Step time, ms (median); ratio = gradchain / peer",
     ["optimizer", "tree", "params", *[f"{i} ms" for i in IMPLS], "gc/optax", "gc/fused", "flat/optax", "flat/fused"]),
    ("Fraction of the copy bandwidth (ideal bytes per step / time / copy GB/s)",
     ["optimizer", "tree", "bytes/param", *[f"{i} bw" for i in IMPLS]]),
])
def steps(rec):
    import jax

    us = imported("update_step")
    device = torch_device(rec.smoke) if us.torch is not None else None
    trees = list(step_trees(rec.smoke).items())
    order = [(opt, i) for opt in ("adam", "sgd+momentum", "adamw") for i in (2, 0, 1)]  # the goals' rows first
    if rec.smoke:  # Adam on every tree (the goals' rows)
        order = order[:3]
    for opt, i in order:
        if rec.left() < 10:
            rec.note(f"skipped {opt} on {trees[i][0]} and the rows after it: section time limit")
            break
        tree, shapes = trees[i]
        ours, theirs, spec = us.OPTIMIZERS[opt]
        grads = us.make_tree(shapes, jax.random.PRNGKey(1))
        runners = {
            "gradchain": jax_loop(us.jax_runner(ours(), shapes, grads, block=False)),
            "flat": jax_loop(us.flat_runner(ours(), shapes, grads, block=False)),
            "optax": jax_loop(us.jax_runner(theirs(), shapes, grads, block=False)),
        }
        if device is not None:
            for impl in ("fused", "foreach"):
                step = us.torch_runner(spec, shapes, impl, device)
                runners[f"torch {impl}"] = step and torch_loop(step, device)
        t = per_call(runners, **timing(rec, 20))
        params = sum(math.prod(s) for s in shapes)
        row = dict(optimizer=opt, tree=tree, params=params, **{"tree #": i, "bytes/param": BYTES_PER_PARAM[opt]})
        for impl in IMPLS:
            row[f"{impl} ms"] = t[impl] * 1e3 if impl in t else None
            row[f"{impl} GB/s"] = BYTES_PER_PARAM[opt] * params / t[impl] / 1e9 if impl in t else None
        for name, (a, b) in {"gc/optax": ("gradchain", "optax"), "gc/fused": ("gradchain", "torch fused"),
                             "flat/optax": ("flat", "optax"), "flat/fused": ("flat", "torch fused")}.items():
            row[name] = t[a] / t[b] if a in t and b in t else None
        rec.row(**row)
        print(row, flush=True)
        del runners, grads
    rec.note("Fractions above 1 mean the working set sat in a cache: the 2000-leaf tree's p, g, m and v are "
             "16 MB, inside an H200's 60 MB of L2.")


@section("compile", "Compile time of chain(clip_by_global_norm, add_decayed_weights, scale_by_adam, cosine lr), s", 0.10)
def compile_(rec):
    us = imported("update_step")
    trees = ({"smoke: 34 leaves": [(64,)] * 34} if rec.smoke
             else {name: make() for name, make in list(us.TREES.items())[:2]})
    for tree, shapes in trees.items():
        row = rec.row(tree=tree, leaves=len(shapes))
        for impl in ("gradchain", "flat", "optax"):  # Optax last: minutes on 2000 leaves on a CPU
            ours, theirs = us.compile_chains()
            row[f"{impl} s"] = us.compile_seconds(theirs if impl == "optax" else ours, shapes, flat=impl == "flat")
            rec.save()
        row["gc/optax"], row["flat/optax"] = row["gradchain s"] / row["optax s"], row["flat s"] / row["optax s"]
        rec.save()


@section("packing", "multi_tensor packing: Adam on N leaves of S elements, packed against leaf by leaf", 0.06)
def packing(rec):
    import jax

    import gradchain as gc

    mt = importlib.import_module("gradchain.multi_tensor")  # the module (gc.multi_tensor is the function)

    us = imported("update_step")
    grid = [(256, 34)] if rec.smoke else [(s, n) for n in (8, 32, 128, 512) for s in (1024, 65536)]  # cheap compiles first
    for size, leaves in grid:
        if rec.left() < 8:
            rec.note(f"skipped N={leaves} x S={size} and after: section time limit")
            break
        shapes = [(size,)] * leaves
        inner = lambda: gc.chain(gc.scale_by_adam(eps=1e-8), gc.scale_by_learning_rate(1e-3))
        grads = us.make_tree(shapes, jax.random.PRNGKey(1))
        start = time.perf_counter()
        packed = jax_loop(us.jax_runner(gc.multi_tensor(inner(), max_leaf_size=size, min_leaves=1), shapes, grads, block=False))
        compile_packed = time.perf_counter() - start
        start = time.perf_counter()
        loose = jax_loop(us.jax_runner(gc.multi_tensor(inner(), max_leaf_size=0), shapes, grads, block=False))
        compile_loose = time.perf_counter() - start
        t = per_call({"packed": packed, "loose": loose}, **timing(rec, 15))
        rec.row(**{"leaf size S": size, "leaves N": leaves, "packed ms": t["packed"] * 1e3, "loose ms": t["loose"] * 1e3,
                   "packed/loose": t["packed"] / t["loose"], "packed first call s": compile_packed,
                   "loose first call s": compile_loose})
    wins = {}
    for row in rec.data["rows"]:
        if row["packed/loose"] < 1:
            wins.setdefault(row["leaf size S"], row["leaves N"])
    rec.value(MIN_LEAVES=mt.MIN_LEAVES, MAX_LEAF_SIZE=mt.MAX_LEAF_SIZE, fewest_leaves_where_packing_wins=wins)
    rec.note(f"multi_tensor now packs leaves of ≤ MAX_LEAF_SIZE={mt.MAX_LEAF_SIZE} elements when there are "
             f"≥ MIN_LEAVES={mt.MIN_LEAVES}; measured here, the fewest leaves N at which packing wins, per "
             f"leaf size S: {wins or 'none in the grid'}")


def population_models(pop, data, note):
    """Name -> (Trainable, batch size) for the population section.  Every MLP entry of
    ``population.MODELS`` (``(sizes, batch)``) is taken.  The CNN row of issue 15 is taken when
    ``population.py`` has ``cnn_task(data) -> (Trainable, batch_size)``: wire another interface here."""
    import functools

    import gradchain as gc
    from gradchain.examples.models import mlp_apply, mlp_init

    models = {}
    for name, entry in pop.MODELS.items():
        try:
            sizes, batch = entry
            mlp = gc.from_function(functools.partial(mlp_init, sizes=tuple(sizes)), mlp_apply)
            models[name] = (gc.supervised(mlp), int(batch))
        except (TypeError, ValueError):
            note(f"population.MODELS[{name!r}] is not an MLP's (sizes, batch): not measured; wire it in population_models")
    if callable(getattr(pop, "cnn_task", None)):
        models["cnn"] = pop.cnn_task(data)
    return models


@section("population", "Population of configurations: vmap and lax.map against sequential runs", 0.10)
def population(rec):
    import jax
    import numpy as np

    from gradchain.tuning import choose_strategy, make_fit, stack_configs, train_population
    from gradchain.examples.digits_recipe import adamw_from_config

    pop = imported("population")
    data = pop.digits()
    k, steps = (2, 4) if rec.smoke else (32, 300)
    models = population_models(pop, data, rec.note)
    if rec.smoke:  # each model compiles three programs of seconds each on a CPU: the tiny one only
        models = {"tiny": models["tiny"]}
    if callable(getattr(pop, "cnn_rows", None)) and rec.left() > 30:
        cnn = pop.cnn_rows(2 if rec.smoke else 32, 4 if rec.smoke else 200,
                           strategies=("sequential",) if rec.smoke else ("sequential", "vmap"))
        rec.note("CNN (batch norm, dropout, 8×8 digits, batch 64): " + ", ".join(
            f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in cnn.items()))
        rec.value(cnn=cnn)
        rec.save()
    for name, (task, batch) in models.items():
        if rec.left() < 10:
            rec.note(f"skipped {name} and after: section time limit")
            break
        fit = make_fit(task, adamw_from_config, data, steps=steps, batch_size=batch)
        configs = stack_configs([{"learning_rate": r, "weight_decay": 1e-4} for r in np.logspace(-4, -2, k)])
        keys = jax.random.split(jax.random.PRNGKey(0), k)
        single = jax.jit(fit)
        t_one = pop.timed(single, {n: v[0] for n, v in configs.items()}, keys[0])
        start = time.perf_counter()
        for i in range(k):  # compiled once, called k times (the rate is an input)
            jax.block_until_ready(single({n: v[i] for n, v in configs.items()}, keys[i]))
        t_seq = time.perf_counter() - start
        row = rec.row(model=name, members=k, steps=steps, batch=batch,
                      weights=sum(int(np.prod(p.shape)) for p in jax.tree.leaves(jax.eval_shape(task.init, keys[0]))),
                      **{"sequential s": t_seq, "1 run steps/s": steps / t_one})
        row["weights x batch"] = row["weights"] * batch
        for strategy in ("vmap",) if rec.smoke else ("vmap", "map"):
            row[f"{strategy} s"] = pop.timed(lambda c, ks: train_population(fit, c, ks, strategy=strategy), configs, keys)
            row[f"{strategy} x"] = t_seq / row[f"{strategy} s"]
            rec.save()
        row["choose_strategy"] = choose_strategy(task, batch)
        rec.save()
    rows = rec.data["rows"]
    vmap_wins = [r["weights x batch"] for r in rows if r.get("vmap x", 0) >= 1]
    rec.note(f"choose_strategy on {jax.default_backend()}: " + ", ".join(f"{r['model']} -> {r['choose_strategy']}" for r in rows)
             + ". The CPU rule sends weights x batch <= 1,000,000 to vmap; here vmap >= sequential up to weights x batch = "
             + (f"{max(vmap_wins):,}" if vmap_wins else "none measured")
             + " (the largest model measured: " + (f"{max(r['weights x batch'] for r in rows):,})" if rows else "-)"))


@section("augment", "Augmentation throughput, images/s (higher is better)", 0.06)
def augment(rec):
    import jax
    import jax.numpy as jnp

    A = imported("augment")
    specs = ({"b": dict(n=4, h=64, w=80, out=32)} if rec.smoke else
             {"a": dict(n=256, h=224, w=224, out=224), "b": dict(n=256, h=480, w=640, out=224)})
    titles = {"a": "flip + crop (pad 4) + jitter, {h}x{w}, batch {n}",
              "b": "ResNet scale aug (L~U[256,480]) + {out} crop + flip + jitter, {h}x{w} -> {out}, batch {n}"}
    repeats = 3 if rec.smoke else 5  # torchvision's per-image loop takes ~0.3 s a batch
    device = torch_device(rec.smoke)
    try:
        if device is None:
            raise ImportError("torch not installed")
        tv = A.torchvision_rows(repeats, list(specs), device, specs)
        rec.value(torchvision=f"{tv.pop('version')}, on {device}")
    except Exception as err:  # noqa: BLE001 - torchvision missing or failing: say so, measure ours
        tv = {}
        rec.note(f"torchvision: n/a ({type(err).__name__}: {str(err).splitlines()[0][:100] if str(err) else ''})")
    key = jax.random.PRNGKey(0)
    for name, p in specs.items():
        fn = A.gradchain_fn(name, p)
        u8 = jnp.asarray(A.make_data(p))
        f32 = u8.astype(jnp.float32) / 255.0
        t = per_call({"f32": jax_loop(lambda: fn(key, f32)), "u8": jax_loop(lambda: fn(key, u8))}, **timing(rec, repeats))
        peer = tv.get(name, {}).get("torchvision v2")
        rec.row(pipeline=titles[name].format(**p), **{
            "gradchain f32 img/s": p["n"] / t["f32"], "gradchain uint8 img/s": p["n"] / t["u8"],
            "torchvision per image img/s": peer,
            "torchvision one draw per batch img/s (info)": tv.get(name, {}).get("torchvision v2 one draw per batch (info)"),
            "gradchain f32 / torchvision": p["n"] / t["f32"] / peer if peer else None})


@section("kfac", "K-FAC per iteration on the autoencoder race", 0.12)
def kfac(rec):
    """``benchmarks/kfac.py``'s parts (timing, race, population), each saved as it ends, so a
    section cut at its limit keeps the parts it finished."""
    import jax

    bench = imported("kfac")
    rec.value(device=str(jax.devices()[0]))
    for name in bench.PARTS:
        rec.value(**{name: bench.part(name, smoke=rec.smoke)})


def pytest_counts(output):
    """Counts from pytest's summary line, or from its progress dots when it was cut short."""
    summary = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed|error)", line)]
    if summary:
        return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed|deselected)",
                                                        summary[-1])}
    dots = "".join(line.split("[")[0] for line in output.splitlines() if re.fullmatch(r"[.sFExX]+\s*(\[\s*\d+%\])?", line.strip()))
    return {"passed": dots.count("."), "failed": dots.count("F"), "skipped": dots.count("s"), "errors": dots.count("E"),
            "cut short": True}


@section("tests", "The fast test suite on this backend: pytest -m 'not slow' -x -q", 0.22)
def tests(rec):
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-rfE", "-p", "no:cacheprovider"]
    if rec.smoke:  # one trivial selection: the smoke test must not run the suite (nor itself)
        cmd += ["tests/test_core.py", "-k", "identity or chain_applies"]
    else:
        cmd += ["-m", "not slow", "--ignore", "tests/test_accelerator.py"]  # that one is CPU smoke only
        if importlib.util.find_spec("xdist") is not None:
            cmd += ["-n", str(min(8, os.cpu_count() or 1))]
    limit = max(5.0, rec.left() - 5)
    rec.value(command=" ".join(["python", *cmd[1:]]), limit_s=round(limit))
    start = time.perf_counter()
    rc, output, timed_out = run_capped(cmd, limit, cwd=ROOT)
    print(output[-20000:], flush=True)
    first = next((line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))), None)
    counts = pytest_counts(output)
    rec.value(returncode=rc, timed_out=timed_out, seconds=time.perf_counter() - start, first_failure=first,
              passed_all=rc == 0 and not timed_out, **counts)
    rec.row(**{"result": "passed" if rc == 0 else ("timed out" if timed_out else f"failed (rc {rc})"),
               **{k: v for k, v in counts.items() if k != "cut short"}, "seconds": time.perf_counter() - start,
               "first failure": first or "-"})
    if timed_out:
        rec.note(f"cut short at its limit of {limit:.0f} s: rerun with --only tests and a larger --budget")


# ---------------------------------------------------------------------------------------------
# Goals, the report


def goals(sections):
    """[(goal, measured, met)] from the sections' numbers; met is None when not measured."""
    rows = lambda name: sections.get(name, {}).get("rows", [])
    adam = {r["tree #"]: r for r in rows("steps") if r["optimizer"] == "adam"}  # 0 ResNet-50, 1 2000 leaves, 2 one leaf
    trees = (0, 1, 2)
    copy = sections.get("bandwidth", {}).get("values", {}).get("copy_GBps")
    out = []

    one = adam.get(trees[2])
    if one and copy and one.get("gradchain GB/s"):
        frac = one["gradchain GB/s"] / copy
        out.append(("Adam on one 25.6M leaf ≥ 80% of the copy bandwidth",
                    f"{frac:.0%} ({one['gradchain GB/s']:.0f} of {copy:.0f} GB/s)", frac >= 0.8))
    else:
        out.append(("Adam on one 25.6M leaf ≥ 80% of the copy bandwidth", "not measured", None))

    ratios = {t: adam[t].get("gc/fused") for t in trees if t in adam}
    if len(ratios) == 3 and all(v is not None for v in ratios.values()):
        flat = {t: adam[t].get("flat/fused") for t in trees}
        out.append(("Adam ≤ torch fused on all three trees (gradchain / fused)", "; ".join(
            f"{label} {ratios[t]:.2f} (flat {cell(flat[t])})"
            for t, label in zip(trees, ("ResNet-50", "2000 leaves", "one leaf"))), max(ratios.values()) <= 1))
    elif str(sections.get("env", {}).get("values", {}).get("torch", "")).startswith("n/a"):
        # torch is a CI-only (bench extra) dependency: without it the goal is skipped, not failed
        out.append(("Adam ≤ torch fused on all three trees", "skipped: torch not installed (pip install torch)", None))
    else:
        out.append(("Adam ≤ torch fused on all three trees", "not measured (torch fused or a tree missing)", None))

    many = adam.get(trees[1], {}).get("flat/optax")
    out.append(("flat Adam ≤ 0.2× Optax on 2000 leaves", "not measured" if many is None else f"{many:.3f}×",
                None if many is None else many <= 0.2))

    tiny = next((r for r in rows("population") if r["model"] == "tiny" and "vmap x" in r), None)
    out.append((f"population of {tiny['members'] if tiny else 32} tiny MLPs ≥ 8× sequential",
                "not measured" if tiny is None else f"{tiny['vmap x']:.2f}× (vmap)",
                None if tiny is None else tiny["vmap x"] >= 8))

    t = sections.get("tests", {}).get("values", {})
    if "returncode" in t:
        counts = ", ".join(f"{t[k]} {k}" for k in ("passed", "failed", "errors", "skipped") if t.get(k))
        out.append(("fast test suite passes", (counts or "no count") + ("; timed out" if t.get("timed_out") else "")
                    + (f"; first: {t['first_failure']}" if t.get("first_failure") else ""), bool(t.get("passed_all"))))
    else:
        out.append(("fast test suite passes", "not measured", None))
    return out


def cell(v):
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        a = abs(v)
        return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}" if a >= 0.1 else f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def table(rows, columns=None):
    if not rows:
        return []
    columns = columns or list(dict.fromkeys(k for r in rows for k in r))
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns),
            *("| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows)]


def add_bandwidth_fractions(sections):
    copy = sections.get("bandwidth", {}).get("values", {}).get("copy_GBps")
    for row in sections.get("steps", {}).get("rows", []):
        for impl in IMPLS:
            row[f"{impl} bw"] = row[f"{impl} GB/s"] / copy if copy and row.get(f"{impl} GB/s") else None


def report(meta, sections):
    env = sections.get("env", {}).get("values", {})
    lines = ["# gradchain accelerator record", ""]
    if meta["smoke"]:
        lines += ["**SMOKE RUN: tiny sizes on the CPU, to keep the script working. Not a measurement.**", ""]
    lines += [f"- date: {env.get('date', meta['started'])}; device: {env.get('device_kind', '?')} "
              f"x {env.get('devices', '?')}; backend: {env.get('backend', '?')}; {env.get('cpus', '?')} CPUs",
              "- versions: " + ", ".join(f"{k} {env[k]}" for k in ("jax", "jaxlib", "flax", "optax", "chex", "torch",
                                                                   "torchvision", "numpy", "python") if k in env),
              f"- CUDA: jax platform {env.get('jax platform version', '?')}; torch CUDA {env.get('torch CUDA', '?')}; "
              f"nvidia-smi: {env.get('nvidia-smi', '-')}",
              f"- command: `{meta['command']}`; budget {meta['budget']} s; wall {meta['wall_s']:.0f} s; git {env.get('git', '?')}",
              ""]
    for name, sec in SECTIONS.items():
        if name not in sections:
            continue
        data = sections[name]
        lines += [f"## {name}: {sec.title}", "",
                  f"_limit {data.get('limit_s', 0):.0f} s, took {data.get('wall_s', 0):.0f} s_", ""]
        if data.get("error"):
            lines += [f"**error:** {data['error']}", ""]
        if name == "env":
            lines += table([{"key": k, "value": v} for k, v in data.get("values", {}).items() if k != "environment_info"]) + [""]
            continue
        for caption, columns in sec.tables or [(None, None)]:
            if data.get("rows"):
                lines += ([f"{caption}:", ""] if caption else []) + table(data["rows"], columns) + [""]
        values = data.get("values", {})
        flat = {k: v for k, v in values.items() if not isinstance(v, dict)}
        if flat:
            lines += ["- " + "; ".join(f"{k}: {cell(v)}" for k, v in flat.items())]
        lines += [f"- {k}: " + "; ".join(f"{ik}: {cell(iv)}" for ik, iv in v.items())
                  for k, v in values.items() if isinstance(v, dict)]
        lines += [""] if values else []
        lines += [f"- {n}" for n in data.get("notes", [])] + ([""] if data.get("notes") else [])
    lines += ["## Goals", "", "| goal | measured | met |", "|---|---|---|"]
    lines += [f"| {g} | {cell(m)} | {'-' if ok is None else 'met' if ok else 'not met'} |"
              for g, m, ok in goals(sections)]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Running: the parent runs each section in a child process under a time limit


def run_capped(cmd, limit, log=None, **kwargs):
    """(returncode, output, timed_out) of ``cmd``, its whole process group killed after ``limit`` s."""
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, text=True, **kwargs)
        try:
            rc, timed_out = proc.wait(timeout=limit), False
        except subprocess.TimeoutExpired:
            rc, timed_out = None, True
        except BaseException:  # Ctrl-C: take the child down with us
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the child, and what it left running (xdist workers)
        except ProcessLookupError:
            pass
        proc.wait()
        out.seek(0)
        return rc, out.read(), timed_out


def run_sections(args, out):
    names = [n for n in SECTIONS if not args.only or n in args.only or n == "env"]
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false", PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))  # gradchain from source
    if args.smoke:
        env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    start, sections = time.monotonic(), {}
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="accelerator-"))
    with open(out / "log.txt", "w") as log:
        for i, name in enumerate(names):
            remaining = args.budget - (time.monotonic() - start)
            later = sum(SECTIONS[n].share for n in names[i + 1:]) * args.budget
            if args.smoke:  # tiny sections on a possibly busy CPU: a limit only against a hang
                later = 5.0 * len(names[i + 1:])
            limit = max(min(15.0, remaining), remaining - later)
            if limit < 3:
                sections[name] = {"rows": [], "notes": [], "values": {}, "limit_s": 0, "wall_s": 0,
                                  "error": "not run: the budget was spent"}
                continue
            result = tmp / f"{name}.json"
            cmd = [sys.executable, "-u", __file__, "--child", name, "--result", str(result), "--limit", f"{limit:.1f}"]
            print(f"[{time.monotonic() - start:5.0f} s] {name}: limit {limit:.0f} s", flush=True)
            began = time.monotonic()
            rc, output, timed_out = run_capped(cmd + ["--smoke"] * args.smoke, limit + GRACE_S, env=env, cwd=ROOT)
            log.write(f"\n===== {name} (rc {rc}, {time.monotonic() - began:.1f} s) =====\n{output}")
            log.flush()
            data = json.loads(result.read_text()) if result.exists() else {"rows": [], "notes": [], "values": {}, "error": None}
            if timed_out:
                data["error"] = f"killed at its limit of {limit:.0f} s (+{GRACE_S} s grace); rows so far are kept"
            elif rc != 0 and not data.get("error"):
                tail = [line for line in output.strip().splitlines() if line.strip()][-3:]
                data["error"] = f"exited with rc {rc}: " + " / ".join(tail)[-400:]
            data.update(limit_s=limit, wall_s=time.monotonic() - began)
            sections[name] = data
            print(f"[{time.monotonic() - start:5.0f} s] {name}: {data.get('error') or 'done'}", flush=True)
    return sections


def child(args):
    sys.path[:0] = [str(ROOT), str(BENCH)]
    rec = Record(args.result, args.smoke, args.limit)
    try:
        SECTIONS[args.child].run(rec)
    except Exception as err:  # noqa: BLE001 - the record says what failed; the run goes on
        traceback.print_exc()
        rec.data["error"] = f"{type(err).__name__}: {str(err).strip()[:500]}"
        rec.save()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=pathlib.Path, help="folder for report.md, report.json and log.txt")
    parser.add_argument("--budget", type=float, default=None, help="seconds for all sections (default 420; smoke 480)")
    parser.add_argument("--smoke", action="store_true", help="every section tiny, on the CPU")
    parser.add_argument("--only", nargs="+", choices=sorted(SECTIONS), help="these sections (env always runs)")
    parser.add_argument("--child", choices=sorted(SECTIONS), help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--limit", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)
    if args.out is None:
        parser.error("--out DIR is required")
    args.budget = args.budget or (480.0 if args.smoke else 420.0)  # smoke: a limit against hangs only
    args.out.mkdir(parents=True, exist_ok=True)
    started, t0 = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), time.monotonic()
    meta = dict(started=started, smoke=args.smoke, budget=args.budget, only=args.only,
                command="python " + " ".join([os.path.relpath(__file__, ROOT), *(argv or sys.argv[1:])]))
    sections = {}
    try:
        sections = run_sections(args, args.out)
    finally:  # Ctrl-C or a crash of the runner still writes what was measured
        meta["wall_s"] = time.monotonic() - t0
        add_bandwidth_fractions(sections)
        text = report(meta, sections)
        (args.out / "report.md").write_text(text)
        (args.out / "report.json").write_text(json.dumps(
            {"meta": meta, "sections": sections,
             "goals": [dict(goal=g, measured=m, met=ok) for g, m, ok in goals(sections)]},
            indent=1, default=str))
        print(text, flush=True)


if __name__ == "__main__":
    main()
