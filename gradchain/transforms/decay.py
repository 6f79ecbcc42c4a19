"""Weight decay (decoupled) and the gradients of coupled L1 / L2 / elastic-net penalties.

Coupled penalties add λ·∂R/∂w to the gradient *before* the optimizer's statistics, exactly what
differentiating ``loss + R(w)`` would give, with (the lecture's conventions)

    L2:           R(w) = l2 · Σ w²           ∂R/∂w = 2 · l2 · w
    L1:           R(w) = l1 · Σ |w|          ∂R/∂w = l1 · sign(w)
    elastic net:  R(w) = l1 · Σ |w| + l2 · Σ w²

Decoupled weight decay (Loshchilov & Hutter, ICLR 2019) adds ``weight_decay · w`` *after* the
adaptive scaling, so that it is not normalised away; in AdamW it is then multiplied by the
learning rate, as in ``torch.optim.AdamW`` and ``optax.adamw``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.core import GradientTransformation
from gradchain.transforms._base import cast_like, require_params, transformation
from gradchain.transforms.wrappers import masked


class DecayState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict


def _maybe_masked(tx: GradientTransformation, mask) -> GradientTransformation:
    return tx if mask is None else masked(tx, mask)


def add_decayed_weights(
    weight_decay: hyper.Hyperparameter = 1e-4, mask=None, *, name: str = "weight_decay"
) -> GradientTransformation:
    """``u <- u + weight_decay · w`` (decoupled weight decay when placed after the scaling).

    Args:
      weight_decay: ≥ 0, a number, an array or a schedule.
      mask: which leaves decay (see :func:`gradchain.masked`; :func:`gradchain.decay_mask`
        excludes biases and norm scales).  Default: every leaf, as in torch and Optax.
      name: the key in ``get_hyperparams`` (Muon's AdamW branch: ``"adam_weight_decay"``;
        Adafactor's: ``"weight_decay_rate"``).

    Returns:
      A transformation that needs ``params`` in ``update``.
    """
    hyper.check(name, weight_decay, low=0.0)

    def step(updates, buffers, params, count, weight_decay):
        require_params(params, "add_decayed_weights")
        return jax.tree.map(lambda u, w: u + cast_like(weight_decay, u) * w, updates, params), buffers

    return _maybe_masked(transformation(DecayState, step, {name: weight_decay}), mask)


def add_elastic_net_penalty(
    l1: hyper.Hyperparameter = 0.0, l2: hyper.Hyperparameter = 0.0, mask=None
) -> GradientTransformation:
    """``u <- u + l1 · sign(w) + 2 · l2 · w``: the gradient of ``l1·Σ|w| + l2·Σw²``.

    Args:
      l1: ≥ 0, the L1 coefficient.
      l2: ≥ 0, the L2 coefficient (the lecture's ``l2 · Σ w²``, gradient ``2 · l2 · w``).
      mask: which leaves are penalised (see :func:`gradchain.masked`); default: all.

    Returns:
      A transformation that needs ``params`` in ``update``.
    """
    hyper.check("l1", l1, low=0.0)
    hyper.check("l2", l2, low=0.0)

    def step(updates, buffers, params, count, l1, l2):
        require_params(params, "add_elastic_net_penalty")

        def add(u, w):
            return u + cast_like(l1, u) * jnp.sign(w) + 2 * cast_like(l2, u) * w

        return jax.tree.map(add, updates, params), buffers

    return _maybe_masked(transformation(DecayState, step, {"l1": l1, "l2": l2}), mask)


def add_l2_penalty(l2: hyper.Hyperparameter, mask=None) -> GradientTransformation:
    """``u <- u + 2 · l2 · w``: the gradient of the lecture's L2 term ``l2 · Σ w²``.

    Args:
      l2: ≥ 0.
      mask: which leaves are penalised (see :func:`gradchain.masked`); default: all.

    Returns:
      ``add_elastic_net_penalty(0.0, l2, mask)``.
    """
    return add_elastic_net_penalty(0.0, l2, mask)


def add_l1_penalty(l1: hyper.Hyperparameter, mask=None) -> GradientTransformation:
    """``u <- u + l1 · sign(w)``: the (sub)gradient of ``l1 · Σ |w|``.

    Args:
      l1: ≥ 0.
      mask: which leaves are penalised (see :func:`gradchain.masked`); default: all.

    Returns:
      ``add_elastic_net_penalty(l1, 0.0, mask)``.
    """
    return add_elastic_net_penalty(l1, 0.0, mask)
