"""Named variants of gradchain's scaling pieces, for optimizers that hold two of a kind.

Muon runs two optimizers side by side (Muon on matrices, AdamW on the rest), each with its own
learning rate and weight decay; COCOB scales by a *positive* learning rate.  gradchain's
``scale_by_learning_rate`` and ``add_decayed_weights`` store their value under one fixed name, so
these take ``name=`` (the key in ``get_hyperparams``).  :func:`scale_by_adam` and
:func:`scale_by_rms` are Adam's and RMSProp's statistics with Optax's state layout (fields ``mu``
and ``nu``) and Optax's order of operations, so that an optimizer assembled from them reads like
Optax's in ``tree_get`` and equals it step for step.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.contrib._base import check_bool, transformation, zeros_like
from gradchain.core import GradientTransformation
from gradchain.transforms._base import cast_like, require_params
from gradchain.transforms.wrappers import masked

__all__ = ["add_decayed_weights", "scale_by_adam", "scale_by_learning_rate", "scale_by_rms"]


class ScaleState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict


def scale_by_learning_rate(
    learning_rate: hyper.Hyperparameter, *, flip_sign: bool = True, name: str = "learning_rate"
) -> GradientTransformation:
    """``u <- -learning_rate · u`` (``flip_sign=False``: ``+learning_rate · u``, COCOB's input scaling).

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      flip_sign: negate, so that applying the update descends.
      name: the key in ``get_hyperparams`` (Muon's AdamW branch: ``"adam_learning_rate"``).

    Returns:
      A transformation with state ``ScaleState(count, hyperparams)``.
    """
    hyper.check(name, learning_rate, low=0.0)
    check_bool("flip_sign", flip_sign)
    sign = -1 if flip_sign else 1

    def step(updates, fields, params, count, lr):
        return jax.tree.map(lambda u: u * cast_like(sign * lr, u), updates), fields

    return transformation(ScaleState, step, {name: learning_rate})


def add_decayed_weights(
    weight_decay: hyper.Hyperparameter = 0.0, mask: Any = None, *, name: str = "weight_decay"
) -> GradientTransformation:
    """``u <- u + weight_decay · w`` (decoupled weight decay, Loshchilov & Hutter, ICLR 2019).

    Args:
      weight_decay: ≥ 0: a number, an array or a schedule.
      mask: which leaves decay (see :func:`gradchain.masked`); default: all.
      name: the key in ``get_hyperparams`` (Muon's AdamW branch: ``"adam_weight_decay"``).

    Returns:
      A transformation that needs ``params`` in ``update``.
    """
    hyper.check(name, weight_decay, low=0.0)

    def step(updates, fields, params, count, wd):
        require_params(params, "add_decayed_weights")
        return jax.tree.map(lambda u, w: u + cast_like(wd, u) * w, updates, params), fields

    tx = transformation(ScaleState, step, {name: weight_decay})
    return tx if mask is None else masked(tx, mask)


class ScaleByAdamState(NamedTuple):
    """Optax's ``ScaleByAdamState`` fields, plus the hyperparameters."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    mu: Any
    nu: Any


def _debias(moment, decay, t):
    correction = 1 - decay**t
    return jax.tree.map(lambda m: m / correction.astype(m.dtype), moment)


def scale_by_adam(
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-8,
    eps_root: hyper.Hyperparameter = 0.0,
    *,
    mu_dtype: Any = None,
    nesterov: bool = False,
    names: tuple[str, str, str, str] = ("b1", "b2", "eps", "eps_root"),
) -> GradientTransformation:
    """Adam's direction ``m̂ / (√(v̂ + eps_root) + eps)`` (Kingma & Ba, ICLR 2015), in Optax's
    layout and order of operations; ``nesterov``: NAdam's ``b1·m/(1-b1^(t+1)) + (1-b1)·g/(1-b1^t)``
    (Dozat 2016).

    The same formula as :func:`gradchain.scale_by_adam`, with the state Optax's
    ``ScaleByAdamState(count, mu, nu)`` and every hyperparameter (``eps_root`` too) stored under
    the names given.

    Args:
      b1: decay of ``mu``, in [0, 1).
      b2: decay of ``nu``, in [0, 1).
      eps: > 0, outside the square root.
      eps_root: ≥ 0, inside the square root.
      mu_dtype: storage dtype of ``mu``.
      nesterov: NAdam's look-ahead.
      names: the keys of ``(b1, b2, eps, eps_root)`` in ``get_hyperparams``.

    Returns:
      A transformation with state ``ScaleByAdamState(count, hyperparams, mu, nu)``.
    """
    n_b1, n_b2, n_eps, n_root = names
    hyper.check(n_b1, b1, low=0.0, high=1.0, high_open=True)
    hyper.check(n_b2, b2, low=0.0, high=1.0, high_open=True)
    hyper.check(n_eps, eps, low=0.0, low_open=True)
    hyper.check(n_root, eps_root, low=0.0)
    check_bool("nesterov", nesterov)

    def init_fields(params, hp):
        return {"mu": zeros_like(params, mu_dtype), "nu": zeros_like(params)}

    def step(updates, fields, params, count, b1, b2, eps, eps_root):
        mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, fields["mu"])
        nu = jax.tree.map(lambda g, v: (1 - b2) * (g**2) + b2 * v, updates, fields["nu"])
        t = hyper.increment(count)
        if nesterov:
            mu_hat = jax.tree.map(
                lambda m, g: b1 * m + (1 - b1) * g, _debias(mu, b1, hyper.increment(t)), _debias(updates, b1, t)
            )
        else:
            mu_hat = _debias(mu, b1, t)
        nu_hat = _debias(nu, b2, t)
        out = jax.tree.map(lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), mu_hat, nu_hat)
        mu = jax.tree.map(lambda m, old: m.astype(old.dtype), mu, fields["mu"])
        nu = jax.tree.map(lambda v, old: v.astype(old.dtype), nu, fields["nu"])
        return out, {"mu": mu, "nu": nu}

    hypers = {n_b1: b1, n_b2: b2, n_eps: eps, n_root: eps_root}
    return transformation(ScaleByAdamState, step, hypers, init_fields)


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
                          lambda params, hp: {"nu": zeros_like(params)})
