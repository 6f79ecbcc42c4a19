"""Element-wise pieces of the optimizers in :mod:`gradchain.zoo.elementwise`, one formula each.

Every piece keeps its hyperparameters in its state (``count``, ``hyperparams``, then its buffers),
so each is live (``get_hyperparams`` / ``set_hyperparams``, arrays, schedules, ``vmap``), and
its buffers carry Optax's names (``mu``, ``nu``, ``nu_max``, ``ema``, ``step_sizes``, ...), so
``gc.tree_get(state, "mu")`` finds them.  Every formula is per element (Polyak's step size also
takes one norm of the whole tree), so all of them run on :func:`gradchain.multi_tensor`'s packed
buffers.  Per element, with ``t = 1, 2, ...`` the index of the update, ``ĉ_β(t) = 1 - β^t`` and
``EMA_β(m, x) = β m + (1-β) x``:

==================================  ===========================================================
piece                               output (state)
==================================  ===========================================================
``scale_by_adam_moments``           ``m̂ / (√(v̂ + eps_root) + eps)``  (``mu``, ``nu``)
``scale_by_amsgrad``                ``m̂ / (√(max_s v̂_s + eps_root) + eps)``  (+ ``nu_max``)
``scale_by_adamax``                 ``m̂ / u``, ``u = max(|g| + eps, β₂ u)``  (``mu``, ``nu``)
``scale_by_radam``                  ``r_t m̂ / (√v̂ + eps)`` once ``ρ_t ≥ threshold``, else ``m̂``
``scale_by_belief``                 ``m̂ / (√ŝ + eps)``, ``s = EMA((g - m)²) + eps_root``
``scale_by_yogi``                   ``m̂ / (√v̂ + eps)``, ``v -= (1-β₂) sign(v - g²) g²``
``scale_by_adan``                   ``(m̂ + (1-β₂) v̂) / (√n̂ + eps)``  (``m``, ``v``, ``n``, ``g``)
``scale_by_adadelta``               ``√(E[Δx²] + eps) / √(E[g²] + eps) · g``  (``e_g``, ``e_x``)
``ema``                             ``EMA_β(m, g)`` (optionally ``/ ĉ_β(t)``)  (``ema``)
``scale_by_lion``                   ``sign(β₁ m + (1-β₁) g)``, ``m <- EMA_β₂(m, g)``  (``mu``)
``scale_by_sign``                   ``sign(g)``
``negate``                          ``-g``
``scale_by_rprop``                  ``η_t · sign(g)`` with per-element adapted ``η``
``scale_by_optimistic_gradient``    ``(α + β) g_t - β g_{t-1}``  (``previous_gradient``)
``add_noise``                       ``g + N(0, eta / t^gamma)``  (``rng_key``)
``scale_by_polyak``                 ``min((f - f*) / ‖g‖², max_lr) · g``  (needs ``value=``)
==================================  ===========================================================

The arithmetic is Optax's (``optax/_src/transform.py``, 0.2.8), operation for operation where it
matters for rounding; hyperparameters are cast to each leaf's dtype (a bfloat16 leaf stays
bfloat16).  What differs from Optax is listed in each docstring.
"""

from __future__ import annotations

import operator
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradchain import hyper
from gradchain.core import EmptyState, GradientTransformation, GradientTransformationExtraArgs
from gradchain.transforms._base import (
    canonical_dtype,
    cast_like,
    check_bool,
    check_state,
    initial_hyperparams,
    next_hyperparams,
    transformation,
)

__all__ = [
    "AddNoiseState",
    "EmaState",
    "ScaleByAdaDeltaState",
    "ScaleByAdamMomentsState",
    "ScaleByAdamaxState",
    "ScaleByAdanState",
    "ScaleByAmsgradState",
    "ScaleByBeliefState",
    "ScaleByLionState",
    "ScaleByOptimisticGradientState",
    "ScaleByPolyakState",
    "ScaleByRAdamState",
    "ScaleByRpropState",
    "ScaleByYogiState",
    "add_noise",
    "ema",
    "negate",
    "scale_by_adadelta",
    "scale_by_adam_moments",
    "scale_by_adamax",
    "scale_by_adan",
    "scale_by_amsgrad",
    "scale_by_belief",
    "scale_by_lion",
    "scale_by_optimistic_gradient",
    "scale_by_polyak",
    "scale_by_radam",
    "scale_by_rprop",
    "scale_by_sign",
    "scale_by_yogi",
]


# ---------------------------------------------------------------------------------------------
# States: (count, hyperparams, *buffers named as Optax names them).


class ScaleByAdamMomentsState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    mu: Any  # first moment, a pytree like the parameters
    nu: Any  # second moment


class ScaleByAmsgradState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    mu: Any
    nu: Any
    nu_max: Any  # running maximum of the (bias-corrected) second moment


class ScaleByAdamaxState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    mu: Any
    nu: Any  # the exponentially weighted infinity norm


class ScaleByRAdamState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    mu: Any
    nu: Any


class ScaleByBeliefState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    mu: Any
    nu: Any  # EMA of the squared prediction error (g - mu)², eps_root included


class ScaleByYogiState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    mu: Any
    nu: Any


class ScaleByAdanState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - Optax's `t`
    hyperparams: dict
    m: Any  # EMA of the gradient
    v: Any  # EMA of the gradient difference
    n: Any  # EMA of the squared corrected gradient
    g: Any  # the previous gradient


class ScaleByAdaDeltaState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    e_g: Any  # E[g²]
    e_x: Any  # E[Δx²]


class EmaState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    ema: Any


class ScaleByLionState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    mu: Any


