"""Full-batch second-order optimisation: line searches, Newton, BFGS, L-BFGS, minimize.

References are closed forms (known minima, the Wolfe conditions themselves) and
``scipy.optimize.minimize(method="L-BFGS-B")``.  Each test compiles at most a few programs; the
objectives are module-level functions so that repeated calls hit ``minimize``'s compile cache.
"""

import itertools
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import U32

import gradchain as gc
from gradchain.examples.problems import (
    ill_conditioned_quadratic,
    logistic_regression,
    rosenbrock,
    rosenbrock_start,
    saddle,
)
from gradchain.second_order import (
    LINESEARCH_FAILED,
    MAX_ITER,
    NONFINITE,
    backtracking,
    bfgs,
    lbfgs,
    lbfgs_transform,
    minimize,
    newton,
    strong_wolfe,
)


def quadratic(x):
    return ill_conditioned_quadratic(x, 1e3)


def tree_quadratic(params):
    """Σ (w - 1)² + 10 Σ (b + 2)²: minimum at w = 1, b = -2."""
    return jnp.sum((params["w"] - 1.0) ** 2) + 10.0 * jnp.sum((params["b"] + 2.0) ** 2)


def convex(x):
    """Strictly convex, not quadratic: Σ exp(x_i) - 2 x_i + ½ xᵀx; Newton's error must square."""
    return jnp.sum(jnp.exp(x) - 2.0 * x) + 0.5 * jnp.sum(x * x)


# ---------------------------------------------------------------------------------------------
# L-BFGS on Rosenbrock


@pytest.mark.parametrize("n", [2, 10])
def test_lbfgs_rosenbrock_float64_reaches_ones(n):
    with jax.enable_x64(True):
        result = minimize(rosenbrock, rosenbrock_start(n, jnp.float64), "lbfgs", tol=1e-6, max_iter=1000)
        assert bool(result.success), result.message
        assert result.x.dtype == jnp.float64
        assert float(jnp.max(jnp.abs(result.x - 1.0))) <= 1e-5
        assert float(result.grad_norm) <= 1e-6
        # scipy's L-BFGS-B needs 45 and 93 evaluations to the same tolerance (see benchmarks/lbfgs.py).
        # Measured 45 and 91, unchanged with and without FMA and for starts moved by 1-7 ulps (the
        # round-off a CPU could add); starts moved by 0.05 give 89-94 for n = 10.
        assert int(result.nfev) <= {2: 50, 10: 100}[n]


@pytest.mark.parametrize("n", [2, 10])
def test_lbfgs_rosenbrock_float32_converges_or_stops_with_a_reason(n):
    max_iter = 1000
    result = minimize(rosenbrock, rosenbrock_start(n, jnp.float32), "lbfgs", tol=1e-6, max_iter=max_iter)
    assert result.x.dtype == jnp.float32
    # float32 gradients of Rosenbrock near x = 1 are rounding noise of ~1e-5: 1e-6 may be out of
    # reach.  Then the run must say so, early — not spin to max_iter (Optax's behaviour).
    # Measured over 5 starts (the standard one and four moved by 0.05), with and without FMA:
    # either status, 33-37 iterations for n = 2 and 72-78 for n = 10, |x - 1| ≤ 8.3e-7; the bounds
    # (200 iterations, 1e-3) are far from what round-off can move.
    assert int(result.status) in (0, LINESEARCH_FAILED), result.message
    assert int(result.nit) < max_iter // 5
    if not result.success:
        assert "line search failed" in result.message
    assert float(jnp.max(jnp.abs(result.x - 1.0))) <= 1e-3


@pytest.mark.slow
def test_lbfgs_memory_size_and_history():
    with jax.enable_x64(True):
        x0 = rosenbrock_start(10, jnp.float64)
        result = minimize(rosenbrock, x0, lbfgs(memory_size=3), tol=1e-6, max_iter=500, history=True)
        assert bool(result.success), result.message
        nit = int(result.nit)
        hist = result.history
        assert hist.fun.shape == (501,)
        np.testing.assert_allclose(hist.fun[0], rosenbrock(x0))
        np.testing.assert_allclose(hist.fun[nit], result.fun)
        assert int(hist.nfev[nit]) == int(result.nfev)
        assert np.all(np.diff(np.asarray(hist.fun[: nit + 1])) < 0)  # every iteration decreases f
        assert np.all(np.isnan(np.asarray(hist.fun[nit + 1 :])))


