"""Per-element adaptive statistics of the contrib optimizers: ADOPT, AdEMAMix, MADGRAD, COCOB,
and Sophia with its Hutchinson estimate of the Hessian's diagonal.

Each is one formula over the parameters' elements, so the optimizers built from them pack (run
inside :func:`gradchain.multi_tensor`), except Sophia, whose Hessian estimate differentiates the
objective at the real parameter tree.
"""

from __future__ import annotations

import numbers
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np

from gradchain import hyper
from gradchain.contrib._base import copy_tree, lowest_dtype, zeros_like
from gradchain.core import GradientTransformationExtraArgs, accepted_extra_args
from gradchain.transforms._base import (
    cast_like,
    check_bool,
    check_int,
    check_transformation,
    initial_hyperparams,
    require_params,
    transformation,
)

__all__ = [
    "hutchinson_estimator_diag_hessian",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_cocob",
    "scale_by_madgrad",
    "scale_by_sophia",
]


def _cast_back(new, old):
    return jax.tree.map(lambda n, o: n.astype(o.dtype), new, old)


# ----------------------------------------------------------------------------------------------
# ADOPT


class ScaleByAdoptState(NamedTuple):
    """Optax's ``ScaleByAdamState(count, mu, nu)`` fields (what ``optax.contrib.scale_by_adopt``
    keeps), plus the hyperparameters."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    mu: Any
    nu: Any


def scale_by_adopt(
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.9999,
    eps: hyper.Hyperparameter = 1e-6,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: hyper.Hyperparameter = lambda x: x**0.25,
) -> Any:
    """ADOPT's direction (Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any β₂ with
    the Optimal Rate", NeurIPS 2024, https://arxiv.org/abs/2411.02853)::

        v₀ = g₀²,   m₀ = 0                                  (the first step only fills v)
        m_t = b1 m_{t-1} + (1-b1) clip(g_t / max(√v_{t-1}, eps), c_t)      t ≥ 1
        v_t = b2 v_{t-1} + (1-b2) g_t²
        output m_t  (nesterov: b1 m_t + (1-b1) clip(...))

    The gradient is normalised by the *previous* second moment, which removes Adam's correlation
    between ``g_t`` and its own normaliser; ``c_t = clip_value_fn(t) = t^¼`` bounds the early steps.

    Args:
      b1: in [0, 1).
      b2: in [0, 1).
      eps: > 0, the floor of ``√v``.
      mu_dtype: storage dtype of ``mu``.
      nesterov: Nesterov's look-ahead.
      use_clipping: clip the normalised gradient to ``±clip_value_fn(t)``.
      clip_value_fn: the clipping value, a schedule of the step (a hyperparameter:
        ``get_hyperparams`` lists ``clip_value``).

    Returns:
      A transformation with state ``ScaleByAdoptState(count, hyperparams, mu, nu)``.
    """
    hyper.check("b1", b1, low=0.0, high=1.0, high_open=True)
    hyper.check("b2", b2, low=0.0, high=1.0, high_open=True)
    hyper.check("eps", eps, low=0.0, low_open=True)
    check_bool("nesterov", nesterov)
    check_bool("use_clipping", use_clipping)
    hypers: dict[str, Any] = {"b1": b1, "b2": b2, "eps": eps}
    if use_clipping:
        hypers["clip_value"] = hyper.check("clip_value_fn", clip_value_fn, low=0.0)

    def init_fields(params):
        return {"mu": zeros_like(params, mu_dtype), "nu": zeros_like(params)}

    def step(updates, fields, params, count, b1, b2, eps, *clip):
        b2_ = jnp.where(count > 0, b2, 0)
        b1_ = jnp.where(count > 0, b1, 1)
        nu = jax.tree.map(lambda g, v: (1 - b2_) * (g**2) + b2_ * v, updates, fields["nu"])
        normalise = lambda g, v: g / jnp.maximum(jnp.sqrt(v), eps)
        if clip:
            scaled = jax.tree.map(lambda g, v: jnp.clip(normalise(g, v), -clip[0], clip[0]), updates, fields["nu"])
        else:
            scaled = jax.tree.map(normalise, updates, fields["nu"])
        mu = jax.tree.map(lambda s, m: (1 - b1_) * s + b1_ * m, scaled, fields["mu"])
        out = jax.tree.map(lambda s, m: (1 - b1_) * s + b1_ * m, scaled, mu) if nesterov else mu
        return out, {"mu": _cast_back(mu, fields["mu"]), "nu": _cast_back(nu, fields["nu"])}

    return transformation(ScaleByAdoptState, step, hypers, init_fields)


# ----------------------------------------------------------------------------------------------
# AdEMAMix


class ScaleByAdemamixState(NamedTuple):
    """Optax's ``ScaleByAdemamixState(count, count_m2, m1, m2, nu)``, plus the hyperparameters."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    count_m2: jax.Array
    m1: Any
    m2: Any
    nu: Any


