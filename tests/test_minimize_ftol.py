"""``minimize(ftol=...)``: scipy's relative-decrease stop, checked against scipy's L-BFGS-B."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradchain as gc

scipy_optimize = pytest.importorskip("scipy.optimize")

FTOL = 2.220446049250313e-09  # scipy's L-BFGS-B default (factr=1e7 times the float64 epsilon)


def rosen(x):
    return jnp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1 - x[:-1]) ** 2)


def test_ftol_stops_where_scipy_does():
    with jax.enable_x64(True):
        x0 = jnp.linspace(-1.2, 1.2, 10)
        ref = scipy_optimize.minimize(
            lambda x: float(rosen(jnp.asarray(x))), np.asarray(x0),
            jac=lambda x: np.asarray(jax.grad(rosen)(jnp.asarray(x))),
            method="L-BFGS-B", options={"gtol": 1e-12, "ftol": FTOL, "maxcor": 10},
        )
        tight = gc.minimize(rosen, x0, tol=1e-12)
        stopped = gc.minimize(rosen, x0, tol=1e-12, ftol=FTOL)
    assert bool(stopped.success) and int(stopped.status) == gc.second_order.SMALL_DECREASE
    assert "relative decrease" in stopped.message
    # before (no ftol): polishing far past the point scipy accepts
    assert int(stopped.nfev) < int(tight.nfev)
    # Measured: 88 evaluations against scipy's 88 (106 without ftol), f = 4.5e-11 against 1.5e-10,
    # the same for starts moved by 1-2 ulps.  Starts moved by 0.01 give count ratios 0.92-1.00, and
    # f from 1.3e-11 to 1.65e-9 (≤ 0.74·FTOL) where scipy stops at 2e-11 to 4.7e-10: the ratio of
    # two stopping points reached 11, so f is bounded by the stop itself too: each step lowers f by
    # at least FTOL·max(1, f) until the last, so at a linear rate ρ the stop is at f ≈ FTOL/(1 - ρ),
    # measured ≤ 0.74·FTOL; 10·FTOL is ten times that.
    assert int(stopped.nfev) <= 1.25 * ref.nfev, (int(stopped.nfev), ref.nfev)
    assert float(stopped.fun) <= max(10 * ref.fun, 10 * FTOL)


def test_ftol_is_checked():
    with pytest.raises(ValueError, match="ftol"):
        gc.minimize(rosen, jnp.zeros(3), ftol=0.0)