def test_max_iter_is_reported():
    result = minimize(rosenbrock, rosenbrock_start(2, jnp.float32), "lbfgs", max_iter=3)
    assert int(result.status) == MAX_ITER and not bool(result.success)
    assert int(result.nit) == 3
    assert "max_iter" in result.message


# ---------------------------------------------------------------------------------------------
# BFGS and Newton


def test_bfgs_rosenbrock_reaches_ones():
    with jax.enable_x64(True):
        result = minimize(rosenbrock, rosenbrock_start(2, jnp.float64), "bfgs", tol=1e-8)
        assert bool(result.success), result.message
        # ‖∇f‖∞ ≤ 1e-8 and the Hessian at the minimum has λ_min = 0.4: |x - 1| ≤ √2·1e-8/0.4 = 3.5e-8
        np.testing.assert_allclose(result.x, jnp.ones(2), atol=1e-7)


@pytest.mark.slow
def test_bfgs_ill_conditioned_quadratic():
    with jax.enable_x64(True):
        x0 = jnp.linspace(-1.0, 1.0, 8)
        result = minimize(quadratic, x0, bfgs(), tol=1e-10)
        assert bool(result.success), result.message
        np.testing.assert_allclose(result.x, jnp.zeros(8), atol=1e-9)
        # With unit steps first (N&W's advice for quasi-Newton directions) 50 iterations are
        # measured, like L-BFGS-B's 51; scipy's BFGS, which guesses the first step from the
        # previous decrease, needs 13.
        assert int(result.nit) <= 60


def test_newton_rosenbrock_reaches_ones():
    with jax.enable_x64(True):
        result = minimize(rosenbrock, rosenbrock_start(2, jnp.float64), "newton", tol=1e-10)
        assert bool(result.success), result.message
        # as for BFGS: |x - 1| ≤ √2·1e-10/0.4 = 3.5e-10
        np.testing.assert_allclose(result.x, jnp.ones(2), atol=1e-9)
        assert int(result.nhev) == int(result.nit)  # one Hessian per iteration


def test_newton_solves_a_quadratic_in_one_step():
    with jax.enable_x64(True):
        result = minimize(quadratic, jnp.linspace(-1.0, 1.0, 8), "newton", tol=1e-10)
        assert int(result.nit) == 1 and int(result.nfev) == 2
        # one exact solve of a diagonal system: x0 - x0 up to a few ulps of |x0| ≤ 1
        np.testing.assert_allclose(result.x, jnp.zeros(8), atol=1e-12)


def test_newton_converges_quadratically():
    # Successive gradient norms (the error, up to the Hessian) on a strictly convex problem:
    # ‖g_{k+1}‖ ≤ C ‖g_k‖², i.e. the number of correct digits doubles.
    with jax.enable_x64(True):
        x0 = jnp.full((5,), 2.0)
        # (1e-9: below ~1e-10 a Newton step would lower f = 3.85 by less than its rounding.)
        result = minimize(convex, x0, "newton", tol=1e-9, norm=2, history=True, max_iter=20)
        assert bool(result.success), result.message
        nit = int(result.nit)
        g = np.asarray(result.history.grad_norm[: nit + 1])
        assert np.all(np.diff(g) < 0)
        assert np.all(np.diff(np.asarray(result.history.fun[: nit + 1])) < 0)
        assert int(result.history.nfev[nit]) == int(result.nfev)
        assert np.all(np.isnan(np.asarray(result.history.grad_norm[nit + 1 :])))
        pairs = [(a, b) for a, b in itertools.pairwise(g) if 1e-12 < b and a < 1e-1]
        assert len(pairs) >= 2, g
        # measured b / a² = 0.053 for both pairs and orders 2.9 and 2.3 (the same with and without
        # FMA): the constant 1.0 and the order 1.9 leave margins of 19× and 0.4
        for a, b in pairs:
            assert b <= 1.0 * a**2, f"not quadratic: {a:.3g} -> {b:.3g} (history {g})"
        orders = [math.log(b) / math.log(a) for a, b in pairs]
        assert max(orders) >= 1.9, orders


