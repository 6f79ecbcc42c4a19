"""Adam's second moment alone, bias-corrected (the base of schedule-free AdamW)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.contrib._base import zeros_like
from gradchain.core import GradientTransformation
from gradchain.transforms._base import transformation

__all__ = ["scale_by_rms"]


def _debias(moment, decay, t):
    correction = 1 - decay**t
    return jax.tree.map(lambda m: m / correction.astype(m.dtype), moment)


class ScaleByRmsWithCountState(NamedTuple):
    """Optax's ``ScaleByRmsWithCountState`` fields, plus the hyperparameters."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    nu: Any


def scale_by_rms(
    decay: hyper.Hyperparameter = 0.999, eps: hyper.Hyperparameter = 1e-8, *, name: str = "b2"
) -> GradientTransformation:
    """Bias-corrected RMS scaling ``g / (√(v / (1 - β^t)) + eps)``, ``v <- β v + (1-β) g²``: Adam
    without its first moment (``optax.scale_by_rms(eps_in_sqrt=False, bias_correction=True)``,
    the base of schedule-free AdamW, Defazio et al. 2024).

    Args:
      decay: β in [0, 1).
      eps: > 0, outside the square root.
      name: the key of β in ``get_hyperparams``.

    Returns:
      A transformation with state ``ScaleByRmsWithCountState(count, hyperparams, nu)``.
    """
    hyper.check(name, decay, low=0.0, high=1.0, high_open=True)
    hyper.check("eps", eps, low=0.0, low_open=True)

    def step(updates, fields, params, count, decay, eps):
        nu = jax.tree.map(lambda g, v: (1 - decay) * (g**2) + decay * v, updates, fields["nu"])
        nu_hat = _debias(nu, decay, hyper.increment(count))
        out = jax.tree.map(lambda v, g: 1 / (jnp.sqrt(v) + eps) * g, nu_hat, updates)
        return out, {"nu": jax.tree.map(lambda v, old: v.astype(old.dtype), nu, fields["nu"])}

    return transformation(ScaleByRmsWithCountState, step, {name: decay, "eps": eps},
                          lambda params: {"nu": zeros_like(params)})
