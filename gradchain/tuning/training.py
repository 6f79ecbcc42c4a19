"""One training run as a pure function, and a population of runs as one compiled program.

A run is ``fit(config, key) -> RunResult``: ``config`` is a dict of hyperparameters (scalars,
possibly traced), ``key`` the run's randomness (initialisation, minibatch order).  Because it is
pure, a population of K configurations is ``vmap(fit)`` (or ``lax.map(fit)``) over stacked
configs and keys: one program, one compile, and on several devices the population axis is sharded
across them with ``jax.sharding``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradchain.core import GradientTransformation, apply_updates
from gradchain.data import Split
from gradchain.models import accuracy, cross_entropy
from gradchain.tuning.early_stopping import EarlyStopping


class Task(NamedTuple):
    """What to train: ``init(key) -> params``, ``apply(params, x) -> logits``, and the data."""

    init: Callable[[jax.Array], Any]
    apply: Callable[[Any, jax.Array], jax.Array]
    data: Split

    @property
    def num_classes(self) -> int:
        return int(jnp.max(self.data.y_train)) + 1


class RunResult(NamedTuple):
    params: Any  # the best snapshot (by validation accuracy) when evaluating, else the last
    losses: jax.Array  # [steps] training loss of each minibatch
    train_acc: jax.Array  # [evals] on the whole training split
    val_acc: jax.Array  # [evals]
    val_loss: jax.Array  # [evals]
    best_step: jax.Array  # step of the snapshot in `params`


def make_fit(
    task: Task,
    make_optimizer: Callable[[Mapping[str, jax.Array]], GradientTransformation],
    *,
    steps: int,
    batch_size: int = 64,
    eval_every: int | None = None,
    patience: int | None = None,
    data_fraction: float = 1.0,
) -> Callable[[Mapping[str, jax.Array], jax.Array], RunResult]:
    """Build the pure training run ``fit(config, key)``.

    Minibatches are drawn without replacement, epoch by epoch, from ``key``.  Every
    ``eval_every`` steps (default: once, at the end) the run measures training and validation
    accuracy; with ``patience`` the best snapshot by validation accuracy is kept
    (:class:`EarlyStopping`) and returned.  ``data_fraction`` < 1 trains on that leading share of
    the training split (the "overfit a small sample" check).
    """
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    eval_every = steps if eval_every is None else eval_every
    if not isinstance(eval_every, int) or not 0 < eval_every <= steps or steps % eval_every:
        raise ValueError(f"eval_every must be a positive divisor of steps={steps}, got {eval_every!r}")
    x_train, y_train = task.data.x_train, task.data.y_train
    n = max(1, int(round(len(y_train) * data_fraction)))
    x_train, y_train = x_train[:n], y_train[:n]
    batch_size = min(batch_size, n)
    per_epoch = n // batch_size
    epochs = -(-steps // per_epoch)

    def loss_fn(params, x, y):
        return cross_entropy(task.apply(params, x), y)

    def metrics(params):
        train_logits = task.apply(params, x_train)
        val_logits = task.apply(params, task.data.x_val)
        return (
            accuracy(train_logits, y_train),
            accuracy(val_logits, task.data.y_val),
            cross_entropy(val_logits, task.data.y_val),
        )

    def fit(config, key):
        init_key, data_key = jax.random.split(key)
        params = task.init(init_key)
        tx = make_optimizer(config)
        orders = jax.vmap(lambda k: jax.random.permutation(k, n))(jax.random.split(data_key, epochs))
        batches = orders[:, : per_epoch * batch_size].reshape(-1, batch_size)[:steps]
        batches = batches.reshape(steps // eval_every, eval_every, batch_size)
        stopper = EarlyStopping(mode="max", patience=patience)

        def step(carry, idx):
            p, s = carry
            loss, grads = jax.value_and_grad(loss_fn)(p, x_train[idx], y_train[idx])
            updates, s = tx.update(grads, s, p)
            return (apply_updates(p, updates), s), loss

        def chunk(carry, chunk_batches):
            p, s, stop_state, i = carry
            (p, s), losses = jax.lax.scan(step, (p, s), chunk_batches)
            m = metrics(p)
            stop_state = stopper.update(stop_state, m[1], p, (i + 1) * eval_every)
            return (p, s, stop_state, i + 1), (losses, m)

        carry = (params, tx.init(params), stopper.init(params), 0)
        (last, _, stop_state, _), (losses, (train_acc, val_acc, val_loss)) = jax.lax.scan(chunk, carry, batches)
        best = stop_state.best_params if patience is not None else last
        return RunResult(best, losses.reshape(-1), train_acc, val_acc, val_loss, stop_state.best_step)

    return fit


def stack_configs(configs: list[Mapping[str, float]]) -> dict[str, jax.Array]:
    """``[{lr: a}, {lr: b}] -> {lr: [a, b]}``: the population's hyperparameters as arrays."""
    if not configs:
        raise ValueError("configs must hold at least one configuration, got an empty list")
    names = set(configs[0])
    for i, c in enumerate(configs):
        if set(c) != names:
            raise ValueError(f"configs[{i}] has keys {sorted(c)}, expected {sorted(names)}")
    return {name: jnp.asarray([float(c[name]) for c in configs], jnp.float32) for name in sorted(names)}