def test_newton_cg_matches_direct_newton():
    with jax.enable_x64(True):
        x0 = jnp.full((5,), 2.0)
        # Same static configuration as the test above: the compiled program is reused.
        direct = minimize(convex, x0, "newton", tol=1e-9, norm=2, history=True, max_iter=20)
        cg = minimize(convex, x0, newton(solver="cg"), tol=1e-9, norm=2)
        assert bool(cg.success), cg.message
        # f'' = exp(x) + 1 > 1: f is 1-strongly convex, so each answer is within its ‖∇f‖₂ of the
        # minimiser (plus ~100 ulps for the rounding of ∇f itself)
        np.testing.assert_allclose(cg.x, direct.x, atol=float(cg.grad_norm + direct.grad_norm) + 1e-14)
        assert int(cg.nhev) >= int(cg.nit)  # Hessian-vector products, at least one per iteration


@pytest.mark.slow
def test_newton_leaves_a_saddle_that_plain_newton_would_jump_to():
    # Near the saddle of `saddle` the plain Newton step -H⁻¹g lands on the saddle; with the
    # modified eigenvalues |λ| the iteration goes downhill to a minimum (0, ..., ±1).
    with jax.enable_x64(True):
        x0 = jnp.asarray([0.3, 0.2, 0.1])
        hess = jax.hessian(saddle)(x0)
        plain = x0 - jnp.linalg.solve(hess, jax.grad(saddle)(x0))
        assert float(jnp.linalg.norm(plain)) < 0.05  # the pure Newton step goes (almost) to the saddle
        result = minimize(saddle, x0, "newton", tol=1e-10)
        assert bool(result.success), result.message
        np.testing.assert_allclose(result.fun, -0.25, atol=1e-12)
        np.testing.assert_allclose(jnp.abs(result.x), jnp.asarray([0.0, 0.0, 1.0]), atol=1e-8)


# ---------------------------------------------------------------------------------------------
# minimize: pytrees, jit, vmap, scipy


def test_minimize_on_a_pytree():
    x0 = {"w": jnp.zeros((3, 2)), "b": jnp.zeros((2,))}
    result = minimize(tree_quadratic, x0, tol=1e-5)
    assert bool(result.success), result.message
    assert jax.tree.structure(result.x) == jax.tree.structure(x0)
    # ‖∇f‖∞ ≤ 1e-5 and the curvatures are 2 (w) and 20 (b): |x - x*| ≤ 5e-6 (+ float32 rounding of 2)
    np.testing.assert_allclose(result.x["w"], jnp.ones((3, 2)), atol=1e-5)
    np.testing.assert_allclose(result.x["b"], jnp.full((2,), -2.0), atol=1e-5)
    assert result.grad.shape == (8,)  # the flat gradient, ravelled like x0


def test_jit_of_the_whole_minimize_matches_the_direct_call():
    x0 = {"w": jnp.full((3, 2), 3.0), "b": jnp.zeros((2,))}
    run = jax.jit(lambda x, tol: minimize(tree_quadratic, x, tol=tol))
    jitted = run(x0, 1e-5)
    direct = minimize(tree_quadratic, x0, tol=1e-5)
    # a quadratic: L-BFGS takes the same few exact-arithmetic-like steps in both (measured equal,
    # with and without FMA); rtol 1e-6 is ~17 float32 ulps of margin
    assert int(jitted.nfev) == int(direct.nfev) and int(jitted.status) == int(direct.status)
    chex.assert_trees_all_close(jitted.x, direct.x, rtol=1e-6)
    # tol (and x0) are traced: a new tolerance reuses the compiled program.
    assert run._cache_size() == 1
    looser = run(x0, 1e-1)
    assert run._cache_size() == 1 and int(looser.nfev) < int(jitted.nfev)


@pytest.mark.slow
def test_vmap_over_starting_points():
    starts = jnp.asarray([[-1.2, 1.0], [2.0, 2.0], [0.0, -1.0]])
    results = jax.vmap(lambda x: minimize(rosenbrock, x, tol=1e-4, max_iter=200))(starts)
    assert results.x.shape == (3, 2)
    assert bool(jnp.all(results.success)), results.message
    np.testing.assert_allclose(results.x, jnp.ones((3, 2)), atol=1e-3)


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn's digits: pip install scikit-learn")
    inputs, labels = datasets.load_digits(return_X_y=True)
    return inputs / 16.0, labels


