"""Second moments kept per layer or per axis instead of per element (NovoGrad, SM3).

==================================  ==========================================================
piece                               statistic of each leaf ``g``
==================================  ==========================================================
``squared_norm_moment(β)``          one scalar per leaf: ``ν₁ = ‖g₁‖²``, ``ν <- βν + (1-β)‖g‖²``
                                    (NovoGrad, Ginsburg et al. 2019, Alg. 1)
``scale_by_sm3(b1, b2, eps)``       one accumulator per axis of the leaf (SM3-II, Anil et al.,
                                    NeurIPS 2019, Alg. 2 with the cover of rows/columns/...)
``scale_by_novograd(...)``          ``ratio(identity(), chain(squared_norm_moment(b2),
                                    shift(eps_root), sqrt()), eps)`` → weight decay → trace(b1)
==================================  ==========================================================

Each statistic follows the leaf's real shape, so these run per leaf: not on
:func:`gradchain.multi_tensor`'s packed buffers, nor on :mod:`gradchain.flat`'s single vector
(where a model would be one layer with one axis).
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.core import GradientTransformation, chain, identity
from gradchain.state import short_repr
from gradchain.transforms._base import cast_like
from gradchain.transforms.adaptive import ratio, shift, sqrt
from gradchain.transforms.block import abs_sq
from gradchain.transforms.decay import add_decayed_weights
from gradchain.transforms.momentum import ScaleByMomentumState, scale_by_momentum
from gradchain.transforms.naming import live_transformation, renamed

__all__ = ["NovogradMomentumState", "ScaleBySM3State", "SquaredNormMomentState", "scale_by_novograd", "scale_by_sm3", "sm3", "squared_norm_moment"]


class SquaredNormMomentState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    nu: Any  # one scalar per leaf


class NovogradMomentumState(NamedTuple):
    """``scale_by_momentum``'s state under Optax's NovoGrad name: ``mu`` (its velocity)."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    mu: Any


