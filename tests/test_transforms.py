"""Each transform against its formula, Optax, or an independent derivation."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import U32, assert_close, gradient, random_tree, run

import gradchain as gc

PARAMS = random_tree(jax.random.PRNGKey(0))
GRADS = random_tree(jax.random.PRNGKey(1))


# --- momentum: the lecture's two textbook forms and Nesterov's look-ahead -------------------------


def quadratic_grad(x):
    """∇f for f(x) = ½ xᵀ diag(1, 10) x: the lecture's ill-conditioned valley."""
    return jnp.array([1.0, 10.0]) * x


def test_both_textbook_momentum_forms_give_the_same_iterates():
    # The forms are equal in exact arithmetic and round differently, so they are compared in
    # float64 (in float32 they reached 0.17 of a 1e-6 tolerance).  Bound: 50 steps × 4 roundings ×
    # U64 × the momentum's amplification 1/(1 - ρ) = 10, relative to |x| ≤ 1: 2.2e-13; tolerance
    # 1e-12.
    lr, rho = 0.02, 0.9
    # Form 1: v = ρv + g; x -= α v   (momentum, then learning rate)
    # Form 2: v = ρv - α g; x += v   (learning rate, then momentum)
    form1 = gc.chain(gc.scale_by_momentum(rho), gc.scale_by_learning_rate(lr))
    form2 = gc.chain(gc.scale_by_learning_rate(lr), gc.scale_by_momentum(rho))
    xs = []
    with jax.enable_x64(True):
        x0 = jnp.array([1.0, 1.0], jnp.float64)
        for tx in (form1, form2):
            x, s = x0, tx.init(x0)
            for _ in range(50):
                u, s = tx.update(quadratic_grad(x), s)
                x = gc.apply_updates(x, u)
            assert x.dtype == jnp.float64
            xs.append(np.asarray(x))
    np.testing.assert_allclose(xs[0], xs[1], rtol=1e-12, atol=1e-12)


def test_nesterov_equals_the_lecture_look_ahead_form_after_the_change_of_variables():
    # An identity of two iterations that round differently: checked in float64 on both sides (in
    # float32 against float64 it used 0.1 of rtol 1e-5).  Bound: 50 steps × ~6 roundings × U64 ×
    # the momentum's amplification 10, relative to |x| ≤ 1: 3.3e-13; tolerance 1e-12.
    lr, rho = 0.02, 0.9
    with jax.enable_x64(True):
        x0 = jnp.array([1.0, 1.0], jnp.float64)
        # Look-ahead form: v' = ρv - α∇f(x + ρv); x' = x + v'.  gradchain iterates x̃ = x + ρv.
        x, v = np.asarray(x0, np.float64), np.zeros(2)
        tilde = []
        for _ in range(50):
            v = rho * v - lr * np.asarray(quadratic_grad(jnp.asarray(x + rho * v)), np.float64)
            x = x + v
            tilde.append(x + rho * v)
        tx = gc.sgd(lr, momentum=rho, nesterov=True)
        y, s = x0, tx.init(x0)
        ours = []
        for _ in range(50):
            u, s = tx.update(quadratic_grad(y), s)
            y = gc.apply_updates(y, u)
            ours.append(np.asarray(y))
        assert y.dtype == jnp.float64
    np.testing.assert_allclose(np.array(ours), np.array(tilde), rtol=1e-12, atol=1e-12)


# --- adaptive pieces ----------------------------------------------------------------------------------


def test_moment_is_an_exponential_average_from_zero():
    tx = gc.moment(0.5, order=2)
    s = tx.init(jnp.zeros(2))
    out, s = tx.update(jnp.array([2.0, -4.0]), s)
    chex.assert_trees_all_close(out, jnp.array([2.0, 8.0]))  # 0.5·0 + 0.5·g²: exact (dyadic numbers)
    out, s = tx.update(jnp.array([0.0, 0.0]), s)
    chex.assert_trees_all_close(out, jnp.array([1.0, 4.0]))


def test_bias_correction_undoes_the_zero_start():
    tx = gc.chain(gc.moment(0.9), gc.bias_correction(0.9))
    s = tx.init(jnp.zeros(3))
    for t in range(1, 6):
        out, s = tx.update(jnp.array([1.0, 2.0, 3.0]), s)
        # m_t = (1 - 0.9^t)·g takes ≤ 3 roundings a step, 1 - 0.9^t ≤ 4 (a float32 pow is within a
        # few ulps) and the division 1: ≤ (3t + 5)·U32 = 1.2e-6 at t = 5 (measured 1.2e-7); ×2
        chex.assert_trees_all_close(out, jnp.array([1.0, 2.0, 3.0]), rtol=(3 * t + 5) * U32 * 2)


