"""The two problems every Optax-parity test runs on, and the loop that compares two optimizers.

- ``least_squares``: ``½‖A x - b‖²`` with A of condition number 1e3 (singular values spaced
  geometrically), so a wrong scaling of one direction shows within a few steps;
- ``small_tree``: a matrix, a bias and a 3-d kernel (``{"w": (4, 3), "b": (3,), "k": (3, 3, 2)}``)
  under a smooth non-convex loss, so factored and per-layer statistics see real shapes.

``trajectory(tx, problem, steps)`` runs ``steps`` updates and returns the parameters after each;
``assert_parity(ours, theirs, ...)`` compares the two trajectories step by step.  In float64 the
two are the same formula in another order of operations: rel. 1e-9 after 60 steps is ~1e6 ulps of
room for reassociation growing through the iteration (condition 1e3).
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from gradchain.core import apply_updates


def least_squares(dtype=jnp.float64):
    key_u, key_v, key_b = jax.random.split(jax.random.PRNGKey(0), 3)
    u, _ = jnp.linalg.qr(jax.random.normal(key_u, (12, 5), dtype))
    v, _ = jnp.linalg.qr(jax.random.normal(key_v, (5, 5), dtype))
    a = (u * jnp.logspace(0, -3, 5, dtype=dtype)) @ v.T
    b = jax.random.normal(key_b, (12,), dtype)
    params = {"x": jnp.full((5,), 0.5, dtype)}
    return params, lambda p: 0.5 * jnp.sum((a @ p["x"] - b) ** 2)


def small_tree(dtype=jnp.float64):
    keys = jax.random.split(jax.random.PRNGKey(1), 4)
    params = {"w": jax.random.normal(keys[0], (4, 3), dtype) * 0.5, "b": jnp.full((3,), 0.1, dtype),
              "k": jax.random.normal(keys[1], (3, 3, 2), dtype) * 0.5}
    x = jax.random.normal(keys[2], (6, 4), dtype)
    target = jax.random.normal(keys[3], (6, 2), dtype)

    def loss(p):
        h = jnp.tanh(x @ p["w"] + p["b"])  # (6, 3)
        out = jnp.einsum("ni,ijk->nk", h, p["k"]) / 3.0  # (6, 2): the kernel contracts two axes
        return jnp.mean((out - target) ** 2) + 0.01 * jnp.sum(p["k"] ** 4)

    return params, loss


PROBLEMS = {"least_squares": least_squares, "small_tree": small_tree}


def trajectory(tx, problem: str, steps: int = 60, dtype=jnp.float64, extra_args: bool = False):
    """The parameters after each of ``steps`` updates of ``tx`` (a list of trees, NumPy).

    ``extra_args``: pass ``value=``, ``grad=`` and ``value_fn=`` to ``update`` (line-search and
    Polyak-style optimizers read them)."""
    params, loss = PROBLEMS[problem](dtype)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        value, grads = jax.value_and_grad(loss)(params)
        kwargs = {"value": value, "grad": grads, "value_fn": loss} if extra_args else {}
        updates, state = tx.update(grads, state, params, **kwargs)
        return apply_updates(params, updates), state

    out = []
    for _ in range(steps):
        params, state = step(params, state)
        out.append(jax.tree.map(np.asarray, params))
    return out


@contextlib.contextmanager
def float64():
    """Float64 inside (``jax.enable_x64``; tests/conftest.py gives older jax the same name)."""
    enable = getattr(jax, "enable_x64", None)
    if enable is None:
        from jax.experimental import enable_x64 as enable
    with enable():
        yield


def assert_parity(ours, theirs, problem: str, *, steps: int = 60, rtol: float = 1e-9, dtype=jnp.float64,
                  extra_args: bool = False):
    """``ours`` and ``theirs`` give the same parameters at every step, to ``rtol`` relative to
    each leaf's largest magnitude (an element near zero is compared at its leaf's scale)."""
    mine = trajectory(ours, problem, steps, dtype, extra_args)
    reference = trajectory(theirs, problem, steps, dtype, extra_args)
    for t, (a, b) in enumerate(zip(mine, reference)):
        for name in a:
            scale = max(float(np.max(np.abs(b[name]))), 1e-30)
            error = float(np.max(np.abs(a[name] - b[name]))) / scale
            assert error <= rtol, f"{problem}, step {t + 1}, leaf {name!r}: relative error {error:.3g} > {rtol:g}"
