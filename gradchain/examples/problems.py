"""Test landscapes: small pure ``jnp`` functions with known minima, for tests, demos and benchmarks.

Each takes a flat array ``x`` (any length unless stated) and returns a scalar in ``x``'s dtype.

* :func:`rosenbrock` — the curved valley; chained form, minimum 0 at ``x = (1, ..., 1)``;
  :func:`rosenbrock_start` gives the standard start ``(-1.2, 1, -1.2, 1, ...)``.
* :func:`ill_conditioned_quadratic` — ``½ Σ κ^{i/(n-1)} x_i²``: condition number ``κ``,
  minimum 0 at the origin; the lecture's "loss changes quickly in one direction and slowly in
  another".
* :func:`saddle` — a saddle point at the origin between two minima; the lecture's "zero
  gradient, gradient descent gets stuck".
* :func:`logistic_regression` — L2-regularised multinomial logistic regression on a pytree of
  parameters, for full-batch (L-BFGS) versus mini-batch experiments.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = [
    "ill_conditioned_quadratic",
    "logistic_regression",
    "rosenbrock",
    "rosenbrock_start",
    "saddle",
]


def rosenbrock(x: jax.Array) -> jax.Array:
    """The (chained) Rosenbrock function, for any ``n = len(x) ≥ 2``::

        f(x) = Σ_{i=1}^{n-1} 100 (x_{i+1} - x_i²)² + (1 - x_i)²

    Minimum ``f = 0`` at ``x = (1, ..., 1)`` (for ``4 ≤ n ≤ 7`` there is also a local minimum
    near ``x_1 = -1``).  Same as ``scipy.optimize.rosen`` (Rosenbrock 1960).
    """
    x = jnp.asarray(x)
    if x.ndim != 1 or x.shape[0] < 2:
        raise ValueError(f"rosenbrock needs a vector of length >= 2, got shape {x.shape}")
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2)


def rosenbrock_start(n: int, dtype=None) -> jax.Array:
    """The standard starting point ``(-1.2, 1, -1.2, 1, ...)`` of length ``n`` (Moré et al. 1981)."""
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n must be an int >= 2, got {n!r}")
    return jnp.resize(jnp.asarray([-1.2, 1.0], dtype=dtype), (n,))


def ill_conditioned_quadratic(x: jax.Array, condition_number: float = 100.0) -> jax.Array:
    """``f(x) = ½ Σ_i λ_i x_i²`` with ``λ_i = κ^{i/(n-1)}``, log-spaced from 1 to ``κ``.

    The Hessian is ``diag(λ)``, its condition number is ``κ = condition_number``; the minimum is
    ``f = 0`` at ``x = 0``.  Gradient descent needs a step below ``2/κ`` and ``O(κ)`` iterations;
    Newton needs one.
    """
    x = jnp.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"ill_conditioned_quadratic needs a vector, got shape {x.shape}")
    n = x.shape[0]
    powers = jnp.arange(n, dtype=x.dtype) / max(n - 1, 1)
    lam = jnp.asarray(condition_number, x.dtype) ** powers
    return 0.5 * jnp.sum(lam * x * x)


def saddle(x: jax.Array) -> jax.Array:
    """A saddle between two minima, for any ``n ≥ 1``::

        f(x) = ½ Σ_{i<n} x_i² + ¼ x_n⁴ - ½ x_n²

    The origin is a saddle point (gradient 0, Hessian ``diag(1, ..., 1, -1)``); the minima are
    ``x = (0, ..., 0, ±1)`` with ``f = -¼``.  Plain Newton started near the origin jumps to the
    saddle; a method that follows negative curvature downhill does not.
    """
    x = jnp.asarray(x)
    if x.ndim != 1 or x.shape[0] < 1:
        raise ValueError(f"saddle needs a non-empty vector, got shape {x.shape}")
    last = x[-1]
    return 0.5 * jnp.sum(x[:-1] ** 2) + 0.25 * last**4 - 0.5 * last**2


def logistic_regression(params, inputs: jax.Array, labels: jax.Array, l2: float = 1e-3) -> jax.Array:
    """Mean cross-entropy of a multinomial logistic regression plus an L2 penalty on the weights::

        f(W, b) = (1/N) Σ_n [logsumexp(z_n) - z_{n, y_n}] + (l2/2) ‖W‖²,    z_n = W x_n + b

    ``params = {"w": (d, k), "b": (k,)}``; ``inputs`` is ``(N, d)``, ``labels`` integer classes
    ``(N,)``.  Strictly convex in ``W`` for ``l2 > 0`` (the bias is not penalised).
    """
    w, b = params["w"], params["b"]
    logits = inputs @ w + b
    # One-hot selection rather than a gather: same value, and its gradient needs no scatter.
    picked = jnp.sum(jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype) * logits, axis=-1)
    nll = jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)
    return nll + 0.5 * l2 * jnp.sum(w * w)
