"""K-FAC: parity with kfac-jax's reference numbers, and library-free checks of the same maths.

Reference data: tests/data/kfac/ (see its README; computed with kfac-jax at commit babd853).
Relative errors are ``max |ours − ref| / max |ref|``: per array for factors and gradients; for a
direction over the whole network's direction (every layer's W and b together — the vector the
step moves along).

Tolerances (each test states its own): u is the unit round-off (``U32 = 2⁻²⁴``, ``U64 = 2⁻⁵³``);
"measured" values are the worst seen on this AVX-512 machine and under
``XLA_FLAGS=--xla_cpu_max_isa=AVX2`` / ``AVX`` / ``SSE4_2`` (another CPU's vector width, no FMA).
Where two float32 programs must give the same numbers (jit vs eager, vmap vs one run), the
comparison runs in float64.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradchain as gc

DATA = pathlib.Path(__file__).parent / "data" / "kfac"
U32 = 2.0**-24  # float32 unit round-off
U64 = 2.0**-53  # float64 unit round-off


def load(name):
    return dict(np.load(DATA / name))


def rel(actual, expected):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


def mlp_loss(params, x, y):
    h = x
    for i, p in enumerate(params):
        h = gc.kfac_dense(h, p["w"], p["b"])
        if i < len(params) - 1:
            h = jnp.tanh(h)
    return gc.kfac_softmax_cross_entropy(h, y)


def conv_loss(params, x, y):
    h = jnp.tanh(gc.kfac_conv2d(x, params[0]["w"], params[0]["b"]))
    h = gc.kfac_conv2d(h, params[1]["w"], params[1]["b"])
    h = h.reshape(h.shape[0], -1)
    return gc.kfac_softmax_cross_entropy(gc.kfac_dense(h, params[2]["w"], params[2]["b"]), y)


NETS = {"dense_mlp": mlp_loss, "conv_net": conv_loss}


def reference_setup(name, dtype):
    d = load(f"{name}.npz")
    params = [{"w": jnp.asarray(d[f"W{l}"], dtype), "b": jnp.asarray(d[f"b{l}"], dtype)} for l in range(3)]
    return d, params, jnp.asarray(d["x"], dtype), jnp.asarray(d["y"])


def network_rel(direction, d, prefix):
    ours = np.concatenate([np.ravel(direction[l][k]) for l in range(3) for k in ("w", "b")])
    ref = np.concatenate([np.ravel(d[f"{prefix}_{k}{l}"]) for l in range(3) for k in ("W", "b")])
    return rel(ours, ref)


def parity(name, dtype, jit_or_eager):
    d, params, x, y = reference_setup(name, dtype)
    curv = gc.kfac_curvature(NETS[name], params, x, y, estimator="exact")
    pi = gc.kfac_precondition(curv, damping=1e-2, inverse="pi")
    eigh = gc.kfac_precondition(curv, damping=1e-2, inverse="eigh")

    def everything(params, x, y):
        value, grads, stats = curv.value_grad_and_statistics(params, x, y)
        dir_pi = pi.update(grads, pi.init(params), params, kfac_statistics=stats)[0]
        dir_eig = eigh.update(grads, eigh.init(params), params, kfac_statistics=stats)[0]
        return value, grads, stats, dir_pi, dir_eig

    value, grads, stats, dir_pi, dir_eig = jit_or_eager(everything)(params, x, y)
    errors = {"loss": rel(value, d["loss"])}
    for l in range(3):
        errors[f"A{l}"] = rel(stats.factors[l]["A"], d[f"A{l}"])
        errors[f"G{l}"] = rel(stats.factors[l]["G"], d[f"G{l}"])
        errors[f"grad_W{l}"] = rel(grads[l]["w"], d[f"grad_W{l}"])
        errors[f"grad_b{l}"] = rel(grads[l]["b"], d[f"grad_b{l}"])
        assert curv.blocks[l].scale == float(d[f"scale{l}"])
    errors["dir_pi"] = network_rel(dir_pi, d, "dir_pi")
    errors["dir_eig"] = network_rel(dir_eig, d, "dir_eig")
    return errors


@pytest.mark.parametrize("name", sorted(NETS))
def test_float64_parity_with_kfac_jax(name):
    # bound: the damped blocks have condition κ ≤ 1.2e3 (conv_net's 513-row A, π-damped; exact
    # s·A⊗G + λ: 727), so a backward-stable solve errs by ≲ κ · n · U64 ≈ 7e-11 even with the
    # worst-case factor n = 513 of the sums; measured ≤ 1.2e-13.  Limit 1e-9.
    with jax.enable_x64(True):
        errors = parity(name, jnp.float64, jax.jit)
    bad = {k: v for k, v in errors.items() if not v <= 1e-9}
    assert not bad, bad


def test_jit_and_eager_agree():
    # Parity is the point, so float64 (in float32 the two programs' summation orders differed by up
    # to 4.7e-7 relative, 0.29 of the old rtol=2e-5 on the SSE4.2 path).  Bound: a few hundred
    # roundings of U64 through the tiny net's damped blocks (κ < 1e3): ≲ 1e-11; limit rtol 1e-10.
    with jax.enable_x64(True):
        params, x, y = _tiny_problem(jnp.float64)
        curv = gc.kfac_curvature(mlp_loss, params, x, y, estimator="sampled")
        tx = gc.kfac_precondition(curv, damping=1e-2, inverse="pi")

        def step(params, key):
            value, grads, stats = curv.value_grad_and_statistics(params, x, y, key=key)
            return value, tx.update(grads, tx.init(params), params, kfac_statistics=stats)[0]

        key = jax.random.PRNGKey(7)
        eager, jitted = step(params, key), jax.jit(step)(params, key)
        for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def pi_condition(name):
    """max over blocks of κ((A + πγI) ⊗ (G + γ/πI)) = κ(A + πγI)·κ(G + γ/πI) at λ = 1e-2, from
    kfac-jax's float64 factors: the condition of the π-damped solve the direction is."""
    d = load(f"{name}.npz")
    worst = 0.0
    for l in range(3):
        a, g, s = d[f"A{l}"], d[f"G{l}"], float(d[f"scale{l}"])
        gamma = np.sqrt(1e-2 / s)
        pi = np.sqrt((np.trace(a) / len(a)) / (np.trace(g) / len(g)))
        kappa = np.linalg.cond(a + pi * gamma * np.eye(len(a))) * np.linalg.cond(g + gamma / pi * np.eye(len(g)))
        worst = max(worst, float(kappa))
    return worst


