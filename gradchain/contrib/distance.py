"""Distance-over-gradients step sizes: the parameter-free methods that estimate how far the
solution is from the start and divide by the size of the gradients seen so far.

==============================  ===============================================================
piece                           step size (``x₀``: the start, ``g_k``: the gradients)
==============================  ===============================================================
``scale_by_dog``                ``η_t = max_{k≤t} ‖x_k - x₀‖ / √(Σ_k ‖g_k‖² + eps)``
``scale_by_dowg``               ``η_t = r̄_t² / √(Σ_k r̄_k² ‖g_k‖²)``, ``r̄_t² = max_k ‖x_k - x₀‖²``
``scale_by_prodigy``            Adam with ``d_t`` from weighted ``⟨g_k, x₀ - x_k⟩ / ‖Σ d_k g_k‖₁``
``scale_by_dadapt_adamw``       Adam with ``d_t`` from D-Adaptation's dual-averaging bound
==============================  ===============================================================

The distances and sums are over the whole tree (one scalar each), so the optimizers pack: the
packed buffers hold the same elements and only the order of summation changes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.contrib._base import copy_tree, lowest_dtype, tree_norm, tree_sum, tree_vdot, zeros_like
from gradchain.transforms._base import check_bool, check_choice, initial_hyperparams, require_params, transformation

__all__ = ["scale_by_dadapt_adamw", "scale_by_dog", "scale_by_dowg", "scale_by_prodigy"]

INIT_STEP_KINDS = ("distance", "learning_rate", "heuristic")


def _sub(a, b):
    return jax.tree.map(lambda x, y: x - y, a, b)


def _scaled(rate, tree):
    return jax.tree.map(lambda u: rate.astype(u.dtype) * u, tree)


class DoGState(NamedTuple):
    """Optax's ``DoGState(is_init_step, init_params, max_dist, sum_sq_norm_grads)``, plus the
    count and hyperparameters."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    is_init_step: jax.Array
    init_params: Any
    max_dist: jax.Array
    sum_sq_norm_grads: jax.Array


def check_init_step(init_step: Any) -> tuple[str, Any]:
    if not (isinstance(init_step, tuple) and len(init_step) == 2):
        raise ValueError(
            f"init_step must be a pair (kind, value) with kind one of {INIT_STEP_KINDS}, got {init_step!r}"
        )
    kind, value = init_step
    check_choice("init_step[0]", kind, INIT_STEP_KINDS)
    hyper.check("init_step[1]", value, low=0.0, low_open=True)
    return kind, value


def scale_by_dog(init_step: tuple[str, Any], eps: hyper.Hyperparameter = 1e-8) -> Any:
    """DoG's step size (Ivgi, Hinder & Carmon, "DoG is SGD's Best Friend: A Parameter-Free
    Dynamic Step Size Schedule", ICML 2023, https://arxiv.org/abs/2302.12022)::

        r̄_t = max(r_ε, max_{k≤t} ‖x_k - x₀‖);   G_t = Σ_{k≤t} ‖g_k‖²;   u = r̄_t / √(G_t + eps) · g

    Args:
      init_step: ``(kind, value)``: ``("distance", r_ε)``, ``("heuristic", α)`` for
        ``r_ε = α (1 + ‖x₀‖)``, or ``("learning_rate", η₀)`` for a first step of ``η₀ g``.  The
        value is a hyperparameter (``init_step`` in ``get_hyperparams``): it floors ``r̄`` at every
        step (the same as Optax's start value while it is constant, since ``r̄`` only grows).
      eps: > 0, inside the square root.

    Returns:
      A transformation that needs ``params``; state ``DoGState(count, hyperparams, is_init_step,
      init_params, max_dist, sum_sq_norm_grads)``.
    """
    kind, value = check_init_step(init_step)
    hyper.check("eps", eps, low=0.0, low_open=True)

    def floor(value, init_params):
        if kind == "distance":
            return value
        if kind == "heuristic":
            return value * (1 + tree_norm(init_params))
        return jnp.zeros_like(value)

    def init_fields(params):
        hp = initial_hyperparams({"init_step": value, "eps": eps})
        dtype = lowest_dtype(params)
        return {
            "is_init_step": jnp.asarray(True),
            "init_params": copy_tree(params),
            "max_dist": jnp.asarray(floor(hp["init_step"].astype(dtype), params), dtype),
            "sum_sq_norm_grads": jnp.asarray(0.0, dtype),
        }

    def step(updates, fields, params, count, value, eps):
        require_params(params, "dog")
        dtype = fields["max_dist"].dtype
        dist = tree_norm(_sub(fields["init_params"], params))
        max_dist = jnp.maximum(jnp.maximum(fields["max_dist"], dist), floor(value.astype(dtype), fields["init_params"]))
        sum_sq = fields["sum_sq_norm_grads"] + tree_norm(updates, squared=True)
        rate = max_dist / jnp.sqrt(sum_sq + eps)
        if kind == "learning_rate":
            rate = jnp.where(fields["is_init_step"], value, rate)
        return _scaled(rate, updates), {
            "is_init_step": jnp.asarray(False),
            "init_params": fields["init_params"],
            "max_dist": max_dist.astype(dtype),
            "sum_sq_norm_grads": sum_sq.astype(dtype),
        }

    return transformation(DoGState, step, {"init_step": value, "eps": eps}, init_fields, shaped=("init_params",))


