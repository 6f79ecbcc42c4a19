"""The adaptive K-FAC of Martens & Grosse (2015): step size and momentum from the exact quadratic
model (§7), Levenberg–Marquardt adaptation of the damping (§6.5), as one pure step.

    opt = gc.kfac_optimizer(curv, initial_damping=150.0, l2_reg=1e-5)
    state = opt.init(params)
    params, state, info = opt.step(params, state, x, key=key)   # pure: jit, scan, vmap it

Step ``k`` at parameters ``θ`` with objective ``h`` (the loss function, which includes any L2
term ``(η/2)‖θ‖²`` whose coefficient is passed as ``l2_reg = η``):

1. ``h(θ)``, ``∇h`` and the batch factors in one pass (:mod:`.statistics`).
2. ``Δ_k = (F̂ + (λ_k + η) I)⁻¹ ∇h`` block by block: one update of :func:`.kfac_precondition`
   (``inverse="pi"``, the optimizer's ``ema_decay`` and ``refresh_every``) at damping
   ``λ_k + η`` — the factors' moving average and, every ``refresh_every`` steps, the π-damped
   inverses (§6.3).  The optimizer *is* that preconditioner plus steps 3–4: its state holds the
   preconditioner's (``count``, ``factors``, ``factor_weight``, ``inverses``) with ``λ_k`` in
   ``damping`` instead of a hyperparameter dict.
3. With ``v = (Δ_k, δ_{k-1})``, the exact Gauss-Newton products ``C_ij = v_iᵀ Ĝ v_j`` on the batch
   (one forward-mode pass per vector), ``D_ij = v_iᵀ v_j`` and ``b_i = ∇hᵀ v_i``, minimise the
   damped quadratic model

       M(w) = ½ wᵀ (C + (λ_k + η) D) w + bᵀ w,     w* = −(C + (λ_k + η) D)⁻¹ b

   (§7; on step 0, where ``δ_{-1} = 0``, over ``w_1`` only).  The update is
   ``δ_k = w*_1 Δ_k + w*_2 δ_{k-1}``: learning rate ``α_k = −w*_1``, momentum ``μ_k = w*_2``.
4. Every ``adaptation_interval`` steps (``k ≡ −1``), the reduction ratio
   ``ρ = (h(θ + δ_k) − h(θ)) / M₀(δ_k)``, with ``M₀`` the model without the damping ``λ_k``
   (η kept), drives ``λ``: ``λ ← ω λ`` if ``ρ > 3/4``, ``λ ← λ / ω`` if ``ρ < 1/4``, with
   ``ω = adaptation_decay^adaptation_interval`` (§6.5), clipped to ``[min_damping, max_damping]``.

With ``adapt_damping=False`` the damping stays at ``initial_damping`` (no extra evaluation of
``h``) — the setting for a ``vmap`` population of fixed dampings.  ``initial_damping`` may then
be a traced array.  Non-finite numbers are not replaced (the library's policy): a NaN loss or
factor gives a NaN step, visible in ``info.loss`` and the parameters; so does a damping
``λ_k + η`` that is not a finite positive number (a traced one; concrete ones are checked at
construction).  Parameters in float16/bfloat16: the factors, inverses and the quadratic model are
computed in float32, the step and the velocity in the parameters' dtype.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from gradchain import hyper
from gradchain.core import GradientTransformationExtraArgs, apply_updates
from gradchain.curvature import blocks as _blocks, precondition as _pre
from gradchain.curvature.statistics import KFACCurvature, check_axis_name

__all__ = ["KFACOptimizer", "KFACOptimizerState", "KFACStepInfo", "kfac_optimizer"]


class KFACOptimizerState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - int32: steps done (a field)
    damping: jax.Array  # λ_k, the damping the next step uses
    factors: tuple  # moving averages of the factors, per block
    factor_weight: jax.Array  # normaliser of the moving average
    inverses: tuple  # cached π-damped inverses, per block
    velocity: Any  # δ_{k-1}, shaped like the parameters


class KFACStepInfo(NamedTuple):
    """What one step did; ``loss`` is ``h(θ)`` before the step."""

    loss: jax.Array
    learning_rate: jax.Array  # α_k
    momentum: jax.Array  # μ_k
    damping: jax.Array  # λ_k used by this step
    rho: jax.Array  # reduction ratio (NaN on steps that do not adapt the damping)
    quad_model_change: jax.Array  # M(δ_k) with the damping


def _vdot(a, b):
    """``Σ_leaves aᵀb``, summed in at least float32 (float16 leaves overflow at 65504)."""
    total = 0.0
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        wide = _blocks.compute_dtype(jnp.result_type(x, y))
        total = total + jnp.vdot(x.astype(wide), y.astype(wide))
    return total


@dataclasses.dataclass(frozen=True, eq=False)
class KFACOptimizer:
    """M&G's adaptive K-FAC; build it with :func:`kfac_optimizer`."""

    curvature: KFACCurvature
    initial_damping: Any
    l2_reg: float
    min_damping: float
    max_damping: float
    adapt_damping: bool
    adaptation_interval: int
    adaptation_decay: float
    ema_decay: float
    refresh_every: int
    use_momentum: bool
    precondition: GradientTransformationExtraArgs = dataclasses.field(repr=False)  # steps 1-2

    def init(self, params) -> KFACOptimizerState:
        pre = self.precondition.init(params)
        return KFACOptimizerState(
            count=pre.count,
            damping=jnp.asarray(self.initial_damping, pre.factor_weight.dtype),
            factors=pre.factors,
            factor_weight=pre.factor_weight,
            inverses=pre.inverses,
            velocity=jax.tree.map(jnp.zeros_like, params),
        )

    def _loss(self, params, args):
        out = self.curvature.loss_fn(params, *args)
        value = out[0] if self.curvature.has_aux else out
        if self.curvature.axis_name is not None:
            check_axis_name(self.curvature.axis_name)
            value = jax.lax.pmean(value, self.curvature.axis_name)
        return value

    def _precondition(self, state: KFACOptimizerState, grads, stats, total):
        """``Δ_k`` and the preconditioner's new ``(factors, factor_weight, inverses)``: one update
        of :func:`.kfac_precondition` at damping ``λ_k + η`` (steps 1-2 of the module docstring)."""
        hypers = {"damping": total, "ema_decay": jnp.asarray(self.ema_decay, total.dtype)}
        pre_state = _pre.KFACPreconditionState(state.count, hypers, state.factors, state.factor_weight, state.inverses)
        delta, pre_state = self.precondition.update(grads, pre_state, kfac_statistics=stats)
        return delta, pre_state.factors, pre_state.factor_weight, pre_state.inverses

    def step(self, params, state: KFACOptimizerState, *args, key: jax.Array | None = None):
        """One step: ``(new_params, new_state, KFACStepInfo)``; see the module docstring."""
        if not isinstance(state, KFACOptimizerState):
            raise TypeError(f"state must be a KFACOptimizerState from KFACOptimizer.init, got {type(state).__name__}")
        curv = self.curvature
        value: Any
        value, grads, stats = curv.value_grad_and_statistics(params, *args, key=key)
        if curv.has_aux:
            value = value[0]
        dtype = state.damping.dtype
        lam = state.damping
        total = lam + jnp.asarray(self.l2_reg, dtype)
        delta, factors, weight, inverses = self._precondition(state, grads, stats, total)
        prev = state.velocity

        first = state.count == 0
        if self.use_momentum:
            c = curv.gauss_newton_products(params, args, [delta, prev])
            d = jnp.array([[_vdot(delta, delta), _vdot(delta, prev)], [_vdot(prev, delta), _vdot(prev, prev)]])
            b = jnp.array([_vdot(grads, delta), _vdot(grads, prev)])
        else:
            c = curv.gauss_newton_products(params, args, [delta])
            d = jnp.array([[_vdot(delta, delta)]])
            b = jnp.array([_vdot(grads, delta)])
        c, d, b = jnp.asarray(c, dtype), d.astype(dtype), b.astype(dtype)
        damped = c + total * d
        only_lr = -b[0] / damped[0, 0]
        if self.use_momentum:
            # 2×2 solve by Cramer's rule (cheap, and exact in the arithmetic of the step)
            det = damped[0, 0] * damped[1, 1] - damped[0, 1] * damped[1, 0]
            w1 = (-b[0] * damped[1, 1] + b[1] * damped[0, 1]) / det
            w2 = (-b[1] * damped[0, 0] + b[0] * damped[1, 0]) / det
            w = jnp.where(first, jnp.stack([only_lr, jnp.zeros((), dtype)]), jnp.stack([w1, w2]))
            step = jax.tree.map(lambda a, p: (w[0] * a + w[1] * p).astype(p.dtype), delta, prev)
        else:
            w = jnp.stack([only_lr])
            step = jax.tree.map(lambda a: (w[0] * a).astype(a.dtype), delta)
        model_damped = 0.5 * w @ damped @ w + b @ w
        model_plain = 0.5 * w @ (c + jnp.asarray(self.l2_reg, dtype) * d) @ w + b @ w
        new_params = apply_updates(params, step)

        if self.adapt_damping:
            adapt = state.count % self.adaptation_interval == self.adaptation_interval - 1
            new_value = jax.lax.cond(
                adapt, lambda: self._loss(new_params, args).astype(dtype), lambda: jnp.asarray(jnp.nan, dtype)
            )
            rho = (new_value - value.astype(dtype)) / model_plain
            omega = jnp.asarray(self.adaptation_decay ** self.adaptation_interval, dtype)
            new_lam = jnp.where(rho > 0.75, lam * omega, jnp.where(rho < 0.25, lam / omega, lam))
            new_lam = jnp.clip(new_lam, self.min_damping, self.max_damping)
            new_lam = jnp.where(adapt, new_lam, lam)
            rho = jnp.where(adapt, rho, jnp.nan)
        else:
            new_lam, rho = lam, jnp.asarray(jnp.nan, dtype)

        info = KFACStepInfo(
            loss=value, learning_rate=-w[0], momentum=w[1] if self.use_momentum else jnp.zeros((), dtype),
            damping=lam, rho=rho, quad_model_change=model_damped,
        )
        new_state = KFACOptimizerState(
            count=hyper.increment(state.count), damping=new_lam, factors=factors, factor_weight=weight,
            inverses=inverses, velocity=step,
        )
        return new_params, new_state, info