@pytest.mark.parametrize("name", sorted(NETS))
def test_float32_parity_with_kfac_jax(name):
    errors = parity(name, jnp.float32, jax.jit)
    # loss, gradients, factors: float32 sums of M = N·T products (M ≤ 16384, conv_net) err by
    # ≲ log2(M)·U32 ≈ 8.4e-7 relative in pairwise order, by √M·U32 ≈ 7.6e-6 for a random-walk
    # sequential one; limit 1e-5 (measured ≤ 5.7e-7).
    factor_limit = {k: 1e-5 for k in errors if k[0] in "AGlg"}
    # π direction: a solve of condition κ (1.2e3 conv_net, 402 dense_mlp) with float32 inputs
    # errs by ≲ κ·U32 relative (first-order perturbation bound; measured 4.8e-6 and 1.2e-6, 15-20×
    # below it; the old fixed 1e-5 was 2.1× above conv_net's).  eigh direction: JAX's float32
    # eigh has a backward error growing with n (≈ n·U32·‖A‖ worst case), so no useful κ·u bound:
    # 10× the measured 1.67e-5 (conv_net; dense_mlp 4.0e-6).
    limits = factor_limit | {"dir_pi": pi_condition(name) * U32, "dir_eig": 2e-4}
    bad = {k: (v, limits[k]) for k, v in errors.items() if not v <= limits[k]}
    assert not bad, bad


def test_layer_table_names_every_parameter():
    d, params, x, y = reference_setup("conv_net", jnp.float32)
    params = params + [{"extra": jnp.zeros(3)}]
    loss = lambda p, x, y: conv_loss(p[:3], x, y) + jnp.sum(p[3]["extra"] ** 2)
    curv = gc.kfac_curvature(loss, params, x, y)
    table = curv.table()
    assert "conv2d_0" in table and "A 10×10, G 8×8, s=64" in table
    assert "A 513×513, G 10×10, s=1" in table
    assert "[3]['extra']" in table and "identity (fallback)" in table
    assert curv.untagged_paths == ("[3]['extra']",)