def choose_strategy(task: Task, batch_size: int) -> str:
    """``"vmap"`` or ``"sequential"`` for a population on the current backend.

    Batching K runs with ``vmap`` turns every matmul into a batched one.  On accelerators that is
    always the better use of the hardware.  On a CPU the batched matmuls of a medium model lose
    to plain ones (``benchmarks/population.py``: 0.75× for 64→256→256→10 at batch 128, and
    ``lax.map`` inside one program 0.82×), so above ~1M multiply-adds per step the members run
    one after another through the same compiled single-run program.
    """
    if jax.default_backend() != "cpu":
        return "vmap"
    params = jax.eval_shape(task.init, jax.random.PRNGKey(0))
    weights = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    return "vmap" if weights * batch_size <= 1_000_000 else "sequential"


def train_population(
    fit: Callable[[Mapping[str, jax.Array], jax.Array], RunResult],
    configs: Mapping[str, jax.Array],
    keys: jax.Array,
    *,
    strategy: str = "vmap",
) -> RunResult:
    """Train one run per (config, key) pair in one compiled program; results gain a leading axis.

    ``strategy``: ``"vmap"`` (batched), ``"map"`` (members one after another inside one program)
    or ``"sequential"`` (one compiled single-run program called per member); see
    :func:`choose_strategy`.  With several devices and a population divisible by their number,
    the population axis is sharded across devices.
    """
    sizes = {name: jnp.shape(v)[0] if jnp.ndim(v) else None for name, v in configs.items()}
    k = len(keys)
    bad = {name: s for name, s in sizes.items() if s != k}
    if bad:
        raise ValueError(f"every config array must have one entry per key ({k}), got sizes {bad}")
    if strategy not in ("vmap", "map", "sequential"):
        raise ValueError(f"strategy must be 'vmap', 'map' or 'sequential', got {strategy!r}")
    devices = jax.devices()
    if len(devices) > 1 and k % len(devices) == 0:
        mesh = jax.sharding.Mesh(np.array(devices), ("population",))
        sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("population"))
        configs, keys = jax.device_put((dict(configs), keys), sharding)
    if strategy == "vmap":
        return _vmapped(fit)(dict(configs), keys)
    if strategy == "map":
        return _mapped(fit)(dict(configs), keys)
    single = _single(fit)
    runs = [single({name: v[i] for name, v in configs.items()}, keys[i]) for i in range(k)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *runs)


@functools.lru_cache(maxsize=64)
def _vmapped(fit):
    """One compiled population program per ``fit`` (cached: calling again does not recompile)."""
    return jax.jit(jax.vmap(fit))


@functools.lru_cache(maxsize=64)
def _single(fit):
    return jax.jit(fit)


@functools.lru_cache(maxsize=64)
def _mapped(fit):
    return jax.jit(lambda configs, keys: jax.lax.map(lambda ck: fit(*ck), (configs, keys)))