def kfac_optimizer(
    curvature: KFACCurvature,
    *,
    initial_damping: Any = 150.0,
    l2_reg: float = 0.0,
    min_damping: float = 1e-5,
    max_damping: float = 1000.0,
    adapt_damping: bool = True,
    adaptation_interval: int = 5,
    adaptation_decay: float = 0.95,
    ema_decay: float = 0.95,
    refresh_every: int = 5,
    momentum: bool = True,
) -> KFACOptimizer:
    """M&G's adaptive K-FAC (§6.5, §7); see the module docstring.

    Args:
      curvature: from :func:`gradchain.kfac_curvature`.
      initial_damping: λ_0 > 0 (a number, or an array — a traced one under ``vmap`` — when the
        damping is not adapted); inside ``[min_damping, max_damping]`` when it is.  Not a
        schedule (for one, chain :func:`.kfac_precondition` with a step size of your own).
      l2_reg: η ≥ 0, the coefficient of the L2 term the loss function already contains; it is
        added to the damping of the preconditioner and of the quadratic model.
      min_damping, max_damping: the range λ is clipped to by the adaptation.
      adapt_damping: Levenberg–Marquardt adaptation of λ (§6.5).
      adaptation_interval: adapt every this many steps; adaptation_decay: ω^(1/interval).
      ema_decay: ε in [0, 1), the factors' moving average.
      refresh_every: T ≥ 1, recompute the inverses every T steps.
      momentum: solve for the momentum μ too (§7); else only the learning rate.

    Raises:
      ValueError: a value outside its range (named, with the range), ``max_damping <
        min_damping``, an adapted ``initial_damping`` outside the clip range, a non-positive
        ``refresh_every`` or ``adaptation_interval``.
      TypeError: a schedule or other callable for a number, a non-bool flag, a curvature not from
        :func:`gradchain.kfac_curvature`.
    """
    if not isinstance(curvature, KFACCurvature):
        raise TypeError(f"curvature must come from gc.kfac_curvature(...), got {type(curvature).__name__}")
    _check_flags(adapt_damping=adapt_damping, momentum=momentum)
    _check_numbers(initial_damping=initial_damping, l2_reg=l2_reg, min_damping=min_damping,
                   max_damping=max_damping, adaptation_decay=adaptation_decay, ema_decay=ema_decay)
    hyper.check_value("initial_damping", initial_damping, low=0.0, low_open=True)
    hyper.check_value("l2_reg", l2_reg, low=0.0)
    hyper.check_value("min_damping", min_damping, low=0.0, low_open=True)
    hyper.check_value("max_damping", max_damping)
    if max_damping < min_damping:
        raise ValueError(f"max_damping must be >= min_damping = {min_damping!r}, got {max_damping!r}")
    if adapt_damping:
        _check_inside_clip_range(initial_damping, min_damping, max_damping)
    hyper.check_value("adaptation_decay", adaptation_decay, low=0.0, high=1.0, low_open=True, high_open=True)
    hyper.check_value("ema_decay", ema_decay, low=0.0, high=1.0, high_open=True)
    _pre.check_positive_int("adaptation_interval", adaptation_interval)
    _pre.check_positive_int("refresh_every", refresh_every)
    precondition = _pre.kfac_precondition(
        curvature, damping=initial_damping, ema_decay=ema_decay, refresh_every=refresh_every, inverse="pi"
    )
    return KFACOptimizer(
        curvature=curvature, initial_damping=initial_damping, l2_reg=l2_reg, min_damping=min_damping,
        max_damping=max_damping, adapt_damping=adapt_damping, adaptation_interval=adaptation_interval,
        adaptation_decay=adaptation_decay, ema_decay=ema_decay, refresh_every=refresh_every, use_momentum=momentum,
        precondition=precondition,
    )


