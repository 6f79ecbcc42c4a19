"""The transformation algebra: chain, identity, apply_updates, and Optax/Flax interoperability."""

import chex
import jax
import jax.numpy as jnp
import optax
import pytest
from helpers import assert_close, random_tree, run

import gradchain as gc

PARAMS = random_tree(jax.random.PRNGKey(0))
GRADS = random_tree(jax.random.PRNGKey(1))


def test_identity_passes_updates_through(jit_or_eager):
    tx = gc.identity()
    out, state = jit_or_eager(tx.update)(GRADS, tx.init(PARAMS))
    chex.assert_trees_all_equal(out, GRADS)
    assert state == gc.EmptyState()


def test_chain_applies_in_order(jit_or_eager):
    # clip then scale differs from scale then clip: the order is observable.
    clip_then_scale = gc.chain(gc.clip(0.5), gc.scale(4.0))
    scale_then_clip = gc.chain(gc.scale(4.0), gc.clip(0.5))
    u1, _ = jit_or_eager(clip_then_scale.update)(GRADS, clip_then_scale.init(PARAMS))
    u2, _ = jit_or_eager(scale_then_clip.update)(GRADS, scale_then_clip.init(PARAMS))
    # clipping and scaling by 4 are exact in float32: the default rtol 1e-6 is never used
    chex.assert_trees_all_close(u1, jax.tree.map(lambda g: 4 * jnp.clip(g, -0.5, 0.5), GRADS))
    chex.assert_trees_all_close(u2, jax.tree.map(lambda g: jnp.clip(4 * g, -0.5, 0.5), GRADS))


def test_empty_chain_is_the_identity():
    tx = gc.chain()
    out, _ = tx.update(GRADS, tx.init(PARAMS))
    chex.assert_trees_all_equal(out, GRADS)


def test_apply_updates_adds_and_keeps_dtype():
    params = {"a": jnp.ones(3, jnp.bfloat16), "b": jnp.ones(2), "none": None}
    updates = {"a": jnp.full(3, 0.5, jnp.float32), "b": jnp.full(2, -1.0), "none": None}
    new = gc.apply_updates(params, updates)
    assert new["a"].dtype == jnp.bfloat16 and new["none"] is None
    chex.assert_trees_all_close(new["b"], jnp.zeros(2))  # 1 - 1 and 1 + 0.5: exact
    chex.assert_trees_all_close(new["a"].astype(jnp.float32), jnp.full(3, 1.5))


def test_apply_updates_refuses_a_tree_of_another_shape():
    with pytest.raises(ValueError, match="updates do not have the structure of params"):
        gc.apply_updates({"a": jnp.ones(2)}, {"b": jnp.ones(2)})


def test_chain_refuses_something_that_is_not_a_transformation():
    with pytest.raises(TypeError, match=r"transforms\[1\]"):
        gc.chain(gc.scale(1.0), lambda g: g)


# --- Optax and Flax interoperability, both directions ------------------------------------------


def test_gradchain_transform_inside_optax_chain():
    ours = optax.chain(gc.clip_by_global_norm(1.0), gc.adam(1e-2))
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.inject_hyperparams(optax.adam)(1e-2, eps=1e-7))
    expected, _ = run(theirs, PARAMS, 50, apply=optax.apply_updates)
    actual, _ = run(ours, PARAMS, 50, apply=optax.apply_updates)
    # the same float32 operations (inject_hyperparams keeps Adam's constants as float32 arrays,
    # as gradchain does): measured bitwise equal over 5 seeds, with and without FMA
    # (XLA_FLAGS=--xla_cpu_max_isa=AVX); the tolerance is a margin of ~100 ulps for a compiler
    # that contracts a multiply-add differently
    assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_optax_transform_inside_gradchain_chain():
    mixed = gc.chain(optax.clip_by_global_norm(1.0), optax.scale_by_adam(eps=1e-7), gc.scale_by_learning_rate(1e-2))
    pure = gc.chain(gc.clip_by_global_norm(1.0), gc.adam(1e-2))
    expected, _ = run(pure, PARAMS, 50)
    actual, _ = run(mixed, PARAMS, 50)
    # optax.scale_by_adam folds 1 - b2 from the Python float (delta = 1.29e-5 relative to
    # gradchain's float32 1 - b2) and optax's clip sums the norm in another order; each step moves
    # by ~delta/2 relative, 50·1e-2·delta/2 = 3.2e-6 to first order, but the gradients feed the
    # difference back, so that is no bound: measured ≤ 4.7e-6 over 5 seeds, with and without FMA
    # (XLA_FLAGS=--xla_cpu_max_isa=AVX; the old atol 1e-5 + rtol 2e-5 was used to 0.21).
    # Tolerance: ten times the largest measured difference.
    assert_close(actual, expected, rtol=0.0, atol=5e-5)


