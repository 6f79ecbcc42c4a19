"""Full-batch second-order optimisation: line searches, Newton, BFGS, L-BFGS and ``minimize``.

The lecture's advice — "if you can afford to do full batch updates then try out L-BFGS (and
don't forget to disable all sources of noise)" — as pure, jit-compiled JAX:

* :func:`minimize` runs a whole optimisation in one compiled ``jax.lax.while_loop`` on any
  pytree, with ``method="lbfgs"`` (default), ``"bfgs"`` or ``"newton"``;
* :func:`lbfgs_transform` is the same L-BFGS as a ``GradientTransformation`` for a loop of your
  own;
* :func:`strong_wolfe` and :func:`backtracking` are the line searches, usable on their own;
  :class:`StrongWolfe` and :class:`Backtracking` configure them for ``minimize(linesearch=...)``;
* :func:`lbfgs`, :func:`bfgs` and :func:`newton` configure the methods
  (``minimize(f, x0, method=lbfgs(memory_size=20))``).

Reference: J. Nocedal and S. J. Wright, *Numerical Optimization*, 2nd ed., Springer 2006.
"""

from gradchain.second_order.bfgs import BFGSMethod as BFGSMethod, BFGSState as BFGSState, bfgs
from gradchain.second_order.lbfgs import (
    LBFGSMethod as LBFGSMethod,
    LBFGSState as LBFGSState,
    LBFGSTransformState,
    lbfgs,
    lbfgs_transform,
)
from gradchain.second_order.linesearch import (
    LS_MAX_EVALS as LS_MAX_EVALS,
    LS_MAX_STEP as LS_MAX_STEP,
    LS_NOT_DESCENT as LS_NOT_DESCENT,
    LS_ROUNDING as LS_ROUNDING,
    LS_SUCCESS as LS_SUCCESS,
    Backtracking,
    LineSearchResult,
    LineSearchState as LineSearchState,
    StrongWolfe,
    backtracking,
    strong_wolfe,
)
from gradchain.second_order.minimize import (
    CONVERGED as CONVERGED,
    LINESEARCH_FAILED as LINESEARCH_FAILED,
    MAX_ITER as MAX_ITER,
    NONFINITE as NONFINITE,
    SMALL_DECREASE as SMALL_DECREASE,
    STATUS_MESSAGES,
    MinimizeHistory,
    MinimizeResult,
    minimize,
)
from gradchain.second_order.newton import NewtonMethod as NewtonMethod, NewtonState as NewtonState, newton

# The top-level ``gradchain`` re-exports these; the status and line-search codes and the method
# and state classes stay importable from ``gradchain.second_order``.
__all__ = [
    "Backtracking",
    "LBFGSTransformState",
    "LineSearchResult",
    "MinimizeHistory",
    "MinimizeResult",
    "STATUS_MESSAGES",
    "StrongWolfe",
    "backtracking",
    "bfgs",
    "lbfgs",
    "lbfgs_transform",
    "minimize",
    "newton",
    "strong_wolfe",
]
