"""K-FAC misuse: each case a clear error (argument, value, what is valid) or a documented behaviour.

Every test says in a comment whether it failed before the change that added it ("before: ...")
or documents behaviour that was already right ("already right").
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradchain as gc

X = jax.random.normal(jax.random.PRNGKey(0), (12, 6))
Y = jnp.arange(12) % 3


def loss(p, x, y):
    h = jnp.tanh(gc.kfac_dense(x, p["w1"], p["b1"]))
    return gc.kfac_softmax_cross_entropy(gc.kfac_dense(h, p["w2"], p["b2"]), y)


def params(dtype=jnp.float32, seed=1):
    k = jax.random.split(jax.random.PRNGKey(seed), 2)
    p = {"w1": jax.random.normal(k[0], (6, 5)) / 3, "b1": jnp.zeros(5),
         "w2": jax.random.normal(k[1], (5, 3)) / 3, "b2": jnp.zeros(3)}
    return jax.tree.map(lambda a: a.astype(dtype), p)


def curvature(p=None, x=X, y=Y, **kwargs):
    return gc.kfac_curvature(loss, params() if p is None else p, x, y, **kwargs)


def one_update(tx, curv, p=None, x=X, y=Y, state=None, steps=1):
    p = params() if p is None else p
    state = tx.init(p) if state is None else state
    for _ in range(steps):
        _, grads, stats = curv.value_grad_and_statistics(p, x, y, key=jax.random.PRNGKey(2))
        updates, state = tx.update(grads, state, p, kfac_statistics=stats)
    return updates, state


def all_nan(tree):
    return all(bool(jnp.all(jnp.isnan(leaf))) for leaf in jax.tree.leaves(tree))


def all_finite(tree):
    return all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(tree))


# --- labels and targets where they enter the K-FAC loss ----------------------------------------


@pytest.mark.parametrize("label", [7, 3, -1])
def test_label_out_of_range_names_the_row_the_value_and_the_range(label):
    # before: 7 (and 3) gave a NaN loss with finite gradients; -1 silently meant the last class
    y = Y.at[4].set(label)
    with pytest.raises(ValueError, match=rf"labels must be class indices in \[0, 3\).*label {label} at row 4"):
        loss(params(), X, y)
    with pytest.raises(ValueError, match=rf"label {label} at row 4"):
        curvature(y=y)


def test_float_labels_are_refused():
    # before: cast to int32 silently (1.7 became class 1)
    with pytest.raises(TypeError, match=r"labels must be integer class indices in \[0, 3\), got dtype float32"):
        loss(params(), X, Y.astype(jnp.float32))


def test_labels_of_the_wrong_shape():
    # already right: a shape mismatch named both shapes
    with pytest.raises(ValueError, match=r"targets of shape \(12, 1\) do not match outputs of shape \(12, 3\)"):
        loss(params(), X, Y[:, None])


def test_out_of_range_labels_under_jit_give_nan_loss_and_nan_gradients():
    # before: under jit (values unknown when the program is built) the loss was NaN but the
    # gradients finite, so a NaN-skipping guard on the gradient let the bad batch train.
    # Now the bad rows are poisoned: loss and gradient NaN; valid labels keep their numbers.
    curv = curvature(estimator="exact")
    step = jax.jit(lambda p, y: curv.value_grad_and_statistics(p, X, y)[:2])
    value, grads = step(params(), Y.at[4].set(7))
    assert np.isnan(float(value)) and all_nan({k: grads[k] for k in ("w1", "w2")})
    value, grads = step(params(), Y)
    ref_value, ref_grads = jax.value_and_grad(loss)(params(), X, Y)
    assert float(value) == float(ref_value) and all_finite(grads)
    np.testing.assert_array_equal(grads["w2"], ref_grads["w2"])  # x·1 = x: bit for bit


def test_probability_targets_must_be_distributions():
    # before: accepted; the empirical Fisher's p − y assumed rows summing to 1 (silently wrong)
    logits = jnp.zeros((4, 3))
    targets = jnp.full((4, 3), 1 / 3).at[2].set(jnp.array([0.5, 0.5, 0.5]))
    with pytest.raises(ValueError, match=r"must sum to 1 over the last axis.*row 2 sums to 1.5"):
        gc.kfac_softmax_cross_entropy(logits, targets)
    with pytest.raises(ValueError, match=r"probability targets must be in \[0, 1\]; -0.5 at index \(1, 0\)"):
        gc.kfac_softmax_cross_entropy(logits, jnp.full((4, 3), 0.5).at[1].set(jnp.array([-0.5, 1.0, 0.5])))
    soft = jax.nn.softmax(jax.random.normal(jax.random.PRNGKey(3), (4, 3)))  # a teacher's targets pass
    assert np.isfinite(float(gc.kfac_softmax_cross_entropy(logits, soft)))


def test_sigmoid_targets_outside_the_unit_interval():
    # before: a target of 2 gave a (negative) finite loss, silently
    with pytest.raises(ValueError, match=r"targets must be in \[0, 1\]; 2 at index \(0, 1\)"):
        gc.kfac_sigmoid_cross_entropy(jnp.ones((4, 3)), jnp.zeros((4, 3)).at[0, 1].set(2.0))


@pytest.mark.parametrize("weight", [-1.0, float("nan")])
def test_loss_weight_must_be_a_finite_non_negative_number(weight):
    # before: a negative weight gave NaN factors (its square root scales the Fisher's vectors)
    with pytest.raises(ValueError, match=r"kfac_loss\('softmax_cross_entropy'\) weight must be"):
        gc.kfac_softmax_cross_entropy(jnp.ones((4, 3)), Y[:4], weight=weight)


# --- empty batches and models without tags -----------------------------------------------------


def test_empty_batch_at_construction():
    # before: ZeroDivisionError: integer modulo by zero (deep in a reshape)
    with pytest.raises(ValueError, match=r"layer 'dense_0': the batch is empty \(input of shape \(0, 6\)\)"):
        curvature(x=X[:0], y=Y[:0])


def test_empty_batch_at_a_step():
    # before: ZeroDivisionError at the step
    curv = curvature()
    with pytest.raises(ValueError, match="the batch is empty"):
        one_update(gc.kfac_precondition(curv), curv, x=X[:0], y=Y[:0])
    with pytest.raises(ValueError, match=r"kfac_loss\('squared_error'\): the batch is empty"):
        gc.kfac_squared_error(jnp.zeros((0, 2)), jnp.zeros((0, 2)))


def test_a_model_with_no_tagged_layer():
    # before: accepted; K-FAC silently preconditioned nothing (every parameter "untagged")
    def untagged(p, x, y):
        return gc.kfac_softmax_cross_entropy(x @ p["w"], y)

    with pytest.raises(ValueError, match=r"tagged no layer.*\['w'\].*gc.kfac_dense"):
        gc.kfac_curvature(untagged, {"w": jnp.ones((6, 3))}, X, Y)


# --- damping and decay: values and schedules ---------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [({"damping": lambda t: 1e-2 - 1e-3 * t}, r"damping\(10\) must be in \(0, inf\], got 0"),
     ({"damping": lambda t: jnp.where(t < 1000, 1e-2, -1.0)}, r"damping\(1024\) must be in \(0, inf\]"),
     ({"ema_decay": lambda t: 0.9 + 0.01 * t}, r"ema_decay\(10\) must be in \[0, 1\)")],
    ids=["damping_linear_to_negative", "damping_negative_late", "ema_decay_reaches_one"],
)
def test_a_schedule_that_leaves_its_range_after_step_zero_is_refused(kwargs, message):
    # before: only step 0 was checked; the update at the bad step gave NaN
    with pytest.raises(ValueError, match=message):
        gc.kfac_precondition(curvature(), **kwargs)


@pytest.mark.parametrize("inverse", ["pi", "eigh"])
def test_a_damping_set_negative_later_gives_nan_updates(inverse):
    # [eigh] before: a negative damping gave finite, meaningless updates.  [pi] already right: NaN
    # (γ = √(λ/s) of a negative λ); now both by the documented guard, and a valid damping set
    # afterwards gives finite updates again
    curv = curvature()
    tx = gc.kfac_precondition(curv, damping=1e-2, inverse=inverse)
    _, state = one_update(tx, curv)
    updates, _ = one_update(tx, curv, state=gc.set_hyperparams(state, damping=-1e-3))
    assert all_nan(updates)
    updates, _ = one_update(tx, curv, state=gc.set_hyperparams(state, damping=1e-3))
    assert all_finite(updates)


def test_a_schedule_bad_between_the_probes_gives_nan_updates_at_that_step_only():
    # before: NaN (pi) or finite garbage (eigh) with no explanation; now documented: the grid of
    # PROBE_STEPS cannot see step 17, the runtime guard does (NaN, which apply_if_finite skips)
    curv = curvature()
    tx = gc.kfac_precondition(curv, damping=lambda t: jnp.where(t == 17, -1.0, 1e-2), inverse="eigh")
    state = tx.init(params())._replace(count=jnp.int32(16))  # as after 16 updates
    updates, state = one_update(tx, curv, state=state)  # update 16 stores damping(17) for the next
    assert all_finite(updates) and float(state.hyperparams["damping"]) == -1.0
    updates, state = one_update(tx, curv, state=state)  # update 17
    assert all_nan(updates)
    assert all_finite(one_update(tx, curv, state=state)[0])  # update 18 is fine again


@pytest.mark.parametrize("damping", [0.0, -1.0, float("inf"), True])
def test_damping_values(damping):
    # already right: 0, negative, non-finite and bool dampings were refused, naming the argument
    with pytest.raises((ValueError, TypeError), match="damping"):
        gc.kfac_precondition(curvature(), damping=damping)


@pytest.mark.parametrize("period", [0, -2, 1.5])
def test_refresh_every_of_the_optimizer(period):
    # already right: refresh_every (the inverse period) must be an int >= 1
    with pytest.raises(ValueError, match=f"refresh_every must be an int >= 1, got {period}"):
        gc.kfac_optimizer(curvature(), refresh_every=period)


def test_initial_damping_outside_the_clip_range():
    # before: accepted; the first adaptation silently jumped λ into [min_damping, max_damping]
    with pytest.raises(ValueError, match=r"initial_damping must be in \[min_damping, max_damping\] = \[1e-05, 1000\].*got 5000"):
        gc.kfac_optimizer(curvature(), initial_damping=5000.0)
    gc.kfac_optimizer(curvature(), initial_damping=5000.0, adapt_damping=False)  # no clipping: fine


def test_max_damping_below_min_damping():
    # already refused; the message now says against what: "max_damping must be >= min_damping"
    with pytest.raises(ValueError, match=r"max_damping must be >= min_damping = 10.0, got 1.0"):
        gc.kfac_optimizer(curvature(), initial_damping=5.0, min_damping=10.0, max_damping=1.0)


def test_a_schedule_for_the_adaptive_optimizers_damping():
    # before: "initial_damping must be a real number, a JAX array or a schedule", yet a schedule
    # is exactly what kfac_optimizer cannot take; now it says what to use instead
    with pytest.raises(TypeError, match=r"initial_damping must be a number or an array.*gc.kfac_precondition"):
        gc.kfac_optimizer(curvature(), initial_damping=lambda t: 1.0)


def test_a_fixed_momentum_value_for_the_adaptive_optimizer():
    # already refused (momentum must be a bool); the message now says how to get a fixed momentum
    with pytest.raises(TypeError, match=r"momentum must be a bool, got 0.9.*gc.scale_by_momentum"):
        gc.kfac_optimizer(curvature(), momentum=0.9)  # pyright: ignore[reportArgumentType] - the misuse


@pytest.mark.parametrize(
    "kwargs, message",
    [({"adaptation_decay": 1.0}, r"adaptation_decay must be in \(0, 1\)"),
     ({"l2_reg": -1e-3}, r"l2_reg must be in \[0, inf\]"),
     ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\)")],
    ids=["adaptation_decay_one", "l2_reg_negative", "ema_decay_one"],
)
def test_other_adaptive_optimizer_values(kwargs, message):
    # already right
    with pytest.raises(ValueError, match=message):
        gc.kfac_optimizer(curvature(), **kwargs)


# --- statistics, updates and states that do not belong together --------------------------------


def test_missing_statistics_say_where_they_come_from():
    # before: Python's "update() missing 1 required keyword-only argument"
    curv = curvature()
    tx = gc.chain(gc.kfac_precondition(curv), gc.scale_by_learning_rate(0.1))
    with pytest.raises(TypeError, match=r"needs kfac_statistics=.*curv.value_grad_and_statistics"):
        tx.update(params(), tx.init(params()), params())


def test_statistics_of_another_curvature():
    # before: "sub got incompatible shapes for broadcasting: (4, 4), (5, 5)" from inside the moving
    # average (and a silent broadcast for factors of shape (1, 1))
    curv = curvature()
    other = gc.kfac_curvature(loss, {"w1": jnp.ones((6, 4)), "b1": jnp.zeros(4), "w2": jnp.ones((4, 3)),
                                     "b2": jnp.zeros(3)}, X, Y)
    p_other = {"w1": jnp.ones((6, 4)) / 4, "b1": jnp.zeros(4), "w2": jnp.ones((4, 3)) / 4, "b2": jnp.zeros(3)}
    _, _, stats = other.value_grad_and_statistics(p_other, X, Y, key=jax.random.PRNGKey(0))
    tx = gc.kfac_precondition(curv)
    with pytest.raises(ValueError, match=r"block 'dense_0' has factors \{'A': \(7, 7\), 'G': \(4, 4\)\}, this curvature's has \{'A': \(7, 7\), 'G': \(5, 5\)\}"):
        tx.update(params(), tx.init(params()), kfac_statistics=stats)


def test_statistics_of_the_wrong_type():
    # already right
    tx = gc.kfac_precondition(curvature())
    with pytest.raises(TypeError, match="kfac_statistics must be the KFACStatistics"):
        tx.update(params(), tx.init(params()), kfac_statistics={"A": 1})


def test_updates_of_another_structure():
    # already right: the paths of both trees are printed
    curv = curvature()
    tx = gc.kfac_precondition(curv)
    _, _, stats = curv.value_grad_and_statistics(params(), X, Y, key=jax.random.PRNGKey(0))
    with pytest.raises(ValueError, match=r"do not have the parameters' structure"):
        tx.update({"w1": params()["w1"]}, tx.init(params()), kfac_statistics=stats)


# --- the data-parallel axis -------------------------------------------------------------------


def _sharded_step(curv):
    """One kfac_optimizer step (its statistics, Gauss-Newton products and adapted loss), per shard."""
    opt = gc.kfac_optimizer(curv, initial_damping=1.0, adaptation_interval=1)

    def step(x, y):
        p = params()
        return opt.step(p, opt.init(p), x, y)[0]

    return step


def test_an_axis_name_the_map_does_not_bind():
    # before: jax's bare AssertionError inside shard_map (its pmean over an unbound axis) and
    # "unbound axis name: batch" elsewhere; now a ValueError naming the argument, the value and
    # the axes that are bound.  shard_map over this process's devices (one mesh axis, 'data'),
    # vmap, and no map at all.
    xs, ys = X.reshape(2, 6, 6), Y.reshape(2, 6)
    wrong = curvature(x=X[:6], y=Y[:6], estimator="exact", axis_name="batch")
    bound = r"kfac_curvature\(axis_name='batch'\): no axis 'batch'.*the axes bound here are \('data',\)"
    mesh = jax.sharding.Mesh(np.array(jax.devices()), ("data",))
    spec = jax.sharding.PartitionSpec("data")
    on_mesh = jax.jit(jax.shard_map(_sharded_step(wrong), mesh=mesh, in_specs=(spec, spec),
                                    out_specs=jax.sharding.PartitionSpec()))
    with pytest.raises(ValueError, match=bound):
        on_mesh.trace(X, Y)
    with pytest.raises(ValueError, match=bound):
        jax.vmap(_sharded_step(wrong), axis_name="data")(xs, ys)
    with pytest.raises(ValueError, match=r"axis_name='batch'.*no mapped axis is bound here"):
        wrong.value_grad_and_statistics(params(), X, Y)
    with pytest.raises(ValueError, match=r"axis_name=\('data', 'batch'\)\): no axis 'batch'.*\('data',\)"):
        jax.vmap(_sharded_step(curvature(x=X[:6], y=Y[:6], estimator="exact", axis_name=("data", "batch"))),
                 axis_name="data")(xs, ys)
    # the name that is bound still traces, under vmap and inside shard_map (already right)
    right = curvature(x=X[:6], y=Y[:6], estimator="exact", axis_name="data")
    jax.jit(jax.vmap(_sharded_step(right), axis_name="data")).trace(xs, ys)
    jax.jit(jax.shard_map(_sharded_step(right), mesh=mesh, in_specs=(spec, spec),
                          out_specs=jax.sharding.PartitionSpec())).trace(X, Y)


# --- dtypes --------------------------------------------------------------------------------------


def _f32_reference(inverse):
    curv = curvature(estimator="exact")
    return one_update(gc.kfac_precondition(curv, damping=1e-1, inverse=inverse), curv)[0]


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("inverse", ["pi", "eigh"])
def test_half_precision_parameters(dtype, inverse):
    # before: NotImplementedError: Unsupported dtype float16 (inside LAPACK)
    p = params(dtype)
    x = X.astype(dtype)
    curv = gc.kfac_curvature(loss, p, x, Y, estimator="exact")
    tx = gc.kfac_precondition(curv, damping=1e-1, inverse=inverse)
    updates, state = one_update(tx, curv, p=p, x=x)
    assert all(u.dtype == dtype for u in jax.tree.leaves(updates))
    assert all(f.dtype == jnp.float32 for f in jax.tree.leaves(state.factors))
    # the same direction as the float32 computation to the 16-bit inputs' precision.  Network-wide
    # relative error max|Δ16 − Δ32| / max|Δ32| over all leaves, measured over 10 seeds (params,
    # inputs): ≤ 3.1e-3 for float16 (6.3 u, unit round-off u = 2⁻¹¹) and ≤ 1.6e-2 for bfloat16
    # (4.2 u, u = 2⁻⁸), both inverses, the same on the AVX-512 and AVX (no FMA) code paths; the
    # limits are 10× those.  (XLA cannot convert to float16 under --xla_cpu_max_isa=SSE4_2 at all:
    # "Failed to materialize symbols: wrapped_convert", for a bare astype too.)
    ref = _f32_reference(inverse)
    flat = lambda tree: np.concatenate([np.ravel(np.asarray(leaf, np.float64)) for leaf in jax.tree.leaves(tree)])
    rel = float(np.max(np.abs(flat(updates) - flat(ref))) / np.max(np.abs(flat(ref))))
    assert rel < (3e-2 if dtype == jnp.float16 else 0.16), rel


def test_half_precision_adaptive_optimizer():
    # before: NotImplementedError (LAPACK) in the first step
    p, x = params(jnp.float16), X.astype(jnp.float16)
    curv = gc.kfac_curvature(loss, p, x, Y)
    opt = gc.kfac_optimizer(curv, initial_damping=1.0)
    state = opt.init(p)
    for k in jax.random.split(jax.random.PRNGKey(0), 3):
        p, state, info = opt.step(p, state, x, Y, key=k)
    assert all(leaf.dtype == jnp.float16 for leaf in jax.tree.leaves(p))
    assert state.damping.dtype == jnp.float32 and all_finite(p) and np.isfinite(float(info.loss))


# --- non-finite gradients -----------------------------------------------------------------------


def test_a_non_finite_batch_is_skipped_by_apply_if_finite_and_the_factors_survive():
    # already right (documented policy): NaN propagates; apply_if_finite forwards kfac_statistics
    # and keeps the inner state, so the moving average is not poisoned by the bad batch
    curv = curvature()
    tx = gc.apply_if_finite(gc.chain(gc.kfac_precondition(curv, damping=1e-2), gc.scale_by_learning_rate(0.1)))
    _, state = one_update(tx, curv)
    before = state.inner_state[0].factors
    updates, state = one_update(tx, curv, x=X.at[0, 0].set(jnp.nan), state=state)
    assert all(bool(jnp.all(u == 0)) for u in jax.tree.leaves(updates))
    assert int(state.total_nonfinite) == 1
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state.inner_state[0].factors)):
        np.testing.assert_array_equal(a, b)
    assert all_finite(one_update(tx, curv, state=state)[0])