# ---------------------------------------------------------------------------------------------
# Library-free checks


def test_least_squares_one_exact_step_solves_it():
    """Linear least squares: the exact Fisher is the Hessian A⊗I, so one step from anywhere lands
    on the minimiser (up to the damping)."""
    with jax.enable_x64(True):
        kx, kw, kn, k0 = jax.random.split(jax.random.PRNGKey(0), 4)
        x = jax.random.normal(kx, (200, 5), jnp.float64)
        y = x @ jax.random.normal(kw, (5, 3), jnp.float64) + 0.3 + 0.1 * jax.random.normal(kn, (200, 3), jnp.float64)

        def loss(p, x, y):
            return gc.kfac_squared_error(gc.kfac_dense(x, p["w"], p["b"]), y)

        params = {"w": jax.random.normal(k0, (5, 3), jnp.float64), "b": jnp.ones(3, jnp.float64)}
        curv = gc.kfac_curvature(loss, params, x, y, estimator="exact")
        xb = np.concatenate([np.asarray(x), np.ones((200, 1))], 1)
        solution = np.linalg.lstsq(xb, np.asarray(y), rcond=None)[0]
        txs = [gc.kfac_precondition(curv, damping=1e-14, inverse=inverse) for inverse in ("pi", "eigh")]

        @jax.jit
        def one_step(params):
            _, grads, stats = curv.value_grad_and_statistics(params, x, y)
            return [jax.tree.map(lambda p, u: p - u, params, tx.update(grads, tx.init(params), params,
                                                                       kfac_statistics=stats)[0]) for tx in txs]

        # The damping's bias, in exact arithmetic (first order): the π-damped solve replaces
        # A⁻¹ V G⁻¹ (G = I) by (A + πγI)⁻¹ V (I + γ/π I)⁻¹, γ = √λ = 1e-7, so the landing point
        # errs by ≤ (πγ/λ_min(A) + γ/π)·‖step‖_F; the exact inverse by λ/λ_min(A)·‖step‖_F.
        # Round-off (κ(A) = 1.5, float64) adds ~1e-14; 1e-12 covers it.  (The old rtol=1e-6,
        # atol=1e-7 was met at 0.90 of itself by the π step: a bias, not noise.)
        a = xb.T @ xb / len(xb)
        lam_min, pi, gamma = np.linalg.eigvalsh(a)[0], np.sqrt(np.trace(a) / len(a)), np.sqrt(1e-14)
        step = np.linalg.norm(np.concatenate([np.asarray(params["w"]), np.asarray(params["b"])[None]], 0) - solution)
        bounds = {"pi": (pi * gamma / lam_min + gamma / pi) * step, "eigh": 1e-14 / lam_min * step}
        for inverse, new in zip(("pi", "eigh"), one_step(params)):
            got = np.concatenate([np.asarray(new["w"]), np.asarray(new["b"])[None]], 0)
            error = float(np.max(np.abs(got - solution)))
            assert error <= 1.01 * bounds[inverse] + 1e-12, (inverse, error, bounds[inverse])


def _tiny_problem(dtype=jnp.float64):
    k = jax.random.split(jax.random.PRNGKey(3), 5)
    params = [
        {"w": jax.random.normal(k[0], (3, 4), dtype), "b": 0.1 * jax.random.normal(k[1], (4,), dtype)},
        {"w": jax.random.normal(k[2], (4, 3), dtype), "b": 0.1 * jax.random.normal(k[3], (3,), dtype)},
    ]
    x = jax.random.normal(k[4], (16, 3), dtype)
    y = jnp.arange(16) % 3
    return params, x, y


