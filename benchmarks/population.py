"""A population of 32 configurations as one program vs 32 sequential compiled runs, and one run
against a plain PyTorch loop — same data, same steps, same run.

    python benchmarks/population.py [--steps 500]

Models: tiny MLP 64→32→32→10 (batch 32) and medium 64→256→256→10 (batch 128) on digits, AdamW;
and the main job's CNN (batch norm, dropout; 8×8 digit images, batch 64): a population through
``train_population`` (``vmap`` and sequential), the same run as one scanned program, and the same
network trained by a plain PyTorch loop, all in one run (``cnn_rows``).
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import numpy as np

import gradchain as gc
from gradchain.examples.digits import digits
from gradchain.examples.digits_recipe import adamw_from_config
from gradchain.examples.models import mlp_apply, mlp_init
from gradchain.tuning import choose_strategy, make_fit, stack_configs, train_population

MODELS = {"tiny": ((64, 32, 32, 10), 32), "medium": ((64, 256, 256, 10), 128)}


def timed(fn, *args):
    jax.block_until_ready(fn(*args))  # compile
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - start


def torch_loop(sizes, batch, steps, data):
    import torch

    torch.manual_seed(0)
    layers = []
    for m, n in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(m, n), torch.nn.ReLU()]
    return _timed_torch_training(torch.nn.Sequential(*layers[:-1]), torch.tensor(np.asarray(data.x_train)),
                                 data, steps, batch)


def _timed_torch_training(model, x, data, steps, batch):
    """Seconds for ``steps`` AdamW steps of ``model`` on random minibatches of ``x``."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    y = torch.tensor(np.asarray(data.y_train), dtype=torch.long)
    idx = torch.randint(0, len(y), (steps, batch))
    start = time.perf_counter()
    for i in range(steps):
        loss = torch.nn.functional.cross_entropy(model(x[idx[i]]), y[idx[i]])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return time.perf_counter() - start


class TorchCNN:
    """The main job's CNN (``gradchain.examples.models.digits_cnn``) in PyTorch, for the peer loop."""

    def __new__(cls, dropout):
        import torch
        from torch import nn

        return nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(512, 64), nn.ReLU(), nn.Dropout(dropout), nn.Linear(64, 10),
        ).to(torch.float32)


def torch_cnn_loop(steps, batch, data, dropout=0.1):
    import torch

    torch.manual_seed(0)
    x = torch.tensor(np.asarray(data.x_train)).permute(0, 3, 1, 2).contiguous()
    return _timed_torch_training(TorchCNN(dropout), x, data, steps, batch)


def cnn_rows(population: int, steps: int, strategies=("sequential", "vmap")) -> dict:
    """The CNN with batch norm and dropout: seconds for ``population`` runs of ``steps`` steps by
    each strategy, one run as a scanned program (``jax.jit(fit)``), and one PyTorch run."""
    import gradchain as gc
    from gradchain.examples.digits import digits_images
    from gradchain.examples.models import digits_cnn

    data = digits_images()
    trainable = gc.supervised(digits_cnn())
    opt = lambda c: gc.adamw(c["learning_rate"], weight_decay=1e-4, mask=gc.decay_mask)
    fit = make_fit(trainable, opt, data, steps=steps, batch_size=64)
    rates = np.logspace(-4, -2, population)
    configs = stack_configs([{"learning_rate": r, "dropout": 0.1} for r in rates])
    keys = jax.random.split(jax.random.PRNGKey(0), population)
    row = {"model": "cnn", "members": population, "steps": steps, "batch": 64}
    for strategy in strategies:
        row[f"{strategy} s"] = timed(lambda c, ks, s=strategy: train_population(fit, c, ks, strategy=s, progress=False),
                                     configs, keys)
    row["scanned 1 run s"] = timed(jax.jit(fit), {n: v[0] for n, v in configs.items()}, keys[0])
    row["host-driven 1 run s"] = row["sequential s"] / population
    try:
        row["torch 1 run s"] = torch_cnn_loop(steps, 64, data)
    except ImportError:
        row["torch 1 run s"] = float("nan")
    row["choose_strategy"] = choose_strategy(fit, 64)
    return row


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--population", type=int, default=32)
    parser.add_argument("--cnn-population", type=int, default=8)
    parser.add_argument("--cnn-steps", type=int, default=200)
    args = parser.parse_args()
    data = digits()
    k = args.population
    print(f"jax {jax.__version__}, backend {jax.default_backend()}, {k} configurations x {args.steps} steps")
    print(f"{'model':<8}{'sequential s':>13}{'vmap s':>8}{'map s':>8}{'vmap x':>8}{'map x':>7}{'auto':>11}{'auto x':>7}"
          f"{'1 run steps/s':>15}{'torch steps/s':>15}{'vs torch':>9}")
    for name, (sizes, batch) in MODELS.items():
        task = gc.supervised(gc.from_function(functools.partial(mlp_init, sizes=sizes), mlp_apply))
        fit = make_fit(task, adamw_from_config, data, steps=args.steps, batch_size=batch)
        rates = np.logspace(-4, -2, k)
        configs = stack_configs([{"learning_rate": r, "weight_decay": 1e-4} for r in rates])
        keys = jax.random.split(jax.random.PRNGKey(0), k)
        single = jax.jit(fit)  # the baseline: 32 separate runs of one compiled program
        one = {n: v[0] for n, v in configs.items()}
        t_one = timed(single, one, keys[0])
        t_seq = 0.0
        for i in range(k):  # compiled once, called k times (the rate is an input)
            start = time.perf_counter()
            jax.block_until_ready(single({n: v[i] for n, v in configs.items()}, keys[i]))
            t_seq += time.perf_counter() - start
        t_vmap = timed(lambda c, ks: train_population(fit, c, ks, strategy="vmap"), configs, keys)
        t_map = timed(lambda c, ks: train_population(fit, c, ks, strategy="map"), configs, keys)
        auto = choose_strategy(task, batch)
        t_auto = timed(lambda c, ks: train_population(fit, c, ks, strategy=auto), configs, keys)
        try:
            t_torch = torch_loop(sizes, batch, args.steps, data)
            torch_rate = f"{args.steps / t_torch:>15.0f}"
            ratio = f"{t_torch / t_one:>8.1f}x"
        except ImportError:
            torch_rate, ratio = f"{'n/a':>15}", f"{'n/a':>9}"
        print(f"{name:<8}{t_seq:>13.2f}{t_vmap:>8.2f}{t_map:>8.2f}{t_seq / t_vmap:>8.2f}{t_seq / t_map:>7.2f}"
              f"{auto:>11}{t_seq / t_auto:>7.2f}{args.steps / t_one:>15.0f}{torch_rate}{ratio}", flush=True)
    row = cnn_rows(args.cnn_population, args.cnn_steps)
    print(f"\nCNN with batch norm and dropout, {row['members']} members x {row['steps']} steps (batch 64):")
    for name in ("sequential s", "vmap s"):
        print(f"  population, {name[:-2]:<11}{row[name]:>8.2f} s   ({row['sequential s'] / row[name]:.2f}x sequential)")
    for name in ("host-driven 1 run s", "scanned 1 run s", "torch 1 run s"):
        print(f"  {name[:-2]:<22}{row[name]:>8.2f} s   ({row[name] / row['torch 1 run s']:.2f}x torch)")
    print(f"  choose_strategy: {row['choose_strategy']}")


if __name__ == "__main__":
    main()
