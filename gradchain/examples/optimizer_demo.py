"""Main job v0: every optimizer of the lecture on the same MLP and data, side by side.

``python -m gradchain demo`` trains a 64→64→64→10 MLP on scikit-learn's digits with SGD,
SGD+momentum, Nesterov, AdaGrad, RMSProp, Adam and AdamW at the lecture's recommended settings,
prints a table and writes ``loss_curves.png`` (raw losses and their moving average).
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

import gradchain as gc
from gradchain.examples.digits import digits
from gradchain.examples.models import accuracy, cross_entropy, mlp_apply, mlp_init
from gradchain.tuning import plot_loss_curves

# The lecture: "Adam with beta1 = 0.9, beta2 = 0.999, and learning rate = 1e-3 or 5e-4 is a great
# starting point"; momentum 0.9; the others at their usual defaults.
OPTIMIZERS = {
    "sgd": lambda: gc.sgd(0.1),
    "sgd+momentum": lambda: gc.sgd(0.01, momentum=0.9),
    "nesterov": lambda: gc.sgd(0.01, momentum=0.9, nesterov=True),
    "adagrad": lambda: gc.adagrad(0.05),
    "rmsprop": lambda: gc.rmsprop(1e-3, decay=0.9),
    "adam": lambda: gc.adam(1e-3),
    "adamw": lambda: gc.adamw(1e-3, weight_decay=1e-4, mask=gc.decay_mask),
}


def train(tx, data, key, epochs: int, batch_size: int):
    """Minibatch training in one compiled ``lax.scan``; returns (params, per-step losses, seconds)."""
    n = data.x_train.shape[0]
    steps_per_epoch = n // batch_size
    init_key, shuffle_key = jax.random.split(key)
    params = mlp_init(init_key, (64, 64, 64, 10))

    def loss_fn(p, x, y):
        return cross_entropy(mlp_apply(p, x), y)

    def step(carry, batch_index):
        p, s = carry
        x, y = batch_index
        loss, grads = jax.value_and_grad(loss_fn)(p, x, y)
        updates, s = tx.update(grads, s, p)
        return (gc.apply_updates(p, updates), s), loss

    def batches(k):
        order = jax.vmap(lambda e: jax.random.permutation(e, n))(jax.random.split(k, epochs))
        idx = order[:, : steps_per_epoch * batch_size].reshape(-1, batch_size)
        return data.x_train[idx], data.y_train[idx]

    @jax.jit
    def run(p, k):
        (p, _), losses = jax.lax.scan(step, (p, tx.init(p)), batches(k))
        return p, losses

    jax.block_until_ready(run(params, shuffle_key))  # compile (and warm up)
    start = time.perf_counter()
    params, losses = jax.block_until_ready(run(params, shuffle_key))
    return params, np.asarray(losses), time.perf_counter() - start


def main(epochs: int = 20, batch_size: int = 64, out: str = "demo-output", seed: int = 0) -> dict:
    data = digits(jax.random.PRNGKey(seed))
    key = jax.random.PRNGKey(seed + 1)
    os.makedirs(out, exist_ok=True)
    rows, curves = {}, {}
    print(f"digits: {len(data.y_train)} train / {len(data.y_val)} validation, MLP 64-64-64-10, "
          f"{epochs} epochs of batch {batch_size}, backend {jax.default_backend()}")
    header = f"{'optimizer':<14}{'train loss':>11}{'train acc':>10}{'val loss':>10}{'val acc':>9}{'steps/s':>10}"
    print(header)
    print("-" * len(header))
    for name, make in OPTIMIZERS.items():
        params, losses, seconds = train(make(), data, key, epochs, batch_size)
        train_logits, val_logits = mlp_apply(params, data.x_train), mlp_apply(params, data.x_val)
        row = {
            "train_loss": float(cross_entropy(train_logits, data.y_train)),
            "train_acc": float(accuracy(train_logits, data.y_train)),
            "val_loss": float(cross_entropy(val_logits, data.y_val)),
            "val_acc": float(accuracy(val_logits, data.y_val)),
            "steps_per_s": len(losses) / seconds,
        }
        rows[name], curves[name] = row, losses
        print(f"{name:<14}{row['train_loss']:>11.4f}{row['train_acc']:>10.3f}{row['val_loss']:>10.4f}"
              f"{row['val_acc']:>9.3f}{row['steps_per_s']:>10.0f}")
    path = os.path.join(out, "loss_curves.png")
    plot_loss_curves(curves, path, title="digits MLP: the lecture's optimizers")
    print(f"loss curves: {path}")
    return rows