def test_explicit_kronecker_matrix_of_a_tiny_network():
    """Factors from first principles (per-example Jacobians of the logits with respect to each
    layer's output), the block-diagonal F̂ formed as s·kron(A, G) and inverted densely."""
    with jax.enable_x64(True):
        params, x, y = _tiny_problem()
        curv = gc.kfac_curvature(mlp_loss, params, x, y, estimator="exact")
        _, grads, stats = jax.jit(curv.value_grad_and_statistics)(params, x, y)

        def logits_from(s0, s1):  # one example: the logits as a function of both layer outputs
            return (jnp.tanh(s0) @ params[1]["w"] + params[1]["b"]) + s1

        s0 = x @ params[0]["w"] + params[0]["b"]
        z = jax.vmap(logits_from)(s0, jnp.zeros((len(x), 3)))
        p = np.asarray(jax.nn.softmax(z))
        H = np.stack([np.diag(q) - np.outer(q, q) for q in p])
        jacobians = jax.jit(jax.vmap(jax.jacfwd(logits_from, argnums=(0, 1))))(s0, jnp.zeros((len(x), 3)))
        n = x.shape[0]
        blocks = []
        for l, a in enumerate([x, jnp.tanh(s0)]):
            a = np.concatenate([np.asarray(a), np.ones((n, 1))], 1)
            A = a.T @ a / n
            J = np.asarray(jacobians[l])  # (N, 3 logits, d_out)
            G = np.einsum("nki,nkl,nlj->ij", J, H, J) / n
            # float64 sums of 16 products (and the 3×3 H in between): ≤ 16·U64·Σ|terms| ≈ 2e-15
            # of the entries' scale; rtol 1e-12 (atol for entries that cancel to ~0)
            np.testing.assert_allclose(stats.factors[l]["A"], A, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(stats.factors[l]["G"], G, rtol=1e-12, atol=1e-14)
            blocks.append(np.kron(A, G))
        F = np.zeros((sum(b.shape[0] for b in blocks),) * 2)
        o = 0
        for b in blocks:
            F[o:o + b.shape[0], o:o + b.shape[0]] = b
            o += b.shape[0]
        vec = np.concatenate([np.concatenate([np.asarray(g["w"]), np.asarray(g["b"])[None]], 0).ravel() for g in grads])
        lam = 1e-3
        expected = np.linalg.solve(F + lam * np.eye(F.shape[0]), vec)
        tx = gc.kfac_precondition(curv, damping=lam, inverse="eigh")
        direction, _ = jax.jit(lambda g, st: tx.update(g, tx.init(params), params, kfac_statistics=st))(grads, stats)
        got = np.concatenate([np.concatenate([np.asarray(g["w"]), np.asarray(g["b"])[None]], 0).ravel() for g in direction])
        # both solves are backward stable on F̂ + λI of condition κ ≤ 282 (λ = 1e-3): each errs by
        # ≲ κ·n·U64 ≈ 282·35·1.1e-16 ≈ 1e-12 relative; rtol 1e-9
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)


def test_sampled_and_empirical_factors():
    """Sampled G converges to the exact G within its Monte-Carlo error; A does not depend on the
    estimator; the empirical G is built from the gradients at the data's labels."""
    d, params, x, y = reference_setup("dense_mlp", jnp.float32)
    exact = gc.kfac_curvature(mlp_loss, params, x, y, estimator="exact")
    sampled = gc.kfac_curvature(mlp_loss, params, x, y, estimator="sampled", num_samples=4)
    _, _, ex = jax.jit(exact.value_grad_and_statistics)(params, x, y)
    keys = jax.random.split(jax.random.PRNGKey(0), 48)
    draws = jax.jit(jax.vmap(lambda k: sampled.value_grad_and_statistics(params, x, y, key=k)[2]))(keys)
    for l in range(3):
        g = np.asarray(draws.factors[l]["G"], np.float64)
        mean, err = g.mean(0), g.std(0, ddof=1) / np.sqrt(len(keys))
        z = np.abs(mean - np.asarray(ex.factors[l]["G"])) / (err + 1e-12)
        assert np.max(z) < 5.5, (l, float(np.max(z)))
        # A does not depend on the estimator: two float32 programs (vmapped and not) summing the
        # same M = 256 products in different orders, |Δ| ≤ 2·log2(M)·U32·max|A| (pairwise
        # summation; measured 1.2e-7 = 0.12 of this bound with max|A| ≈ 1)
        bound = 2 * np.log2(x.shape[0]) * U32 * float(np.max(np.abs(ex.factors[l]["A"])))
        np.testing.assert_allclose(draws.factors[l]["A"][0], ex.factors[l]["A"], rtol=0, atol=bound)
    emp = gc.kfac_curvature(mlp_loss, params, x, y, estimator="empirical")
    _, _, st = jax.jit(emp.value_grad_and_statistics)(params, x, y)
    logits = d["logits"]
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    r = p - np.eye(10)[d["y"]]
    # float32 logits through a softmax and a 256-row sum against float64: measured 0.046 of this
    # tolerance (max relative 4.9e-7), 20× below it
    np.testing.assert_allclose(st.factors[2]["G"], r.T @ r / len(r), rtol=1e-5, atol=1e-7)