class DoWGState(NamedTuple):
    """Optax's ``DoWGState(init_params, weighted_sq_norm_grads, estim_sq_dist)``, plus the count
    and hyperparameters."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    init_params: Any
    weighted_sq_norm_grads: jax.Array
    estim_sq_dist: jax.Array


def scale_by_dowg(init_estim_sq_dist: hyper.Hyperparameter | None = None, eps: hyper.Hyperparameter = 1e-4) -> Any:
    """DoWG's step size (Khaled, Mishchenko & Jin, "DoWG Unleashed: An Efficient Universal
    Parameter-Free Gradient Descent Method", NeurIPS 2023, https://arxiv.org/abs/2305.16284)::

        r̄_t² = max(r̄_{t-1}², ‖x_t - x₀‖²);   v_t = v_{t-1} + r̄_t² ‖g_t‖²;   u = r̄_t² / (√v_t + eps) · g

    Args:
      init_estim_sq_dist: the start of ``r̄²`` (> 0; ``None``: ``eps``).  A hyperparameter that
        floors ``r̄²`` at every step (Optax's start value while it is constant).
      eps: > 0, in the denominator.

    Returns:
      A transformation that needs ``params``; state ``DoWGState(count, hyperparams,
      init_params, weighted_sq_norm_grads, estim_sq_dist)``.
    """
    hyper.check("eps", eps, low=0.0, low_open=True)
    hypers: dict[str, Any] = {"eps": eps}
    if init_estim_sq_dist is not None:
        hypers["init_estim_sq_dist"] = hyper.check("init_estim_sq_dist", init_estim_sq_dist, low=0.0, low_open=True)

    def init_fields(params):
        hp = initial_hyperparams(hypers)
        dtype = lowest_dtype(params)
        start = hp.get("init_estim_sq_dist", hp["eps"])
        return {
            "init_params": copy_tree(params),
            "weighted_sq_norm_grads": jnp.asarray(0.0, dtype),
            "estim_sq_dist": jnp.asarray(start, dtype),
        }

    def step(updates, fields, params, count, eps, *start):
        require_params(params, "dowg")
        dtype = fields["estim_sq_dist"].dtype
        current = tree_norm(_sub(fields["init_params"], params), squared=True)
        floor = (start[0] if start else eps).astype(dtype)
        estim = jnp.maximum(jnp.maximum(fields["estim_sq_dist"], current), floor)
        weighted = estim * tree_norm(updates, squared=True) + fields["weighted_sq_norm_grads"]
        rate = estim / (jnp.sqrt(weighted) + eps)
        return _scaled(rate, updates), {
            "init_params": fields["init_params"],
            "weighted_sq_norm_grads": weighted.astype(dtype),
            "estim_sq_dist": estim.astype(dtype),
        }

    return transformation(DoWGState, step, hypers, init_fields, shaped=("init_params",))


class ProdigyState(NamedTuple):
    """Optax's ``ProdigyState(exp_avg, exp_avg_sq, grad_sum, params0, estim_lr,
    numerator_weighted, count)``, plus the hyperparameters."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    exp_avg: Any
    exp_avg_sq: Any
    grad_sum: Any
    params0: Any
    estim_lr: jax.Array
    numerator_weighted: jax.Array