def scale_by_ademamix(
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    b3: hyper.Hyperparameter = 0.9999,
    alpha: hyper.Hyperparameter = 6.0,
    eps: hyper.Hyperparameter = 1e-8,
    eps_root: hyper.Hyperparameter = 0.0,
    mu_dtype: Any = None,
) -> Any:
    """AdEMAMix's direction (Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better,
    Faster, Older", https://arxiv.org/abs/2409.03137)::

        m1 <- b1 m1 + (1-b1) g        (fast EMA, bias-corrected)
        m2 <- b3 m2 + (1-b3) g        (slow EMA, not corrected)
        nu <- b2 nu + (1-b2) g²
        u = (m1/(1-b1^t) + alpha·m2) / (√(nu/(1-b2^t) + eps_root) + eps)

    Args:
      b1, b2, b3: decays in [0, 1) (``b3`` and ``alpha`` are usually scheduled: warm-ups).
      alpha: ≥ 0, the weight of the slow EMA.
      eps: > 0, outside the square root.
      eps_root: ≥ 0, inside it.
      mu_dtype: storage dtype of the three averages (as Optax's).

    Returns:
      A transformation with state ``ScaleByAdemamixState(count, hyperparams, count_m2, m1, m2, nu)``.
    """
    for name, value in (("b1", b1), ("b2", b2), ("b3", b3)):
        hyper.check(name, value, low=0.0, high=1.0, high_open=True)
    hyper.check("alpha", alpha, low=0.0)
    hyper.check("eps", eps, low=0.0, low_open=True)
    hyper.check("eps_root", eps_root, low=0.0)

    def init_fields(params):
        zeros = lambda: zeros_like(params, mu_dtype)
        return {"count_m2": jnp.zeros([], jnp.int32), "m1": zeros(), "m2": zeros(), "nu": zeros()}

    def step(updates, fields, params, count, b1, b2, b3, alpha, eps, eps_root):
        ema = lambda b, order: lambda g, m: (1 - b) * (g**order) + b * m
        m1 = jax.tree.map(ema(b1, 1), updates, fields["m1"])
        m2 = jax.tree.map(ema(b3, 1), updates, fields["m2"])
        nu = jax.tree.map(ema(b2, 2), updates, fields["nu"])
        t = hyper.increment(count)
        debias = lambda tree, b: jax.tree.map(lambda m: m / (1 - b**t).astype(m.dtype), tree)
        out = jax.tree.map(
            lambda a, b, v: (a + alpha * b) / (jnp.sqrt(v + eps_root) + eps), debias(m1, b1), m2, debias(nu, b2)
        )
        return out, {
            "count_m2": hyper.increment(fields["count_m2"]),
            "m1": _cast_back(m1, fields["m1"]),
            "m2": _cast_back(m2, fields["m2"]),
            "nu": _cast_back(nu, fields["nu"]),
        }

    hypers = {"b1": b1, "b2": b2, "b3": b3, "alpha": alpha, "eps": eps, "eps_root": eps_root}
    return transformation(ScaleByAdemamixState, step, hypers, init_fields, shaped=("m1", "m2", "nu"))


# ----------------------------------------------------------------------------------------------
# MADGRAD