def test_ratio_feeds_both_sides_the_same_raw_updates():
    tx = gc.ratio(gc.scale(3.0), gc.chain(gc.scale(2.0), gc.sqrt()), eps=1.0)
    out, _ = tx.update(jnp.array([8.0]), tx.init(jnp.zeros(1)))
    chex.assert_trees_all_close(out, jnp.array([24.0 / (4.0 + 1.0)]))  # 1 rounding (the division) ≤ U32


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (gc.clip(0.3), optax.clip(0.3)),
        (gc.clip_by_global_norm(0.5), optax.clip_by_global_norm(0.5)),
        (gc.clip_by_global_norm(100.0), optax.clip_by_global_norm(100.0)),
        (gc.add_decayed_weights(0.1), optax.add_decayed_weights(0.1)),
        (gc.scale_by_momentum(0.9, nesterov=True), optax.trace(0.9, nesterov=True)),
        (gc.scale_by_rms(0.9, 1e-7), optax.scale_by_rms(0.9, 1e-7, eps_in_sqrt=False)),
    ],
    ids=["clip", "global_norm", "global_norm_inactive", "decay", "trace", "rms"],
)
def test_transform_matches_optax(ours, theirs):
    # The same formulas in float32: 20 steps, each rounding a parameter and its step (≤ 1 in size
    # for every transform here) ≤ 4 times, |Δ| ≤ 20·4·U32·(|p| + 1) = 4.8e-6·(|p| + 1); tolerance
    # 1e-5·|p| + 1e-6, measured ≤ 0.05 of it (rms; the others are bitwise equal), with and without
    # FMA (XLA_FLAGS=--xla_cpu_max_isa=AVX).
    a, _ = run(ours, PARAMS, 20)
    b, _ = run(theirs, PARAMS, 20)
    assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_global_norm_clip_leaves_a_norm_of_max_norm():
    out, _ = gc.clip_by_global_norm(0.5).update(GRADS, gc.clip_by_global_norm(0.5).init(PARAMS))
    # two float32 norms of n = 59 squares (each ≤ n·U32/2 + U32 relative, in any summation order),
    # the scale 0.5/norm and the scaled leaves (1 rounding each): ≤ (n + 4)·U32 = 3.8e-6
    n = sum(g.size for g in jax.tree.leaves(GRADS))
    assert float(gc.global_norm(out)) == pytest.approx(0.5, rel=(n + 4) * U32)


# --- penalties and weight decay ---------------------------------------------------------------


def elastic_net(params, l1, l2):
    leaves = jax.tree.leaves(params)
    return l1 * sum(jnp.sum(jnp.abs(w)) for w in leaves) + l2 * sum(jnp.sum(w * w) for w in leaves)


@pytest.mark.parametrize("tx, l1, l2", [
    (gc.add_l2_penalty(0.3), 0.0, 0.3),
    (gc.add_l1_penalty(0.2), 0.2, 0.0),
    (gc.add_elastic_net_penalty(0.2, 0.3), 0.2, 0.3),
])
def test_penalty_gradient_is_the_gradient_of_the_penalty(tx, l1, l2, jit_or_eager):
    out, _ = jit_or_eager(tx.update)(GRADS, tx.init(PARAMS), PARAMS)
    expected = jax.tree.map(jnp.add, GRADS, jax.grad(elastic_net)(PARAMS, l1, l2))
    # g + 2·l2·w + l1·sign(w), two ways: ≤ 3 roundings each of terms of size ≤ |g| + 2·l2·|w| + l1,
    # so |Δ| ≤ 6·U32·that, an absolute bound (g and the penalty can cancel, which defeats an rtol:
    # with atol 0 one entry used 0.65 of rtol 1e-6)
    terms = max(float(jnp.max(jnp.abs(g) + 2 * l2 * jnp.abs(w) + l1)) for g, w in zip(jax.tree.leaves(GRADS), jax.tree.leaves(PARAMS)))
    chex.assert_trees_all_close(out, expected, rtol=6 * U32, atol=6 * U32 * terms)


def test_decay_needs_the_parameters():
    tx = gc.add_decayed_weights(1e-4)
    with pytest.raises(ValueError, match="needs the current parameters"):
        tx.update(GRADS, tx.init(PARAMS))


