"""Newton's method with a line search (N&W §3.3-3.4 and §7.1).

The lecture's Newton step minimises the second-order Taylor model
``f(x + p) ≈ f(x) + ∇fᵀ p + ½ pᵀ H p``:  ``p = -H⁻¹ ∇f``.  Far from a minimum ``H`` may be
indefinite (a saddle) and ``p`` then points uphill or to the saddle.  Two solvers:

* ``solver="direct"`` (default): the exact Hessian ``H = jax.hessian(f)(x)`` and its
  eigendecomposition ``H = Q Λ Qᵀ``; the step uses ``|H| = Q max(|Λ|, δ) Qᵀ``, the *modified
  eigenvalues* of N&W §3.4 (eq. 3.41 with absolute values, the "saddle-free Newton" of
  Dauphin et al., NIPS 2014):

      p = -Q diag(1 / max(|λ_i|, δ)) Qᵀ ∇f,      δ = √ε · max(1, max_i |λ_i|).

  On a strictly convex problem this is the exact Newton step, so the convergence is quadratic;
  at a saddle the negative-curvature directions are followed downhill instead of uphill.
  ``O(n²)`` memory and ``O(n³)`` work per iteration.

* ``solver="cg"``: line-search Newton-CG (N&W Algorithm 7.1).  ``H p = -∇f`` is solved
  approximately by conjugate gradients with Hessian-vector products
  ``H v = d/dε ∇f(x + ε v)`` (forward-over-reverse ``jax.jvp`` of ``jax.grad``, never forming
  ``H``), stopped when ``‖r‖ ≤ η ‖∇f‖`` with the forcing term ``η = min(0.5, ‖∇f‖)``
  (quadratic convergence, N&W Theorem 7.2) or when a direction of non-positive curvature
  appears (then the iterate so far, or ``-∇f`` on the first CG step, is returned).
  ``O(n)`` memory; each CG iteration costs about two gradient evaluations.

The line search (Armijo backtracking by default) always tries the full step ``α = 1`` first.
``nhev`` in the result counts Hessians (``direct``) or Hessian-vector products (``cg``).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradchain.second_order._common import check_positive
from gradchain.second_order._step import steepest_descent_step

__all__ = ["NewtonState", "NewtonMethod", "newton"]

_SOLVERS = ("direct", "cg")


class NewtonState(NamedTuple):
    steepest: jax.Array  # bool: take one steepest-descent step (set after a failed line search)


@dataclasses.dataclass(frozen=True)
class NewtonMethod:
    """Newton as a method of :func:`gradchain.second_order.minimize`; build it with :func:`newton`."""

    solver: str = "direct"
    max_cg_iter: int | None = None
    name: str = "newton"
    starts_fresh: bool = False
    default_linesearch: str = "backtracking"

    def init(self, x, g):
        del x, g
        return NewtonState(jnp.zeros((), bool))

    def direction(self, state, x, g, objective):
        if self.solver == "direct":
            d, nhev = _direct_step(objective, x, g)
        else:
            d, nhev = _cg_step(objective, x, g, self.max_cg_iter or x.shape[0])
        d = jnp.where(state.steepest, -g, d)
        step0 = jnp.where(state.steepest, steepest_descent_step(g), jnp.ones((), g.dtype))
        return d, step0.astype(g.dtype), state, nhev

    def update(self, state, s, y, moved):
        """No memory: after a failed line search (``not moved``) take one steepest-descent step."""
        del state, s, y
        return NewtonState(~moved)


def _direct_step(objective, x, g):
    h = jax.hessian(objective)(x)
    h = 0.5 * (h + h.T)
    lam, q = jnp.linalg.eigh(h)
    big = jnp.maximum(1.0, jnp.max(jnp.abs(lam)))
    delta = jnp.sqrt(jnp.finfo(x.dtype).eps) * big
    mod = jnp.maximum(jnp.abs(lam), delta)
    d = -(q @ ((q.T @ g) / mod))
    return d, jnp.ones((), jnp.int32)


def _cg_step(objective, x, g, max_iter):
    grad_fn = jax.grad(objective)

    def hvp(v):
        return jax.jvp(grad_fn, (x,), (v,))[1]

    gnorm = jnp.linalg.norm(g)
    tol = jnp.minimum(0.5, gnorm) * gnorm

    class CG(NamedTuple):
        z: jax.Array
        r: jax.Array
        p: jax.Array
        rr: jax.Array
        j: jax.Array
        done: jax.Array
        negative: jax.Array  # stopped on non-positive curvature

    def body(c):
        hp = hvp(c.p)
        curv = jnp.vdot(c.p, hp)
        negative = ~(curv > 0)
        alpha = c.rr / curv
        z = c.z + alpha * c.p
        r = c.r + alpha * hp
        rr = jnp.vdot(r, r)
        converged = jnp.sqrt(rr) <= tol
        p = -r + (rr / c.rr) * c.p
        keep = lambda new, old: jnp.where(negative, old, new)
        return CG(keep(z, c.z), keep(r, c.r), keep(p, c.p), keep(rr, c.rr), c.j + 1,
                  negative | converged | (c.j + 1 >= max_iter), negative)

    init = CG(jnp.zeros_like(g), g, -g, jnp.vdot(g, g), jnp.zeros((), jnp.int32),
              jnp.zeros((), bool), jnp.zeros((), bool))
    c = jax.lax.while_loop(lambda c: ~c.done, body, init)
    # Negative curvature on the very first CG direction: z is still 0, use steepest descent.
    d = jnp.where(c.negative & (c.j == 1), -g, c.z)
    return d, c.j


def newton(solver: str = "direct", *, max_cg_iter: int | None = None) -> NewtonMethod:
    """Newton's method for ``minimize(..., method=newton(...))``; see the module docstring.

    Args:
      solver: ``"direct"`` (exact Hessian, modified eigenvalues) or ``"cg"`` (Newton-CG with
        Hessian-vector products, for problems too large for an n×n matrix).
      max_cg_iter: cap on CG iterations per Newton step (``solver="cg"``; default ``n``).
    """
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}")
    if max_cg_iter is not None:
        check_positive("max_cg_iter", max_cg_iter, integer=True)
        if solver != "cg":
            raise ValueError(f"max_cg_iter only applies to solver='cg', got solver={solver!r}")
    return NewtonMethod(solver=solver, max_cg_iter=max_cg_iter)
