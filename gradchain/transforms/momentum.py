"""Momentum: heavy ball (Polyak) and Nesterov, in the form the lecture calls SGD+Momentum.

    v_{t+1} = ρ v_t + g_t
    heavy ball:  u_t = v_{t+1}                  (x_{t+1} = x_t - α v_{t+1} after the lr scale)
    Nesterov:    u_t = g_t + ρ v_{t+1}

The Nesterov line is the lecture's look-ahead update after the change of variables
x̃ = x + ρv (Sutskever et al., ICML 2013), written in terms of x̃ and ∇f(x̃); it is also the form
of ``torch.optim.SGD(nesterov=True)`` and ``optax.trace(nesterov=True)``.

The lecture's other textbook form, ``v = ρv - αg; x += v``, is
``chain(scale_by_learning_rate(α), scale_by_momentum(ρ))``: momentum *after* the learning rate.
With a constant α both orders give the same iterates.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.core import GradientTransformation
from gradchain.transforms._base import cast_like, transformation


class ScaleByMomentumState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    velocity: object  # a pytree like the parameters


def scale_by_momentum(
    momentum: hyper.Hyperparameter = 0.9, nesterov: bool = False, dtype=None
) -> GradientTransformation:
    """Accumulate a velocity ``v <- momentum * v + u`` and output it (or Nesterov's ``u + ρv``).

    Args:
      momentum: ρ in [0, 1), the "friction"; 0.9 or 0.99 are typical.
      nesterov: use Nesterov's look-ahead form.
      dtype: dtype of the velocity buffer (default: that of each parameter).

    Returns:
      A transformation with state ``ScaleByMomentumState(count, hyperparams, velocity)``.
    """
    hyper.check("momentum", momentum, low=0.0, high=1.0, high_open=True)
    if not isinstance(nesterov, bool):
        raise TypeError(f"nesterov must be a bool, got {nesterov!r}")

    def init_buffers(params):
        return {"velocity": jax.tree.map(lambda p: jnp.zeros_like(p, dtype=dtype), params)}

    def step(updates, buffers, params, count, momentum):
        accumulate = lambda u, v: u + cast_like(momentum, v) * v
        velocity = jax.tree.map(accumulate, updates, buffers["velocity"])
        out = jax.tree.map(accumulate, updates, velocity) if nesterov else velocity
        velocity = jax.tree.map(lambda v, old: v.astype(old.dtype), velocity, buffers["velocity"])
        return out, {"velocity": velocity}

    return transformation(ScaleByMomentumState, step, {"momentum": momentum}, init_buffers)
