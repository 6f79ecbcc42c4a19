"""The optimizer-step performance record: gradchain against Optax and torch, in the same run.

    python benchmarks/update_step.py [--repeats 30] [--only adam] [--trees 0 1] [--no-compile]

Five tables, every figure measured in this run:

1. **Step time** of Adam, SGD+momentum and AdamW on three trees (ResNet-50's 161 shapes; 2000
   leaves of 512 floats; one leaf of 25.6M floats), per leaf and with the parameters stored flat
   (`gc.flat`: the same numbers in one buffer per dtype).  JAX steps are `jit`-compiled with params and
   state donated (updated in place), as in a training loop; torch steps are `optimizer.step()`
   with the `fused` and the `foreach` implementation.  All runs are timed interleaved (one call
   each, in turn) so that machine noise hits all alike; medians; ratios against Optax and torch.
2. **Compile time** of ``chain(clip_by_global_norm, add_decayed_weights, scale_by_adam, cosine
   learning rate)`` and its Optax twin on the 161- and 2000-leaf trees (lower + compile).
3. **Peak memory** of a donated Adam step (XLA's buffer assignment: arguments + outputs - aliased
   + temporaries) over the bytes of params + grads + optimizer state.
4. **Memory bandwidth**: a STREAM-style triad ``a = s·a + t·c`` in place on 25.6M floats, and the one-leaf Adam
   step's traffic (read p, g, m, v; write p, m, v: 28 bytes per parameter) as a fraction of it.
5. **Train step** (forward + backward + Adam) of a residual MLP with many small layers (``--layers``,
   two leaves each): Optax and gradchain per leaf, gradchain on flat parameters (the layout passed
   to the step as an argument, and closed over), torch with fused Adam; step and compile time.

torch is optional (``pip install torch==2.13.0``, the `bench` extra); without it its columns say
"-".
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import gradchain as gc

try:
    import torch
except ImportError:  # the torch columns are left empty
    torch = None


def resnet50_shapes() -> list[tuple[int, ...]]:
    """The 161 parameter shapes of ResNet-50 (53 convolutions, 53 batch norms, the classifier)."""
    shapes = [(7, 7, 3, 64), (64,), (64,)]
    channels = 64
    for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        for block in range(blocks):
            for kernel, cin, cout in ((1, channels, width), (3, width, width), (1, width, 4 * width)):
                shapes += [(kernel, kernel, cin, cout), (cout,), (cout,)]
            if block == 0:
                shapes += [(1, 1, channels, 4 * width), (4 * width,), (4 * width,)]
            channels = 4 * width
    return shapes + [(2048, 1000), (1000,)]


TREES = {
    "resnet50 (161 leaves, 25.6M)": resnet50_shapes,
    "2000 leaves x 512 (1M)": lambda: [(512,)] * 2000,
    "one leaf of 25.6M": lambda: [(25_557_032,)],
}

# name: (gradchain, optax, torch class and keyword arguments)
OPTIMIZERS = {
    "adam": (
        lambda: gc.adam(1e-3, eps=1e-8),
        lambda: optax.adam(1e-3, eps=1e-8),
        ("Adam", dict(lr=1e-3, eps=1e-8)),
    ),
    "sgd+momentum": (
        lambda: gc.sgd(1e-2, momentum=0.9),
        lambda: optax.sgd(1e-2, momentum=0.9),
        ("SGD", dict(lr=1e-2, momentum=0.9)),
    ),
    "adamw": (
        lambda: gc.adamw(1e-3, eps=1e-8, weight_decay=1e-4),
        lambda: optax.adamw(1e-3, eps=1e-8, weight_decay=1e-4),
        ("AdamW", dict(lr=1e-3, eps=1e-8, weight_decay=1e-4)),
    ),
}


def make_tree(shapes, key, flat=False):
    """Random float32 leaves of the given shapes; with ``flat``, stored with ``gc.flat``."""
    keys = jax.random.split(key, len(shapes))
    tree = [jax.random.normal(k, s, jnp.float32) * 0.01 for k, s in zip(keys, shapes)]
    return gc.flat.ravel(tree)[0] if flat else tree


def jax_step(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def jax_runner(tx, shapes, grads, block=True):
    return jax_runner_on(tx, make_tree(shapes, jax.random.PRNGKey(0)), grads, block)


def flat_runner(tx, shapes, grads, block=True):
    """``jax_runner`` with the parameters (and so the gradients and state) stored flat."""
    return jax_runner_on(tx, make_tree(shapes, jax.random.PRNGKey(0), flat=True), gc.flat.ravel(grads)[0], block)


def jax_runner_on(tx, params, grads, block=True):
    """One donated step per call, returning (params, state); with ``block=False`` the call
    returns as soon as the step is dispatched (block on the result to wait for it)."""
    step = jax_step(tx)
    carry = [jax.block_until_ready(step(params, tx.init(params), grads))]

    def run():
        carry[0] = step(*carry[0], grads)
        return jax.block_until_ready(carry[0]) if block else carry[0]

    return run


def torch_runner(spec, shapes, implementation, device="cpu"):
    name, kwargs = spec
    params = [torch.nn.Parameter(torch.randn(s, device=device) * 0.01) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, device=device) * 0.01
    try:
        opt = getattr(torch.optim, name)(params, **kwargs, **{implementation: True})
        opt.step()
    except (RuntimeError, ValueError, TypeError):  # an implementation this build lacks
        return None
    return opt.step


def time_interleaved(runners, repeats):
    times = {name: [] for name, run in runners.items() if run is not None}
    for _ in range(repeats):
        for name in times:
            start = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def fmt(seconds):
    return "-" if seconds is None else f"{seconds * 1e3:.2f}"


def ratio(a, b):
    return "-" if a is None or b is None else f"{a / b:.2f}"


def step_table(args):
    print("\n## 1. Step time, ms (median); ratio = gradchain / peer")
    print("(gradchain: per-leaf parameters; flat: stored with gc.flat; both ratios against the peers)")
    header = (f"{'optimizer':<14}{'tree':<30}{'gradchain':>10}{'flat':>7}{'optax':>8}{'torch fused':>12}"
              f"{'foreach':>9}{'/optax':>8}{'/fused':>8}{'/foreach':>9}{'flat/optax':>11}{'flat/fused':>11}")
    print(header)
    print("-" * len(header))
    for opt in args.only or OPTIMIZERS:
        ours, theirs, spec = OPTIMIZERS[opt]
        for i, (tree, make_shapes) in enumerate(TREES.items()):
            if args.trees and i not in args.trees:
                continue
            shapes = make_shapes()
            grads = make_tree(shapes, jax.random.PRNGKey(1))
            runners = {
                "gradchain": jax_runner(ours(), shapes, grads),
                "flat": flat_runner(ours(), shapes, grads),
                "optax": jax_runner(theirs(), shapes, grads),
            }
            if torch is not None and not args.no_torch:
                runners["fused"] = torch_runner(spec, shapes, "fused")
                runners["foreach"] = torch_runner(spec, shapes, "foreach")
            t = time_interleaved(runners, args.repeats)
            g, flat, o, f, e = (t.get(k) for k in ("gradchain", "flat", "optax", "fused", "foreach"))
            print(f"{opt:<14}{tree:<30}{fmt(g):>10}{fmt(flat):>7}{fmt(o):>8}{fmt(f):>12}{fmt(e):>9}"
                  f"{ratio(g, o):>8}{ratio(g, f):>8}{ratio(g, e):>9}{ratio(flat, o):>11}{ratio(flat, f):>11}", flush=True)


def compile_chains():
    schedule = gc.cosine_schedule(1e-3, 10_000)
    ours = gc.multi_tensor(gc.chain(
        gc.clip_by_global_norm(1.0), gc.add_decayed_weights(1e-4), gc.scale_by_adam(eps=1e-8),
        gc.scale_by_learning_rate(schedule),
    ))
    theirs = optax.chain(
        optax.clip_by_global_norm(1.0), optax.add_decayed_weights(1e-4), optax.scale_by_adam(eps=1e-8),
        optax.scale_by_learning_rate(optax.cosine_decay_schedule(1e-3, 10_000)),
    )
    return ours, theirs


def compile_seconds(tx, shapes, flat=False):
    params = make_tree(shapes, jax.random.PRNGKey(0), flat)
    start = time.perf_counter()
    jax_step(tx).lower(params, tx.init(params), params).compile()
    return time.perf_counter() - start


def compile_table(args):
    print("\n## 2. Compile time of chain(clip_by_global_norm, add_decayed_weights, scale_by_adam, cosine lr), s")
    print(f"{'tree':<30}{'gradchain':>10}{'flat':>7}{'optax':>9}{'ratio':>7}{'flat/optax':>11}")
    for i, (tree, make_shapes) in enumerate(list(TREES.items())[:2]):
        if args.trees and i not in args.trees:
            continue
        ours, theirs = compile_chains()
        g, o = compile_seconds(ours, make_shapes()), compile_seconds(theirs, make_shapes())
        flat = compile_seconds(ours, make_shapes(), flat=True)
        print(f"{tree:<30}{g:>10.1f}{flat:>7.1f}{o:>9.1f}{g / o:>7.2f}{flat / o:>11.3f}", flush=True)


def nbytes(tree):
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def peak_bytes(tx, shapes, flat=False):
    params = make_tree(shapes, jax.random.PRNGKey(0), flat)
    state = tx.init(params)
    memory = jax_step(tx).lower(params, state, params).compile().memory_analysis()
    peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes
            - memory.alias_size_in_bytes + memory.temp_size_in_bytes)
    return peak, 2 * nbytes(params) + nbytes(state)


def memory_table(args):
    print("\n## 3. Peak memory of a donated Adam step / (params + grads + state)")
    print(f"{'tree':<30}{'gradchain':>10}{'flat':>7}{'optax':>9}")
    ours, theirs, _ = OPTIMIZERS["adam"]
    for i, (tree, make_shapes) in enumerate(TREES.items()):
        if args.trees and i not in args.trees:
            continue
        (g, base), (o, _) = peak_bytes(ours(), make_shapes()), peak_bytes(theirs(), make_shapes())
        flat, _ = peak_bytes(ours(), make_shapes(), flat=True)
        print(f"{tree:<30}{g / base:>10.3f}{flat / base:>7.3f}{o / base:>9.3f}", flush=True)


def bandwidth_table(args):
    n = 25_557_032
    print("\n## 4. Memory bandwidth (one leaf of 25.6M float32)")
    # In place, as the optimizer steps are: a donated buffer that is not read is not reused, and
    # a fresh 100 MB output each call would time page faults instead of bandwidth.
    triad = jax.jit(lambda a, c: 0.5 * a + 1.0001 * c, donate_argnums=0)
    a, c = jnp.ones((n,)), jnp.full((n,), 2.0)
    carry = [triad(a, c)]

    def run_triad():
        carry[0] = jax.block_until_ready(triad(carry[0], c))

    shapes = [(n,)]
    grads = make_tree(shapes, jax.random.PRNGKey(1))
    ours, theirs, spec = OPTIMIZERS["adam"]
    runners = {"triad": run_triad, "gradchain": jax_runner(ours(), shapes, grads), "optax": jax_runner(theirs(), shapes, grads)}
    if torch is not None and not args.no_torch:
        runners["torch fused"] = torch_runner(spec, shapes, "fused")
    t = time_interleaved(runners, args.repeats)
    stream = 12 * n / t.pop("triad")
    print(f"STREAM-style triad a = s·a + t·c: {stream / 1e9:.1f} GB/s (12 bytes per element)")
    for name, seconds in t.items():
        achieved = 28 * n / seconds
        print(f"Adam {name:<12} {seconds * 1e3:7.2f} ms = {achieved / 1e9:5.1f} GB/s of useful traffic "
              f"= {achieved / stream:.2f} of triad bandwidth")


def mlp_params(layers, width, key):
    keys = jax.random.split(key, layers)
    return [{"w": jax.random.normal(k, (width, width)) / width**0.5, "b": jnp.zeros(width)} for k in keys]


def mlp_loss(params, x):
    for layer in params:
        x = jnp.tanh(x @ layer["w"] + layer["b"]) + x
    return jnp.mean(x**2)


def train_runner(tx, params, x, layout=None, closed=False):
    """A donated, jitted train step, returned with its compile time in seconds.  With a
    ``layout`` the params are flat, and the layout is an argument of the step (its offsets traced)
    or, with ``closed``, a constant of it."""

    def step(p, s, x, argument):
        loss = mlp_loss
        if layout is not None:
            unravel = (layout if closed else argument).unravel
            loss = lambda f, x: mlp_loss(unravel(f), x)
        updates, s = tx.update(jax.grad(loss)(p, x), s, p)
        return optax.apply_updates(p, updates), s

    argument = None if closed else layout
    params = jax.tree.map(jnp.copy, params)  # each runner donates its own copy
    start = time.perf_counter()
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, tx.init(params), x, argument).compile()
    seconds = time.perf_counter() - start
    carry = [jax.block_until_ready(compiled(params, tx.init(params), x, argument))]

    def run():
        carry[0] = jax.block_until_ready(compiled(*carry[0], x, argument))

    return seconds, run


def torch_train_runner(layers, width, batch):
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(width, width) / width**0.5) for _ in range(layers)]
    biases = [torch.nn.Parameter(torch.zeros(width)) for _ in range(layers)]
    opt = torch.optim.Adam(weights + biases, lr=1e-3, eps=1e-8, fused=True)
    x = torch.randn(batch, width)

    def run():
        h = x
        for w, b in zip(weights, biases):
            h = torch.tanh(h @ w + b) + h
        opt.zero_grad()
        (h**2).mean().backward()
        opt.step()

    return run


def train_table(args):
    layers, width, batch = args.layers, 16, 32
    print(f"\n## 5. Train step of a {layers}-layer residual MLP ({2 * layers} leaves of {width}x{width} and {width}), "
          f"batch {batch}: forward + backward + Adam")
    params = mlp_params(layers, width, jax.random.PRNGKey(0))
    x = jax.random.normal(jax.random.PRNGKey(1), (batch, width))
    flat, layout = gc.flat.ravel(params)
    ours, theirs, _ = OPTIMIZERS["adam"]
    compiled = {
        "optax, per leaf": train_runner(theirs(), params, x),
        "gradchain, per leaf": train_runner(ours(), params, x),
        "gradchain, flat (layout an argument)": train_runner(ours(), flat, x, layout),
        "gradchain, flat (layout closed over)": train_runner(ours(), flat, x, layout, closed=True),
    }
    runners = {name: run for name, (_, run) in compiled.items()}
    if torch is not None and not args.no_torch:
        runners["torch, fused Adam"] = torch_train_runner(layers, width, batch)
    t = time_interleaved(runners, args.repeats)
    base = t["optax, per leaf"]
    print(f"{'':<40}{'step ms':>9}{'/optax':>8}{'compile s':>11}{'/optax':>8}")
    for name, seconds in t.items():
        c = compiled.get(name, (None, None))[0]
        cells = f"{c:>11.1f}{c / compiled['optax, per leaf'][0]:>8.2f}" if c is not None else f"{'-':>11}{'-':>8}"
        print(f"{name:<40}{fmt(seconds):>9}{seconds / base:>8.2f}{cells}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--only", choices=sorted(OPTIMIZERS), action="append")
    parser.add_argument("--trees", choices=range(len(TREES)), type=int, nargs="+")
    parser.add_argument("--no-compile", action="store_true", help="skip table 2 (Optax takes minutes on 2000 leaves)")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--tables", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument("--layers", type=int, default=250, help="table 5's MLP depth (two leaves per layer)")
    args = parser.parse_args()
    torch_version = torch.__version__ if torch is not None else "not installed"
    print(f"jax {jax.__version__}, optax {optax.__version__}, torch {torch_version} "
          f"({torch.get_num_threads() if torch else '-'} threads), backend {jax.default_backend()}, "
          f"{jax.devices()[0].device_kind}, median of {args.repeats}")
    if 1 in args.tables:
        step_table(args)
    if 2 in args.tables and not args.no_compile:
        compile_table(args)
    if 3 in args.tables:
        memory_table(args)
    if 4 in args.tables:
        bandwidth_table(args)
    if 5 in args.tables:
        train_table(args)


if __name__ == "__main__":
    main()