_NOT_A_SCHEDULE = {
    "initial_damping": "the damping is adapted from it (or, with adapt_damping=False, kept); for a damping "
                       "schedule chain gc.kfac_precondition(curv, damping=schedule) with your own step size",
}


def _check_numbers(**values: Any) -> None:
    """kfac_optimizer's numbers are numbers (or arrays), never schedules: say so, and what to use."""
    for name, value in values.items():
        if callable(value) and not isinstance(value, jax.Array):
            hint = _NOT_A_SCHEDULE.get(name, "kfac_optimizer takes no schedules")
            raise TypeError(f"{name} must be a number or an array, got the callable {value!r}: {hint}")


def _check_flags(**flags: Any) -> None:
    hints = {
        "momentum": "momentum=True solves for μ_k at every step (§7); for a fixed momentum chain "
                    "gc.kfac_precondition with gc.scale_by_momentum(μ)",
        "adapt_damping": "True adapts λ by Levenberg–Marquardt (§6.5); False keeps initial_damping",
    }
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}: {hints[name]}")


def _check_inside_clip_range(initial_damping: Any, low: float, high: float) -> None:
    """With adaptation, λ_0 must lie in the range the adapted λ is clipped to (concrete values)."""
    value = hyper.unwrap(initial_damping)
    if isinstance(value, Tracer):
        return
    array = np.asarray(value)  # NumPy: no JAX operation, so no tracer inside a jit-ted caller
    if np.any(array < low) or np.any(array > high):
        raise ValueError(
            f"initial_damping must be in [min_damping, max_damping] = [{low:g}, {high:g}] when "
            f"adapt_damping=True (the adapted λ is clipped to that range), got {value!r}; "
            "widen the range or pass adapt_damping=False"
        )