def test_decay_mask_spares_biases_and_scales():
    tx = gc.add_decayed_weights(1.0, mask=gc.decay_mask)
    zeros = jax.tree.map(jnp.zeros_like, PARAMS)
    out, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
    chex.assert_trees_all_equal(out["dense"]["w"], PARAMS["dense"]["w"])
    chex.assert_trees_all_equal(out["conv"][0], PARAMS["conv"][0])
    chex.assert_trees_all_equal(out["dense"]["b"], zeros["dense"]["b"])
    chex.assert_trees_all_equal(out["scale"], zeros["scale"])


# --- masked ---------------------------------------------------------------------------------------


def test_masked_with_a_prefix_mask_and_a_callable(jit_or_eager):
    inner = gc.scale(10.0)
    prefix = {"dense": True, "scale": False, "conv": False}
    for mask in (prefix, lambda params: prefix):
        tx = gc.masked(inner, mask)
        out, _ = jit_or_eager(tx.update)(GRADS, tx.init(PARAMS), PARAMS)
        chex.assert_trees_all_close(out["dense"], jax.tree.map(lambda g: 10 * g, GRADS["dense"]))  # 1 rounding, the same
        chex.assert_trees_all_equal(out["conv"], GRADS["conv"])


def test_masked_state_only_holds_selected_leaves():
    tx = gc.masked(gc.scale_by_momentum(0.9), {"dense": {"w": True, "b": False}, "scale": False, "conv": False})
    state = tx.init(PARAMS)
    assert len(jax.tree.leaves(state.inner_state.velocity)) == 1


def test_mask_errors_are_clear():
    with pytest.raises(TypeError, match="mask leaves must be Python bools"):
        gc.masked(gc.scale(1.0), jax.tree.map(lambda p: 1, PARAMS)).init(PARAMS)
    with pytest.raises(ValueError, match="mask must have the structure"):
        gc.masked(gc.scale(1.0), {"other": True}).init(PARAMS)


# --- apply_if_finite ---------------------------------------------------------------------------


def test_apply_if_finite_skips_the_step_and_keeps_the_state(jit_or_eager):
    tx = gc.apply_if_finite(gc.adam(1e-2))
    update = jit_or_eager(tx.update)
    state = tx.init(PARAMS)
    _, state = update(GRADS, state, PARAMS)
    bad = jax.tree.map(lambda g: g.at[...].set(jnp.nan) if g.ndim == 0 else g.at[0].set(jnp.inf), GRADS)
    out, new_state = update(bad, state, PARAMS)
    chex.assert_trees_all_equal(out, jax.tree.map(jnp.zeros_like, GRADS))
    chex.assert_trees_all_equal(new_state.inner_state, state.inner_state)
    assert int(new_state.total_nonfinite) == 1 and int(new_state.consecutive_nonfinite) == 1
    assert not bool(new_state.last_finite)
    _, state = update(GRADS, new_state, PARAMS)
    assert int(state.consecutive_nonfinite) == 0 and int(state.total_nonfinite) == 1


def test_apply_if_finite_gives_up_after_n_in_a_row():
    tx = gc.apply_if_finite(gc.sgd(1.0), max_consecutive_errors=2)
    state = tx.init(jnp.zeros(2))
    bad = jnp.array([jnp.nan, 1.0])
    results = []
    for _ in range(3):
        out, state = tx.update(bad, state)
        results.append(bool(jnp.all(jnp.isfinite(out))))
    assert results == [True, True, False]  # two skips, then the failure is let through


def test_apply_if_finite_fuzz_keeps_every_optimizer_finite():
    key = jax.random.PRNGKey(7)
    for make in (gc.sgd, gc.adagrad, gc.rmsprop, gc.adam, gc.adamw):
        tx = gc.apply_if_finite(make(1e-2))

        def step(carry, k):
            p, s = carry
            k1, k2 = jax.random.split(k)
            g = gradient(p, k1)
            poison = jax.random.choice(k2, jnp.array([0.0, jnp.nan, jnp.inf, -jnp.inf]), p=jnp.array([0.7, 0.1, 0.1, 0.1]))
            g = jax.tree.map(lambda x: x + poison, g)
            u, s = tx.update(g, s, p)
            return (gc.apply_updates(p, u), s), None

        (p, s), _ = jax.jit(lambda c: jax.lax.scan(step, c, jax.random.split(key, 10_000)))((PARAMS, tx.init(PARAMS)))
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves((p, s))), make.__name__
        assert 2_500 < int(s.total_nonfinite) < 3_500  # 30% of the steps poisoned


def test_apply_if_finite_validates_its_argument():
    with pytest.raises(ValueError, match="max_consecutive_errors"):
        gc.apply_if_finite(gc.sgd(0.1), max_consecutive_errors=-1)