def _tiny_regression():
    x = jax.random.normal(jax.random.PRNGKey(0), (32, 3))
    y = x @ jnp.array([1.0, -2.0, 0.5]) + 0.3
    return x, y


def test_flax_train_state_accepts_a_gradchain_optimizer():
    train_state = pytest.importorskip("flax.training.train_state", reason="Flax's TrainState: pip install flax")

    x, y = _tiny_regression()
    params = {"w": jnp.zeros(3), "b": jnp.zeros(())}
    apply_fn = lambda p, x: x @ p["w"] + p["b"]
    state = train_state.TrainState.create(apply_fn=apply_fn, params=params, tx=gc.adam(0.1))
    loss = lambda p: jnp.mean((apply_fn(p, x) - y) ** 2)

    @jax.jit
    def step(state):
        return state.apply_gradients(grads=jax.grad(loss)(state.params))

    for _ in range(300):
        state = step(state)
    # noiseless linear data: measured loss 4e-14 to 1.1e-13 over 6 data seeds (3e-9 after 200
    # steps), far below the bound, which only says the optimizer reached the fit
    assert float(loss(state.params)) < 1e-3
    assert int(state.step) == 300


def test_flax_nnx_optimizer_accepts_a_gradchain_optimizer():
    nnx = pytest.importorskip("flax.nnx", reason="Flax's nnx.Optimizer: pip install flax")

    x, y = _tiny_regression()
    model = nnx.Linear(3, 1, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, gc.adam(0.1), wrt=nnx.Param)
    loss = lambda m: jnp.mean((m(x)[:, 0] - y) ** 2)

    @nnx.jit
    def step(model, optimizer):
        grads = nnx.grad(loss)(model)
        optimizer.update(model, grads)

    for _ in range(300):
        step(model, optimizer)
    assert float(loss(model)) < 1e-3  # measured 9e-15 to 3e-13 over 6 seeds (see above)


def test_chain_forwards_extra_args_to_the_transforms_that_take_them():
    # optax.contrib.reduce_on_plateau needs `value=`; gc.scale never sees it.  Reference: optax.chain.
    plateau = optax.contrib.reduce_on_plateau(patience=1, factor=0.5, accumulation_size=1)
    ours, theirs = gc.chain(gc.scale(2.0), plateau), optax.chain(optax.scale(2.0), plateau)
    assert isinstance(ours, gc.GradientTransformationExtraArgs)
    s_ours, s_theirs = ours.init(PARAMS), theirs.init(PARAMS)
    for _ in range(4):  # a constant loss: the scale halves once patience runs out
        out, s_ours = jax.jit(ours.update)(GRADS, s_ours, PARAMS, value=jnp.float32(1.0))
        ref, s_theirs = theirs.update(GRADS, s_theirs, PARAMS, value=jnp.float32(1.0))
        chex.assert_trees_all_close(out, ref)  # the same one multiplication: equal
    chex.assert_trees_all_close(out, jax.tree.map(lambda g: 0.25 * g, GRADS))  # 2·0.5·0.5·g: exact (powers of 2)


def test_chain_extra_args_by_name_and_by_kwargs():
    seen = {}

    def named(extra_name):
        def update(updates, state, params=None, *, stats=None):
            seen[extra_name] = stats
            return updates, state

        return gc.GradientTransformationExtraArgs(lambda p: gc.EmptyState(), update)

    tx = gc.chain(gc.identity(), named("a"), gc.chain(named("b")))
    tx.update(GRADS, tx.init(PARAMS), stats=3, unused=4)
    assert seen == {"a": 3, "b": 3}