class ScaleBySM3State(NamedTuple):
    """``mu``: per leaf, the accumulators of its axes one after another (axis 0's ``shape[0]``
    values, then axis 1's, ...; a scalar leaf has one); ``nu``: the momentum, like the leaf."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    mu: Any
    nu: Any


for _state in (SquaredNormMomentState, NovogradMomentumState, ScaleBySM3State):
    _state.__repr__ = lambda self: short_repr(self)  # type: ignore[method-assign]


def squared_norm_moment(decay: hyper.Hyperparameter, *, name: str = "decay") -> GradientTransformation:
    """A per-leaf moving average of the squared norm, started at the first value::

        ν₁ = ‖g₁‖²,   ν_t = β ν_{t-1} + (1 - β) ‖g_t‖²

    and outputs ν (one scalar per leaf: a layer-wise second moment, Ginsburg et al. 2019, Alg. 1).

    Args:
      decay: β in [0, 1).
      name: key of β in ``get_hyperparams`` (NovoGrad's is ``"b2"``).

    Returns:
      A transformation with state ``SquaredNormMomentState(count, hyperparams, nu)``.
    """
    hyper.check(name, decay, low=0.0, high=1.0, high_open=True)

    def init_buffers(params):
        return {"nu": jax.tree.map(lambda p: jnp.zeros((), jnp.asarray(p).dtype), params)}

    def formula(updates, buffers, params, count, decay):
        def average(g, nu):
            squared = jnp.sum(abs_sq(g)).astype(nu.dtype)
            beta = cast_like(decay, nu)
            return jnp.where(count == 0, squared, (1 - beta) * squared + beta * nu)

        nu = jax.tree.map(average, updates, buffers["nu"])
        return nu, {"nu": nu}

    return live_transformation(SquaredNormMomentState, formula, {"decay": decay}, {"decay": name}, init_buffers)


def scale_by_novograd(
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.25,
    eps: hyper.Hyperparameter = 1e-8,
    eps_root: hyper.Hyperparameter = 0.0,
    weight_decay: hyper.Hyperparameter = 0.0,
    mu_dtype: Any = None,
) -> GradientTransformation:
    """NovoGrad's direction (Ginsburg et al. 2019, Alg. 1; the form of ``optax.scale_by_novograd``)::

        ν = squared_norm_moment(b2)                     (per leaf, ν₁ = ‖g₁‖²)
        m <- b1·m + g / (√(ν + eps_root) + eps) + weight_decay·w

    Chain: ``ratio(identity(), chain(squared_norm_moment(b2), shift(eps_root), sqrt()), eps)``,
    ``add_decayed_weights(weight_decay)``, ``scale_by_momentum(b1)`` (its velocity shown as
    ``mu``).  Per leaf (the norm is each leaf's); needs ``params``.

    Args:
      b1: decay of the momentum, in [0, 1).
      b2: decay of the per-leaf second moment, in [0, 1).
      eps: > 0, outside the square root.
      eps_root: ≥ 0, inside the square root.
      weight_decay: ≥ 0, added before the momentum.
      mu_dtype: storage dtype of ``mu`` (default: each parameter's).

    Returns:
      A transformation whose state holds ``nu`` (per-leaf scalars) and ``mu``.
    """
    hyper.check("b1", b1, low=0.0, high=1.0, high_open=True)  # before scale_by_momentum names it "momentum"
    hyper.check("eps_root", eps_root, low=0.0)
    denominator = chain(squared_norm_moment(b2, name="b2"), shift(eps_root, name="eps_root"), sqrt())
    momentum = renamed(
        scale_by_momentum(b1, dtype=mu_dtype), (ScaleByMomentumState, NovogradMomentumState), momentum="b1"
    )
    return chain(ratio(identity(), denominator, eps), add_decayed_weights(weight_decay), momentum)


def _axis_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape if len(shape) else (1,)


def sm3(
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 1.0,
    eps: hyper.Hyperparameter = 1e-8,
    *,
    names: dict[str, str | None] | None = None,
) -> GradientTransformation:
    """:func:`scale_by_sm3` with its hyperparameters stored under ``names`` (``optax.sm3`` stores
    ``b1`` as ``momentum`` and fixes ``b2 = 1``, ``eps = 1e-8``)."""
    names = dict(names or {})
    hyper.check(names.get("b1", "b1") or "b1", b1, low=0.0, high=1.0, high_open=True)
    hyper.check(names.get("b2", "b2") or "b2", b2, low=0.0, high=1.0)
    hyper.check(names.get("eps", "eps") or "eps", eps, low=0.0)

    def init_buffers(params):
        def mu(p):
            return jnp.zeros((sum(_axis_shape(jnp.shape(p))),), jnp.asarray(p).dtype)

        return {"mu": jax.tree.map(mu, params), "nu": jax.tree.map(jnp.zeros_like, params)}

    def formula(updates, buffers, params, count, b1, b2, eps):
        def leaf(g, mu, nu):
            shape = _axis_shape(g.shape)
            rank = len(shape)
            beta2 = cast_like(b2, g)
            keep = jnp.where(beta2 == 1.0, jnp.ones_like(beta2), 1.0 - beta2)
            grad = g.reshape(shape)
            if rank < 2:
                accum = keep * grad**2 + beta2 * mu
            else:
                offsets = [sum(shape[:i]) for i in range(rank)]
                per_axis = [
                    mu[offsets[i] : offsets[i] + shape[i]].reshape([1] * i + [shape[i]] + [1] * (rank - i - 1))
                    for i in range(rank)
                ]
                accum = keep * grad**2 + beta2 * functools.reduce(jnp.minimum, per_axis)
            inv_sqrt = jnp.where(accum > 0, jax.lax.rsqrt(accum + cast_like(eps, g)), 0.0)
            scaled = (grad * inv_sqrt).reshape(g.shape)
            beta1 = cast_like(b1, g)
            new_nu = (1 - beta1) * scaled + beta1 * nu
            if rank < 2:
                new_mu = accum
            else:
                others = lambda i: tuple(a for a in range(rank) if a != i)
                new_mu = jnp.concatenate([jnp.max(accum, axis=others(i)) for i in range(rank)])
            return new_mu.astype(mu.dtype), new_nu

        pairs = jax.tree.map(leaf, updates, buffers["mu"], buffers["nu"])
        is_pair = lambda x: isinstance(x, tuple) and len(x) == 2 and not hasattr(x, "_fields")
        mu = jax.tree.map(lambda pr: pr[0], pairs, is_leaf=is_pair)
        nu = jax.tree.map(lambda pr: pr[1], pairs, is_leaf=is_pair)
        return nu, {"mu": mu, "nu": nu}

    return live_transformation(ScaleBySM3State, formula, {"b1": b1, "b2": b2, "eps": eps}, names, init_buffers)


def scale_by_sm3(
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 1.0,
    eps: hyper.Hyperparameter = 1e-8,
) -> GradientTransformation:
    """SM3-II's scaling (Anil et al., NeurIPS 2019, Alg. 2), the form of ``optax.scale_by_sm3``.

    Each leaf keeps one accumulator per axis (``μ_r`` for the cover of rows, columns, ...)::

        ν'(i) = b2·min_{r ∋ i} μ_r + c·g(i)²,     c = 1 if b2 = 1 else 1 - b2
        μ_r   <- max_{i ∈ r} ν'(i)
        m     <- b1·m + (1 - b1)·g / √(ν' + eps)     (0 where ν' = 0)

    and outputs ``m``.  Per leaf, over each leaf's real axes (a scalar or vector leaf keeps a full
    accumulator): not on packed or :mod:`gradchain.flat` buffers.

    Args:
      b1: decay of the momentum ``m``, in [0, 1).
      b2: decay of the accumulators, in [0, 1]; 1 (the default) sums, as the paper.
      eps: ≥ 0, inside the square root.

    Returns:
      A transformation with state ``ScaleBySM3State(count, hyperparams, mu, nu)``: ``mu`` holds
      each leaf's axis accumulators concatenated (Optax keeps a list per leaf), ``nu`` the
      momentum.
    """
    return sm3(b1, b2, eps)
