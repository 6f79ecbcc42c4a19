"""Layer-wise trust ratios: each leaf's step scaled by ‖w‖ / ‖u‖ (LARS, LAMB, Fromage).

==========================================  =====================================================
piece                                       formula, per leaf ``u`` (parameters ``w``)
==========================================  =====================================================
``scale_by_trust_ratio(m, c, eps)``         ``u · c·max(‖w‖, m) / (max(‖u‖, m) + eps)``
                                            (``u`` unchanged where either norm is 0)
``fromage_step(lr)``                        ``u <- -lr·μ·u + (μ - 1)·w``, ``μ = 1/√(1 + lr²)``
==========================================  =====================================================

A leaf is one layer's block, so these run per leaf with each leaf's real norm: not on
:func:`gradchain.multi_tensor`'s packed buffers, and not on :mod:`gradchain.flat`'s single vector
(which would turn the layer-wise ratio into one global ratio).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.core import GradientTransformation
from gradchain.state import short_repr
from gradchain.transforms._base import cast_like, require_params
from gradchain.transforms.block import safe_norm
from gradchain.transforms.naming import live_transformation

__all__ = ["FromageStepState", "ScaleByTrustRatioState", "fromage_step", "scale_by_trust_ratio", "trust_ratio"]


class ScaleByTrustRatioState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict


class FromageStepState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict


for _state in (ScaleByTrustRatioState, FromageStepState):
    _state.__repr__ = lambda self: short_repr(self)  # type: ignore[method-assign]


def trust_ratio(
    min_norm: hyper.Hyperparameter = 0.0,
    trust_coefficient: hyper.Hyperparameter = 1.0,
    eps: hyper.Hyperparameter = 0.0,
    *,
    names: dict[str, str | None] | None = None,
) -> GradientTransformation:
    """:func:`scale_by_trust_ratio` with its hyperparameters stored under ``names`` (``None``: a
    constant, as LAMB's ``eps = 0``, which must not share the name of Adam's ``eps``)."""
    names = dict(names or {})
    values = {"min_norm": min_norm, "trust_coefficient": trust_coefficient, "eps": eps}
    for arg, value in values.items():
        hyper.check(names.get(arg, arg) or arg, value, low=0.0)

    def formula(updates, buffers, params, count, min_norm, trust_coefficient, eps):
        require_params(params, "scale_by_trust_ratio")

        def scale_leaf(u, w):
            floor = cast_like(min_norm, w)
            w_norm = safe_norm(w, floor)
            u_norm = safe_norm(u, floor)
            ratio = cast_like(trust_coefficient, w) * w_norm / (u_norm + cast_like(eps, u))
            zero = jnp.logical_or(w_norm == 0.0, u_norm == 0.0)
            return u * jnp.where(zero, jnp.array(1.0, dtype=w.dtype), ratio)

        return jax.tree.map(scale_leaf, updates, params), buffers

    return live_transformation(ScaleByTrustRatioState, formula, values, names)


def scale_by_trust_ratio(
    min_norm: hyper.Hyperparameter = 0.0,
    trust_coefficient: hyper.Hyperparameter = 1.0,
    eps: hyper.Hyperparameter = 0.0,
) -> GradientTransformation:
    """Scale each leaf by its trust ratio (You et al. 2017, LARS eq. 6; You et al., ICLR 2020)::

        u <- u · c · max(‖w‖, m) / (max(‖u‖, m) + eps)

    and leave ``u`` unchanged where ``‖w‖`` or ``‖u‖`` is zero (a fresh zero-initialised layer
    would otherwise never move).  Per leaf, each leaf being one layer's block: not on packed or
    :mod:`gradchain.flat` buffers.  Needs ``params``.

    Args:
      min_norm: m ≥ 0, the floor of both norms (0: no floor).
      trust_coefficient: c ≥ 0, the multiplier of the ratio.
      eps: ≥ 0, added to the update's norm.

    Returns:
      A transformation with state ``ScaleByTrustRatioState(count, hyperparams)`` holding all three.
    """
    return trust_ratio(min_norm, trust_coefficient, eps)


def fromage_step(learning_rate: hyper.Hyperparameter) -> GradientTransformation:
    """Fromage's step (Bernstein et al., NeurIPS 2020, Alg. 1), after the trust ratio::

        u <- -lr·μ·u + (μ - 1)·w,   μ = 1 / √(1 + lr²)

    so that ``w + u = μ·(w - lr·u)``: a step of relative size ``lr`` followed by the shrink that
    keeps ``‖w‖`` from growing.  μ is computed from the stored ``learning_rate`` at every update,
    so a schedule or ``set_hyperparams`` changes both factors.  Needs ``params``.

    Args:
      learning_rate: ≥ 0, a number, array or schedule.

    Returns:
      A transformation with state ``FromageStepState(count, hyperparams={"learning_rate": ...})``.
    """
    hyper.check("learning_rate", learning_rate, low=0.0)

    def formula(updates, buffers, params, count, learning_rate):
        require_params(params, "fromage_step")
        lr = jnp.asarray(learning_rate)
        root = (1 + lr**2) ** 0.5
        mult = 1 / root
        # μ - 1 = -lr² / (√(1+lr²)·(√(1+lr²) + 1)): no cancellation (``mult - 1`` loses ~lr⁻² ulps,
        # 3e-4 relative in float32 at lr = 0.02, where Optax folds it from a Python float in double)
        shrink = -(lr**2) / (root * (root + 1))

        def step_leaf(u, w):
            return u * cast_like(-(lr * mult), u) + cast_like(shrink, w) * w

        return jax.tree.map(step_leaf, updates, params), buffers

    return live_transformation(FromageStepState, formula, {"learning_rate": learning_rate})