class ScaleByRpropState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    step_sizes: Any
    prev_updates: Any  # the last step η·sign(g), zero where the sign had flipped


class ScaleByOptimisticGradientState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - count 0 is Optax's `is_initial_step`
    hyperparams: dict
    previous_gradient: Any


class AddNoiseState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    rng_key: jax.Array  # a typed key, split at every update


class ScaleByPolyakState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict


def _short_reprs(*classes: type) -> None:
    """The short printout of gradchain's own states (``gradchain.state.short_repr``)."""

    def short(self: Any) -> str:
        from gradchain.state import short_repr  # late: gradchain.state imports the transforms

        return short_repr(self)

    for cls in classes:
        cls.__repr__ = short  # type: ignore[method-assign]


_short_reprs(
    ScaleByAdamMomentsState, ScaleByAmsgradState, ScaleByAdamaxState, ScaleByRAdamState, ScaleByBeliefState,
    ScaleByYogiState, ScaleByAdanState, ScaleByAdaDeltaState, EmaState, ScaleByLionState, ScaleByRpropState,
    ScaleByOptimisticGradientState, ScaleByPolyakState,
)


def _noise_state_repr(self: Any) -> str:
    # gradchain.state.short_repr reads a dtype name that a typed key (key<fry>) does not have.
    from gradchain.state import short_repr

    key = self.rng_key
    key_text = f"{key.dtype}{list(jnp.shape(key))}" if _is_typed_key(key) else short_repr(key)
    return f"AddNoiseState(count={short_repr(self.count)}, hyperparams={short_repr(self.hyperparams)}, rng_key={key_text})"


AddNoiseState.__repr__ = _noise_state_repr  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------------
# Shared per-element formulas (Optax's tree_utils, leaf by leaf).


def _zeros(dtype: Any = None) -> Callable[[Any], Any]:
    return lambda params: jax.tree.map(lambda p: jnp.zeros_like(p, dtype=dtype), params)


def _check_decay(name: str, value: Any) -> None:
    hyper.check(name, value, low=0.0, high=1.0, high_open=True)


def _ema(g: jax.Array, m: jax.Array, decay: Any, order: int = 1) -> jax.Array:
    """``(1 - β)·g^order + β·m`` in the wider dtype of ``g`` and ``m`` (Optax's update_moment)."""
    dtype = jnp.promote_types(g.dtype, m.dtype)
    beta = jnp.asarray(decay).astype(dtype)
    g = g.astype(dtype)
    return (1 - beta) * (g if order == 1 else g * g) + beta * m.astype(dtype)


def _debias(x: jax.Array, decay: Any, t: jax.Array) -> jax.Array:
    """``x / (1 - β^t)``, the power taken in the hyperparameter's dtype (Optax's
    bias_correction: a bfloat16 ``β^t`` would round to 1)."""
    return x / (1 - jnp.asarray(decay) ** t).astype(x.dtype)


def _first_moment_hat(mu: Any, g: Any, b1: Any, t: jax.Array, nesterov: bool) -> Any:
    """``m / (1 - β₁^t)``, or with Nesterov (Dozat 2016, Optax's form)
    ``β₁·m/(1 - β₁^(t+1)) + (1 - β₁)·g/(1 - β₁^t)``."""
    if not nesterov:
        return jax.tree.map(lambda m: _debias(m, b1, t), mu)

    def look_ahead(m, gi):
        m_hat = _debias(m, b1, hyper.increment(t))
        g_hat = _debias(gi.astype(m.dtype), b1, t)
        b = cast_like(b1, m_hat)
        return b * m_hat + (1 - b) * g_hat

    return jax.tree.map(look_ahead, mu, g)


def _stored(new: Any, like: Any) -> Any:
    return jax.tree.map(lambda x, old: x.astype(old.dtype), new, like)


def _as_dtype(tree: Any, dtype: Any) -> Any:
    return tree if dtype is None else jax.tree.map(lambda x: x.astype(dtype), tree)


def _unzip(pairs: Any, like: Any, n: int) -> tuple[Any, ...]:
    """Split a tree of n-tuples (one per leaf of ``like``) into n trees."""
    treedef = jax.tree.structure(like)
    leaves = treedef.flatten_up_to(pairs)
    return tuple(jax.tree.unflatten(treedef, [leaf[i] for leaf in leaves]) for i in range(n))


# ---------------------------------------------------------------------------------------------
# The Adam family: one state with Optax's mu / nu.


