"""Property-based tests (hypothesis) of the algebra and the schedules."""

import jax
import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

import gradchain as gc

SETTINGS = settings(max_examples=25, deadline=None)
floats = st.floats(-10, 10, allow_nan=False, allow_subnormal=False)
vectors = st.lists(floats, min_size=1, max_size=6).map(lambda v: jnp.asarray(v, jnp.float32))
trees = st.fixed_dictionaries({"a": vectors, "b": vectors})
TRANSFORMS = st.sampled_from([
    lambda: gc.scale(0.5), lambda: gc.clip(1.0), lambda: gc.scale_by_momentum(0.9), lambda: gc.scale_by_rms(),
    lambda: gc.scale_by_adam(), lambda: gc.clip_by_global_norm(2.0), lambda: gc.scale_by_sum_of_squares(),
])


def apply_n(tx, grads_seq, params):
    state = tx.init(params)
    outs = []
    for g in grads_seq:
        u, state = tx.update(g, state, params)
        outs.append(u)
    return outs


@SETTINGS
@given(trees, TRANSFORMS)
def test_chain_with_identity_is_the_transform(tree, make):
    grads = [tree, jax.tree.map(lambda x: -2 * x, tree)]
    for wrapped in (gc.chain(gc.identity(), make()), gc.chain(make(), gc.identity())):
        for a, b in zip(apply_n(wrapped, grads, tree), apply_n(make(), grads, tree)):
            np.testing.assert_array_equal(a["a"], b["a"])


@SETTINGS
@given(trees, TRANSFORMS, TRANSFORMS, TRANSFORMS)
def test_chaining_is_associative(tree, f, g, h):
    grads = [tree, jax.tree.map(lambda x: x + 1, tree)]
    left = gc.chain(gc.chain(f(), g()), h())
    right = gc.chain(f(), gc.chain(g(), h()))
    for a, b in zip(apply_n(left, grads, tree), apply_n(right, grads, tree)):
        np.testing.assert_array_equal(a["b"], b["b"])


@SETTINGS
@given(trees, TRANSFORMS, st.booleans(), st.booleans())
def test_masked_leaves_are_untouched(tree, make, mask_a, mask_b):
    tx = gc.masked(make(), {"a": mask_a, "b": mask_b})
    out = apply_n(tx, [tree, tree], tree)[-1]
    for name, masked_in in (("a", mask_a), ("b", mask_b)):
        if not masked_in:
            np.testing.assert_array_equal(out[name], tree[name])


SCHEDULES = st.sampled_from([
    lambda: gc.cosine_schedule(0.1, 100, 0.001), lambda: gc.linear_schedule(0.1, 50), lambda: gc.inverse_sqrt_schedule(0.1),
    lambda: gc.step_schedule(0.1, [10, 20, 30]), lambda: gc.warmup(gc.cosine_schedule(0.1, 100), 10),
    lambda: gc.sgdr_schedule(0.1, 10, t_mult=2.0), lambda: gc.constant_schedule(0.1),
])


@SETTINGS
@given(SCHEDULES, st.integers(0, 2**31 - 2))
def test_schedules_are_finite_and_non_negative(make, step):
    value = float(make()(step))
    assert np.isfinite(value) and value >= 0


@SETTINGS
@given(st.lists(st.floats(1e-4, 1.0, allow_subnormal=False), min_size=2, max_size=5), TRANSFORMS)
def test_vmap_of_a_transform_equals_a_loop(rates, make):
    params = {"w": jnp.linspace(-1.0, 1.0, 4)}
    grads = [{"w": jnp.array([0.3, -0.2, 1.5, 0.0])}, {"w": jnp.array([-1.0, 0.5, 0.25, 2.0])}]

    def run(lr):
        tx = gc.chain(make(), gc.scale_by_learning_rate(lr))
        return apply_n(tx, grads, params)[-1]["w"]

    batched = jax.vmap(run)(jnp.asarray(rates, jnp.float32))
    # vmap over the rate maps the same element-wise operations (measured equal); the one
    # reduction, a norm of 4 entries, may sum in another order under vmap: ≤ (4 + 2)·U32 = 3.6e-7
    # relative to the update, and atol 1e-7 covers entries that are exactly 0 in one of them
    for i, lr in enumerate(rates):
        np.testing.assert_allclose(batched[i], run(jnp.float32(lr)), rtol=1e-6, atol=1e-7)
