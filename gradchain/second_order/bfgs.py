"""BFGS with a dense inverse-Hessian approximation (N&W §6.1, Algorithm 6.1).

The direction is ``d_k = -H_k ∇f_k``; after each accepted step, with
``s = x_{k+1} - x_k``, ``y = ∇f_{k+1} - ∇f_k`` and ``ρ = 1 / (yᵀ s)``,

    H_{k+1} = (I - ρ s yᵀ) H_k (I - ρ y sᵀ) + ρ s sᵀ                         (N&W 6.17)
            = H_k - ρ (H_k y sᵀ + s yᵀ H_k) + (ρ² yᵀ H_k y + ρ) s sᵀ         (O(n²) form)

``H_0 = I``; before the first update it is rescaled to ``γ I`` with ``γ = sᵀy / yᵀy``
(N&W eq. 6.20), so the first step is scale-free.  The strong-Wolfe line search guarantees
``sᵀy > 0``; a pair with ``sᵀy ≤ ε yᵀy`` is skipped anyway (keeps ``H`` positive definite in
floating point).  Memory and work are ``O(n²)`` per iteration: use :func:`lbfgs` beyond a few
thousand parameters.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradchain.second_order._step import steepest_descent_step

__all__ = ["BFGSState", "BFGSMethod", "bfgs"]


class BFGSState(NamedTuple):
    inv_hessian: jax.Array  # (n, n) H_k
    updated: jax.Array  # bool: has H been updated (and scaled) since the start / last reset?


@dataclasses.dataclass(frozen=True)
class BFGSMethod:
    """BFGS as a method of :func:`gradchain.second_order.minimize`; build it with :func:`bfgs`."""

    name: str = "bfgs"
    starts_fresh: bool = True
    default_linesearch: str = "wolfe"

    def init(self, x, g):
        del g
        return BFGSState(jnp.eye(x.shape[0], dtype=x.dtype), jnp.zeros((), bool))

    def direction(self, state, x, g, objective):
        del x, objective
        d = -(state.inv_hessian @ g)
        step0 = jnp.where(state.updated, jnp.ones((), g.dtype), steepest_descent_step(g))
        return d, step0.astype(g.dtype), state, jnp.zeros((), jnp.int32)

    def update(self, state, s, y, moved):
        """BFGS update (6.17) if ``moved`` and ``sᵀy > ε yᵀy``; back to ``H = I`` if not ``moved``."""
        sy = jnp.vdot(s, y)
        yy = jnp.vdot(y, y)
        keep = moved & (sy > jnp.finfo(s.dtype).eps * yy)
        h = jnp.where(state.updated, state.inv_hessian, (sy / yy) * state.inv_hessian)
        rho = 1.0 / sy
        hy = h @ y
        new_h = h - rho * (jnp.outer(hy, s) + jnp.outer(s, hy)) + (rho * rho * jnp.vdot(y, hy) + rho) * jnp.outer(s, s)
        h = jnp.where(keep, new_h, state.inv_hessian)
        h = jnp.where(moved, h, jnp.eye(h.shape[0], dtype=h.dtype))
        return BFGSState(h, moved & (state.updated | keep))


def bfgs() -> BFGSMethod:
    """Dense BFGS for ``minimize(..., method=bfgs())``; formulas in the module docstring.

    Returns:
      A :class:`BFGSMethod`.
    """
    return BFGSMethod()
