"""Limited-memory BFGS (Nocedal 1980; Liu & Nocedal 1989; N&W §7.2).

L-BFGS never forms the n×n inverse Hessian.  It keeps the last ``m`` pairs

    s_i = x_{i+1} - x_i,   y_i = ∇f_{i+1} - ∇f_i,   ρ_i = 1 / (y_iᵀ s_i)

and applies the BFGS inverse-Hessian approximation ``H_k`` to the gradient with the *two-loop
recursion* (N&W Algorithm 7.4), ``O(m n)`` work::

    q = ∇f_k
    for i = k-1, ..., k-m:   α_i = ρ_i s_iᵀ q;   q = q - α_i y_i
    r = γ_k q                       with γ_k = s_{k-1}ᵀ y_{k-1} / y_{k-1}ᵀ y_{k-1}   (N&W 7.20)
    for i = k-m, ..., k-1:   β = ρ_i y_iᵀ r;    r = r + s_i (α_i - β)
    d_k = -r

A pair with ``sᵀy ≤ ε yᵀy`` (ε the machine epsilon) would make ``H_k`` indefinite; it is skipped
(L-BFGS-B skips it too; here it also drops the oldest pair, see :meth:`LBFGSMethod.update`).
With no pair stored the direction is ``-∇f`` and the first trial step is ``1/‖∇f‖₂``, as in
L-BFGS-B; otherwise the first trial step is 1.

The recursion is evaluated from Gram matrices kept up to date as pairs arrive (see
:func:`two_loop`): the same numbers, but one ``(2m × n)`` matrix-vector product and one
combination of rows per iteration instead of ``4m`` dot products and axpys — fewer compiled
kernels (compile time) and fewer passes over memory (run time).

Two ways to use it:

* ``minimize(fun, x0, method="lbfgs")`` (or ``method=lbfgs(memory_size=20)``): the whole run in
  one compiled ``while_loop``;
* ``lbfgs_transform(fun)``: the same iteration as a :class:`~gradchain.GradientTransformation`
  for a loop you write yourself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from gradchain.core import GradientTransformation
from gradchain.second_order._common import check_fun, check_positive, flat_objective, float_leaves_dtype, inf_norm
from gradchain.second_order._step import iterate, resolve_linesearch, steepest_descent_step
from gradchain.second_order.linesearch import Backtracking, StrongWolfe

__all__ = ["LBFGSState", "LBFGSMethod", "lbfgs", "LBFGSTransformState", "lbfgs_transform"]


class LBFGSState(NamedTuple):
    """The curvature memory: a circular buffer of the last ``m`` pairs.

    ``w`` stacks ``S`` (rows ``0..m-1``) over ``Y`` (rows ``m..2m-1``); slot ``head`` holds the
    oldest pair and is written next.  ``sy[i, j] = s_iᵀ y_j`` and ``yy[i, j] = y_iᵀ y_j``
    (slot indices) are kept up to date as pairs arrive, so the recursion never touches ``w``
    beyond two matrix-vector products.  A slot with ``rho = 0`` (empty, a skipped pair, or
    everything after a reset) is an exact no-op in the recursion, whatever its rows hold.
    """

    w: jax.Array  # (2m, n): [S; Y]
    sy: jax.Array  # (m, m)
    yy: jax.Array  # (m, m)
    rho: jax.Array  # (m,) 1 / s_iᵀ y_i, 0 marks an unused slot
    gamma: jax.Array  # initial scaling γ = sᵀy / yᵀy of the newest kept pair (1 when empty)
    head: jax.Array  # int32 slot of the oldest pair, written next


@dataclasses.dataclass(frozen=True)
class LBFGSMethod:
    """L-BFGS as a method of :func:`gradchain.second_order.minimize`; build it with :func:`lbfgs`."""

    memory_size: int = 10
    name: str = "lbfgs"
    starts_fresh: bool = True
    default_linesearch: str = "wolfe"

    def init(self, x, g):
        del g
        m, n = self.memory_size, x.shape[0]
        return LBFGSState(
            w=jnp.zeros((2 * m, n), x.dtype),
            sy=jnp.zeros((m, m), x.dtype),
            yy=jnp.zeros((m, m), x.dtype),
            rho=jnp.zeros((m,), x.dtype),
            gamma=jnp.ones((), x.dtype),
            head=jnp.zeros((), jnp.int32),
        )

    def direction(self, state, x, g, objective):
        del x, objective
        r = two_loop(state, g)
        step0 = jnp.where(jnp.any(state.rho != 0), jnp.ones((), g.dtype), steepest_descent_step(g))
        return -r, step0.astype(g.dtype), state, jnp.zeros((), jnp.int32)

    def update(self, state, s, y, moved):
        """Store the pair ``(s, y)``; forget all pairs when not ``moved`` (a reset).

        A pair with ``sᵀy ≤ ε yᵀy`` (it would make ``H`` indefinite) is stored with ``ρ = 0``,
        i.e. skipped; unlike L-BFGS-B, the oldest pair is then dropped as well.  That keeps
        one code path (and few compiled kernels); the Wolfe line search makes such pairs rare.
        """
        m = self.memory_size
        dtype = s.dtype
        h = state.head
        w = state.w.at[h].set(s).at[m + h].set(y)
        ws, wy = w @ s, w @ y  # [S s; Y s] and [S y; Y y], slot order, the new pair included
        sy_new, yy_new = ws[m + h], wy[m + h]  # sᵀy, yᵀy
        keep = moved & (sy_new > jnp.finfo(dtype).eps * yy_new)
        # Row and column h of the Gram matrices, written with masks: one fused kernel each.
        slots = jnp.arange(m)
        row, col = slots[:, None] == h, slots[None, :] == h
        sy = jnp.where(row, ws[None, m:], jnp.where(col, wy[:m, None], state.sy))
        yy = jnp.where(row, wy[None, m:], jnp.where(col, wy[m:, None], state.yy))
        rho = jnp.where(slots == h, jnp.where(keep, 1.0 / sy_new, 0.0), state.rho)
        gamma = jnp.where(keep, sy_new / yy_new, state.gamma)
        return LBFGSState(
            w=w,
            sy=sy,
            yy=yy,
            rho=jnp.where(moved, rho, 0.0).astype(dtype),
            gamma=jnp.where(moved, gamma, 1.0).astype(dtype),
            head=(h + 1) % m,
        )


def two_loop(state: LBFGSState, g: jax.Array) -> jax.Array:
    """``H_k g`` by the two-loop recursion (N&W Algorithm 7.4), from Gram matrices.

    The textbook loops (newest pair first, then oldest first)::

        q = g;        α_i = ρ_i s_iᵀ q,      q -= α_i y_i
        r = γ q;      β_i = ρ_i y_iᵀ r,      r += s_i (α_i - β_i)

    only need dot products of ``g`` and of the pairs with each other.  Since
    ``q = g - Σ_{j newer} α_j y_j`` and ``r = γ (g - Yᵀα) + Σ_{j older} s_j (α_j - β_j)``:

        α_i = ρ_i (s_iᵀg - Σ_{j newer than i} (s_iᵀy_j) α_j)
        β_i = ρ_i (γ (y_iᵀg - Σ_j (y_iᵀy_j) α_j) + Σ_{j older than i} (s_jᵀy_i)(α_j - β_j))
        H_k g = γ (g - Yᵀ α) + Sᵀ (α - β)

    so the ``O(n)`` work is one ``(2m × n)`` matrix-vector product (``Sg``, ``Yg``) and one
    combination of the ``2m`` rows, instead of ``4m`` dot products and axpys.  The scalar
    recursions run over slots in chronological order; entries of ``α`` and ``α - β`` not yet
    computed are still 0, which restricts each sum to newer (older) pairs without a mask.
    """
    m = state.rho.shape[0]
    wg = state.w @ g
    sg, yg = wg[:m], wg[m:]
    rho, gamma, sy = state.rho, state.gamma, state.sy

    def newest_first(k, alpha):
        i = (state.head - 1 - k) % m
        return alpha.at[i].set(rho[i] * (sg[i] - sy[i] @ alpha))

    alpha = jax.lax.fori_loop(0, m, newest_first, jnp.zeros((m,), g.dtype))
    base = gamma * (yg - state.yy @ alpha)

    def oldest_first(k, diff):  # diff = α - β, filled oldest first
        i = (state.head + k) % m
        beta = rho[i] * (base[i] + sy[:, i] @ diff)
        return diff.at[i].set(alpha[i] - beta)

    diff = jax.lax.fori_loop(0, m, oldest_first, jnp.zeros((m,), g.dtype))
    coef = jnp.concatenate([diff, -gamma * alpha])
    return gamma * g + coef @ state.w


def lbfgs(memory_size: int = 10) -> LBFGSMethod:
    """L-BFGS with ``memory_size`` curvature pairs, for ``minimize(..., method=lbfgs(...))``.

    See the module docstring for the formulas (N&W Algorithm 7.4 and eq. 7.20).

    Args:
      memory_size: the number of curvature pairs kept, a positive int.

    Returns:
      An :class:`LBFGSMethod` (hashable: the same configuration reuses the compiled program).
    """
    return LBFGSMethod(memory_size=check_positive("memory_size", memory_size, integer=True))


# --------------------------------------------------------------------------------------------
# The same iteration as a GradientTransformation.


class LBFGSTransformState(NamedTuple):
    """State of :func:`lbfgs_transform`.

    ``x``, ``value``, ``grad`` are the point the last update moved to (flat) and ``f``, ``∇f``
    there, as computed by its line search; ``grad_norm`` is ``‖grad‖_∞``, so a loop can stop on
    ``state.grad_norm <= tol``.  ``stalled`` is set when the last update found no decrease,
    not even along steepest descent after resetting the memory (its updates are zero): a
    deterministic loop should stop there; with mini-batches the next batch may move again.
    ``nfev`` counts evaluations of ``fun`` (value and gradient) made by the transformation.
    """

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    x: jax.Array
    value: jax.Array
    grad: jax.Array
    grad_norm: jax.Array
    valid: jax.Array  # whether x/value/grad hold an evaluated point yet
    memory: LBFGSState
    fresh: jax.Array
    stalled: jax.Array
    nfev: jax.Array


def lbfgs_transform(
    fun: Callable[..., jax.Array],
    memory_size: int = 10,
    *,
    linesearch: str | StrongWolfe | Backtracking = "wolfe",
) -> GradientTransformation:
    """L-BFGS with a strong-Wolfe line search as a ``GradientTransformation``.

    The objective is given once, at construction, so that the line search can evaluate trial
    points; ``update`` then needs nothing beyond the usual ``(updates, state, params)``::

        tx = lbfgs_transform(loss)                 # loss(params) -> scalar
        state = tx.init(params)
        step = jax.jit(tx.update)
        for _ in range(100):
            updates, state = step(None, state, params)   # or step(grads, state, params)
            params = gradchain.apply_updates(params, updates)
            if state.grad_norm <= 1e-6 or state.stalled:
                break

    ``updates`` is the gradient of ``fun`` at ``params``, or ``None``.  The transformation needs
    ``f`` and ``∇f`` at ``params``: when ``params`` is exactly the point its previous update moved
    to it reuses the value and gradient its line search computed there (no evaluation at all,
    which is why passing ``None`` costs nothing); otherwise it evaluates ``fun`` at ``params``
    (only the value when a gradient was passed).  The returned updates are ``α d``, the accepted
    line-search step, so ``apply_updates(params, updates)`` lands on the cached point.

    Data that changes between steps may be passed as ``update(..., args=(batch,))`` and reaches
    ``fun(params, *args)``; the cache is then not used, since the objective itself changed.
    Capture fixed data in ``fun`` instead to keep one evaluation per line-search trial.

    Put it first in a :func:`~gradchain.chain`: it needs the raw gradient, not a transformed one.
    ``memory_size`` and the failure rule (reset to steepest descent once, then report
    ``stalled``) are those of ``minimize(method="lbfgs")``.
    """
    check_fun(fun)
    method = lbfgs(memory_size)
    ls = resolve_linesearch(linesearch, method)

    def init(params):
        float_leaves_dtype(params, "params")
        x, _ = ravel_pytree(params)
        return LBFGSTransformState(
            count=jnp.zeros((), jnp.int32),
            x=x,
            value=jnp.asarray(jnp.nan, x.dtype),
            grad=jnp.zeros_like(x),
            grad_norm=jnp.asarray(jnp.inf, x.dtype),
            valid=jnp.zeros((), bool),
            memory=method.init(x, x),
            fresh=jnp.ones((), bool),
            stalled=jnp.zeros((), bool),
            nfev=jnp.zeros((), jnp.int32),
        )

    def update(updates, state, params=None, *, args=()):
        if params is None:
            raise ValueError("lbfgs_transform needs the current parameters: call update(updates, state, params)")
        if not isinstance(state, LBFGSTransformState):
            raise TypeError(f"state must be an LBFGSTransformState from this transformation's init, got {type(state).__name__}")
        args = tuple(args)
        x, unravel, objective = flat_objective(fun, params, args)
        if x.shape != state.x.shape:
            raise ValueError(f"params have {x.shape[0]} entries but the state was initialised with {state.x.shape[0]}")
        value_and_grad = jax.value_and_grad(objective)
        hit = state.valid & jnp.array_equal(x, state.x) if not args else jnp.zeros((), bool)
        if updates is None:
            f, g = jax.lax.cond(hit, lambda: (state.value, state.grad), lambda: value_and_grad(x))
        else:
            g, _ = ravel_pytree(updates)
            if g.shape != x.shape:
                raise ValueError(f"updates have {g.shape[0]} entries, params have {x.shape[0]}")
            g = g.astype(x.dtype)
            f = jax.lax.cond(hit, lambda: state.value, lambda: objective(x))
        nfev = state.nfev + jnp.where(hit, 0, 1)
        step = iterate(method, ls, value_and_grad, objective, x, f, g, state.memory, state.fresh)
        delta = step.x - x  # 0 when the line search found no decrease
        new_state = LBFGSTransformState(
            count=state.count + 1,
            x=x + delta,  # exactly what apply_updates computes, so the next call hits the cache
            value=step.value,
            grad=step.grad,
            grad_norm=inf_norm(step.grad),
            valid=jnp.ones((), bool),
            memory=step.state,
            fresh=step.fresh,
            stalled=step.give_up,
            nfev=nfev + step.nfev,
        )
        return unravel(delta), new_state

    return GradientTransformation(init, update)
