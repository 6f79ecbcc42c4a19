"""The line-search iteration shared by ``minimize`` and ``lbfgs_transform``.

A *method* (:class:`Method`) turns the current point and gradient into a search direction and
learns from each step ``s = x_{k+1} - x_k``, ``y = ∇f_{k+1} - ∇f_k``.  One iteration is

    d      = method.direction(state, x, g)              (quasi-)Newton direction
    α      = line search on φ(α) = f(x + α d)           strong Wolfe or Armijo
    x, g   = x + α d, ∇f(x + α d)
    state  = method.update(state, s, y, moved)

Its failure rule is the fix for the float32 trap of DESIGN.md: when the line search finds no
decrease at all (``moved`` false), the method resets its curvature model so that the next
direction is steepest descent; when that fails too (``fresh`` was already set), the iteration
reports ``give_up`` and the caller stops with "line search failed" instead of spinning to its
iteration cap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from gradchain.second_order import linesearch as ls_lib


class Method(Protocol):
    """What ``minimize`` needs from a method (see :class:`~gradchain.second_order.lbfgs.LBFGSMethod`).

    Methods are frozen dataclasses: hashable, so ``minimize`` can use them as static arguments
    of its compiled program (the same configuration reuses the same program).
    """

    @property
    def name(self) -> str: ...

    @property
    def starts_fresh(self) -> bool:
        """Is the first direction steepest descent (no curvature known yet)?"""
        ...

    @property
    def default_linesearch(self) -> str: ...

    def init(self, x: jax.Array, g: jax.Array) -> Any: ...

    def direction(self, state: Any, x: jax.Array, g: jax.Array, objective: Callable) -> tuple[jax.Array, jax.Array, Any, jax.Array]:
        """Return ``(d, init_step, state, nhev)``: direction, first trial step, Hessian uses."""
        ...

    def update(self, state: Any, s: jax.Array, y: jax.Array, moved: jax.Array) -> Any:
        """Learn from the step ``s``, ``y`` when ``moved``; otherwise reset the curvature model
        so that the next direction is steepest descent."""
        ...


def steepest_descent_step(g: jax.Array) -> jax.Array:
    """First trial step along ``-g`` when nothing is known about curvature: ``1 / ‖g‖₂``, so the
    first trial moves a unit distance (the choice of L-BFGS-B, Byrd et al. 1995)."""
    return 1.0 / jnp.maximum(jnp.linalg.norm(g), jnp.finfo(g.dtype).tiny)


LINESEARCH_NAMES = {
    "wolfe": ls_lib.StrongWolfe,
    "strong_wolfe": ls_lib.StrongWolfe,
    "backtracking": ls_lib.Backtracking,
    "armijo": ls_lib.Backtracking,
}


def resolve_linesearch(linesearch: Any, method: Method) -> ls_lib.LineSearch:
    if linesearch is None:
        linesearch = method.default_linesearch
    if isinstance(linesearch, str):
        try:
            return LINESEARCH_NAMES[linesearch]()
        except KeyError:
            raise ValueError(
                f"linesearch must be one of {sorted(LINESEARCH_NAMES)} or a configured search such as "
                f"StrongWolfe(c2=0.5) or Backtracking(c1=1e-3), got {linesearch!r}"
            ) from None
    if all(callable(getattr(linesearch, a, None)) for a in ("init", "step")):
        return linesearch
    raise TypeError(
        f"linesearch must be a name or a StrongWolfe/Backtracking object, got {linesearch!r} "
        f"of type {type(linesearch).__name__}"
    )


def safe_direction(g, d, step0):
    """``(d, slope, step0)``, falling back to steepest descent when ``d`` is not downhill.

    A direction that is not downhill (or not finite) can only come from a broken curvature
    model; rather than hand it to the line search, search along ``-g`` from ``1/‖g‖₂``.  A
    finite slope ``gᵀd`` implies a finite ``d`` (an inf or nan entry makes it inf or nan).
    """
    slope = jnp.vdot(g, d)
    bad = ~(jnp.isfinite(slope) & (slope < 0))
    gnorm = jnp.linalg.norm(g)
    d = jnp.where(bad, -g, d)
    slope = jnp.where(bad, -gnorm * gnorm, slope)
    step0 = jnp.where(bad, 1.0 / jnp.maximum(gnorm, jnp.finfo(g.dtype).tiny), step0)
    return d, slope, step0.astype(g.dtype)


class StepResult(NamedTuple):
    x: jax.Array
    value: jax.Array
    grad: jax.Array
    state: Any
    fresh: jax.Array  # the next direction is steepest descent (memory was just reset)
    moved: jax.Array  # the line search decreased f
    give_up: jax.Array  # no decrease even along steepest descent
    nfev: jax.Array
    nhev: jax.Array
    ls_status: jax.Array


def iterate(method: Method, linesearch: ls_lib.LineSearch, value_and_grad: Callable, objective: Callable,
            x, f, g, state, fresh) -> StepResult:
    """One whole iteration, its line search in a nested ``while_loop`` (used by the transform).

    ``minimize`` runs the same iteration, but interleaved with its own loop (one evaluation per
    loop iteration) so that the objective appears once in its compiled program.
    """
    d, step0, state, nhev = method.direction(state, x, g, objective)
    d, slope, step0 = safe_direction(g, d, step0)
    res = ls_lib.search(linesearch, value_and_grad, x, d, f, g, init_step=step0, slope=slope)
    moved = (res.step > 0) & (res.value < f)
    x_new = jnp.where(moved, x + res.step * d, x)
    f_new = jnp.where(moved, res.value, f)
    g_new = jnp.where(moved, res.grad, g)
    state = method.update(state, x_new - x, g_new - g, moved)
    give_up = ~moved & fresh
    return StepResult(x_new, f_new, g_new, state, ~moved, moved, give_up, res.nfev, nhev, res.status)
