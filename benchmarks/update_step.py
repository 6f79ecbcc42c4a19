"""Optimizer step time: gradchain against Optax, in the same run, on the same trees.

    python benchmarks/update_step.py [--repeats 30] [--only adam]

Each step is `jit`-compiled with the parameters and optimizer state donated (updated in place),
as in a real training loop.  The two libraries' steps are timed interleaved (one call of each,
in turn) so that machine noise hits both alike; the table prints medians and the ratio
gradchain / Optax (below 1: gradchain is faster).  Compile time is the first call.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import gradchain as gc


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
    "resnet50 (161 leaves, 25.6M)": lambda: resnet50_shapes(),
    "2000 leaves x 512 (1M)": lambda: [(512,)] * 2000,
    "one leaf of 25.6M": lambda: [(25_557_032,)],
}

OPTIMIZERS = {
    "adam": (lambda: gc.adam(1e-3, eps=1e-8), lambda: optax.adam(1e-3, eps=1e-8)),
    "sgd+momentum": (lambda: gc.sgd(1e-2, momentum=0.9), lambda: optax.sgd(1e-2, momentum=0.9)),
    "adamw": (lambda: gc.adamw(1e-3, eps=1e-8, weight_decay=1e-4), lambda: optax.adamw(1e-3, eps=1e-8, weight_decay=1e-4)),
}


def make_tree(shapes, key):
    keys = jax.random.split(key, len(shapes))
    return [jax.random.normal(k, s, jnp.float32) * 0.01 for k, s in zip(keys, shapes)]


def compiled_step(tx):
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def bench(shapes, make_ours, make_theirs, repeats):
    grads = make_tree(shapes, jax.random.PRNGKey(1))
    runs = {}
    for name, make in (("gradchain", make_ours), ("optax", make_theirs)):
        tx = make()
        params = make_tree(shapes, jax.random.PRNGKey(0))
        state = tx.init(params)
        step = compiled_step(tx)
        start = time.perf_counter()
        params, state = jax.block_until_ready(step(params, state, grads))
        runs[name] = dict(step=step, carry=(params, state), compile=time.perf_counter() - start, times=[])
    for _ in range(repeats):
        for run in runs.values():
            start = time.perf_counter()
            run["carry"] = jax.block_until_ready(run["step"](*run["carry"], grads))
            run["times"].append(time.perf_counter() - start)
    return {name: (statistics.median(r["times"]), r["compile"]) for name, r in runs.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--only", choices=sorted(OPTIMIZERS), action="append")
    parser.add_argument("--trees", choices=range(len(TREES)), type=int, action="append")
    args = parser.parse_args()
    print(f"jax {jax.__version__}, optax {optax.__version__}, backend {jax.default_backend()}, "
          f"{jax.devices()[0].device_kind}, median of {args.repeats} steps")
    header = f"{'optimizer':<14}{'tree':<30}{'gradchain ms':>13}{'optax ms':>10}{'ratio':>7}{'compile s (gc/optax)':>22}"
    print(header)
    print("-" * len(header))
    for opt in args.only or OPTIMIZERS:
        for i, (tree, shapes) in enumerate(TREES.items()):
            if args.trees and i not in args.trees:
                continue
            result = bench(shapes(), *OPTIMIZERS[opt], args.repeats)
            (ours, ours_c), (theirs, theirs_c) = result["gradchain"], result["optax"]
            print(f"{opt:<14}{tree:<30}{ours * 1e3:>13.2f}{theirs * 1e3:>10.2f}{ours / theirs:>7.2f}"
                  f"{ours_c:>12.1f} / {theirs_c:<7.1f}", flush=True)


if __name__ == "__main__":
    main()