def scale_by_adam_moments(
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-8,
    eps_root: hyper.Hyperparameter = 0.0,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """Adam's direction ``m̂ / (√(v̂ + eps_root) + eps)`` in one state with Optax's fields
    (Kingma & Ba, ICLR 2015; Nesterov: Dozat 2016).

    ``m = EMA_β₁(m, g)``, ``v = EMA_β₂(v, g²)``, ``v̂ = v / (1 - β₂^t)`` and ``m̂`` the
    bias-corrected ``m`` (with ``nesterov``: ``β₁·m/(1 - β₁^(t+1)) + (1-β₁)·g/(1 - β₁^t)``).
    The same numbers as :func:`gradchain.scale_by_adam`, whose ``ratio`` of two moments keeps
    them in two ``moment`` fields; this one is ``optax.scale_by_adam`` (its defaults and its
    ``ScaleByAdamState``: ``mu``, ``nu``), for the optimizers built on it (nadamw,
    optimistic_adam_v2).

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: ≥ 0, outside the square root.
      eps_root: ≥ 0, inside the square root.
      mu_dtype: storage dtype of ``mu`` (default: each parameter's).
      nesterov: Nesterov's look-ahead first moment (NAdam).

    Returns:
      A transformation with state ``ScaleByAdamMomentsState(count, hyperparams, mu, nu)``.
    """
    _check_decay("b1", b1)
    _check_decay("b2", b2)
    hyper.check("eps", eps, low=0.0)
    hyper.check("eps_root", eps_root, low=0.0)
    check_bool("nesterov", nesterov)
    mu_dtype = canonical_dtype("mu_dtype", mu_dtype)

    def step(updates, buffers, params, count, b1, b2, eps, eps_root):
        mu = jax.tree.map(lambda g, m: _ema(g, m, b1), updates, buffers["mu"])
        nu = jax.tree.map(lambda g, v: _ema(g, v, b2, 2), updates, buffers["nu"])
        t = hyper.increment(count)
        mu_hat = _first_moment_hat(mu, updates, b1, t, nesterov)
        out = jax.tree.map(
            lambda m, v: m / (jnp.sqrt(_debias(v, b2, t) + cast_like(eps_root, v)) + cast_like(eps, v)), mu_hat, nu
        )
        return out, {"mu": _as_dtype(mu, mu_dtype), "nu": _stored(nu, buffers["nu"])}

    return transformation(
        ScaleByAdamMomentsState,
        step,
        {"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root},
        lambda params: {"mu": _zeros(mu_dtype)(params), "nu": _zeros()(params)},
    )


def scale_by_amsgrad(
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-8,
    eps_root: hyper.Hyperparameter = 0.0,
    mu_dtype: Any = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
) -> GradientTransformation:
    """AMSGrad's direction ``m̂ / (√(v_max + eps_root) + eps)``, ``v_max = max(v_max, v̂)``: Adam
    whose second moment never decreases (Reddi et al., "On the Convergence of Adam and Beyond",
    ICLR 2018).  As ``optax.scale_by_amsgrad``: the maximum is taken of the bias-corrected
    ``v̂`` (of ``v`` with ``bias_correction_nu=False``).

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: ≥ 0, outside the square root.
      eps_root: ≥ 0, inside the square root.
      mu_dtype: storage dtype of ``mu``.
      bias_correction_mu: divide ``m`` by ``1 - β₁^t``.
      bias_correction_nu: divide ``v`` by ``1 - β₂^t`` before the maximum.

    Returns:
      A transformation with state ``ScaleByAmsgradState(count, hyperparams, mu, nu, nu_max)``.
    """
    _check_decay("b1", b1)
    _check_decay("b2", b2)
    hyper.check("eps", eps, low=0.0)
    hyper.check("eps_root", eps_root, low=0.0)
    check_bool("bias_correction_mu", bias_correction_mu)
    check_bool("bias_correction_nu", bias_correction_nu)
    mu_dtype = canonical_dtype("mu_dtype", mu_dtype)

    def step(updates, buffers, params, count, b1, b2, eps, eps_root):
        mu = jax.tree.map(lambda g, m: _ema(g, m, b1), updates, buffers["mu"])
        nu = jax.tree.map(lambda g, v: _ema(g, v, b2, 2), updates, buffers["nu"])
        t = hyper.increment(count)
        mu_hat = jax.tree.map(lambda m: _debias(m, b1, t), mu) if bias_correction_mu else mu
        nu_eff = jax.tree.map(lambda v: _debias(v, b2, t), nu) if bias_correction_nu else nu
        nu_max = jax.tree.map(jnp.maximum, buffers["nu_max"], nu_eff)
        out = jax.tree.map(
            lambda m, v: m / (jnp.sqrt(v + cast_like(eps_root, v)) + cast_like(eps, v)), mu_hat, nu_max
        )
        return out, {"mu": _as_dtype(mu, mu_dtype), "nu": nu, "nu_max": nu_max}

    return transformation(
        ScaleByAmsgradState,
        step,
        {"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root},
        lambda params: {"mu": _zeros(mu_dtype)(params), "nu": _zeros()(params), "nu_max": _zeros()(params)},
    )


def scale_by_adamax(
    b1: hyper.Hyperparameter = 0.9, b2: hyper.Hyperparameter = 0.999, eps: hyper.Hyperparameter = 1e-8
) -> GradientTransformation:
    """AdaMax's direction ``m̂ / u`` with the exponentially weighted infinity norm
    ``u <- max(|g| + eps, β₂·u)`` (Kingma & Ba, ICLR 2015, section 7.1; ``u`` needs no bias
    correction).  eps is added inside the maximum, as ``optax.scale_by_adamax``.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the infinity norm, in [0, 1).
      eps: ≥ 0, added to ``|g|``.

    Returns:
      A transformation with state ``ScaleByAdamaxState(count, hyperparams, mu, nu)``.
    """
    _check_decay("b1", b1)
    _check_decay("b2", b2)
    hyper.check("eps", eps, low=0.0)

    def step(updates, buffers, params, count, b1, b2, eps):
        t = hyper.increment(count)
        mu = jax.tree.map(lambda g, m: _ema(g, m, b1), updates, buffers["mu"])
        nu = jax.tree.map(
            lambda g, u: jnp.maximum(jnp.abs(g) + cast_like(eps, g), cast_like(b2, u) * u), updates, buffers["nu"]
        )
        out = jax.tree.map(lambda m, u: _debias(m, b1, t) / u, mu, nu)
        return out, {"mu": mu, "nu": nu}

    return transformation(
        ScaleByAdamaxState,
        step,
        {"b1": b1, "b2": b2, "eps": eps},
        lambda params: {"mu": _zeros()(params), "nu": _zeros()(params)},
    )


def scale_by_radam(
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-8,
    eps_root: hyper.Hyperparameter = 0.0,
    threshold: hyper.Hyperparameter = 5.0,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """Rectified Adam's direction (Liu et al., "On the Variance of the Adaptive Learning Rate and
    Beyond", ICLR 2020)::

        ρ∞ = 2/(1-β₂) - 1,   ρ_t = ρ∞ - 2t·β₂^t/(1-β₂^t)
        ρ_t ≥ threshold:  r_t·m̂/(√(v̂ + eps_root) + eps),  r_t = √((ρ_t-4)(ρ_t-2)ρ∞ / ((ρ∞-4)(ρ∞-2)ρ_t))
        otherwise:        m̂   (momentum SGD while the variance of v̂ is not yet tractable)

    ρ∞ is computed from the β₂ in the state (live), where Optax fixes it at construction.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: ≥ 0, outside the square root.
      eps_root: ≥ 0, inside the square root.
      threshold: ≥ 4, the ρ_t from which the rectified step is taken (below 4, ``r_t`` would be
        the square root of a negative number for some t; the paper and Optax use 5).
      nesterov: Nesterov's look-ahead first moment.

    Returns:
      A transformation with state ``ScaleByRAdamState(count, hyperparams, mu, nu)``.
    """
    _check_decay("b1", b1)
    _check_decay("b2", b2)
    hyper.check("eps", eps, low=0.0)
    hyper.check("eps_root", eps_root, low=0.0)
    hyper.check("threshold", threshold, low=4.0)
    check_bool("nesterov", nesterov)

    def step(updates, buffers, params, count, b1, b2, eps, eps_root, threshold):
        mu = jax.tree.map(lambda g, m: _ema(g, m, b1), updates, buffers["mu"])
        nu = jax.tree.map(lambda g, v: _ema(g, v, b2, 2), updates, buffers["nu"])
        t = hyper.increment(count)
        ro_inf = 2.0 / (1.0 - b2) - 1.0
        b2t = b2**t
        ro = ro_inf - 2 * t * b2t / (1 - b2t)
        r = jnp.sqrt((ro - 4.0) * (ro - 2.0) * ro_inf / ((ro_inf - 4.0) * (ro_inf - 2.0) * ro))
        mu_hat = _first_moment_hat(mu, updates, b1, t, nesterov)

        def direction(m, v):
            v_hat = _debias(v, b2, t)
            rectified = r.astype(m.dtype) * m / (jnp.sqrt(v_hat + cast_like(eps_root, v)) + cast_like(eps, v))
            return jnp.where(ro >= threshold, rectified, m)

        return jax.tree.map(direction, mu_hat, nu), {"mu": mu, "nu": nu}

    return transformation(
        ScaleByRAdamState,
        step,
        {"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root, "threshold": threshold},
        lambda params: {"mu": _zeros()(params), "nu": _zeros()(params)},
    )


def scale_by_belief(
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-16,
    eps_root: hyper.Hyperparameter = 1e-16,
    *,
    nesterov: bool = False,
) -> GradientTransformation:
    """AdaBelief's direction (Zhuang et al., NeurIPS 2020): Adam with the second moment of the
    prediction error ``g - m`` instead of ``g``::

        m = EMA_β₁(m, g);   s = EMA_β₂(s, (g - m)²) + eps_root;   u = m̂ / (√ŝ + eps)

    ``eps_root`` is added to the stored ``s`` at every step (the paper's Algorithm 2 and
    ``optax.scale_by_belief``), not only inside the square root.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the belief moment, in [0, 1).
      eps: ≥ 0, outside the square root.
      eps_root: ≥ 0, added to ``s``.
      nesterov: Nesterov's look-ahead first moment.

    Returns:
      A transformation with state ``ScaleByBeliefState(count, hyperparams, mu, nu)``.
    """
    _check_decay("b1", b1)
    _check_decay("b2", b2)
    hyper.check("eps", eps, low=0.0)
    hyper.check("eps_root", eps_root, low=0.0)
    check_bool("nesterov", nesterov)

    def step(updates, buffers, params, count, b1, b2, eps, eps_root):
        mu = jax.tree.map(lambda g, m: _ema(g, m, b1), updates, buffers["mu"])
        nu = jax.tree.map(
            lambda g, m, s: _ema(g - m, s, b2, 2) + cast_like(eps_root, s), updates, mu, buffers["nu"]
        )
        t = hyper.increment(count)
        mu_hat = _first_moment_hat(mu, updates, b1, t, nesterov)
        out = jax.tree.map(lambda m, s: m / (jnp.sqrt(_debias(s, b2, t)) + cast_like(eps, s)), mu_hat, nu)
        return out, {"mu": mu, "nu": nu}

    return transformation(
        ScaleByBeliefState,
        step,
        {"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root},
        lambda params: {"mu": _zeros()(params), "nu": _zeros()(params)},
    )


def scale_by_yogi(
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-3,
    eps_root: hyper.Hyperparameter = 0.0,
    initial_accumulator_value: float = 1e-6,
) -> GradientTransformation:
    """Yogi's direction (Zaheer et al., "Adaptive Methods for Nonconvex Optimization", NeurIPS
    2018): Adam whose second moment moves additively, by at most ``(1-β₂)·g²`` per step::

        v <- v - (1 - β₂)·sign(v - g²)·g²;   u = m̂ / (√(v̂ + eps_root) + eps)

    Both moments start at ``initial_accumulator_value`` and are bias-corrected, as
    ``optax.scale_by_yogi``.

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: the second moment's rate, in [0, 1).
      eps: ≥ 0, outside the square root.
      eps_root: ≥ 0, inside the square root.
      initial_accumulator_value: ≥ 0, the start of both moments (a number; used at ``init``).

    Returns:
      A transformation with state ``ScaleByYogiState(count, hyperparams, mu, nu)``.
    """
    _check_decay("b1", b1)
    _check_decay("b2", b2)
    hyper.check("eps", eps, low=0.0)
    hyper.check("eps_root", eps_root, low=0.0)
    hyper.check_value("initial_accumulator_value", initial_accumulator_value, low=0.0)

    def step(updates, buffers, params, count, b1, b2, eps, eps_root):
        mu = jax.tree.map(lambda g, m: _ema(g, m, b1), updates, buffers["mu"])

        def second(g, v):
            g2 = g * g
            return v - (1 - cast_like(b2, v)) * jnp.sign(v - g2) * g2

        nu = jax.tree.map(second, updates, buffers["nu"])
        t = hyper.increment(count)
        out = jax.tree.map(
            lambda m, v: _debias(m, b1, t) / (jnp.sqrt(_debias(v, b2, t) + cast_like(eps_root, v)) + cast_like(eps, v)),
            mu,
            nu,
        )
        return out, {"mu": mu, "nu": nu}

    def init_buffers(params):
        start = lambda p: jnp.full_like(p, initial_accumulator_value)
        return {"mu": jax.tree.map(start, params), "nu": jax.tree.map(start, params)}

    return transformation(ScaleByYogiState, step, {"b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root}, init_buffers)


def scale_by_adan(
    b1: hyper.Hyperparameter = 0.98,
    b2: hyper.Hyperparameter = 0.92,
    b3: hyper.Hyperparameter = 0.99,
    eps: hyper.Hyperparameter = 1e-8,
    eps_root: hyper.Hyperparameter = 0.0,
) -> GradientTransformation:
    """Adan's direction (Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm", 2022, Alg. 1,
    in ``optax.scale_by_adan``'s form)::

        d = g - g_prev  (0 at the first step)
        m = EMA_β₁(m, g);   v = EMA_β₂(v, d);   n = EMA_β₃(n, (g + (1-β₂)·d)²)
        u = (m̂ + (1-β₂)·v̂) / (√(n̂ + eps_root) + eps)      (each moment bias-corrected)

    Args:
      b1: decay of the gradient average, in [0, 1).
      b2: decay of the gradient-difference average, in [0, 1).
      b3: decay of the second moment, in [0, 1).
      eps: ≥ 0, outside the square root.
      eps_root: ≥ 0, inside the square root.

    Returns:
      A transformation with state ``ScaleByAdanState(count, hyperparams, m, v, n, g)``
      (Optax calls the count ``t``).
    """
    for name, value in (("b1", b1), ("b2", b2), ("b3", b3)):
        _check_decay(name, value)
    hyper.check("eps", eps, low=0.0)
    hyper.check("eps_root", eps_root, low=0.0)

    def step(updates, buffers, params, count, b1, b2, b3, eps, eps_root):
        def leaf(g, m, v, n, prev):
            diff = jnp.where(count == 0, jnp.zeros_like(g), g - prev)
            m = _ema(g, m, b1)
            v = _ema(diff, v, b2)
            n = _ema(g + (1 - cast_like(b2, g)) * diff, n, b3, 2)
            t = hyper.increment(count)
            u = _debias(m, b1, t) + (1 - cast_like(b2, v)) * _debias(v, b2, t)
            u = u / (jnp.sqrt(_debias(n, b3, t) + cast_like(eps_root, n)) + cast_like(eps, n))
            return u, m, v, n

        quads = jax.tree.map(leaf, updates, buffers["m"], buffers["v"], buffers["n"], buffers["g"])
        out, m, v, n = _unzip(quads, updates, 4)
        return out, {"m": m, "v": v, "n": n, "g": updates}

    return transformation(
        ScaleByAdanState,
        step,
        {"b1": b1, "b2": b2, "b3": b3, "eps": eps, "eps_root": eps_root},
        lambda params: {name: _zeros()(params) for name in ("m", "v", "n", "g")},
    )


def scale_by_adadelta(rho: hyper.Hyperparameter = 0.9, eps: hyper.Hyperparameter = 1e-6) -> GradientTransformation:
    """AdaDelta's direction (Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012, Alg. 1)::

        E[g²] = EMA_ρ(E[g²], g²);   Δ = √(E[Δx²] + eps) / √(E[g²] + eps) · g;   E[Δx²] = EMA_ρ(E[Δx²], Δ²)

    The units of Δ are those of the parameters, so no learning rate is needed (Zeiler uses 1).

    Args:
      rho: decay of both averages, in [0, 1).
      eps: > 0, inside both square roots (with 0 the first step, and so every step, is zero).

    Returns:
      A transformation with state ``ScaleByAdaDeltaState(count, hyperparams, e_g, e_x)``.
    """
    _check_decay("rho", rho)
    hyper.check("eps", eps, low=0.0, low_open=True)

    def step(updates, buffers, params, count, rho, eps):
        e_g = jax.tree.map(lambda g, e: _ema(g, e, rho, 2), updates, buffers["e_g"])
        out = jax.tree.map(
            lambda g, eg, ex: (jnp.sqrt(ex + cast_like(eps, ex)) / jnp.sqrt(eg + cast_like(eps, eg))) * g,
            updates,
            e_g,
            buffers["e_x"],
        )
        e_x = jax.tree.map(lambda d, e: _ema(d, e, rho, 2), out, buffers["e_x"])
        return out, {"e_g": e_g, "e_x": e_x}

    return transformation(
        ScaleByAdaDeltaState,
        step,
        {"rho": rho, "eps": eps},
        lambda params: {"e_g": _zeros()(params), "e_x": _zeros()(params)},
    )


# ---------------------------------------------------------------------------------------------
# Signs, averages, step-size adaptation.


def ema(
    decay: hyper.Hyperparameter,
    debias: bool = True,
    accumulator_dtype: Any = None,
    *,
    name: str = "decay",
) -> GradientTransformation:
    """Exponential moving average of the updates, ``m <- β·m + (1-β)·g``, output ``m`` (or
    ``m / (1 - β^t)`` with ``debias``), as ``optax.ema``.

    The same average as :func:`gradchain.moment` with Optax's field name (``ema``) and Optax's
    default ``debias=True``.

    Args:
      decay: β in [0, 1).
      debias: divide by ``1 - β^t``.
      accumulator_dtype: storage dtype of the average (default: each parameter's).
      name: key of β in ``get_hyperparams`` (signum calls it ``beta``).

    Returns:
      A transformation with state ``EmaState(count, hyperparams, ema)``.
    """
    _check_decay(name, decay)
    check_bool("debias", debias)
    accumulator_dtype = canonical_dtype("accumulator_dtype", accumulator_dtype)

    def step(updates, buffers, params, count, decay):
        new = jax.tree.map(lambda g, m: _ema(g, m, decay), updates, buffers["ema"])
        t = hyper.increment(count)
        out = jax.tree.map(lambda m: _debias(m, decay, t), new) if debias else new
        return out, {"ema": _as_dtype(new, accumulator_dtype)}

    return transformation(
        EmaState, step, {name: decay}, lambda params: {"ema": _zeros(accumulator_dtype)(params)}
    )


def _stateless(fn: Callable[[jax.Array], jax.Array]) -> GradientTransformation:
    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(fn, updates), state

    return GradientTransformation(init, update)


def scale_by_sign() -> GradientTransformation:
    """``u <- sign(u)`` element-wise (signSGD: Bernstein et al., ICML 2018), as
    ``optax.scale_by_sign``.

    Returns:
      A stateless transformation (state ``EmptyState()``).
    """
    return _stateless(jnp.sign)


def negate() -> GradientTransformation:
    """``u <- -u``: the last piece of a chain whose previous piece already holds the step size
    (Rprop), Optax's ``scale(-1.0)`` without a hyperparameter.

    Returns:
      A stateless transformation (state ``EmptyState()``).
    """
    return _stateless(operator.neg)


def scale_by_lion(
    b1: hyper.Hyperparameter = 0.9, b2: hyper.Hyperparameter = 0.99, mu_dtype: Any = None
) -> GradientTransformation:
    """Lion's direction (Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS
    2023, Program 1)::

        u = sign(β₁·m + (1-β₁)·g);   m <- β₂·m + (1-β₂)·g

    The sign is taken of an interpolation with β₁, the momentum is updated with β₂.

    Args:
      b1: interpolation weight of the momentum in the sign, in [0, 1].
      b2: decay of the momentum, in [0, 1).
      mu_dtype: storage dtype of ``mu``.

    Returns:
      A transformation with state ``ScaleByLionState(count, hyperparams, mu)``.
    """
    hyper.check("b1", b1, low=0.0, high=1.0)
    _check_decay("b2", b2)
    mu_dtype = canonical_dtype("mu_dtype", mu_dtype)

    def step(updates, buffers, params, count, b1, b2):
        out = jax.tree.map(lambda g, m: jnp.sign(_ema(g, m, b1)), updates, buffers["mu"])
        mu = jax.tree.map(lambda g, m: _ema(g, m, b2), updates, buffers["mu"])
        return out, {"mu": _as_dtype(mu, mu_dtype)}

    return transformation(ScaleByLionState, step, {"b1": b1, "b2": b2}, lambda params: {"mu": _zeros(mu_dtype)(params)})


def scale_by_rprop(
    learning_rate: hyper.Hyperparameter,
    eta_minus: hyper.Hyperparameter = 0.5,
    eta_plus: hyper.Hyperparameter = 1.2,
    min_step_size: hyper.Hyperparameter = 1e-6,
    max_step_size: hyper.Hyperparameter = 50.0,
    *,
    lagged: bool = True,
) -> GradientTransformation:
    """Rprop's step (Riedmiller & Braun, ICNN 1993; the "Rprop-" variant of Igel & Hüsken 2000):
    a per-element step size grown while the gradient keeps its sign and shrunk when it flips::

        s = g · p                      (p: the previous step, the sign memory)
        η <- η                         where s = 0
             clip(η · η⁺, min, max)    where s > 0
             clip(η · η⁻, min, max)    where s < 0
        p <- 0 where s < 0, else η · sign(g)      (after a flip the next s is 0: no resize)

    The output is the ascent step; :func:`negate` follows it in :func:`gradchain.rprop`.

    **The one-step lag of Optax.**  ``optax.scale_by_rprop`` (0.2.8) outputs the *previous*
    step, ``0 where s < 0 else p_old`` (its first update is zero), not the ``p`` it just computed
    (reported in optax PR #1725).  ``lagged=True`` (the default) gives Optax's numbers;
    ``lagged=False`` outputs the new ``p``, the paper's and ``torch.optim.Rprop``'s step.

    Args:
      learning_rate: ≥ 0, the initial step size η₀; it is read once, at the first update (the
        step sizes then adapt by themselves): setting it later has no effect.
      eta_minus: the shrink factor η⁻, in (0, 1].
      eta_plus: the growth factor η⁺, ≥ 1.
      min_step_size: ≥ 0, the smallest step size.
      max_step_size: ≥ min_step_size, the largest.
      lagged: Optax's one-step-late output (see above).

    Returns:
      A transformation with state ``ScaleByRpropState(count, hyperparams, step_sizes,
      prev_updates)``.
    """
    hyper.check("learning_rate", learning_rate, low=0.0)
    hyper.check("eta_minus", eta_minus, low=0.0, high=1.0, low_open=True)
    hyper.check("eta_plus", eta_plus, low=1.0)
    hyper.check("min_step_size", min_step_size, low=0.0)
    hyper.check("max_step_size", max_step_size, low=0.0)
    check_bool("lagged", lagged)
    concrete = [hyper.unwrap(v) for v in (min_step_size, max_step_size)]
    if all(isinstance(v, (int, float, np.ndarray, np.generic)) for v in concrete):
        if np.any(np.asarray(concrete[0]) > np.asarray(concrete[1])):
            raise ValueError(
                f"min_step_size must be <= max_step_size, got min_step_size={min_step_size!r} "
                f"and max_step_size={max_step_size!r}"
            )

    def step(updates, buffers, params, count, learning_rate, eta_minus, eta_plus, min_step_size, max_step_size):
        def leaf(g, prev, size):
            size = jnp.where(count == 0, cast_like(learning_rate, size), size)
            s = g * prev
            grown = jnp.where(s > 0, cast_like(eta_plus, size), cast_like(eta_minus, size))
            clipped = jnp.clip(size * grown, cast_like(min_step_size, size), cast_like(max_step_size, size))
            size = jnp.where(s == 0, size, clipped)
            new_prev = jnp.where(s < 0, jnp.zeros_like(g), size * jnp.sign(g))
            out = jnp.where(s < 0, jnp.zeros_like(prev), prev) if lagged else new_prev
            return out, size, new_prev

        triples = jax.tree.map(leaf, updates, buffers["prev_updates"], buffers["step_sizes"])
        out, sizes, prev = _unzip(triples, updates, 3)
        return out, {"step_sizes": sizes, "prev_updates": prev}

    def init_buffers(params):
        start = hyper.initial(learning_rate)
        return {
            "step_sizes": jax.tree.map(lambda p: jnp.full_like(p, start), params),
            "prev_updates": _zeros()(params),
        }

    hypers = {
        "learning_rate": learning_rate,
        "eta_minus": eta_minus,
        "eta_plus": eta_plus,
        "min_step_size": min_step_size,
        "max_step_size": max_step_size,
    }
    return transformation(ScaleByRpropState, step, hypers, init_buffers)


def scale_by_optimistic_gradient(
    alpha: hyper.Hyperparameter = 1.0, beta: hyper.Hyperparameter = 1.0
) -> GradientTransformation:
    """The optimistic gradient ``(α + β)·g_t - β·g_{t-1}`` (Mokhtari, Ozdaglar & Pattathil,
    AISTATS 2020; Daskalakis et al., ICLR 2018 for games), with ``g_0`` standing in for the missing
    ``g_{-1}`` at the first step (so it outputs ``α·g_0``), as ``optax.scale_by_optimistic_gradient``.

    Args:
      alpha: ≥ 0, the weight of the current gradient.
      beta: ≥ 0, the optimism: the weight of the change ``g_t - g_{t-1}``.

    Returns:
      A transformation with state ``ScaleByOptimisticGradientState(count, hyperparams,
      previous_gradient)`` (Optax's ``is_initial_step`` is ``count == 0``).
    """
    hyper.check("alpha", alpha, low=0.0)
    hyper.check("beta", beta, low=0.0)

    def step(updates, buffers, params, count, alpha, beta):
        def leaf(g, prev):
            prev = jnp.where(count == 0, g, prev)
            return (cast_like(alpha, g) + cast_like(beta, g)) * g - cast_like(beta, g) * prev

        out = jax.tree.map(leaf, updates, buffers["previous_gradient"])
        return out, {"previous_gradient": _stored(updates, buffers["previous_gradient"])}

    return transformation(
        ScaleByOptimisticGradientState,
        step,
        {"alpha": alpha, "beta": beta},
        lambda params: {"previous_gradient": _zeros()(params)},
    )


# ---------------------------------------------------------------------------------------------
# Pieces that need more than the updates: a random key, the loss value.


def _is_typed_key(key: Any) -> bool:
    return hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)


def _noise_key(key: Any, seed: Any) -> Callable[[], jax.Array]:
    """Optax's ``key``/``seed`` rules; returns a function giving a fresh typed key (a state owns
    its arrays: donating one state never deletes the key another init needs)."""
    if seed is not None:
        if key is not None:
            raise ValueError(f"give only one of seed or key, got seed={seed!r} and key={key!r}")
        warnings.warn('add_noise: "seed" is deprecated in Optax; use "key"', DeprecationWarning, stacklevel=3)
        key = seed
    if key is None:
        warnings.warn(
            "add_noise: no key given, using key 0 as Optax does (Optax will require one); "
            "pass key=jax.random.key(...) or an int",
            UserWarning,
            stacklevel=3,
        )
        key = 0
    if isinstance(key, (int, np.integer)) and not isinstance(key, (bool, np.bool_)):
        seed_value = int(key)
        return lambda: jax.random.key(seed_value)
    if _is_typed_key(key):
        if jnp.shape(key) != ():
            raise ValueError(f"key must be a single key, got an array of keys of shape {jnp.shape(key)}")
        typed = key
    elif (
        isinstance(key, (jax.Array, np.ndarray))
        and jnp.shape(key) == (2,)
        and jnp.asarray(key).dtype == jnp.uint32
    ):
        typed = jax.random.wrap_key_data(jnp.asarray(key))  # a legacy jax.random.PRNGKey (Optax refuses it)
    else:
        raise TypeError(
            f"key must be an int seed or a JAX random key (jax.random.key(0)), got {key!r} of type {type(key).__name__}"
        )
    impl = jax.random.key_impl(typed)
    return lambda: jax.random.wrap_key_data(jnp.array(jax.random.key_data(typed), copy=True), impl=impl)


def add_noise(
    eta: hyper.Hyperparameter = 0.01,
    gamma: hyper.Hyperparameter = 0.55,
    key: Any = None,
    *,
    seed: int | None = None,
) -> GradientTransformation:
    """Annealed Gaussian gradient noise ``g + N(0, σ_t²)``, ``σ_t² = eta / t^gamma`` (Neelakantan
    et al., "Adding Gradient Noise Improves Learning for Very Deep Networks", 2015).

    Draws as ``optax.add_noise``: each update splits the stored key into the next key and a
    sample key, and the sample key into one key per leaf of the updates (in leaf order), so the
    noise is Optax's for the same key on the same tree.

    Args:
      eta: ≥ 0, the variance at the first step.
      gamma: ≥ 0, the decay exponent of the variance.
      key: a JAX key (``jax.random.key(0)``; a legacy ``jax.random.PRNGKey`` is accepted too)
        or an int seed; ``None`` warns and uses 0, as Optax.
      seed: Optax's deprecated name for an int key (warns; give only one of the two).

    Returns:
      A transformation with state ``AddNoiseState(count, hyperparams, rng_key)``.
    """
    hyper.check("eta", eta, low=0.0)
    hyper.check("gamma", gamma, low=0.0)
    fresh_key = _noise_key(key, seed)
    hypers = {"eta": eta, "gamma": gamma}

    def init(params):
        del params
        return AddNoiseState(jnp.zeros([], jnp.int32), initial_hyperparams(hypers), fresh_key())

    def update(updates, state, params=None):
        del params
        check_state(state, AddNoiseState, hypers)
        t = hyper.increment(state.count)
        eta, gamma = state.hyperparams["eta"], state.hyperparams["gamma"]
        std = jnp.sqrt(eta / t**gamma)
        rng_key, sample_key = jax.random.split(state.rng_key)
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(sample_key, len(leaves))
        noisy = [
            g + cast_like(std, g) * jax.random.normal(k, jnp.shape(g), jnp.asarray(g).dtype)
            for g, k in zip(leaves, keys)
        ]
        new_state = AddNoiseState(hyper.increment(state.count), next_hyperparams(hypers, state.hyperparams, state.count),
                                  rng_key)
        return jax.tree.unflatten(treedef, noisy), new_state

    return GradientTransformation(init, update)


_POLYAK_VARIANTS = ("sps", "sps+")


def scale_by_polyak(
    f_min: hyper.Hyperparameter = 0.0,
    max_learning_rate: hyper.Hyperparameter = 1.0,
    eps: hyper.Hyperparameter = 0.0,
    variant: str = "sps",
) -> GradientTransformationExtraArgs:
    """Polyak's step size (Polyak 1987; the stochastic form "SPS" of Loizou et al., AISTATS 2021)::

        u <- min((f(x) - f*) / (‖u‖² + eps), max_learning_rate) · u     (0 when ‖u‖² + eps ≤ ε_mach)

    ``‖u‖²`` is over the whole tree; ``variant="sps+"`` uses ``max(f(x) - f*, 0)``.  The loss
    comes in as ``update(updates, state, params, value=loss)`` (Optax's extra argument; chains and
    ``multi_tensor`` pass it on).

    Args:
      f_min: a lower bound on the loss (f*; 0 for an interpolating model).
      max_learning_rate: ≥ 0, the cap on the step size.
      eps: ≥ 0, added to ``‖u‖²``.
      variant: ``"sps"`` or ``"sps+"``.

    Returns:
      A :class:`gradchain.GradientTransformationExtraArgs` with state
      ``ScaleByPolyakState(count, hyperparams)``.
    """
    hyper.check("f_min", f_min)
    hyper.check("max_learning_rate", max_learning_rate, low=0.0)
    hyper.check("eps", eps, low=0.0)
    if variant not in _POLYAK_VARIANTS:
        raise ValueError(f"variant must be one of {_POLYAK_VARIANTS}, got {variant!r}")
    hypers = {"f_min": f_min, "max_learning_rate": max_learning_rate, "eps": eps}

    def init(params):
        del params
        return ScaleByPolyakState(jnp.zeros([], jnp.int32), initial_hyperparams(hypers))

    def update(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        if value is None:
            raise ValueError(
                "scale_by_polyak needs the loss at the current parameters: "
                "update(grads, state, params, value=loss)"
            )
        check_state(state, ScaleByPolyakState, hypers)
        f_min, max_lr, eps = (state.hyperparams[name] for name in hypers)
        sums = [jnp.sum(jnp.square(u)) for u in jax.tree.leaves(updates)]
        squared_norm = jnp.asarray(sum(sums)) if sums else jnp.zeros([], hyper.float_dtype())  # Optax's order: 0 + s₁ + s₂ ...
        gap = jnp.asarray(value - f_min).astype(squared_norm.dtype)
        if variant == "sps+":
            gap = jnp.maximum(gap, 0)
        denominator = squared_norm + eps.astype(squared_norm.dtype)
        size = jnp.where(
            denominator <= jnp.finfo(float).eps,
            jnp.zeros_like(denominator),
            jnp.minimum(gap / denominator, max_lr.astype(squared_norm.dtype)),
        )
        out = jax.tree.map(lambda u: cast_like(size, u) * u, updates)
        new_state = ScaleByPolyakState(hyper.increment(state.count), next_hyperparams(hypers, state.hyperparams, state.count))
        return out, new_state

    return GradientTransformationExtraArgs(init, update)
