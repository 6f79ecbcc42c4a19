"""multi_tensor: a transformation on packed buffers gives the numbers of the unpacked one."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import U64, assert_close, float64, run

import gradchain as gc
from gradchain.multi_tensor import MultiTensorState, Packed


def many_leaves(key, n=12, half=False):
    """A model-like tree: ``n`` small leaves of varied shapes and one big leaf; with ``half``,
    three small bfloat16 leaves too."""
    keys = jax.random.split(key, n + 2)
    shapes = [(3,), (4, 5), (2, 3, 2), (), (7,)]
    tree = {f"layer{i}": jax.random.normal(keys[i], shapes[i % 5]) for i in range(n)}
    tree["embedding"] = jax.random.normal(keys[n], (40, 40))  # > max_leaf_size below
    if half:
        tree["half"] = [jax.random.normal(keys[n + 1], (6,), jnp.bfloat16)] * 3
    return tree


PARAMS = many_leaves(jax.random.PRNGKey(0))
PACK = dict(max_leaf_size=1000, min_leaves=4)

CHAINS = {
    "adam": lambda: gc.chain(gc.scale_by_adam(), gc.scale_by_learning_rate(1e-2)),
    "sgd+nesterov": lambda: gc.chain(gc.scale_by_momentum(0.9, nesterov=True), gc.scale_by_learning_rate(0.1)),
    "adamw+cosine": lambda: gc.chain(
        gc.scale_by_adam(b1=0.8), gc.add_decayed_weights(1e-2), gc.scale_by_learning_rate(gc.cosine_schedule(1e-2, 50))
    ),
    "optax adam": lambda: optax.adam(1e-2),
}


# Packed against unpacked is a parity check: XLA may vectorise (and contract into FMAs) a long
# buffer differently from short leaves, and a global norm sums in another order, so the last bit
# can differ; over 20 float32 steps Adam's g/(√v + eps) can amplify that past any fixed float32
# tolerance on another CPU.  So the runs are in float64: bound 20 steps × (1709 terms of the norm
# + ~10 roundings a step) × U64 × |params| ≤ 4 = 1.5e-11; measured ≤ 6.7e-16 over 5 seeds, with
# and without FMA (XLA_FLAGS=--xla_cpu_max_isa=AVX).
PARITY_TOL = 20 * (1709 + 10) * U64 * 4


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_packed_chain_gives_the_numbers_of_the_unpacked_chain(name):
    """The same element-wise math on the same numbers: 20 scanned steps agree (see PARITY_TOL)."""
    with jax.enable_x64(True):
        params = float64(PARAMS)
        packed = run(gc.multi_tensor(CHAINS[name](), **PACK), params, 20)
        plain = run(CHAINS[name](), params, 20)
        assert {x.dtype for x in jax.tree.leaves(packed[0])} == {jnp.dtype(jnp.float64)}
        assert_close(packed[0], plain[0], rtol=PARITY_TOL, atol=PARITY_TOL)


def test_global_norm_clipping_sums_in_another_order():
    chain = lambda: gc.chain(gc.clip_by_global_norm(0.5), gc.scale_by_adam(), gc.scale_by_learning_rate(1e-2))
    with jax.enable_x64(True):
        params = float64(PARAMS)
        packed = run(gc.multi_tensor(chain(), **PACK), params, 20)
        plain = run(chain(), params, 20)
        assert_close(packed[0], plain[0], rtol=PARITY_TOL, atol=PARITY_TOL)


def test_layout_groups_small_leaves_by_dtype_and_leaves_big_ones_loose():
    params = many_leaves(jax.random.PRNGKey(0), half=True)
    state = gc.multi_tensor(gc.scale_by_adam(), **PACK).init(params)
    leaves = jax.tree.leaves(params)
    loose = [leaf.shape for leaf, slot in zip(leaves, state.slots) if slot is None]
    assert loose == [(40, 40)]
    groups = state.inner.numerator[0].moment.groups
    assert {k: v.shape for k, v in groups.items()} == {
        "bfloat16": (18,),
        "float32": (sum(leaf.size for leaf in leaves if leaf.size <= 1000 and leaf.dtype == jnp.float32),),
    }
    assert groups["bfloat16"].dtype == jnp.bfloat16  # each group keeps its dtype
    offsets = [int(slot["float32"]) for slot in state.slots if slot is not None and "float32" in slot]
    sizes = [leaf.size for leaf, slot in zip(leaves, state.slots) if slot is not None and "float32" in slot]
    assert offsets == list(np.cumsum([0] + sizes[:-1]))


def test_small_trees_pass_through_with_the_plain_state():
    tx = gc.multi_tensor(gc.scale_by_adam())  # default min_leaves=32; this tree has 3 leaves
    params = {"w": jnp.ones((3, 2)), "b": jnp.zeros(2), "s": jnp.ones(())}
    state = tx.init(params)
    assert state.slots is None
    assert jax.tree.structure(state.inner) == jax.tree.structure(gc.scale_by_adam().init(params))
    never = gc.multi_tensor(gc.scale_by_adam(), max_leaf_size=0, min_leaves=1).init(PARAMS)
    assert never.slots is None


def test_optimizers_pack_automatically_only_when_there_are_many_small_leaves():
    big_tree = [jnp.ones((8,)) for _ in range(64)]
    assert gc.adam(1e-3).init(big_tree).slots is not None
    assert gc.sgd(1e-3, momentum=0.9).init(big_tree).slots is not None
    assert gc.adam(1e-3).init(big_tree[:4]).slots is None


def test_adamw_with_a_mask_decays_per_leaf_outside_the_packed_adam():
    params = {f"w{i}": jnp.ones((2, 2)) for i in range(40)} | {f"b{i}": jnp.ones(2) for i in range(40)}
    grads = jax.tree.map(jnp.zeros_like, params)
    updates, _ = gc.adamw(1.0, weight_decay=0.5, mask=gc.decay_mask).update(grads, gc.adamw(1.0, weight_decay=0.5, mask=gc.decay_mask).init(params), params)
    assert float(updates["w0"][0, 0]) == -0.5 and float(updates["b0"][0]) == 0.0


def test_a_per_leaf_mask_inside_the_packed_buffers_is_refused():
    tx = gc.multi_tensor(gc.masked(gc.scale(2.0), gc.decay_mask), **PACK)
    with pytest.raises(ValueError, match="inside multi_tensor"):
        tx.init(PARAMS)


def test_hyperparameters_stay_readable_and_settable_through_the_wrapper():
    tx = gc.adam(1e-3)
    params = [jnp.ones((4,)) for _ in range(40)]
    state = tx.init(params)
    assert float(gc.get_hyperparams(state)["learning_rate"]) == pytest.approx(1e-3)
    state = gc.set_hyperparams(state, learning_rate=0.5)
    updates, _ = tx.update([jnp.ones((4,))] * 40, state, params)
    # first step on g = 1: -0.5·m̂/(√v̂ + eps) = -0.5/(1 + 1e-8); ≤ 8 float32 roundings (moments,
    # bias corrections, sqrt, divide, scale): |rel err| ≤ 8·2**-24 + eps = 4.9e-7 < 1e-6
    assert float(updates[0][0]) == pytest.approx(-0.5, rel=1e-6)


def test_vmap_over_learning_rates_equals_separate_runs():
    """vmap against separate runs, a parity check, in float64: 3 element-wise Adam steps on
    |params| ≤ 40, ≤ 10 roundings each: bound 3·10·U64·40 = 1.3e-13, tolerance 1e-12 (measured:
    equal)."""
    with jax.enable_x64(True):
        rates = jnp.array([1e-3, 1e-2, 1e-1], jnp.float64)
        params = [jnp.linspace(-1.0, 1.0, 5, dtype=jnp.float64) * (i + 1) for i in range(40)]
        grads = jax.tree.map(jnp.sin, params)

        def three_steps(lr):
            tx = gc.adam(lr)
            state, p = tx.init(params), params
            for _ in range(3):
                u, state = tx.update(grads, state, p)
                p = gc.apply_updates(p, u)
            return p

        together = jax.jit(jax.vmap(three_steps))(rates)
        for i, lr in enumerate(rates):
            assert_close(jax.tree.map(lambda x: x[i], together), jax.jit(three_steps)(lr), rtol=1e-12, atol=1e-12)


def test_donated_step_keeps_the_layout_and_the_numbers():
    tx, plain = gc.adam(1e-2), gc.multi_tensor(gc.adam(1e-2), max_leaf_size=0)
    params = [jnp.full((16,), float(i)) for i in range(40)]
    grads = jax.tree.map(jnp.cos, params)

    def make_step(tx):
        def step(p, s):
            u, s = tx.update(grads, s, p)
            return gc.apply_updates(p, u), s

        return jax.jit(step, donate_argnums=(0, 1))

    results = []
    for t in (tx, plain):
        step, p = make_step(t), [x + 0 for x in params]
        s = t.init(p)
        for _ in range(5):
            p, s = step(p, s)
        results.append((p, s))
    assert isinstance(results[0][1], MultiTensorState) and results[0][1].slots is not None
    # exact: 5 element-wise Adam steps (no reduction), the same IEEE operations on the same
    # numbers packed or not (equal with and without FMA, XLA_FLAGS=--xla_cpu_max_isa=AVX)
    assert_close(results[0][0], results[1][0], rtol=0.0)


def test_inner_sees_a_packed_tree_with_few_leaves():
    seen = []

    def init(params):
        seen.append(params)
        return gc.EmptyState()

    probe = gc.GradientTransformation(init, lambda u, s, p=None: (u, s))
    gc.multi_tensor(probe, **PACK).init(many_leaves(jax.random.PRNGKey(0), half=True))
    assert isinstance(seen[0], Packed) and len(jax.tree.leaves(seen[0])) == 3  # 2 groups + 1 loose


def test_bad_arguments_and_foreign_states_are_named():
    with pytest.raises(ValueError, match="max_leaf_size must be an int >= 0, got -1"):
        gc.multi_tensor(gc.identity(), max_leaf_size=-1)
    with pytest.raises(ValueError, match="min_leaves must be an int >= 1, got 0"):
        gc.multi_tensor(gc.identity(), min_leaves=0)
    with pytest.raises(TypeError, match="inner must be a gradient transformation"):
        gc.multi_tensor(lambda g: g)
    tx = gc.multi_tensor(gc.scale_by_adam(), **PACK)
    with pytest.raises(TypeError, match="state must be a MultiTensorState"):
        tx.update(PARAMS, gc.scale_by_adam().init(PARAMS))
    with pytest.raises(ValueError, match="updates have 2 leaves but the state was initialised with 13"):
        tx.update([jnp.ones(2), jnp.ones(3)], tx.init(PARAMS))