def test_matches_scipy_lbfgsb_on_logistic_regression(digits):
    scipy_optimize = pytest.importorskip("scipy.optimize", reason="the reference is scipy's L-BFGS-B: pip install scipy")
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="comes with scikit-learn")
    with jax.enable_x64(True):
        inputs, labels = jnp.asarray(digits[0]), jnp.asarray(digits[1])
        x0 = {"w": jnp.zeros((64, 10)), "b": jnp.zeros((10,))}
        ours = minimize(logistic_regression, x0, args=(inputs, labels), tol=1e-8, max_iter=2000)
        assert bool(ours.success), ours.message

        assert jax.tree.structure(ours.x) == jax.tree.structure(x0)

        # The reference: scipy's L-BFGS-B on a NumPy transcription of the same loss.
        features, onehot = np.asarray(digits[0]), np.eye(10)[np.asarray(digits[1])]

        def fun(z):
            w, b = z[:640].reshape(64, 10), z[640:]
            logits = features @ w + b
            logits = logits - logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            norm = probs.sum(axis=1, keepdims=True)
            probs /= norm
            value = np.mean(np.log(norm[:, 0]) - (onehot * logits).sum(axis=1)) + 0.5e-3 * np.sum(w * w)
            dlogits = (probs - onehot) / len(features)
            grad = np.concatenate([(features.T @ dlogits + 1e-3 * w).ravel(), dlogits.sum(axis=0)])
            return value, grad

        # One BLAS thread: on a small shared machine OpenBLAS threads spin and make this 40x slower.
        with threadpoolctl.threadpool_limits(1):
            ref = scipy_optimize.minimize(
                fun, np.zeros(650), jac=True, method="L-BFGS-B",
                options=dict(gtol=1e-8, ftol=0.0, maxiter=2000, maxfun=4000),
            )
        assert ref.success, ref.message
        # Both stop at ‖g‖_∞ ≤ 1e-8; the loss is 1e-3-strongly convex in w, so each solution is
        # within ‖g‖₂/μ ≤ 2.6e-4 of the minimiser.  Measured difference: ~4e-5.
        np.testing.assert_allclose(ours.x["w"], ref.x[:640].reshape(64, 10), atol=5e-4)
        np.testing.assert_allclose(ours.x["b"], ref.x[640:], atol=5e-4)
        # and each value within ‖g‖₂²/(2μ) of the minimum (together ≤ 6.5e-11; rtol 1e-10 was
        # 2.6e-11 here, below that bound; measured 1.9e-13)
        gap = (float(jnp.sum(jnp.square(ours.grad))) + float(np.sum(np.square(ref.jac)))) / (2 * 1e-3)
        np.testing.assert_allclose(ours.fun, ref.fun, rtol=0, atol=gap + 4 * 2.0**-53 * ref.fun)
        # Evaluations: measured 273 against scipy's 284; starts moved by 1e-12 (as round-off
        # would) give 273-280 against 262-284, ratios 0.96-1.07 (sd 0.05): 1.5 is the mean + 10 sd
        assert int(ours.nfev) <= 1.5 * ref.nfev


# ---------------------------------------------------------------------------------------------
# The GradientTransformation


def test_lbfgs_transform_in_a_python_loop_reaches_the_rosenbrock_minimum():
    with jax.enable_x64(True):
        params = {"x": rosenbrock_start(10, jnp.float64)}

        def loss(p):
            return rosenbrock(p["x"])

        # Inside a chain, as a user would write it; updates=None lets the transformation reuse
        # the value and gradient its line search computed at the new point.
        tx = gc.chain(lbfgs_transform(loss))
        state = tx.init(params)
        step = jax.jit(tx.update)
        for _ in range(300):
            updates, state = step(None, state, params)
            params = gc.apply_updates(params, updates)
            if state[0].grad_norm <= 1e-6 or state[0].stalled:
                break
        inner = state[0]
        assert float(inner.grad_norm) <= 1e-6 and not bool(inner.stalled)
        np.testing.assert_allclose(params["x"], jnp.ones(10), atol=1e-5)
        # the cached value is f at the new point (f ≈ 1e-16 there: two evaluations 1 ulp apart
        # differ by ~|∇f|·U64; measured 4e-24)
        np.testing.assert_allclose(inner.value, loss(params), atol=1e-14)
        # The cache is hit every step: the evaluations of minimize, the same iterate.  The two are
        # different programs, so their float64 round-off differs and compounds over the ~75
        # iterations: over 5 starting points, with and without FMA, their iterates differed by up
        # to 2.7e-8 relative and their counts by up to 2 evaluations (here: 7e-13 / 1.3e-12 and 0;
        # the old rtol 1e-12 failed without FMA).  A missed cache costs one evaluation per
        # iteration, so a count within 5 of minimize's still proves every step hit it; the
        # iterates agree to 10 × the largest measured difference.
        reference = minimize(rosenbrock, rosenbrock_start(10, jnp.float64), tol=1e-6, max_iter=1000)
        assert abs(int(inner.nfev) - int(reference.nfev)) <= 5 < int(reference.nit), (int(inner.nfev), int(reference.nfev))
        np.testing.assert_allclose(params["x"], reference.x, rtol=3e-7)


