"""Line searches as pure, jit-compatible functions (Nocedal & Wright, *Numerical Optimization*,
2nd ed., 2006, chapter 3).

Given a point ``x``, a descent direction ``d`` and the one-dimensional restriction

    φ(α) = f(x + α d),        φ'(α) = ∇f(x + α d)ᵀ d,

a line search picks a step ``α > 0``.  Both searches here evaluate ``value_and_grad`` (value and
gradient together, one *evaluation*) at every trial step, so the gradient at the accepted point
comes for free and every trial contributes a slope to the interpolation.

* :func:`backtracking` — the Armijo (sufficient decrease) condition

      φ(α) ≤ φ(0) + c1 α φ'(0)                                                    (N&W 3.4)

  from ``init_step``, shrinking to the minimiser of the cubic through
  ``φ(0), φ'(0), φ(α), φ'(α)`` safeguarded into ``[0.1 α, 0.5 α]`` (N&W §3.5).

* :func:`strong_wolfe` — the strong Wolfe conditions

      φ(α) ≤ φ(0) + c1 α φ'(0)   and   |φ'(α)| ≤ c2 |φ'(0)|,   0 < c1 < c2 < 1     (N&W 3.7)

  by N&W Algorithm 3.5 (bracketing: grow the step until an interval is known to contain an
  acceptable one) and Algorithm 3.6 (zoom: shrink the interval ``[α_lo, α_hi]`` by safeguarded
  cubic interpolation, N&W eq. 3.59).

Each search is a small state machine — ``init`` and one ``step`` per evaluation, pure functions
of a :class:`LineSearchState` — configured by a frozen, hashable object (:class:`StrongWolfe`,
:class:`Backtracking`).  The functions :func:`strong_wolfe` and :func:`backtracking` run one
search in a ``jax.lax.while_loop``; :func:`~gradchain.second_order.minimize` instead drives the
same ``step`` from its own loop, one evaluation per iteration, so that the objective appears
once in the compiled program.

Trials where ``f`` or ``∇f`` is not finite count as "too long" and are shrunk away from.  Every
accepted step strictly decreases ``f``: in floating point the Armijo term ``c1 α φ'(0)`` can
round away, and accepting ``φ(α) == φ(0)`` would let a solver loop without progress.  When a
search cannot satisfy its conditions within ``max_evals`` evaluations it returns the best point
that satisfied sufficient decrease (``step > 0``, ``success`` false), or ``step == 0`` with the
starting value and gradient when no trial decreased ``f`` at all; the caller decides what to do
(``minimize`` resets its curvature memory once, then stops with a reason).

``x``, ``direction`` and ``grad`` are arrays of one shape (ravel a pytree with
``jax.flatten_util.ravel_pytree``); ``value_and_grad(x) -> (f, g)`` may close over data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradchain.second_order._common import check_positive, cubic_minimizer

__all__ = [
    "Backtracking",
    "LineSearchResult",
    "LineSearchState",
    "StrongWolfe",
    "backtracking",
    "strong_wolfe",
    "LS_SUCCESS",
    "LS_MAX_EVALS",
    "LS_NOT_DESCENT",
    "LS_ROUNDING",
    "LS_MAX_STEP",
]

LS_RUNNING = -1
LS_SUCCESS = 0  #: the conditions hold at ``step``
LS_MAX_EVALS = 1  #: ``max_evals`` trials without satisfying them
LS_NOT_DESCENT = 2  #: ``φ'(0) >= 0`` or not finite: ``direction`` does not go downhill
LS_ROUNDING = 3  #: the bracket shrank to the rounding level of the step
LS_MAX_STEP = 4  #: still descending steeply at ``max_step`` (f may be unbounded below)

LS_MESSAGES = {
    LS_SUCCESS: "conditions satisfied",
    LS_MAX_EVALS: "no acceptable step within max_evals evaluations",
    LS_NOT_DESCENT: "the direction is not a descent direction",
    LS_ROUNDING: "the bracketing interval shrank to rounding error",
    LS_MAX_STEP: "reached max_step while still decreasing",
}


class LineSearchResult(NamedTuple):
    """What a line search found.

    ``step`` is α (0 when no trial decreased f); ``value`` and ``grad`` are ``f`` and ``∇f`` at
    ``x + step · direction``; ``nfev`` counts calls of ``value_and_grad``; ``status`` is one of
    the ``LS_*`` codes (``LS_SUCCESS`` = 0 means the conditions hold).
    """

    step: jax.Array
    value: jax.Array
    grad: jax.Array
    nfev: jax.Array
    status: jax.Array

    @property
    def success(self) -> jax.Array:
        return self.status == LS_SUCCESS


class LineSearchState(NamedTuple):
    """The state of a search between two evaluations (both searches use this one type).

    ``step`` is the next trial α.  ``lo``, ``f_lo``, ``d_lo``, ``g_lo``: the best step so far
    that satisfies sufficient decrease (0, φ(0), φ'(0), ∇f(x) at first) — the answer when the
    search stops.  ``hi``, ``f_hi``, ``d_hi``: the other end of the bracket once ``bracketed``.
    """

    step: jax.Array
    f0: jax.Array
    dphi0: jax.Array
    lo: jax.Array
    f_lo: jax.Array
    d_lo: jax.Array
    g_lo: jax.Array
    hi: jax.Array
    f_hi: jax.Array
    d_hi: jax.Array
    bracketed: jax.Array
    nfev: jax.Array
    status: jax.Array

    @property
    def done(self) -> jax.Array:
        return self.status != LS_RUNNING

    def result(self) -> LineSearchResult:
        return LineSearchResult(self.lo, self.f_lo, self.g_lo, self.nfev, self.status)


def _init_state(value, grad, slope, init_step, max_step=None) -> LineSearchState:
    dtype = grad.dtype
    f0 = jnp.asarray(value, dtype)
    dphi0 = jnp.asarray(slope, dtype)
    step = jnp.asarray(init_step, dtype)
    if max_step is not None:
        step = jnp.minimum(step, jnp.asarray(max_step, dtype))
    descent = (dphi0 < 0) & jnp.isfinite(f0)
    zero = jnp.zeros((), dtype)
    nan = jnp.full((), jnp.nan, dtype)
    return LineSearchState(
        step=step, f0=f0, dphi0=dphi0, lo=zero, f_lo=f0, d_lo=dphi0, g_lo=grad,
        hi=zero, f_hi=nan, d_hi=nan, bracketed=jnp.zeros((), bool),
        nfev=jnp.zeros((), jnp.int32),
        status=jnp.where(descent, LS_RUNNING, LS_NOT_DESCENT).astype(jnp.int32),
    )


def _finite(f, dphi):
    # For a finite direction, φ'(α) = gᵀd is finite only if every entry of g is: an inf entry
    # gives ±inf or nan (inf·0), a nan entry gives nan.  So no O(n) check of g is needed.
    return jnp.isfinite(f) & jnp.isfinite(dphi)


@dataclasses.dataclass(frozen=True)
class Backtracking:
    """Armijo backtracking with cubic interpolation (N&W Algorithm 3.1 and §3.5).

    The next trial after a rejected ``α`` is the minimiser of the cubic through
    ``φ(0), φ'(0), φ(α), φ'(α)``, clipped into ``[0.1 α, 0.5 α]`` (halving when the cubic has
    no minimiser or the trial was not finite).
    """

    c1: float = 1e-4
    max_evals: int = 20

    def __post_init__(self):
        check_positive("c1", self.c1, upper=1.0)
        check_positive("max_evals", self.max_evals, integer=True)

    def init(self, value, grad, slope, init_step) -> LineSearchState:
        return _init_state(value, grad, slope, init_step)

    def step(self, s: LineSearchState, f, g, dphi) -> LineSearchState:
        """Take the evaluation ``f, g, dphi`` at the trial ``s.step`` into account."""
        a = s.step
        dtype = s.f0.dtype
        f = jnp.asarray(f, dtype)
        dphi = jnp.asarray(dphi, dtype)
        finite = _finite(f, dphi)
        ok = finite & (f <= s.f0 + self.c1 * a * s.dphi0) & (f < s.f0)
        trial = cubic_minimizer(jnp.zeros_like(a), s.f0, s.dphi0, a, f, dphi)
        nxt = jnp.clip(jnp.where(finite & jnp.isfinite(trial), trial, 0.5 * a), 0.1 * a, 0.5 * a)
        nfev = s.nfev + 1
        status = jnp.where(ok, LS_SUCCESS, jnp.where(nfev >= self.max_evals, LS_MAX_EVALS, LS_RUNNING))
        return s._replace(
            step=jnp.where(ok, a, nxt),
            lo=jnp.where(ok, a, s.lo),
            f_lo=jnp.where(ok, f, s.f_lo),
            d_lo=jnp.where(ok, dphi, s.d_lo),
            g_lo=jnp.where(ok, g, s.g_lo),
            nfev=nfev,
            status=status.astype(jnp.int32),
        )


@dataclasses.dataclass(frozen=True)
class StrongWolfe:
    """The strong Wolfe search of N&W Algorithms 3.5 (bracketing) and 3.6 (zoom).

    One trial per ``step``:

    * *bracketing*: from ``α = init_step``; when a trial fails sufficient decrease (or does not
      decrease ``f`` below the best point ``α_lo``), or has ``φ'(α) ≥ 0``, an interval holding a
      strong-Wolfe step is known and the search zooms.  Otherwise the step grows to the cubic
      extrapolation clipped into ``[α + 1.1 (α - α_prev), α + 4 (α - α_prev)]`` (at most
      ``max_step``).
    * *zoom*: the interval ``[α_lo, α_hi]`` (``α_lo`` the best point satisfying sufficient
      decrease) shrinks to the minimiser of the cubic through both ends' values and slopes
      (N&W eq. 3.59), clipped at least 10% of the width away from either end, or to the
      midpoint when the cubic has none.

    ``c2 = 0.9`` is the usual choice for quasi-Newton directions, ``c2 = 0.1`` for nonlinear
    conjugate gradients (N&W §3.1).
    """

    c1: float = 1e-4
    c2: float = 0.9
    max_evals: int = 20
    max_step: float = 1e10

    def __post_init__(self):
        check_positive("c1", self.c1, upper=1.0)
        check_positive("c2", self.c2, upper=1.0)
        check_positive("max_evals", self.max_evals, integer=True)
        check_positive("max_step", self.max_step)
        if not self.c1 < self.c2:
            raise ValueError(f"strong Wolfe needs 0 < c1 < c2 < 1, got c1={self.c1!r}, c2={self.c2!r}")

    def init(self, value, grad, slope, init_step) -> LineSearchState:
        return _init_state(value, grad, slope, init_step, self.max_step)

    def step(self, s: LineSearchState, f, g, dphi) -> LineSearchState:
        """Take the evaluation ``f, g, dphi`` at the trial ``s.step`` into account."""
        a = s.step
        dtype = s.f0.dtype
        f = jnp.asarray(f, dtype)
        dphi = jnp.asarray(dphi, dtype)
        finite = _finite(f, dphi)
        sufficient = finite & (f <= s.f0 + self.c1 * a * s.dphi0) & (f < s.f_lo)
        curvature = jnp.abs(dphi) <= -self.c2 * s.dphi0
        accept = sufficient & curvature
        # Which end the trial replaces (N&W Alg. 3.5 and 3.6 written as one rule):
        #  not sufficient                          -> α_hi = α            (bracket found / shrunk)
        #  sufficient, φ'(α)(α_hi - α_lo) >= 0      -> α_hi = α_lo, α_lo = α
        #  sufficient otherwise                    -> α_lo = α
        # Before bracketing α_hi is "+∞", so the middle case reads φ'(α) >= 0.
        width_sign = jnp.where(s.bracketed, s.hi - s.lo, 1.0)
        flip = sufficient & ~curvature & (dphi * width_sign >= 0)
        hi = jnp.where(~sufficient, a, jnp.where(flip, s.lo, s.hi))
        f_hi = jnp.where(~sufficient, f, jnp.where(flip, s.f_lo, s.f_hi))
        d_hi = jnp.where(~sufficient, dphi, jnp.where(flip, s.d_lo, s.d_hi))
        lo = jnp.where(sufficient, a, s.lo)
        f_lo = jnp.where(sufficient, f, s.f_lo)
        d_lo = jnp.where(sufficient, dphi, s.d_lo)
        bracketed = s.bracketed | ~sufficient | flip

        # Next trial inside the bracket: safeguarded cubic, else bisection.
        left, right = jnp.minimum(lo, hi), jnp.maximum(lo, hi)
        width = right - left
        cubic = cubic_minimizer(lo, f_lo, d_lo, hi, f_hi, d_hi)
        zoom = jnp.where(
            jnp.isfinite(cubic), jnp.clip(cubic, left + 0.1 * width, right - 0.1 * width), left + 0.5 * width
        )
        # Next trial before bracketing: extrapolate beyond α (the previous α_lo is α_prev).
        grow = a - s.lo
        extra = cubic_minimizer(s.lo, s.f_lo, s.d_lo, a, f, dphi)
        extra = jnp.where(jnp.isfinite(extra), extra, a + 4.0 * grow)
        extra = jnp.minimum(jnp.clip(extra, a + 1.1 * grow, a + 4.0 * grow), self.max_step)

        nfev = s.nfev + 1
        eps = jnp.finfo(dtype).eps
        status = jnp.where(
            accept,
            LS_SUCCESS,
            jnp.where(
                nfev >= self.max_evals,
                LS_MAX_EVALS,
                jnp.where(
                    bracketed & (width <= 2.0 * eps * right),
                    LS_ROUNDING,
                    jnp.where(~bracketed & (a >= self.max_step), LS_MAX_STEP, LS_RUNNING),
                ),
            ),
        )
        return LineSearchState(
            step=jnp.where(bracketed, zoom, extra).astype(dtype),
            f0=s.f0, dphi0=s.dphi0,
            lo=lo, f_lo=f_lo, d_lo=d_lo, g_lo=jnp.where(sufficient, g, s.g_lo),
            hi=hi, f_hi=f_hi, d_hi=d_hi, bracketed=bracketed,
            nfev=nfev, status=status.astype(jnp.int32),
        )


LineSearch = StrongWolfe | Backtracking


def search(
    linesearch: LineSearch,
    value_and_grad: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    x: jax.Array,
    direction: jax.Array,
    value: jax.Array,
    grad: jax.Array,
    *,
    init_step: float | jax.Array = 1.0,
    slope: jax.Array | None = None,
) -> LineSearchResult:
    """Run one line search to its end in a ``jax.lax.while_loop`` (one evaluation per iteration)."""
    check_positive("init_step", init_step)
    x = jnp.asarray(x)
    if slope is None:
        slope = jnp.vdot(grad, direction)
    state = linesearch.init(value, jnp.asarray(grad, x.dtype), slope, init_step)

    def body(s):
        f, g = value_and_grad(x + s.step * direction)
        return linesearch.step(s, f, g, jnp.vdot(g, direction))

    return jax.lax.while_loop(lambda s: ~s.done, body, state).result()


def backtracking(
    value_and_grad: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    x: jax.Array,
    direction: jax.Array,
    value: jax.Array,
    grad: jax.Array,
    *,
    init_step: float | jax.Array = 1.0,
    c1: float = 1e-4,
    max_evals: int = 20,
    slope: jax.Array | None = None,
) -> LineSearchResult:
    """Backtracking line search for the Armijo condition ``φ(α) ≤ φ(0) + c1 α φ'(0)``.

    N&W Algorithm 3.1 with cubic interpolation (see :class:`Backtracking`).

    Args:
      value_and_grad: ``x -> (f(x), ∇f(x))``.
      x, direction, value, grad: the start point, the search direction, ``f(x)`` and ``∇f(x)``.
      init_step: the first trial step (1 for Newton and quasi-Newton directions).
      c1: sufficient-decrease constant in (0, 1).
      max_evals: at most this many evaluations.
      slope: ``φ'(0) = gradᵀ direction`` if the caller has it already (saves a dot product).
    """
    return search(Backtracking(c1, max_evals), value_and_grad, x, direction, value, grad,
                  init_step=init_step, slope=slope)


def strong_wolfe(
    value_and_grad: Callable[[jax.Array], tuple[jax.Array, jax.Array]],
    x: jax.Array,
    direction: jax.Array,
    value: jax.Array,
    grad: jax.Array,
    *,
    init_step: float | jax.Array = 1.0,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_evals: int = 20,
    max_step: float = 1e10,
    slope: jax.Array | None = None,
) -> LineSearchResult:
    """Line search for the strong Wolfe conditions (N&W Algorithms 3.5 and 3.6)::

        φ(α) ≤ φ(0) + c1 α φ'(0)          (sufficient decrease)
        |φ'(α)| ≤ c2 |φ'(0)|              (curvature)

    See :class:`StrongWolfe` for the bracketing and zoom rules.  Arguments as
    :func:`backtracking`, plus ``c2`` in ``(c1, 1)`` and ``max_step``, the largest step tried.
    Returns a :class:`LineSearchResult`; see the module docstring for what a failure returns.
    """
    return search(StrongWolfe(c1, c2, max_evals, max_step), value_and_grad, x, direction, value, grad,
                  init_step=init_step, slope=slope)