def check_betas(betas: Any) -> tuple[Any, Any]:
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
        raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
    for i, b in enumerate(betas):
        hyper.check(f"betas[{i}]", b, low=0.0, high=1.0, high_open=True)
    return betas[0], betas[1]


def scale_by_prodigy(
    learning_rate: hyper.Hyperparameter = 1.0,
    betas: tuple[Any, Any] = (0.9, 0.999),
    beta3: hyper.Hyperparameter | None = None,
    eps: hyper.Hyperparameter = 1e-8,
    estim_lr0: hyper.Hyperparameter = 1e-6,
    estim_lr_coef: hyper.Hyperparameter = 1.0,
    weight_decay: hyper.Hyperparameter = 0.0,
    safeguard_warmup: bool = False,
) -> Any:
    """Prodigy's step (Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free
    Learner", ICML 2024, https://arxiv.org/abs/2306.06101, Alg. 1 with Adam): Adam on ``d·g``
    whose learning rate ``d`` estimates the distance to the solution::

        λ_t = lr_t · d_t · √(1-β₂^t) / (1-β₁^t)
        m <- β₁ m + (1-β₁) d g;   v <- β₂ v + (1-β₂) d² g²
        s <- β₃ s + λ_t d g / d₀;  r <- β₃ r + (d / d₀) λ_t ⟨g, x₀ - x⟩
        d <- max(d, coef · r / ‖s‖₁)
        u = -λ_t (m / (√v + d eps) + weight_decay · x)

    The learning rate enters the estimate, so the output is the whole step (do not scale it
    again); ``d`` starts at ``estim_lr0``.  ``beta3=None`` is ``√β₂`` (of the current β₂).

    Args:
      learning_rate: ≥ 0, a multiplier of ``d`` (1 with a decaying schedule, as recommended).
      betas: ``(β₁, β₂)``, each in [0, 1) (stored as ``beta1``, ``beta2``).
      beta3: in [0, 1), or ``None``.
      eps: > 0.
      estim_lr0: ``d₀`` > 0 (also floors ``d``: Optax's start value while constant).
      estim_lr_coef: > 0, multiplies the estimate.
      weight_decay: ≥ 0, AdamW-style.
      safeguard_warmup: use ``d`` instead of ``λ_t`` in ``s`` (for warm-ups).

    Returns:
      A transformation that needs ``params``; state ``ProdigyState(count, hyperparams, exp_avg,
      exp_avg_sq, grad_sum, params0, estim_lr, numerator_weighted)``.
    """
    hyper.check("learning_rate", learning_rate, low=0.0)
    beta1, beta2 = check_betas(betas)
    hyper.check("eps", eps, low=0.0, low_open=True)
    hyper.check("estim_lr0", estim_lr0, low=0.0, low_open=True)
    hyper.check("estim_lr_coef", estim_lr_coef, low=0.0, low_open=True)
    hyper.check("weight_decay", weight_decay, low=0.0)
    check_bool("safeguard_warmup", safeguard_warmup)
    hypers: dict[str, Any] = {
        "learning_rate": learning_rate, "beta1": beta1, "beta2": beta2, "eps": eps,
        "estim_lr0": estim_lr0, "estim_lr_coef": estim_lr_coef, "weight_decay": weight_decay,
    }
    if beta3 is not None:
        hypers["beta3"] = hyper.check("beta3", beta3, low=0.0, high=1.0, high_open=True)

    def init_fields(params):
        hp = initial_hyperparams(hypers)
        dtype = lowest_dtype(params)
        return {
            "exp_avg": zeros_like(params), "exp_avg_sq": zeros_like(params), "grad_sum": zeros_like(params),
            "params0": copy_tree(params),
            "estim_lr": jnp.asarray(hp["estim_lr0"], dtype), "numerator_weighted": jnp.zeros((), dtype),
        }

    def step(updates, fields, params, count, sched, beta1, beta2, eps, estim_lr0, coef, weight_decay, *b3):
        require_params(params, "prodigy")
        beta3 = b3[0] if b3 else beta2**0.5
        t = hyper.increment(count)
        estim_lr = fields["estim_lr"]
        dtype = estim_lr.dtype
        bc = ((1 - beta2**t) ** 0.5) / (1 - beta1**t)
        dlr = jnp.asarray(estim_lr * sched * bc, dtype=dtype)
        dg = jax.tree.map(lambda g: estim_lr * g, updates)
        numerator_acum = tree_vdot(updates, _sub(fields["params0"], params))
        exp_avg = jax.tree.map(lambda ea, d: beta1 * ea + (1 - beta1) * d, fields["exp_avg"], dg)
        exp_avg_sq = jax.tree.map(lambda eas, d: beta2 * eas + (1 - beta2) * d * d, fields["exp_avg_sq"], dg)
        weight = estim_lr if safeguard_warmup else dlr
        grad_sum = jax.tree.map(lambda sk, d: beta3 * sk + weight * d / estim_lr0, fields["grad_sum"], dg)
        numerator = beta3 * fields["numerator_weighted"] + (estim_lr / estim_lr0) * dlr * numerator_acum
        denominator = tree_sum(jax.tree.map(jnp.abs, grad_sum))
        estimate = coef * numerator / denominator
        estim_lr = jnp.maximum(jnp.maximum(estim_lr, estimate), estim_lr0.astype(dtype))
        out = jax.tree.map(
            lambda ea, eas, p: -weight_decay * dlr * p - dlr * ea / (jnp.sqrt(eas) + estim_lr * eps),
            exp_avg, exp_avg_sq, params,
        )
        cast = lambda new, old: jax.tree.map(lambda n, o: n.astype(o.dtype), new, old)
        return out, {
            "exp_avg": cast(exp_avg, fields["exp_avg"]), "exp_avg_sq": cast(exp_avg_sq, fields["exp_avg_sq"]),
            "grad_sum": cast(grad_sum, fields["grad_sum"]), "params0": fields["params0"],
            "estim_lr": estim_lr.astype(dtype), "numerator_weighted": numerator.astype(dtype),
        }

    shaped = ("exp_avg", "exp_avg_sq", "grad_sum", "params0")
    return transformation(ProdigyState, step, hypers, init_fields, shaped=shaped)


