"""The silent failures and crashes real client code met (issue 17), one test each.

Each test failed before the fix it names; the clients are written here the way the Flax, Equinox
and Optax examples write them (a Linen/NNX training step, an Equinox model, Optax's wrappers).
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import gradchain as gc

P = {"w": jnp.arange(6.0).reshape(3, 2) / 6, "b": jnp.array([0.5, -0.25])}
G = jax.tree.map(lambda x: 0.3 * x + 0.1, P)


def run(tx, params, grads, steps=5, apply=gc.apply_updates):
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(grads, state, params)
        params = apply(params, updates)
    return params, state


def max_diff(a, b):
    return max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


# --- inputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: gc.sgd(0.1), lambda: gc.adam(1e-3), lambda: gc.adamw()])
def test_integer_parameters_raise_naming_the_leaf(make):
    # before: updates [nan nan nan], applied as [0 0 0], no error
    with pytest.raises(TypeError, match=r"\['n'\] has dtype int32.*floating-point"):
        make().init({"w": jnp.ones(3), "n": jnp.arange(3)})


def test_numpy_float64_parameters_update_without_warnings():
    # before: two UserWarnings ("Explicitly requested dtype float64 ...") per update
    params = np.array([1.0, 2.0, 3.0])
    tx = gc.adam(0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new, _ = run(tx, params, params, steps=2)
    expected, _ = run(optax.adam(0.1, eps=1e-7), jnp.asarray(params), jnp.asarray(params), steps=2, apply=optax.apply_updates)
    # bound: Optax's float32 bias correction 1 - b2**t has condition b2**t / (1 - b2**t) ~ 1000, so each
    # step of lr 0.1 is off by <= 0.1 * 1/2 * 1000 * 2**-24 ~ 3e-6 (gradchain's is 3e-7 from float64);
    # measured 1.4e-6 over 6 seeds, AVX-512 and AVX2 (--xla_cpu_max_isa) alike; a pow one ulp off adds 1.5e-6
    assert max_diff(new, expected) < 1e-5


# --- optax.inject_hyperparams ------------------------------------------------------------------
# gradchain's optimizers read their hyperparameters from their state, so Optax's wrapper (which
# rebuilds the optimizer with new values at each update) reaches them only through the frame
# inspection the library no longer does; the supported drop-in is gradchain's own
# `inject_hyperparams` (same call, same `state.hyperparams`).  Optax's wrapper: tests/test_inject.py.

from gradchain.optimizers import inject_hyperparams  # noqa: E402


def test_inject_hyperparams_learning_rate_zero_is_honoured():
    # before: setting the injected learning rate to 0 left the step unchanged
    tx = inject_hyperparams(gc.adam)(learning_rate=0.1)
    params, state = P, tx.init(P)
    updates, state = tx.update(G, state, params)
    params = gc.apply_updates(params, updates)
    state.hyperparams["learning_rate"] = jnp.zeros([])
    for _ in range(2):
        updates, state = jax.jit(tx.update)(G, state, params)
        assert max_diff(gc.apply_updates(params, updates), params) == 0.0


def test_inject_hyperparams_schedule_and_state_edit_are_honoured():
    schedule = optax.linear_schedule(0.1, 0.0, 4)
    injected, _ = run(inject_hyperparams(gc.sgd)(learning_rate=schedule), P, G, steps=4)
    reference, _ = run(optax.sgd(schedule), P, G, steps=4, apply=optax.apply_updates)
    constant, _ = run(gc.sgd(0.1), P, G, steps=4)
    # bound: 4 steps x 1 ulp(|p| < 1) = 2.4e-7 (constant gradients); measured 0 (the same operations)
    assert max_diff(injected, reference) < 1e-6
    assert max_diff(injected, constant) > 1e-3
    # editing the injected value in the wrapper's state changes the step
    tx = inject_hyperparams(gc.adam)(learning_rate=0.1)
    state = tx.init(P)
    state.hyperparams["learning_rate"] = jnp.zeros([])
    updates, _ = tx.update(G, state, P)
    assert max_diff(updates, jax.tree.map(jnp.zeros_like, P)) == 0.0


# --- donation: a state owns its buffers --------------------------------------------------------


def test_state_does_not_alias_the_callers_arrays():
    lr, b2 = jnp.float32(1e-3), jnp.float32(0.999)
    tx = gc.adam(lr, b2=b2)
    state = tx.init(P)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(G, state, params)
        return gc.apply_updates(params, updates), state

    donating = jax.jit(step, donate_argnums=1)
    # before: "Attempt to donate the same buffer twice" (b2 stored in two places, one buffer)
    params, state = donating(P, state)
    params, state = donating(params, state)
    assert not lr.is_deleted() and not b2.is_deleted()
    assert float(lr) == pytest.approx(1e-3)
    pointers = [leaf.unsafe_buffer_pointer() for leaf in jax.tree.leaves(tx.init(P))]
    assert len(pointers) == len(set(pointers))


# --- reset -------------------------------------------------------------------------------------


def test_reset_state_keeps_hyperparameters():
    tx = gc.adam(1e-2)
    _, state = run(tx, P, G, steps=3)
    reset = gc.reset_state(state)
    fresh = tx.init(P)
    assert jax.tree.structure(reset) == jax.tree.structure(fresh)
    assert max_diff(reset, fresh) == 0.0
    updates, _ = tx.update(G, reset, P)
    assert all(bool(jnp.all(jnp.isfinite(u))) for u in jax.tree.leaves(updates))


def test_reset_state_of_a_packed_state_keeps_the_offsets():
    params = {f"b{i}": jnp.full((3,), float(i)) for i in range(40)}
    grads = jax.tree.map(jnp.ones_like, params)
    tx = gc.adam(1e-2)
    _, state = run(tx, params, grads, steps=2)
    assert state.slots is not None
    reset = gc.reset_state(state)
    assert max_diff(reset, tx.init(params)) == 0.0


# --- Flax NNX ----------------------------------------------------------------------------------


def test_nnx_optimizer_hyperparameters_read_format_and_live_once():
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Linear(3, 2, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, gc.adam(1e-3), wrt=nnx.Param)
    lr = gc.get_hyperparams(optimizer.opt_state)["learning_rate"]
    assert f"{lr:.3g}" == "0.001"  # before: OptArray failed the format
    # before: b2 lived twice (moment and bias correction); writing one left the other behind
    assert len(optax.tree_utils.tree_get_all_with_path(optimizer.opt_state, "b2")) == 1
    assert len(optax.tree_utils.tree_get_all_with_path(optimizer.opt_state, "b1")) == 1

    def loss(m):
        return jnp.sum(m(jnp.ones((4, 3))) ** 2)

    optimizer.update(model, nnx.grad(loss)(model))
    assert int(gc.tree_get(optimizer.opt_state, "count")) == 1
    assert len(repr(optimizer.opt_state)) < 2000


# --- Equinox -----------------------------------------------------------------------------------


def _mlp():
    eqx = pytest.importorskip("equinox")
    return eqx, eqx.nn.MLP(4, 2, 8, 2, key=jax.random.PRNGKey(0))


def _grads(eqx, model):
    x = jnp.linspace(-1, 1, 12).reshape(3, 4)
    return eqx.filter_grad(lambda m: jnp.sum(jax.vmap(m)(x) ** 2))(model)


def test_equinox_unfiltered_model_with_sgd_passes_functions_through():
    # before: TypeError: Cannot determine dtype of <custom_jvp ...> from multi_tensor
    eqx, model = _mlp()
    grads = _grads(eqx, model)
    ours, reference = model, model
    tx, ref = gc.sgd(0.1), optax.sgd(0.1)
    state, ref_state = tx.init(model), ref.init(model)
    for _ in range(3):
        updates, state = tx.update(grads, state, model)
        ours = eqx.apply_updates(ours, updates)
        ref_updates, ref_state = ref.update(grads, ref_state)
        reference = eqx.apply_updates(reference, ref_updates)
    assert max_diff(eqx.filter(ours, eqx.is_array), eqx.filter(reference, eqx.is_array)) == 0.0
    # gc.apply_updates keeps the activation functions too
    same = gc.apply_updates(model, tx.update(grads, tx.init(model), model)[0])
    assert same.activation is model.activation


def test_equinox_unfiltered_model_with_adam_says_what_to_do():
    eqx, model = _mlp()
    with pytest.raises(TypeError, match=r"eqx\.filter\(model, eqx\.is_array\)") as info:
        gc.adam(1e-3).init(model)
    assert "activation" in str(info.value)  # names the leaf


def test_equinox_filtered_model_matches_optax():
    eqx, model = _mlp()
    params = eqx.filter(model, eqx.is_array)
    grads = _grads(eqx, model)
    tx, ref = gc.adam(1e-2, eps=1e-8), optax.adam(1e-2)
    state, ref_state = tx.init(params), ref.init(params)
    ours, reference = model, model
    for _ in range(3):
        updates, state = tx.update(grads, state, eqx.filter(ours, eqx.is_array))
        ours = eqx.apply_updates(ours, updates)
        ref_updates, ref_state = ref.update(grads, ref_state)
        reference = eqx.apply_updates(reference, ref_updates)
    # bound: 3 steps x (1 ulp(|w| < 1) = 6e-8 + the update's rounding, lr * ~10 * 2**-24 = 6e-9) = 2e-7 (the
    # gradients are fixed); measured <= 1.5e-7 over 6 seeds on AVX-512 and AVX2
    assert max_diff(eqx.filter(ours, eqx.is_array), eqx.filter(reference, eqx.is_array)) < 1e-6


# --- masks, momentum=None, extra arguments -----------------------------------------------------


def test_masked_accepts_numpy_and_jax_booleans():
    # before: TypeError: mask leaves must be Python bools
    for flag in (jnp.bool_(True), np.bool_(True), jnp.array(True)):
        tx = gc.masked(gc.scale(2.0), {"w": flag, "b": jnp.array(False)})
        updates, _ = tx.update(G, tx.init(P), P)
        assert max_diff(updates["w"], 2 * G["w"]) == 0.0 and max_diff(updates["b"], G["b"]) == 0.0


def test_sgd_momentum_none_is_plain_sgd():
    # before: momentum=None (Optax's default) raised
    a, _ = run(gc.sgd(0.1, momentum=None), P, G)
    b, _ = run(gc.sgd(0.1), P, G)
    assert max_diff(a, b) == 0.0


def _needs_value():
    def init(params):
        return gc.EmptyState()

    def update(updates, state, params=None, *, value):
        return jax.tree.map(lambda u: u * value, updates), state

    return gc.GradientTransformationExtraArgs(init, update)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda tx: gc.masked(tx, {"w": True, "b": True}),
        lambda tx: gc.apply_if_finite(tx),
        lambda tx: gc.multi_tensor(tx, min_leaves=1),
        lambda tx: gc.chain(gc.apply_if_finite(gc.multi_tensor(tx, min_leaves=1))),
    ],
)
def test_wrappers_forward_extra_arguments(wrap):
    tx = wrap(_needs_value())
    updates, _ = tx.update(G, tx.init(P), P, value=3.0)
    assert max_diff(updates, jax.tree.map(lambda g: 3 * g, G)) < 1e-6  # one product, |3g| < 1.1: <= 1 ulp = 1.2e-7


def test_reduce_on_plateau_inside_chain():
    tx = gc.chain(gc.adam(1e-2), optax.contrib.reduce_on_plateau(patience=1, factor=0.5))
    state = tx.init(P)
    for _ in range(4):
        updates, state = tx.update(G, state, P, value=jnp.float32(1.0))  # no improvement
    assert float(state[1].scale) < 1.0


# --- readable states ---------------------------------------------------------------------------


def test_state_repr_is_short_and_shows_shapes_hyperparameters_and_step():
    state = gc.adam(1e-3).init(P)
    text = repr(state)
    assert len(text) < 600, text  # before: 29,718 characters for a 4-leaf Adam
    assert "learning_rate: 0.001" in text and "f32[3,2]" in text and "count=0" in text


def test_optax_tree_utils_on_gradchain_states():
    tx = gc.adam(1e-3)
    _, state = run(tx, P, G, steps=2)
    assert float(optax.tree_utils.tree_get(state, "b2")) == pytest.approx(0.999)  # before: raised
    assert float(optax.tree_utils.tree_get(state, "learning_rate")) == pytest.approx(1e-3)
    assert int(gc.tree_get(state, "count")) == 2
    changed = gc.tree_set(state, learning_rate=0.0, b2=0.99)
    assert float(gc.tree_get(changed, "learning_rate")) == 0.0
    assert float(gc.get_hyperparams(changed)["b2"]) == pytest.approx(0.99)
    counted = gc.tree_set(state, count=0)
    assert all(int(c) == 0 for _, c in gc.state._matches(counted, "count"))
    specs = optax.tree_utils.tree_map_params(tx, lambda p: "spec", state, transform_non_params=lambda _: None)
    moments = [m for _, m in gc.state._matches(specs, "moment")]
    assert moments and all(m == {"w": "spec", "b": "spec"} for m in moments)
    ours = gc.tree_map_params(tx, lambda p: p * 0, state)
    assert jax.tree.structure(ours) == jax.tree.structure(state)


def test_tree_map_params_maps_the_buffers_of_a_packed_state():
    # 40 small leaves and a big one: the small are packed into one buffer, the big stays loose.
    params = {f"b{i}": jnp.full(3, float(i)) for i in range(40)} | {"big": jnp.ones((100, 100))}
    tx = gc.adam()
    _, state = run(tx, params, jax.tree.map(lambda p: 0.1 * p + 0.01, params), steps=2)
    packed = [m for _, m in gc.state._matches(state, "moment")]
    assert packed and all(isinstance(m, gc.Packed) for m in packed)
    for tree_map_params in (gc.tree_map_params, optax.tree_utils.tree_map_params):
        doubled = tree_map_params(tx, lambda p: 2 * p, state)
        for (_, old), (_, new) in zip(gc.state._matches(state, "moment"), gc.state._matches(doubled, "moment")):
            jax.tree.map(lambda a, b: np.testing.assert_array_equal(2 * a, b), old, new)  # x2 is exact
        assert int(gc.tree_get(doubled, "count")) == 2 and doubled.slots == state.slots  # the rest kept
        specs = tree_map_params(tx, lambda p: "spec", state, transform_non_params=lambda _: None)
        assert all(set(jax.tree.leaves(m)) == {"spec"} for _, m in gc.state._matches(specs, "moment"))
    with pytest.raises(ValueError, match=r"packed buffers.*\*rest"):
        gc.tree_map_params(tx, lambda p, q: p, state, params)


# --- porting gaps: checked against Optax -------------------------------------------------------


@pytest.mark.parametrize(
    "ours, theirs, tol",
    [
        (lambda: gc.nadam(1e-2, eps=1e-8), lambda: optax.nadam(1e-2), 1e-6),
        (lambda: gc.adam(1e-2, eps=1e-8, nesterov=True), lambda: optax.nadam(1e-2), 1e-6),
        (lambda: gc.adam(1e-2, eps=1e-8, eps_root=1e-4), lambda: optax.adam(1e-2, eps_root=1e-4), 1e-6),
        (lambda: gc.adamw(1e-2, eps=1e-8, eps_root=1e-4), lambda: optax.adamw(1e-2, eps_root=1e-4), 1e-6),
        (
            lambda: gc.rmsprop(1e-2, decay=0.9, eps=1e-10, centered=True),
            lambda: optax.rmsprop(1e-2, decay=0.9, eps=1e-20, centered=True),
            1e-5,
        ),
        (lambda: gc.adagrad(0.1, initial_accumulator_value=0.1), lambda: optax.adagrad(0.1, eps=1e-7), 1e-6),
        (
            lambda: gc.sgd(0.1, 0.9, accumulator_dtype=jnp.bfloat16),
            lambda: optax.sgd(0.1, 0.9, accumulator_dtype=jnp.bfloat16),
            0.0,
        ),
    ],
)
def test_porting_gaps_match_optax(ours, theirs, tol):
    # bound: the gradients are constant, so 6 steps x (1 ulp(|p| < 1) = 6e-8 + the update's rounding,
    # lr * ~10 * 2**-24 <= 6e-8 for adagrad's lr 0.1) <= 7.2e-7 < 1e-6; rmsprop's centred steps reach
    # 3.3 lr, still < 1e-6 (its 1e-5 is 10x more). Measured, 6 seeds,
    # AVX-512 and AVX2 alike: adam family 3.6e-7 (the bound's 1 ulp a step), adagrad 1.2e-7, rmsprop 1.5e-7.
    # bfloat16 SGD: 0.0, the same elementwise operations in the same order (measured 0 on both ISAs).
    a, state = run(ours(), P, G, steps=6)
    b, _ = run(theirs(), P, G, steps=6, apply=optax.apply_updates)
    assert max_diff(a, b) <= tol


def test_accumulator_dtype_sets_the_buffer_dtype():
    _, state = run(gc.sgd(0.1, 0.9, accumulator_dtype=jnp.bfloat16), P, G, steps=1)
    assert {leaf.dtype for leaf in jax.tree.leaves(gc.tree_get(state, "velocity"))} == {jnp.dtype(jnp.bfloat16)}


# --- Flax Linen (the examples/mnist train step) ------------------------------------------------


def test_flax_linen_train_state_step_matches_optax():
    nn = pytest.importorskip("flax.linen")
    from flax.training import train_state

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(3)(nn.relu(nn.Dense(8)(x)))

    x = jnp.linspace(-1, 1, 20).reshape(5, 4)
    labels = jnp.array([0, 1, 2, 1, 0])
    model = MLP()
    params = model.init(jax.random.PRNGKey(0), x)["params"]

    @jax.jit
    def train_step(state):
        def loss_fn(p):
            logits = state.apply_fn({"params": p}, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

        return state.apply_gradients(grads=jax.grad(loss_fn)(state.params))

    def train(tx):
        state = train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)
        for _ in range(5):
            state = train_step(state)
        return state.params

    # SGD: the same operations in the same order, exact (measured 0 over 6 seeds on AVX-512 and AVX2).
    assert max_diff(train(gc.sgd(0.1, momentum=0.9)), train(optax.sgd(0.1, momentum=0.9))) == 0.0
    # Adam: the gradients follow the parameters, and m / sqrt(v) amplifies a perturbed small gradient, so
    # there is no clean ulp bound: measured 3.6e-7 to 4.8e-7 over 6 seeds (AVX-512 and AVX2), x 10 margin
    assert max_diff(train(gc.adam(1e-2, eps=1e-8)), train(optax.adam(1e-2))) < 5e-6


def test_schedule_correspondences_in_coming_from_optax():
    steps = jnp.arange(0, 40)
    pairs = [
        (gc.step_schedule(0.1, [10, 20], 0.5), optax.piecewise_constant_schedule(0.1, {10: 0.5, 20: 0.5})),
        (gc.cosine_schedule(0.1, 30, end_value=0.01), optax.cosine_decay_schedule(0.1, 30, alpha=0.1)),
        (gc.linear_schedule(0.1, 30, end_value=0.0), optax.linear_schedule(0.1, 0.0, 30)),
        (
            gc.warmup(gc.cosine_schedule(0.1, 30), warmup_steps=5),
            optax.warmup_cosine_decay_schedule(0.0, 0.1, 5, 35),
        ),
    ]
    for ours, theirs in pairs:
        # values <= 0.1, a few float32 operations (cos within 2 ulp): <= 10 ulp(0.1) = 7.5e-8; measured 7.5e-9
        assert max_diff(jax.vmap(ours)(steps), jax.vmap(theirs)(steps)) < 1e-6