def test_moving_average_and_refresh_period():
    """F_k is the bias-corrected exponential mean of the batch factors; inverses refresh every T."""
    d, params, x, y = reference_setup("dense_mlp", jnp.float32)
    curv = gc.kfac_curvature(mlp_loss, params, x, y, estimator="sampled")
    tx = gc.kfac_precondition(curv, damping=1e-2, ema_decay=0.9, refresh_every=3)
    state = tx.init(params)
    batches, inverses = [], []

    @jax.jit
    def step(state, key):
        _, grads, stats = curv.value_grad_and_statistics(params, x, y, key=key)
        return stats, tx.update(grads, state, params, kfac_statistics=stats)[1]

    for i in range(4):
        stats, state = step(state, jax.random.PRNGKey(i))
        batches.append(np.asarray(stats.factors[1]["G"], np.float64))
        inverses.append(np.asarray(state.inverses[1]["G_inv"]))
    weights = 0.9 ** np.arange(3, -1, -1)
    expected = sum(w * b for w, b in zip(weights, batches)) / weights.sum()
    # 4 float32 updates F += (B − F)/w: ≲ 3 roundings each, ≈ 12·U32 = 7e-7 relative worst case;
    # measured 2.5e-7 (SSE4.2 path), limit 1e-5
    np.testing.assert_allclose(state.factors[1]["G"], expected, rtol=1e-5)
    assert np.array_equal(inverses[0], inverses[1]) and np.array_equal(inverses[1], inverses[2])
    assert not np.array_equal(inverses[2], inverses[3])


def test_chain_with_momentum_trains_and_vmap_over_damping_equals_separate_runs():
    # vmap against separate runs: parity is the point, so float64 (float32 measured ≤ 2e-7
    # relative).  Bound: 5 steps of ~1e3 roundings of U64 amplified by the damped blocks (κ ≤ 402
    # at λ = 1e-2) and the momentum (≤ 1/(1 − 0.9)): ≲ 5·1e3·402·10·U64 ≈ 2e-9; limit 1e-8
    # (measured ≤ 1e-13).
    with jax.enable_x64(True):
        d, params, x, y = reference_setup("dense_mlp", jnp.float64)
        curv = gc.kfac_curvature(mlp_loss, params, x, y)

        def run(damping):
            tx = gc.chain(gc.kfac_precondition(curv, damping=damping, refresh_every=2),
                          gc.scale_by_momentum(0.9), gc.scale_by_learning_rate(0.2))

            def step(carry, key):
                p, s = carry
                value, grads, stats = curv.value_grad_and_statistics(p, x, y, key=key)
                updates, s = tx.update(grads, s, p, kfac_statistics=stats)
                return (gc.apply_updates(p, updates), s), value

            (p, _), values = jax.lax.scan(step, (params, tx.init(params)), jax.random.split(jax.random.PRNGKey(0), 5))
            return values

        dampings = jnp.array([1e-2, 1.0])
        together = jax.jit(jax.vmap(run))(dampings)
        alone_fn = jax.jit(run)
        for i, lam in enumerate(dampings):
            alone = alone_fn(lam)
            np.testing.assert_allclose(together[i], alone, rtol=1e-8, atol=1e-12)
        assert float(together[0, -1]) < 0.6 * float(together[0, 0])