@pytest.mark.slow
def test_lbfgs_transform_uses_a_passed_gradient_and_evaluates_only_on_a_cache_miss():
    with jax.enable_x64(True):
        params = rosenbrock_start(2, jnp.float64)
        tx = lbfgs_transform(rosenbrock)
        with_grad = jax.jit(tx.update)
        u1, s1 = with_grad(jax.grad(rosenbrock)(params), tx.init(params), params)
        u2, s2 = jax.jit(lambda s, p: tx.update(None, s, p))(tx.init(params), params)
        np.testing.assert_allclose(u1, u2, rtol=1e-12)
        assert int(s1.nfev) == int(s2.nfev)  # a value-only evaluation counts as one
        # Second step at the cached point: no evaluation before the line search.
        params = gc.apply_updates(params, u1)
        _, s3 = with_grad(jax.grad(rosenbrock)(params), s1, params)
        assert int(s3.nfev) - int(s1.nfev) == 1  # one line-search trial, no re-evaluation


# ---------------------------------------------------------------------------------------------
# Line searches on their own


def _rosenbrock_ray():
    x = jnp.asarray([-1.2, 1.0], jnp.float32)
    value, grad = jax.value_and_grad(rosenbrock)(x)
    return x, -grad, value, grad


def _rosenbrock_roundoff(x, a, d):
    """First-order bounds on |Δf| and |Δ∇f| between two float32 evaluations of the 2-d Rosenbrock
    function at x + a·d, each computing the point itself (x + a·d: 2 roundings, or 1 as an FMA).

    With r = x1 - x0², s = 1 - x0: δr ≤ U32·(|r| + x0²), δs ≤ U32·|s|; f = 100r² + s² and
    ∇f = (-400·x0·r - 2s, 200r) add a few roundings of their own terms; the two points differ by
    δx ≤ 2·U32·(|x| + |a·d|), which moves f by |∇f|·δx and ∇f by |H|·δx.  Near the valley floor
    r ≈ 0 makes ∂f/∂x0 a difference of nearly equal terms: a relative tolerance of 1e-4 was used to
    0.14 with FMA and is below this bound."""
    x, d = np.asarray(x, np.float64), np.asarray(d, np.float64)
    p = x + a * d
    x0, x1 = p
    r, s = x1 - x0**2, 1 - x0
    dr, ds = U32 * (abs(r) + x0**2), U32 * abs(s)
    grad = np.array([-400 * x0 * r - 2 * s, 200 * r])
    hess = np.array([[1200 * x0**2 + 400 * abs(x1) + 2, 400 * abs(x0)], [400 * abs(x0), 200.0]])
    dx = 2 * U32 * (np.abs(x) + np.abs(a * d))
    f_err = 200 * abs(r) * dr + 2 * abs(s) * ds + 4 * U32 * (100 * r**2 + s**2) + np.abs(grad) @ dx
    g_err = np.array([400 * abs(x0) * dr + 2 * ds + 3 * U32 * (400 * abs(x0 * r) + 2 * abs(s)), 200 * dr + U32 * abs(200 * r)])
    return f_err, g_err + hess @ dx


def test_strong_wolfe_satisfies_its_conditions():
    x, d, f0, g0 = _rosenbrock_ray()
    c1, c2 = 1e-4, 0.9
    res = jax.jit(lambda: strong_wolfe(jax.value_and_grad(rosenbrock), x, d, f0, g0,
                                       init_step=1.0, c1=c1, c2=c2))()
    assert bool(res.success)
    a = float(res.step)
    slope0 = float(jnp.vdot(g0, d))
    # the value and gradient the search returns are those at x + a·d, to float32 round-off (×2)
    f_err, g_err = _rosenbrock_roundoff(x, a, d)
    np.testing.assert_allclose(res.value, rosenbrock(x + a * d), rtol=0, atol=2 * f_err)
    grad_diff = np.abs(np.asarray(res.grad, np.float64) - np.asarray(jax.grad(rosenbrock)(x + a * d), np.float64))
    assert np.all(grad_diff <= 2 * g_err), (grad_diff, g_err)
    # both conditions hold with margins of 83% and 90% of their right-hand sides: round-off of
    # the value (f_err ≈ 1e-6) and of the slope cannot cross them
    assert float(res.value) <= float(f0) + c1 * a * slope0
    assert abs(float(jnp.vdot(res.grad, d))) <= c2 * abs(slope0)


