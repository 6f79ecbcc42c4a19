"""``minimize``: a full-batch optimisation run as one compiled ``jax.lax.while_loop``.

    result = minimize(fun, x0, method="lbfgs", tol=1e-6)
    result.x, result.fun, result.grad_norm, result.nit, result.nfev, result.success, result.message

``x0`` is any pytree of float32 or float64 arrays; it is ravelled once
(``jax.flatten_util.ravel_pytree``), every iteration works on that flat vector and ``result.x``
comes back with the structure of ``x0``.  The run is ``jit``-compiled (``fun`` and the options
are static, ``x0``, ``args``, ``tol`` and ``max_iter`` are traced, so a new starting point,
new data, a new tolerance or iteration cap reuse the compiled program); ``minimize`` may
itself be called inside ``jit`` or ``vmap``.

Each iteration takes a direction from the method (L-BFGS, BFGS, Newton), runs a line search
along it (strong Wolfe or Armijo backtracking, one evaluation of ``fun`` and its gradient per
trial) and updates the method's curvature model.  When a line search finds no decrease at all,
the model is reset and the next search goes along steepest descent; when that fails too, the run
stops with a reason instead of spinning to ``max_iter``.  The run ends with a ``status``:

======  ====================  =============================================================
code    name                  meaning
======  ====================  =============================================================
0       ``CONVERGED``         ``‖∇f(x)‖ ≤ tol`` (infinity norm by default, as scipy's pgtol)
1       ``MAX_ITER``          ``max_iter`` iterations without converging
2       ``LINESEARCH_FAILED`` no decrease along the method's direction, nor along steepest
                              descent after resetting the curvature memory: typically f
                              cannot decrease measurably any more in its dtype (float32
                              near a minimum), or f is not smooth there
3       ``NONFINITE``         ``f(x0)`` or ``∇f(x0)`` is inf or nan
4       ``SMALL_DECREASE``    with ``ftol``: an iteration decreased f by at most
                              ``ftol · max(|f_k|, |f_k+1|, 1)`` (scipy's ftol; a success)
======  ====================  =============================================================
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from gradchain.second_order._common import check_fun, check_positive, flat_objective
from gradchain.second_order._step import Method, resolve_linesearch, safe_direction
from gradchain.second_order.bfgs import BFGSMethod, bfgs
from gradchain.second_order.lbfgs import LBFGSMethod, lbfgs
from gradchain.second_order.linesearch import Backtracking, StrongWolfe
from gradchain.second_order.newton import NewtonMethod, newton

__all__ = [
    "MinimizeResult",
    "MinimizeHistory",
    "minimize",
    "CONVERGED",
    "MAX_ITER",
    "LINESEARCH_FAILED",
    "NONFINITE",
    "SMALL_DECREASE",
    "STATUS_MESSAGES",
]

RUNNING = -1
CONVERGED = 0
MAX_ITER = 1
LINESEARCH_FAILED = 2
NONFINITE = 3
SMALL_DECREASE = 4

STATUS_MESSAGES = {
    CONVERGED: "converged: the gradient norm is at most tol",
    MAX_ITER: "stopped: reached max_iter iterations before the gradient norm reached tol",
    LINESEARCH_FAILED: (
        "stopped: line search failed — no decrease along the search direction, nor along steepest "
        "descent after resetting the curvature memory (usually f cannot decrease measurably any "
        "more in its dtype: x is as good as this precision allows; use float64 or a larger tol)"
    ),
    NONFINITE: "stopped: fun or its gradient is not finite (inf or nan) at x0",
    SMALL_DECREASE: (
        "converged: the relative decrease of f, (f_k - f_k+1) / max(|f_k|, |f_k+1|, 1), is at "
        "most ftol (scipy's ftol)"
    ),
}

METHODS = {"lbfgs": lbfgs, "l-bfgs": lbfgs, "bfgs": bfgs, "newton": newton}


class MinimizeHistory(NamedTuple):
    """Per-iteration record (``minimize(..., history=True)``): entry ``k`` is after ``k``
    iterations (entry 0 is ``x0``); entries after ``nit`` are NaN (``nfev``: -1)."""

    fun: jax.Array
    grad_norm: jax.Array
    nfev: jax.Array


class MinimizeResult(NamedTuple):
    """The outcome of :func:`minimize`.

    ``x`` has the structure of ``x0``; ``fun`` and ``grad`` (flat, ravelled like ``x0``) are
    ``f`` and ``∇f`` at ``x``; ``grad_norm`` is the norm the stopping test used; ``nit`` counts
    iterations, ``nfev`` evaluations of ``fun`` with its gradient (the start point included),
    ``nhev`` Hessians or Hessian-vector products (Newton); ``status`` is one of the codes of
    :data:`STATUS_MESSAGES` and ``success`` is ``status`` in (``CONVERGED``, ``SMALL_DECREASE``).  ``message`` turns the
    status into text.  All fields are arrays, so the result passes through ``jit`` and ``vmap``.
    """

    x: Any
    fun: jax.Array
    grad: jax.Array
    grad_norm: jax.Array
    nit: jax.Array
    nfev: jax.Array
    nhev: jax.Array
    status: jax.Array
    success: jax.Array
    history: MinimizeHistory | None = None

    @property
    def message(self) -> str | list[str]:
        if isinstance(self.status, Tracer):
            raise TypeError("message needs a concrete status: read it outside jit (or return result.status)")
        codes = np.asarray(self.status)
        if codes.ndim == 0:
            return STATUS_MESSAGES[int(codes)]
        return [STATUS_MESSAGES[int(c)] for c in codes.ravel()]


def _resolve_method(method: Any, options: dict | None) -> Method:
    if isinstance(method, str):
        key = method.lower()
        if key not in METHODS:
            raise ValueError(f"method must be one of {sorted(set(METHODS) - {'l-bfgs'})} or a method object "
                             f"(lbfgs(...), bfgs(), newton(...)), got {method!r}")
        try:
            return METHODS[key](**(options or {}))
        except TypeError as err:
            raise TypeError(f"options {options!r} do not fit method {method!r}: {err}") from err
    if isinstance(method, (LBFGSMethod, BFGSMethod, NewtonMethod)) or all(
        hasattr(method, a) for a in ("init", "direction", "update", "starts_fresh", "default_linesearch")
    ):
        if options:
            raise ValueError(f"options are for a method given by name; {method!r} is already configured")
        return method
    raise TypeError(f"method must be a name ('lbfgs', 'bfgs', 'newton') or a method object, got {method!r}")


def _check_norm(norm):
    if norm in ("inf", math.inf, np.inf):
        return math.inf
    if norm in (2, 2.0, "2"):
        return 2
    raise ValueError(f"norm must be 'inf' (the default, as scipy's pgtol) or 2, got {norm!r}")


def minimize(
    fun: Callable[..., jax.Array],
    x0: Any,
    method: str | Method = "lbfgs",
    *,
    args: tuple = (),
    tol: float | jax.Array = 1e-6,
    ftol: float | jax.Array | None = None,
    max_iter: int = 1000,
    norm: str | float = "inf",
    linesearch: str | StrongWolfe | Backtracking | None = None,
    options: dict | None = None,
    history: bool = False,
) -> MinimizeResult:
    """Minimise ``fun(x, *args)`` from ``x0``; the whole run is one compiled ``while_loop``.

    Args:
      fun: ``fun(x, *args) -> scalar`` of the dtype of ``x0``, differentiable with JAX.
      x0: a pytree of float32 or float64 arrays (all leaves of one dtype).
      method: ``"lbfgs"`` (default, memory 10), ``"bfgs"``, ``"newton"``, or a configured method
        object: ``lbfgs(memory_size=20)``, ``bfgs()``, ``newton(solver="cg")``.
      args: extra arguments of ``fun`` (e.g. data), traced: new data does not recompile.
      tol: stop when ``‖∇f(x)‖ ≤ tol`` (> 0).
      ftol: also stop (``status`` ``SMALL_DECREASE``, a success) when an iteration decreases
        ``f`` by at most ``ftol · max(|f_k|, |f_k+1|, 1)``: scipy's ``ftol`` of L-BFGS-B
        (its default is ``2.2e-9``).  ``None`` (default): only the gradient test.
      max_iter: at most this many iterations (a positive int).
      norm: the gradient norm of the stopping test: ``"inf"`` (max ``|∂f/∂x_i|``, as scipy's
        ``pgtol`` in L-BFGS-B) or ``2`` (Euclidean, as ``optax.tree_l2_norm``).
      linesearch: ``"wolfe"`` (strong Wolfe, default for L-BFGS and BFGS), ``"backtracking"``
        (Armijo, default for Newton), or a configured search: ``StrongWolfe(c1=1e-4, c2=0.9,
        max_evals=20)``, ``Backtracking(c1=1e-4, max_evals=20)``.
      options: keyword arguments of the method named by ``method``
        (``minimize(f, x0, "lbfgs", options={"memory_size": 20})``).
      history: also return ``result.history`` (:class:`MinimizeHistory`, ``max_iter + 1`` entries).

    Returns:
      A :class:`MinimizeResult` (``x``, ``fun``, ``grad_norm``, ``nit``, ``nfev``, ``success``,
      ``status``, ``message`` ...).  A failure is reported, never hidden: ``success`` is false and
      ``message`` says why (iteration cap, line search failure, non-finite start).

    Raises:
      TypeError / ValueError at trace time, naming the argument: ``fun`` not returning a real
      scalar of ``x0``'s dtype, non-float or mixed-dtype ``x0``, an unknown ``method`` or
      ``linesearch``, a non-positive ``tol``/``max_iter``/``memory_size``.
    """
    check_fun(fun)
    method = _resolve_method(method, options)
    ls = resolve_linesearch(linesearch, method)
    check_positive("tol", tol)
    if ftol is not None:
        check_positive("ftol", ftol)
    max_iter = check_positive("max_iter", max_iter, integer=True)
    norm = _check_norm(norm)
    if not isinstance(args, tuple):
        raise TypeError(f"args must be a tuple of extra arguments of fun, got {type(args).__name__}")
    if not isinstance(history, bool):
        raise TypeError(f"history must be a bool, got {history!r}")
    # max_iter is a traced input (a new cap reuses the compiled program) unless it sizes the
    # history arrays.
    hist_len = max_iter + 1 if history else 0
    ftol_value = 0.0 if ftol is None else ftol
    return _run(fun, method, ls, norm, hist_len, x0, args, tol, ftol_value, jnp.asarray(max_iter, jnp.int32))


class _Loop(NamedTuple):
    x: jax.Array  # the current iterate (flat)
    f: jax.Array
    g: jax.Array
    gnorm: jax.Array  # ‖g‖ in the norm of the stopping test
    d: jax.Array  # the next search direction from x
    slope: jax.Array  # gᵀd
    step0: jax.Array  # the first trial step along d
    state: Any  # the method's curvature model
    fresh: jax.Array  # d is steepest descent after a reset (or the very first direction)
    started: jax.Array  # False until f(x0) has been evaluated
    nit: jax.Array
    nfev: jax.Array
    nhev: jax.Array
    status: jax.Array
    hist: MinimizeHistory | None


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _run(fun, method, linesearch, norm, hist_len, x0, args, tol, ftol, max_iter):
    """The whole run: a ``while_loop`` over iterations, each a line search (an inner
    ``while_loop``, one evaluation per trial) followed by the method's update.

    ``fun`` appears once in the compiled program, inside the line search: the first outer
    iteration evaluates ``x0`` itself, as a search along the zero direction from a dummy start
    (value = the largest float, slope = -1), which accepts its first trial at once.  That
    halves the compile time of ``fun`` (two copies otherwise) and keeps one code path.
    """
    x, unravel, objective = flat_objective(fun, x0, args)
    dtype = x.dtype
    tol = jnp.asarray(tol, dtype)
    ftol = jnp.asarray(ftol, dtype)
    value_and_grad = jax.value_and_grad(objective)
    gnorm_of = (lambda g: jnp.max(jnp.abs(g))) if norm == math.inf else jnp.linalg.norm
    zeros = jnp.zeros_like(x)
    izero = jnp.zeros((), jnp.int32)

    hist = None
    if hist_len:
        hist = MinimizeHistory(
            fun=jnp.full((hist_len,), jnp.nan, dtype),
            grad_norm=jnp.full((hist_len,), jnp.nan, dtype),
            nfev=jnp.full((hist_len,), -1, jnp.int32),
        )
    init = _Loop(
        x=x, f=jnp.asarray(jnp.finfo(dtype).max, dtype), g=zeros, gnorm=jnp.full((), jnp.nan, dtype),
        d=zeros, slope=-jnp.ones((), dtype), step0=jnp.ones((), dtype),
        state=method.init(x, zeros), fresh=jnp.asarray(method.starts_fresh), started=jnp.zeros((), bool),
        nit=izero, nfev=izero, nhev=izero, status=jnp.asarray(RUNNING, jnp.int32), hist=hist,
    )

    def body(s: _Loop) -> _Loop:
        started = s.started
        # The line search along d; on the first pass a single evaluation, at x0.
        limit = jnp.where(started, jnp.iinfo(jnp.int32).max, 1)

        def trial(ls):
            f, g = value_and_grad(s.x + ls.step * s.d)
            return linesearch.step(ls, f, g, jnp.vdot(g, s.d))

        ls = jax.lax.while_loop(
            lambda ls: ~ls.done & (ls.nfev < limit), trial, linesearch.init(s.f, s.g, s.slope, s.step0)
        )
        found = ls.lo > 0  # a step that decreased f (on the first pass: f(x0) is finite)
        moved = started & found & (ls.f_lo < s.f)
        x_new = jnp.where(moved, s.x + ls.lo * s.d, s.x)
        f_new = jnp.where(started, jnp.where(moved, ls.f_lo, s.f), jnp.where(found, ls.f_lo, jnp.nan))
        g_new = jnp.where(started & ~moved, s.g, ls.g_lo)
        # The first pass counts as a zero step that keeps the initial curvature model.
        y = jnp.where(moved, g_new - s.g, 0.0)
        state = method.update(s.state, x_new - s.x, y, moved | ~started)
        give_up = started & ~moved & s.fresh
        fresh = jnp.where(started, ~moved, method.starts_fresh)
        nit = s.nit + started.astype(jnp.int32)
        gnorm = gnorm_of(g_new)
        status = jnp.where(
            ~started,
            jnp.where(~found, NONFINITE, jnp.where(gnorm <= tol, CONVERGED, RUNNING)),
            jnp.where(
                moved & (gnorm <= tol),
                CONVERGED,
                jnp.where(
                    moved & (s.f - f_new <= ftol * jnp.maximum(jnp.maximum(jnp.abs(s.f), jnp.abs(f_new)), 1)),
                    SMALL_DECREASE,
                    jnp.where(give_up, LINESEARCH_FAILED, jnp.where(nit >= max_iter, MAX_ITER, RUNNING)),
                ),
            ),
        ).astype(jnp.int32)
        d, step0, state, nhev = method.direction(state, x_new, g_new, objective)
        d, slope, step0 = safe_direction(g_new, d, step0)
        nfev = s.nfev + ls.nfev
        hist = s.hist
        if hist is not None:
            hist = MinimizeHistory(hist.fun.at[nit].set(f_new), hist.grad_norm.at[nit].set(gnorm), hist.nfev.at[nit].set(nfev))
        return _Loop(x_new, f_new, g_new, gnorm, d, slope, step0, state, fresh, jnp.ones((), bool),
                     nit, nfev, s.nhev + jnp.where(status == RUNNING, nhev, 0), status, hist)

    s = jax.lax.while_loop(lambda s: s.status == RUNNING, body, init)
    return MinimizeResult(
        x=unravel(s.x),
        fun=s.f,
        grad=s.g,
        grad_norm=s.gnorm,
        nit=s.nit,
        nfev=s.nfev,
        nhev=s.nhev,
        status=s.status,
        success=(s.status == CONVERGED) | (s.status == SMALL_DECREASE),
        history=s.hist,
    )