class MadgradState(NamedTuple):
    """Optax's ``MadgradState(count, grad_sum_sq, s, x0)``, plus the hyperparameters."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    grad_sum_sq: Any
    s: Any
    x0: Any


def scale_by_madgrad(
    learning_rate: hyper.Hyperparameter, momentum: hyper.Hyperparameter = 0.9, eps: hyper.Hyperparameter = 1e-6
) -> Any:
    """MADGRAD's step (Defazio & Jelassi, "Adaptivity without Compromise: A Momentumized,
    Adaptive, Dual Averaged Gradient Method for Stochastic Optimization",
    https://arxiv.org/abs/2101.11075), a dual average with a cube-root normaliser::

        λ_k = (lr + eps) · √(k+1)
        s <- s + λ_k g;    G <- G + λ_k g²
        z = x₀ - s / (∛G + eps)
        x <- (1 - momentum) z + momentum x          (output: the change of x)

    The output is the whole step (the learning rate is inside: do not scale it again).
    ``√(k+1)`` is taken of the int32 step count, so in float32, as Optax's (in float64 this
    keeps the two equal to the last digit; the step size is unaffected beyond 3e-8 relative).

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      momentum: in [0, 1).
      eps: > 0, added to the learning rate and to the normaliser (as PyTorch's).

    Returns:
      A transformation that needs ``params``; state ``MadgradState(count, hyperparams,
      grad_sum_sq, s, x0)``.
    """
    hyper.check("learning_rate", learning_rate, low=0.0)
    hyper.check("momentum", momentum, low=0.0, high=1.0, high_open=True)
    hyper.check("eps", eps, low=0.0, low_open=True)

    def init_fields(params):
        return {"grad_sum_sq": zeros_like(params), "s": zeros_like(params), "x0": copy_tree(params)}

    def step(updates, fields, params, count, lr, momentum, eps):
        require_params(params, "madgrad")
        lamb = (lr + eps) * jnp.sqrt(count + 1)
        grad_sum_sq = jax.tree.map(lambda q, g: q + (lamb * g**2).astype(g.dtype), fields["grad_sum_sq"], updates)
        s = jax.tree.map(lambda s_, g: s_ + (lamb * g).astype(g.dtype), fields["s"], updates)
        z = jax.tree.map(lambda x0, s_, q: x0 - s_ / (jnp.cbrt(q) + eps), fields["x0"], s, grad_sum_sq)
        x_new = jax.tree.map(lambda z_, x: (1 - momentum) * z_ + momentum * x, z, params)
        out = jax.tree.map(lambda n, x: n - x, x_new, params)
        return out, {"grad_sum_sq": grad_sum_sq, "s": s, "x0": fields["x0"]}

    hypers = {"learning_rate": learning_rate, "momentum": momentum, "eps": eps}
    return transformation(MadgradState, step, hypers, init_fields)


# ----------------------------------------------------------------------------------------------
# COCOB


class COCOBState(NamedTuple):
    """Optax's ``COCOBState(init_particles, cumulative_gradients, scale, subgradients, reward)``,
    plus the count and hyperparameters."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    init_particles: Any
    cumulative_gradients: Any
    scale: Any
    subgradients: Any
    reward: Any


def scale_by_cocob(alpha: hyper.Hyperparameter = 100.0, eps: hyper.Hyperparameter = 1e-8) -> Any:
    """COCOB-Backprop's step (Orabona & Tommasi, "Training Deep Networks without Learning Rates
    Through Coin Betting", NeurIPS 2017, Alg. 2, https://arxiv.org/abs/1705.07795): per element
    a coin-betting wealth ``R`` decides how far from the start ``x₀`` to go::

        L <- max(L, |g|, eps);   G <- G + |g|;   R <- max(R - g (x - x₀), 0);   θ <- θ - g
        x_new = x₀ + θ / (L · max(G + L, alpha · L)) · (L + R)      (output: x_new - x)

    ``L`` starts at ``eps``; the ``eps`` floor at every step (equal to Optax's start-only use
    while ``eps`` is constant, since ``L`` never decreases) makes a changed ``eps`` take effect.

    Args:
      alpha: > 0, the fraction bet (100 in the paper).
      eps: > 0, the smallest gradient scale.

    Returns:
      A transformation that needs ``params``; state ``COCOBState(count, hyperparams,
      init_particles, cumulative_gradients, scale, subgradients, reward)``.
    """
    hyper.check("alpha", alpha, low=0.0, low_open=True)
    hyper.check("eps", eps, low=0.0, low_open=True)

    def init_fields(params):
        hp = initial_hyperparams({"alpha": alpha, "eps": eps})
        zeros = lambda: zeros_like(params)
        return {
            "init_particles": copy_tree(params),
            "cumulative_gradients": zeros(),
            "scale": jax.tree.map(lambda p: hp["eps"].astype(jnp.asarray(p).dtype) * jnp.ones_like(p), params),
            "subgradients": zeros(),
            "reward": zeros(),
        }

    def step(updates, fields, params, count, alpha, eps):
        require_params(params, "cocob")
        x0 = fields["init_particles"]
        scale = jax.tree.map(lambda L, c: jnp.maximum(jnp.maximum(L, jnp.abs(c)), cast_like(eps, L)), fields["scale"], updates)
        subgradients = jax.tree.map(lambda G, c: G + jnp.abs(c), fields["subgradients"], updates)
        reward = jax.tree.map(lambda R, c, p, p0: jnp.maximum(R - c * (p - p0), 0), fields["reward"], updates, params, x0)
        cumulative = jax.tree.map(lambda C, c: C - c, fields["cumulative_gradients"], updates)
        out = jax.tree.map(
            lambda p, p0, C, L, G, R: -p + (p0 + C / (L * jnp.maximum(G + L, alpha * L)) * (L + R)),
            params, x0, cumulative, scale, subgradients, reward,
        )
        return out, {
            "init_particles": x0,
            "cumulative_gradients": cumulative,
            "scale": scale,
            "subgradients": subgradients,
            "reward": reward,
        }

    return transformation(COCOBState, step, {"alpha": alpha, "eps": eps}, init_fields)


# ----------------------------------------------------------------------------------------------
# Sophia


class HutchinsonState(NamedTuple):
    key: jax.Array


def hutchinson_estimator_diag_hessian(random_seed: jax.Array | None = None) -> GradientTransformationExtraArgs:
    """Hutchinson's unbiased estimate of the Hessian's diagonal, ``diag(H) ≈ z ⊙ (H z)`` with
    ``z`` a Rademacher (±1) vector (Hutchinson 1989; Bekas, Kokiopoulou & Saad 2007), ``H z``
    a Hessian-vector product (forward-over-reverse).

    ``update(updates, state, params, obj_fn=loss)`` ignores ``updates`` and returns the
    estimate at ``params``; ``obj_fn(params) -> scalar``.  The signs are drawn as Optax's
    (one key split per leaf), so the same seed gives the same estimate.

    Args:
      random_seed: a PRNG key (default ``jax.random.PRNGKey(0)``).

    Returns:
      A transformation with state ``HutchinsonState(key)``.
    """

    def init(params):
        del params
        return HutchinsonState(key=random_seed if random_seed is not None else jax.random.PRNGKey(0))

    def update(updates, state, params=None, obj_fn=None, **extra_args):
        del updates, extra_args
        if params is None:
            raise ValueError("hutchinson_estimator_diag_hessian needs params: update(updates, state, params, obj_fn=...)")
        if obj_fn is None:
            raise ValueError(
                "hutchinson_estimator_diag_hessian needs the objective: update(updates, state, params, "
                "obj_fn=lambda p: loss(p, batch)) (Sophia passes its extra update arguments on)"
            )
        key, subkey = jax.random.split(state.key)
        leaves, treedef = jax.tree.flatten(params)
        keys = jax.random.split(subkey, len(leaves))
        signs = [jax.random.rademacher(k, jnp.shape(p), jnp.float32) for k, p in zip(keys, leaves)]
        signs = jax.tree.unflatten(treedef, [z.astype(lowest_dtype(params)) for z in signs])
        hvp = jax.jvp(jax.grad(obj_fn), (params,), (signs,))[1]
        return jax.tree.map(lambda h, z: h * z, hvp, signs), HutchinsonState(key=key)

    return GradientTransformationExtraArgs(init, update)


class SophiaState(NamedTuple):
    """Optax's ``SophiaState(count, mu, nu, hessian_fn_state)``, plus the hyperparameters."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    mu: Any
    nu: Any
    hessian_fn_state: Any


def _check_update_interval(value: Any) -> Any:
    hyper.check("update_interval", value, low=1.0)
    concrete = hyper.unwrap(value)
    if isinstance(concrete, (numbers.Real, np.ndarray, np.generic)) and not np.all(np.asarray(concrete) % 1 == 0):
        raise ValueError(f"update_interval must be a whole number of steps, got {value!r}")
    return value


def scale_by_sophia(
    b1: hyper.Hyperparameter = 0.965,
    b2: hyper.Hyperparameter = 0.99,
    eps: hyper.Hyperparameter = 1e-8,
    gamma: hyper.Hyperparameter = 0.01,
    clip_threshold: hyper.Hyperparameter | None = 1.0,
    update_interval: hyper.Hyperparameter = 10,
    hessian_diagonal_fn: Any = None,
    mu_dtype: Any = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
) -> GradientTransformationExtraArgs:
    """Sophia's direction (Liu, Li, Hall, Liang & Ma, "Sophia: A Scalable Stochastic
    Second-order Optimizer for Language Model Pre-training", ICLR 2024,
    https://arxiv.org/abs/2305.14342), a momentum over a clipped diagonal Newton scaling::

        m <- b1 m + (1-b1) g;        u = clip(m̂ / max(γ h, eps), ±clip_threshold)
        every update_interval steps:  h <- b2 h + (1-b2) ĥ,   ĥ = hessian_diagonal_fn(params)

    ``u`` uses the ``h`` from before this step's refresh.  ``update(..., **kwargs)`` hands its
    extra keyword arguments to ``hessian_diagonal_fn`` (the default Hutchinson estimator needs
    ``obj_fn=``).

    Args:
      b1: in [0, 1), the momentum.
      b2: in [0, 1), the decay of the Hessian average (per refresh).
      eps: > 0, the floor of the denominator.
      gamma: > 0, the Hessian's scale.
      clip_threshold: > 0, or ``None`` for no clipping.
      update_interval: a whole number ≥ 1 of steps between Hessian refreshes (a
        hyperparameter, compared with the step count).
      hessian_diagonal_fn: a transformation ``update(g, s, params, **kw) -> (diag, s)``
        (default: :func:`hutchinson_estimator_diag_hessian`).
      mu_dtype: storage dtype of ``mu``.
      verbose: print the share of unclipped elements every ``print_win_rate_every_n_steps``.
      print_win_rate_every_n_steps: an int ≥ 0.

    Returns:
      A :class:`~gradchain.GradientTransformationExtraArgs` that needs ``params``; state
      ``SophiaState(count, hyperparams, mu, nu, hessian_fn_state)``.
    """
    hyper.check("b1", b1, low=0.0, high=1.0, high_open=True)
    hyper.check("b2", b2, low=0.0, high=1.0, high_open=True)
    hyper.check("eps", eps, low=0.0, low_open=True)
    hyper.check("gamma", gamma, low=0.0, low_open=True)
    _check_update_interval(update_interval)
    check_bool("verbose", verbose)
    check_int("print_win_rate_every_n_steps", print_win_rate_every_n_steps, 0)
    if verbose and print_win_rate_every_n_steps < 1:
        raise ValueError("verbose=True needs print_win_rate_every_n_steps >= 1")
    hessian = hessian_diagonal_fn if hessian_diagonal_fn is not None else hutchinson_estimator_diag_hessian()
    check_transformation("hessian_diagonal_fn", hessian)
    hypers: dict[str, Any] = {"b1": b1, "b2": b2, "eps": eps, "gamma": gamma, "update_interval": update_interval}
    if clip_threshold is not None:
        hypers["clip_threshold"] = hyper.check("clip_threshold", clip_threshold, low=0.0, low_open=True)

    def init_fields(params):
        return {"mu": zeros_like(params, mu_dtype), "nu": zeros_like(params), "hessian_fn_state": hessian.init(params)}

    def step(updates, fields, params, count, b1, b2, eps, gamma, interval, *clip, **kwargs):
        if params is None:
            raise ValueError("sophia needs the current parameters: update(updates, state, params, obj_fn=...)")
        grads = updates
        t = hyper.increment(count)
        mu = jax.tree.map(lambda g, m: (1 - b1) * g + b1 * m, updates, fields["mu"])
        mu_hat = jax.tree.map(lambda m: m / (1 - b1**t).astype(m.dtype), mu)
        out = jax.tree.map(lambda m, h: m / jnp.maximum(gamma * h, eps), mu_hat, fields["nu"])
        if clip:
            if verbose:
                kept = jax.tree.reduce(lambda a, b: a + b, jax.tree.map(lambda u: jnp.sum(jnp.abs(u) < clip[0]), out))
                rate = kept / sum(jnp.size(u) for u in jax.tree.leaves(out))
                jax.lax.cond(
                    t % print_win_rate_every_n_steps == 0,
                    lambda: jax.debug.print("Sophia optimizer win rate: {}", rate),
                    lambda: None,
                )
            out = jax.tree.map(lambda u: jnp.clip(u, -clip[0], clip[0]), out)
        extra = accepted_extra_args(hessian.update, kwargs)

        def refresh(hessian_state, nu):
            diag, hessian_state = hessian.update(grads, hessian_state, params, **extra)
            return hessian_state, jax.tree.map(lambda d, h: ((1 - b2) * d + b2 * h).astype(h.dtype), diag, nu)

        every = jnp.asarray(interval).astype(count.dtype)
        hessian_state, nu = jax.lax.cond(
            jnp.equal(count % every, 0), refresh, lambda s, n: (s, n), fields["hessian_fn_state"], fields["nu"]
        )
        return out, {"mu": _cast_back(mu, fields["mu"]), "nu": nu, "hessian_fn_state": hessian_state}

    tx = transformation(SophiaState, step, hypers, init_fields, shaped=("mu", "nu"), extra_args=True)
    return cast(GradientTransformationExtraArgs, tx)