def test_backtracking_satisfies_armijo_and_rejects_uphill():
    x, d, f0, g0 = _rosenbrock_ray()
    vg = jax.value_and_grad(rosenbrock)
    res = backtracking(vg, x, d, f0, g0, init_step=1.0)
    assert bool(res.success) and 0 < float(res.step) < 1.0
    assert float(res.value) <= float(f0) + 1e-4 * float(res.step) * float(jnp.vdot(g0, d))
    uphill = backtracking(vg, x, -d, f0, g0)
    assert not bool(uphill.success) and float(uphill.step) == 0.0 and int(uphill.nfev) == 0


# ---------------------------------------------------------------------------------------------
# Bad input: a clear error naming the argument, or a failure status — never a silent answer.


def test_fun_must_return_a_scalar():
    with pytest.raises(ValueError, match=r"fun must return a scalar.*shape \(2,\)"):
        minimize(lambda x: x**2, jnp.ones(2))


def test_fun_output_dtype_must_match_x0():
    with jax.enable_x64(True):
        with pytest.raises(TypeError, match="fun.*float64.*x0 is float32"):
            minimize(lambda x: jnp.sum(x.astype(jnp.float64) ** 2), jnp.ones(2, jnp.float32))


def test_x0_leaves_must_share_one_float_dtype():
    with jax.enable_x64(True):
        x0 = {"a": jnp.ones(2, jnp.float32), "b": jnp.ones(2, jnp.float64)}
        with pytest.raises(TypeError, match=r"x0 mixes floating dtypes.*\['a'\]: float32"):
            minimize(lambda p: jnp.sum(p["a"]) + jnp.sum(p["b"]).astype(jnp.float32), x0)
    with pytest.raises(TypeError, match="x0 must hold real floating-point arrays.*int32"):
        minimize(lambda x: jnp.sum(x), jnp.ones(2, jnp.int32))


def test_nonfinite_value_at_x0_is_reported():
    result = minimize(rosenbrock, jnp.asarray([jnp.nan, 1.0]), "lbfgs", tol=1e-6, max_iter=1000)
    assert int(result.status) == NONFINITE and not bool(result.success)
    assert int(result.nit) == 0 and int(result.nfev) == 1
    assert "not finite" in result.message
    assert bool(jnp.isnan(result.fun))


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(method="adam"), ValueError, "method must be one of .*got 'adam'"),
        (dict(tol=0.0), ValueError, r"tol must be a positive real number, got 0\.0"),
        (dict(tol=-1e-6), ValueError, "tol must be a positive real number, got -1e-06"),
        (dict(max_iter=0), ValueError, "max_iter must be a positive int, got 0"),
        (dict(max_iter=10.5), TypeError, "max_iter must be a positive int, got 10.5"),
        (dict(method="lbfgs", options={"memory_size": 0}), ValueError, "memory_size must be a positive int, got 0"),
        (dict(linesearch="exact"), ValueError, "linesearch must be one of .*got 'exact'"),
        (dict(norm=1), ValueError, "norm must be 'inf'.* or 2, got 1"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_value(kwargs, error, match):
    with pytest.raises(error, match=match):
        minimize(rosenbrock, jnp.zeros(2), **kwargs)


def test_bad_method_constructor_arguments():
    with pytest.raises(ValueError, match="memory_size must be a positive int, got -3"):
        lbfgs(memory_size=-3)
    with pytest.raises(ValueError, match="solver must be one of"):
        newton(solver="lu")
    with pytest.raises(ValueError, match="memory_size must be a positive int, got 0"):
        lbfgs_transform(rosenbrock, memory_size=0)
    with pytest.raises(TypeError, match="fun must be a callable"):
        minimize("rosenbrock", jnp.zeros(2))
    with pytest.raises(ValueError, match="strong Wolfe needs 0 < c1 < c2 < 1"):
        x, d, f0, g0 = _rosenbrock_ray()
        strong_wolfe(jax.value_and_grad(rosenbrock), x, d, f0, g0, c1=0.5, c2=0.1)