class DAdaptAdamWState(NamedTuple):
    """Optax's ``DAdaptAdamWState(exp_avg, exp_avg_sq, grad_sum, estim_lr, numerator_weighted,
    count)``, plus the hyperparameters."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    exp_avg: Any
    exp_avg_sq: Any
    grad_sum: Any
    estim_lr: jax.Array
    numerator_weighted: jax.Array


def scale_by_dadapt_adamw(
    learning_rate: hyper.Hyperparameter = 1.0,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: hyper.Hyperparameter = 1e-8,
    estim_lr0: hyper.Hyperparameter = 1e-6,
    weight_decay: hyper.Hyperparameter = 0.0,
) -> Any:
    """D-Adapted AdamW's step (Defazio & Mishchenko, "Learning-Rate-Free Learning by
    D-Adaptation", ICML 2023, https://arxiv.org/abs/2301.07733, Alg. 4), with ``√β₂`` the decay
    of the dual averages::

        λ_t = lr_t · d · √(1-β₂^t) / (1-β₁^t)
        r <- √β₂ r + (1-√β₂) λ_t ⟨g, s / (√v + eps)⟩       (s, v before this step)
        m <- β₁ m + (1-β₁) λ_t g;   v <- β₂ v + (1-β₂) g²;   s <- √β₂ s + (1-√β₂) λ_t g
        d <- max(d, r / ((1-√β₂) ‖s‖₁))
        u = -weight_decay · λ_t · x - m / (√v + eps)

    The output is the whole step (the learning rate is inside); ``d`` starts at ``estim_lr0``.

    Args:
      learning_rate: ≥ 0, a multiplier of ``d``.
      betas: ``(β₁, β₂)`` in [0, 1) (stored as ``beta1``, ``beta2``).
      eps: > 0.
      estim_lr0: ``d₀`` > 0 (also floors ``d``: Optax's start value while constant).
      weight_decay: ≥ 0.

    Returns:
      A transformation that needs ``params``; state ``DAdaptAdamWState(count, hyperparams,
      exp_avg, exp_avg_sq, grad_sum, estim_lr, numerator_weighted)``.
    """
    hyper.check("learning_rate", learning_rate, low=0.0)
    beta1, beta2 = check_betas(betas)
    hyper.check("eps", eps, low=0.0, low_open=True)
    hyper.check("estim_lr0", estim_lr0, low=0.0, low_open=True)
    hyper.check("weight_decay", weight_decay, low=0.0)
    hypers = {"learning_rate": learning_rate, "beta1": beta1, "beta2": beta2, "eps": eps,
              "estim_lr0": estim_lr0, "weight_decay": weight_decay}

    def init_fields(params):
        hp = initial_hyperparams(hypers)
        dtype = lowest_dtype(params)
        return {
            "exp_avg": zeros_like(params), "exp_avg_sq": zeros_like(params), "grad_sum": zeros_like(params),
            "estim_lr": jnp.asarray(hp["estim_lr0"], dtype), "numerator_weighted": jnp.zeros([], dtype),
        }

    def step(updates, fields, params, count, sched, beta1, beta2, eps, estim_lr0, weight_decay):
        require_params(params, "dadapt_adamw")
        sb2 = beta2 ** (0.5)
        dtype = fields["numerator_weighted"].dtype
        t = hyper.increment(count)
        bc = ((1 - beta2**t) ** 0.5) / (1 - beta1**t)
        dlr = (fields["estim_lr"] * sched * bc).astype(dtype)
        s_weighted = jax.tree.map(lambda sk, eas: sk / (jnp.sqrt(eas) + eps), fields["grad_sum"], fields["exp_avg_sq"])
        numerator_acum = tree_vdot(updates, s_weighted)
        exp_avg = jax.tree.map(lambda ea, g: beta1 * ea + (1 - beta1) * dlr * g, fields["exp_avg"], updates)
        exp_avg_sq = jax.tree.map(lambda eas, g: beta2 * eas + (1 - beta2) * g * g, fields["exp_avg_sq"], updates)
        grad_sum = jax.tree.map(lambda sk, g: sb2 * sk + (1 - sb2) * dlr * g, fields["grad_sum"], updates)
        grad_sum_l1 = tree_sum(jax.tree.map(jnp.abs, grad_sum))
        numerator = sb2 * fields["numerator_weighted"] + (1 - sb2) * dlr * numerator_acum
        estimate = numerator / ((1 - sb2) * grad_sum_l1)
        estim_lr = jnp.maximum(jnp.maximum(fields["estim_lr"], estimate), estim_lr0.astype(dtype))
        out = jax.tree.map(
            lambda ea, eas, p: -weight_decay * dlr * p - ea / (jnp.sqrt(eas) + eps), exp_avg, exp_avg_sq, params
        )
        cast = lambda new, old: jax.tree.map(lambda n, o: n.astype(o.dtype), new, old)
        return out, {
            "exp_avg": cast(exp_avg, fields["exp_avg"]), "exp_avg_sq": cast(exp_avg_sq, fields["exp_avg_sq"]),
            "grad_sum": cast(grad_sum, fields["grad_sum"]),
            "estim_lr": estim_lr.astype(dtype), "numerator_weighted": numerator.astype(dtype),
        }

    return transformation(DAdaptAdamWState, step, hypers, init_fields, shaped=("exp_avg", "exp_avg_sq", "grad_sum"))
