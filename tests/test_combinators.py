"""Optax's combinators and wrappers (gradchain/combinators/): parity with Optax on the two harness
problems (float64, rel 1e-9 after 60 steps; float32 to the tolerance derived at FLOAT32_RTOL),
live hyperparameters (arrays, schedules, a vmap population), readable states, and bad arguments
refused at construction.

"Parity" for a wrapper: the wrapped optimizer through gradchain's combinator (with gradchain's
own inner optimizer) equals the same through Optax's combinator (with Optax's inner optimizer).
"""

import collections
import contextlib
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from optax_parity import PROBLEMS, assert_parity, float64, trajectory

import gradchain as gc

PROBLEM_NAMES = ("least_squares", "small_tree")
EPS = 1e-8  # Optax's Adam eps (gradchain's default is the lecture's 1e-7)

# Float32 tolerance.  Around the wrappers every case computes the same operations as Optax in the
# same order (bit-for-bit equal in float32 where the inner optimizer is, e.g. trace + scale, sgd).
# The inner optimizers differ in float32 by the rounding of their hyperparameters: gradchain
# stores β, lr, eps as float32 arrays and forms 1 - β in float32, Optax forms 1 - β in float64
# from the Python float and rounds once.  That is <= 2 ulps per statistic, <= 8 ulps (8 · 2^-23
# ≈ 1e-6) on one Adam step; 60 steps that do not contract the error (condition 1e3, the step
# size well below 2/L) add it up: 60 · 1e-6 = 6e-5.  Measured over every case here: <= 1.3e-5.
FLOAT32_RTOL = 1e-4


def lr_schedule(step):
    return 0.05 * (1.0 - 0.5 * jnp.minimum(step, 40) / 40)


def _labels(params):
    """Matrices and kernels to "adam", vectors to "sgd": both problems get a label function."""
    return jax.tree.map(lambda p: "adam" if p.ndim >= 2 else "sgd", params)


# Label trees and freeze masks over each problem's leaves (small_tree: w (4, 3), b (3,), k (3, 3, 2)).
LABELS = {"least_squares": {"x": "adam"}, "small_tree": {"w": "adam", "b": "frozen", "k": "sgd"}}
FREEZE = {"least_squares": False, "small_tree": {"w": False, "b": True, "k": False}}


def _optax_and_ours(lib):
    """The same optimizer from either library: ``lib`` is ``gc`` or ``optax``; the inner
    optimizers are each library's own (gradchain's Adam with Optax's eps)."""
    adam = (lambda lr: gc.adam(lr, eps=EPS)) if lib is gc else optax.adam
    return adam, lib.sgd


# Each case composes several combinators, so that every name runs against Optax on both problems
# with few compilations (the test time is XLA compile time); a name's own failure still shows as
# the case that holds it.  (gradchain side, Optax side): factories of the problem's name.
def _scaled(lib, schedule):
    """``u <- schedule(step) · u``: gradchain's ``scale`` takes a schedule, Optax's needs
    ``scale_by_schedule``."""
    return lib.scale(schedule) if lib is gc else optax.scale_by_schedule(schedule)


def _oscillating(step):  # squared gradient norms swing over a factor ~300: some micro-steps are too large
    return 1.0 + 0.9 * jnp.cos(1.3 * step)


def _spiky(step):  # an infinity every 7th step, a NaN every 5th: the skip and the NaN guard both act
    return jnp.where(step % 7 == 3, jnp.inf, jnp.where(step % 5 == 1, jnp.nan, 1.0))


def _case_chain(lib, problem):  # named_chain, conditionally_transform, trace, partition, set_to_zero, keep_params_nonnegative
    adam, sgd = _optax_and_ours(lib)
    return lib.named_chain(
        ("clip", lib.conditionally_transform(lib.clip_by_global_norm(0.5), lambda step: step % 2 == 0)),
        ("trace", lib.trace(0.5, nesterov=True)),
        ("partition", lib.partition(
            {"adam": adam(lr_schedule), "sgd": sgd(0.02, momentum=0.9), "frozen": lib.set_to_zero()}, LABELS[problem])),
        ("nonnegative", lib.keep_params_nonnegative()),  # small_tree's w starts with negative entries: clamped to 0
    )


def _case_accumulate(lib, problem):  # freeze, ema, apply_every, multi_transform with a label function
    adam, sgd = _optax_and_ours(lib)
    return lib.chain(
        lib.freeze(FREEZE[problem]),
        lib.ema(0.9),
        lib.apply_every(3),
        lib.multi_transform({"adam": adam(0.05), "sgd": sgd(0.05)}, _labels),
    )


def _case_multisteps(lib, problem):  # MultiSteps (mean, float32 accumulator), schedule, skip_large_updates, conditionally_mask
    adam, _ = _optax_and_ours(lib)
    return lib.chain(
        _scaled(lib, _oscillating),
        lib.MultiSteps(
            lib.conditionally_mask(adam(0.05), lambda step: step % 3 != 0),
            lambda gradient_step: jnp.where(gradient_step < 5, 2, 3),
            should_skip_update_fn=functools.partial(lib.skip_large_updates, max_squared_norm=0.25),
        ),
    )


def _case_multisteps_sum(lib, problem):  # zero_nans, MultiSteps (sum, parameters' dtype), skip_not_finite, ema(debias=False)
    _, sgd = _optax_and_ours(lib)
    return lib.chain(
        _scaled(lib, _spiky),
        lib.zero_nans(),
        lib.MultiSteps(
            lib.chain(lib.ema(0.5, debias=False), sgd(0.01, momentum=0.9)), 2, use_grad_mean=False,
            should_skip_update_fn=lib.skip_not_finite, accumulator_dtype=None,
        ),
    )


HARNESS_CASES = {
    "named_chain(conditionally_transform, trace, partition, set_to_zero, keep_params_nonnegative)": _case_chain,
    "chain(freeze, ema, apply_every, multi_transform)": _case_accumulate,
    "MultiSteps(conditionally_mask, schedule, skip_large_updates)": _case_multisteps,
    "chain(zero_nans, MultiSteps(sum, skip_not_finite))": _case_multisteps_sum,
}


@pytest.mark.parametrize("name", list(HARNESS_CASES))
def test_parity_with_optax_in_float64_and_float32(name):
    case = HARNESS_CASES[name]
    for problem in PROBLEM_NAMES:
        with float64():
            assert_parity(case(gc, problem), case(optax, problem), problem)
    # float32 on the smaller problem (compile time); lookahead and DP-SGD below run it on small_tree
    assert_parity(case(gc, "least_squares"), case(optax, "least_squares"), "least_squares", dtype=jnp.float32,
                  rtol=FLOAT32_RTOL)


def test_the_parity_cases_are_not_vacuous():
    """Some micro-steps are skipped (too large; not finite), NaNs are zeroed, the frozen leaf
    stays put and the non-negativity projection clamps (small_tree's w starts negative)."""
    with float64():
        for case in (_case_multisteps, _case_multisteps_sum):
            params, loss = PROBLEMS["small_tree"]()
            tx = case(gc, "small_tree")
            step = jax.jit(lambda p, s, tx=tx, loss=loss: tx.update(jax.grad(loss)(p), s, p))
            state, skipped, nans = tx.init(params), 0, 0
            for _ in range(20):
                updates, state = step(params, state)
                params = gc.apply_updates(params, updates)
                skipped += bool(gc.tree_get(state, "skip_state")["should_skip"])
                nans += any(map(bool, jax.tree.leaves(gc.tree_get(state, "found_nan", {}))))
            assert 0 < skipped < 20 and (case is _case_multisteps or 0 < nans < 20)
        start, _ = PROBLEMS["small_tree"]()
        last = trajectory(_case_chain(gc, "small_tree"), "small_tree")[-1]
        np.testing.assert_array_equal(last["b"], np.asarray(start["b"]))
        assert float(np.min(start["w"])) < 0 and float(np.min(last["w"])) == 0.0


# --- lookahead: trajectories of (fast, slow) pairs -------------------------------------------------


def _lookahead_trajectory(tx, problem, pair, apply, dtype, steps=60):
    params, loss = PROBLEMS[problem](dtype)
    params = pair.init_synced(params)
    state = tx.init(params)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params.fast), state, params)
        return apply(params, updates), state

    out = []
    for _ in range(steps):
        params, state = step(params, state)
        out.append({f"{half}.{k}": np.asarray(v) for half in ("fast", "slow") for k, v in getattr(params, half).items()})
    return out


def _assert_close_trajectories(mine, reference, rtol, what):
    for t, (a, b) in enumerate(zip(mine, reference)):
        for name in b:
            scale = max(float(np.max(np.abs(b[name]))), 1e-30)
            error = float(np.max(np.abs(a[name] - b[name]))) / scale
            assert error <= rtol, f"{what}, step {t + 1}, {name!r}: relative error {error:.3g} > {rtol:g}"


# reset_state=False on both problems and in float32; reset_state=True (the fast state restarts at
# each synchronisation) on small_tree.
LOOKAHEAD_RUNS = [(False, "least_squares", jnp.float64, 1e-9), (False, "small_tree", jnp.float64, 1e-9),
                  (False, "small_tree", jnp.float32, FLOAT32_RTOL), (True, "small_tree", jnp.float64, 1e-9)]


@pytest.mark.parametrize("reset_state, problem, dtype, rtol", LOOKAHEAD_RUNS)
def test_lookahead_parity_with_optax(reset_state, problem, dtype, rtol):
    ours = gc.lookahead(gc.adam(0.05, eps=EPS), sync_period=5, slow_step_size=0.5, reset_state=reset_state)
    theirs = optax.lookahead(optax.adam(0.05), sync_period=5, slow_step_size=0.5, reset_state=reset_state)
    with float64() if dtype == jnp.float64 else contextlib.nullcontext():
        mine = _lookahead_trajectory(ours, problem, gc.LookaheadParams, gc.apply_updates, dtype)
        reference = _lookahead_trajectory(theirs, problem, optax.LookaheadParams, optax.apply_updates, dtype)
    _assert_close_trajectories(mine, reference, rtol, f"lookahead {problem} {jnp.dtype(dtype).name}")


def test_lookahead_takes_optaxs_lookahead_params_and_the_fast_weights_alone():
    tx = gc.lookahead(gc.sgd(0.1), sync_period=2, slow_step_size=0.5)
    params = optax.LookaheadParams.init_synced({"x": jnp.ones(2)})
    state = tx.init(params)
    updates, state = tx.update({"x": jnp.ones(2)}, state, params)
    assert isinstance(updates, optax.LookaheadParams)  # the class of the parameters comes back
    assert jax.tree.structure(tx.init(params.fast)) == jax.tree.structure(state)  # Optax's fallback
    with pytest.raises(ValueError, match="LookaheadParams"):
        tx.update({"x": jnp.ones(2)}, state, {"x": jnp.ones(2)})


def test_lookahead_reset_keeps_values_set_with_set_hyperparams():
    tx = gc.lookahead(gc.sgd(0.1, momentum=0.9), sync_period=2, slow_step_size=0.5, reset_state=True)
    params = gc.LookaheadParams.init_synced({"x": jnp.ones(2)})
    state = gc.set_hyperparams(tx.init(params), learning_rate=0.25)
    for _ in range(3):  # through a synchronisation
        updates, state = tx.update({"x": jnp.ones(2)}, state, params)
        params = gc.apply_updates(params, updates)
    assert float(gc.get_hyperparams(state)["learning_rate"]) == 0.25
    assert float(jnp.max(jnp.abs(gc.tree_get(state.fast_state, "velocity")["x"]))) == 1.0  # restarted at sync


# --- per-example clipping (DP-SGD) ---------------------------------------------------------------


def _dp_sgd_trajectory(clip_fn, problem, dtype, steps=60, lr=0.05, clip=1.0):
    """DP-SGD without noise: per-example gradients are the loss gradient at 4 fixed perturbations
    of the parameters (different norms, so some are clipped and some not), clipped and averaged."""
    params, loss = PROBLEMS[problem](dtype)
    keys = jax.random.split(jax.random.PRNGKey(7), 4)
    scales = jnp.array([0.0, 0.3, 1.0, 3.0], dtype)
    noise = [jax.tree.map(lambda p, k=k, s=s: s * jax.random.normal(k, p.shape, dtype), params)
             for k, s in zip(keys, scales)]

    @jax.jit
    def step(params):
        per_example = jax.vmap(jax.grad(loss))(jax.tree.map(lambda p, *d: p + jnp.stack(d), params, *noise))
        total, clipped = clip_fn(per_example, clip)
        return jax.tree.map(lambda p, g: p - lr * g / 4, params, total), clipped

    out, clipped_counts = [], []
    for _ in range(steps):
        params, clipped = step(params)
        out.append(jax.tree.map(np.asarray, params))
        clipped_counts.append(int(clipped))
    return out, clipped_counts


def test_per_example_global_norm_clip_parity_with_optax():
    for problem, dtype, rtol in [("least_squares", jnp.float64, 1e-9), ("small_tree", jnp.float64, 1e-9),
                                 ("small_tree", jnp.float32, FLOAT32_RTOL)]:
        with float64() if dtype == jnp.float64 else contextlib.nullcontext():
            mine, mine_clipped = _dp_sgd_trajectory(gc.per_example_global_norm_clip, problem, dtype)
            reference, their_clipped = _dp_sgd_trajectory(optax.per_example_global_norm_clip, problem, dtype)
        _assert_close_trajectories(mine, reference, rtol, f"DP-SGD {problem}")
        assert mine_clipped == their_clipped and 0 < max(mine_clipped)


def test_per_example_global_norm_clip_matches_optaxs_documented_values():
    grads = [jnp.array([[0.0, 0, 0], [0, 3, 4], [4, 0, 3], [3, 4, 0]])]
    for clip in (jnp.inf, 0.0, 1.25):
        ours, n_ours = gc.per_example_global_norm_clip(grads, clip)
        theirs, n_theirs = optax.per_example_global_norm_clip(grads, clip)
        np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-7)
        assert int(n_ours) == int(n_theirs)


# --- live hyperparameters: a vmap population equals separate runs ----------------------------------

def x0():
    """Small parameters in the default float dtype (float64 inside ``float64()``)."""
    return {"w": jnp.array([[0.5, -1.0], [2.0, 0.25]]), "b": jnp.array([0.1, -0.3])}


X0 = x0()


def _grad(params):
    return jax.tree.map(lambda p: p + 0.5 * jnp.sin(3 * p), params)


def _run(tx, steps=7):
    params = x0()
    state = tx.init(params)

    def body(_, carry):
        params, state = carry
        updates, state = tx.update(_grad(params), state, params)
        return gc.apply_updates(params, updates), state

    return jax.lax.fori_loop(0, steps, body, (params, state))[0]


def _lookahead_run(tx, steps=7):
    params = gc.LookaheadParams.init_synced(x0())
    state = tx.init(params)

    def body(_, carry):
        params, state = carry
        updates, state = tx.update(_grad(params.fast), state, params)
        return gc.apply_updates(params, updates), state

    return jax.lax.fori_loop(0, steps, body, (params, state))[0]


def _clip_run(clip, steps=7):
    def body(_, params):
        per_example = jnp.stack([_grad(params)["w"] * s for s in (0.1, 1.0, 4.0)])
        total, _ = gc.per_example_global_norm_clip({"w": per_example}, clip)
        return {"w": params["w"] - 0.1 * total["w"], "b": params["b"]}

    return jax.lax.fori_loop(0, steps, body, x0())


POPULATIONS = {
    "ema.decay": (lambda v: _run(gc.chain(gc.ema(v), gc.sgd(0.1))), [0.0, 0.5, 0.9]),
    "trace.decay": (lambda v: _run(gc.chain(gc.trace(v), gc.sgd(0.1))), [0.0, 0.5, 0.9]),
    "apply_every.k": (lambda v: _run(gc.chain(gc.apply_every(v), gc.sgd(0.1))), [1.0, 2.0, 3.0]),
    "MultiSteps.every_k_schedule": (lambda v: _run(gc.MultiSteps(gc.adam(0.1), v)), [1.0, 2.0, 3.0]),
    "lookahead.slow_step_size": (lambda v: _lookahead_run(gc.lookahead(gc.sgd(0.1), 3, v)), [0.0, 0.5, 1.0]),
    "lookahead.sync_period": (lambda v: _lookahead_run(gc.lookahead(gc.sgd(0.1), v, 0.5)), [1.0, 2.0, 3.0]),
    "skip_large_updates.max_squared_norm": (
        lambda v: _run(gc.MultiSteps(gc.sgd(0.1), 1, should_skip_update_fn=functools.partial(
            gc.skip_large_updates, max_squared_norm=v))),
        [1.0, 5.0, 100.0],
    ),
    "per_example_global_norm_clip.l2_norm_clip": (_clip_run, [0.1, 1.0, 100.0]),
}


@pytest.mark.parametrize("name", list(POPULATIONS))
def test_a_vmap_population_over_a_hyperparameter_equals_separate_runs(name):
    run, values = POPULATIONS[name]
    with float64():
        values = jnp.array(values)
        population = jax.jit(jax.vmap(run))(values)
        single = jax.jit(run)
        for i, v in enumerate(values):
            separate = single(v)
            jax.tree.map(lambda a, b: np.testing.assert_allclose(a[i], b, rtol=1e-12, atol=1e-14), population, separate)
        # the population really differs: the hyperparameter reaches the step
        leaves = jax.tree.leaves(population)
        assert any(float(jnp.max(jnp.abs(x[0] - x[-1]))) > 1e-6 for x in leaves)


# --- live hyperparameters: schedules, set_hyperparams, the inner optimizer's names -----------------


def _steps(tx, n, params=X0, state=None):
    state = tx.init(params) if state is None else state
    for _ in range(n):
        updates, state = tx.update(_grad(params), state, params)
        params = gc.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize(
    "make, name",
    [(lambda s: gc.ema(s), "decay"), (lambda s: gc.trace(s), "decay"),
     (lambda s: gc.lookahead(gc.sgd(0.1), 2, s), "slow_step_size")],
)
def test_schedules_are_read_at_the_wrappers_step(make, name):
    schedule = lambda step: 0.9 - 0.1 * jnp.minimum(step, 4)
    tx = make(schedule)
    params = gc.LookaheadParams.init_synced(X0) if name == "slow_step_size" else X0
    state = tx.init(params)
    for _ in range(3):
        grads = _grad(params.fast if name == "slow_step_size" else params)
        updates, state = tx.update(grads, state, params)
        params = gc.apply_updates(params, updates)
    assert float(gc.tree_get(state, name)) == pytest.approx(float(schedule(3)))


def test_multisteps_and_apply_every_windows_follow_their_schedules():
    # MultiSteps evaluates the schedule at gradient_step (Optax's convention): windows 1, 2, 2, ...
    tx = gc.MultiSteps(gc.sgd(0.1), lambda gradient_step: jnp.where(gradient_step < 1, 1, 2))
    _, state = _steps(tx, 3)
    assert int(state.gradient_step) == 2 and int(state.mini_step) == 0
    assert float(gc.tree_get(state, "every_k_schedule")) == 2.0
    tx = gc.apply_every(lambda count: 2)
    _, state = _steps(tx, 3)
    assert float(gc.tree_get(state, "k")) == 2.0


def test_set_hyperparams_reaches_the_wrapper_and_the_inner_optimizer():
    # every wrapper's state exposes the inner optimizer's hyperparameters, and its own
    wrapped = {
        "partition": gc.partition({"a": gc.adam(0.1), "s": gc.sgd(0.1)}, {"w": "a", "b": "s"}),
        "freeze": gc.chain(gc.freeze({"w": False, "b": True}), gc.sgd(0.1)),
        "named_chain": gc.named_chain(("ema", gc.ema(0.5)), ("sgd", gc.sgd(0.1))),
        "MultiSteps": gc.MultiSteps(gc.sgd(0.1), 2),
        "lookahead": gc.lookahead(gc.sgd(0.1), 2, 0.5),
        "conditionally_mask": gc.conditionally_mask(gc.sgd(0.1), lambda s: s >= 0),
        "conditionally_transform": gc.chain(gc.conditionally_transform(gc.trace(0.5), lambda s: s >= 0), gc.sgd(0.1)),
        "apply_every": gc.chain(gc.apply_every(1), gc.sgd(0.1)),
    }
    for name, tx in wrapped.items():
        params = gc.LookaheadParams.init_synced(X0) if name == "lookahead" else X0
        grads = _grad(X0)
        state = tx.init(params)
        assert "learning_rate" in gc.get_hyperparams(state), name
        frozen = gc.set_hyperparams(state, learning_rate=0.0)
        for _ in range(2):
            updates, frozen = tx.update(grads, frozen, params)
        assert all(float(jnp.max(jnp.abs(u))) == 0.0 for u in jax.tree.leaves(updates)), name

    own = {"trace": (gc.trace(0.5), "decay"), "ema": (gc.ema(0.5), "decay"), "apply_every": (gc.apply_every(2), "k"),
           "MultiSteps": (gc.MultiSteps(gc.sgd(0.1), 2), "every_k_schedule"),
           "lookahead": (gc.lookahead(gc.sgd(0.1), 2, 0.5), "slow_step_size")}
    for name, (tx, hyper_name) in own.items():
        state = tx.init(gc.LookaheadParams.init_synced(X0) if name == "lookahead" else X0)
        assert hyper_name in gc.get_hyperparams(state), name


@pytest.mark.parametrize(
    "make, name, value",
    [(gc.ema, "decay", 0.2), (gc.trace, "decay", 0.2)],
)
def test_a_set_value_steps_as_an_optimizer_built_with_it(make, name, value):
    _, state = _steps(make(0.9), 2)
    params_set, _ = _steps(make(0.9), 2, state=gc.set_hyperparams(state, **{name: value}))
    params_built, _ = _steps(make(value), 2, state=gc.set_hyperparams(state, **{name: value}))
    jax.tree.map(np.testing.assert_array_equal, params_set, params_built)


def test_set_every_k_changes_the_window_and_sync_period_the_period():
    tx = gc.MultiSteps(gc.sgd(0.1), 3)
    state = gc.set_hyperparams(tx.init(X0), every_k_schedule=1)
    updates, state = tx.update(_grad(X0), state, X0)
    assert int(state.gradient_step) == 1 and float(jnp.max(jnp.abs(updates["w"]))) > 0
    tx = gc.lookahead(gc.sgd(0.1), 5, 0.5)
    params = gc.LookaheadParams.init_synced(X0)
    state = gc.set_hyperparams(tx.init(params), sync_period=1)
    updates, state = tx.update(_grad(X0), state, params)
    # synchronised at once: both halves land on slow + α·(fast + u - slow) = 0.5 u from a synced start
    np.testing.assert_allclose(updates.slow["w"], updates.fast["w"], rtol=1e-6)
    assert float(jnp.max(jnp.abs(updates.slow["w"]))) > 0


# --- readable states ------------------------------------------------------------------------------


READABLE = {
    "trace": (lambda: gc.trace(0.5), ["trace"]),
    "ema": (lambda: gc.ema(0.5), ["ema"]),
    "apply_every": (lambda: gc.apply_every(2), ["grad_acc"]),
    "MultiSteps": (lambda: gc.MultiSteps(gc.adam(0.1), 2, should_skip_update_fn=gc.skip_not_finite),
                   ["mini_step", "gradient_step", "inner_opt_state", "acc_grads", "skip_state", "num_not_finite"]),
    "lookahead": (lambda: gc.lookahead(gc.adam(0.1), 2, 0.5), ["fast_state", "steps_since_sync"]),
    "partition": (lambda: gc.partition({"a": gc.adam(0.1), "s": gc.set_to_zero()}, {"w": "a", "b": "s"}),
                  ["inner_states"]),
    "freeze": (lambda: gc.freeze({"w": True, "b": False}), ["inner_state"]),
    "named_chain": (lambda: gc.named_chain(("average", gc.ema(0.5)), ("adam", gc.adam(0.1))), ["average", "adam", "ema"]),
    "conditionally_mask": (lambda: gc.conditionally_mask(gc.adam(0.1), lambda s: s > 0), ["step", "inner_state"]),
    "conditionally_transform": (lambda: gc.conditionally_transform(gc.ema(0.5), lambda s: s > 0),
                                ["step", "inner_state"]),
    "zero_nans": (lambda: gc.zero_nans(), ["found_nan"]),
}


@pytest.mark.parametrize("name", list(READABLE))
def test_states_have_optaxs_field_names_and_tree_map_params_works(name):
    make, fields = READABLE[name]
    tx = make()
    params = gc.LookaheadParams.init_synced(X0) if name == "lookahead" else X0
    state = tx.init(params)
    if name != "lookahead":
        _, state = tx.update(_grad(X0), state, X0)
    for field in fields:
        assert gc.tree_get(state, field) is not None, (name, field)
    for tree_map_params in (gc.tree_map_params, optax.tree_utils.tree_map_params):
        mapped = tree_map_params(tx, lambda p: p + 1.0, state)
        assert jax.tree.structure(mapped) == jax.tree.structure(state)
    assert "Array(" not in repr(state)  # short reprs: shapes, not buffers


def test_named_chain_state_is_keyed_by_name_in_chain_order():
    tx = gc.named_chain(("second", gc.clip(1.0)), ("first", gc.sgd(0.1)))
    state = tx.init(X0)
    assert isinstance(state, collections.OrderedDict) and list(state) == ["second", "first"]
    # gc.set_hyperparams rebuilds mappings as dicts: the update keeps that type (a loop's carry stays one type)
    edited = gc.set_hyperparams(state, learning_rate=0.0)
    updates, after = tx.update(_grad(X0), edited, X0)
    assert type(after) is type(edited) and float(jnp.max(jnp.abs(updates["w"]))) == 0.0


# --- behaviour beyond the harness: NaNs, skips, has_updated -----------------------------------------


def test_zero_nans_and_skip_not_finite_against_optax():
    grads = {"w": jnp.array([[1.0, jnp.nan], [jnp.inf, 2.0]]), "b": jnp.array([0.5, -0.5])}
    tx, otx = gc.zero_nans(), optax.zero_nans()
    ours, ours_state = tx.update(grads, tx.init(X0))
    theirs, their_state = otx.update(grads, otx.init(X0))
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)
    jax.tree.map(np.testing.assert_array_equal, ours_state.found_nan, their_state.found_nan)
    skip, info = gc.skip_not_finite(grads, 0, None)
    their_skip, their_info = optax.skip_not_finite(grads, 0, None)
    assert bool(skip) == bool(their_skip) and int(info["num_not_finite"]) == int(their_info["num_not_finite"]) == 2
    # a skipped micro-step changes nothing but skip_state
    ms = gc.MultiSteps(gc.adam(0.1), 2, should_skip_update_fn=gc.skip_not_finite)
    state = ms.init(X0)
    updates, after = ms.update(grads, state, X0)
    assert all(float(jnp.max(jnp.abs(u))) == 0.0 for u in jax.tree.leaves(updates))
    assert int(after.mini_step) == 0 and bool(after.skip_state["should_skip"])
    jax.tree.map(np.testing.assert_array_equal, after.acc_grads, state.acc_grads)


def test_multisteps_has_updated_and_gradient_transformation():
    ms = gc.MultiSteps(gc.sgd(0.1), 2)
    tx = ms.gradient_transformation()
    state = tx.init(X0)
    seen = []
    for _ in range(4):
        _, state = tx.update(_grad(X0), state, X0)
        seen.append(bool(ms.has_updated(state)))
    assert seen == [False, True, False, True]
    assert ms.inner_opt is not None


# --- bad arguments are refused where they are given ------------------------------------------------


BAD = [
    (lambda: gc.partition({"a": gc.sgd(0.1)}, {"w": "a", "b": "c"}), ValueError, "'c'"),
    (lambda: gc.multi_transform({"a": gc.sgd(0.1)}, {"w": "zz"}), ValueError, "'zz'"),
    (lambda: gc.partition([gc.sgd(0.1)], {"w": 0}), TypeError, "mapping"),
    (lambda: gc.partition({"a": "sgd"}, {"w": "a"}), TypeError, "transforms\\['a'\\]"),
    (lambda: gc.freeze({"w": "yes", "b": False}), TypeError, "mask.*'yes'"),
    (lambda: gc.named_chain(("a", gc.sgd(0.1)), ("a", gc.clip(1.0))), ValueError, "unique.*'a'"),
    (lambda: gc.named_chain(gc.sgd(0.1)), TypeError, "pairs"),
    (lambda: gc.lookahead(gc.sgd(0.1), 0, 0.5), ValueError, "sync_period.*0"),
    (lambda: gc.lookahead(gc.sgd(0.1), 2.5, 0.5), ValueError, "sync_period.*2.5"),
    (lambda: gc.lookahead(gc.sgd(0.1), 2, 1.5), ValueError, "slow_step_size.*1.5"),
    (lambda: gc.lookahead("sgd", 2, 0.5), TypeError, "fast_optimizer"),
    (lambda: gc.MultiSteps(gc.sgd(0.1), 0), ValueError, "every_k_schedule.*0"),
    (lambda: gc.MultiSteps(gc.sgd(0.1), -2), ValueError, "every_k_schedule.*-2"),
    (lambda: gc.MultiSteps(gc.sgd(0.1), lambda step: 0), ValueError, "every_k_schedule\\(0\\).*0"),
    (lambda: gc.MultiSteps(gc.sgd(0.1), 2, use_grad_mean="yes"), TypeError, "use_grad_mean"),
    (lambda: gc.MultiSteps(gc.sgd(0.1), 2, should_skip_update_fn=3), TypeError, "should_skip_update_fn"),
    (lambda: gc.MultiSteps(gc.sgd(0.1), 2, accumulator_dtype="float99"), TypeError, "accumulator_dtype"),
    (lambda: gc.MultiSteps(None, 2), TypeError, "opt"),
    (lambda: gc.apply_every(0), ValueError, "k must be in"),
    (lambda: gc.apply_every(True), TypeError, "k must be an int"),
    (lambda: gc.ema(1.5), ValueError, "decay.*1.5"),
    (lambda: gc.ema(-0.1), ValueError, "decay.*-0.1"),
    (lambda: gc.ema(0.9, debias="no"), TypeError, "debias"),
    (lambda: gc.trace(1.0), ValueError, "decay.*1.0"),
    (lambda: gc.trace(0.9, accumulator_dtype="nope"), TypeError, "accumulator_dtype"),
    (lambda: gc.conditionally_mask(gc.sgd(0.1), "often"), TypeError, "should_transform_fn"),
    (lambda: gc.conditionally_transform(gc.sgd(0.1), lambda s: True, forward_extra_args=1), TypeError,
     "forward_extra_args"),
    (lambda: gc.skip_large_updates(X0, 0, None, max_squared_norm=-1.0), ValueError, "max_squared_norm.*-1.0"),
    (lambda: gc.per_example_global_norm_clip({"w": jnp.ones((3, 2)), "b": jnp.ones(2)}, 1.0), ValueError,
     "batch"),
    (lambda: gc.per_example_global_norm_clip([jnp.ones((3, 2))], -1.0), ValueError, "l2_norm_clip.*-1.0"),
]


@pytest.mark.parametrize("build, error, message", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_arguments_are_refused_with_a_message_naming_them(build, error, message):
    with pytest.raises(error, match=message):
        build()


def test_bad_inputs_at_init_and_update_are_named():
    with pytest.raises(ValueError, match="param_labels must have the structure"):
        gc.partition({"a": gc.sgd(0.1)}, {"w": "a"}).init(X0)
    with pytest.raises(ValueError, match="no transformation.*'b'"):
        gc.partition({"a": gc.sgd(0.1)}, lambda p: {"w": "a", "b": "b"}).init(X0)
    with pytest.raises(ValueError, match="should_transform_fn must return a boolean scalar"):
        tx = gc.conditionally_mask(gc.sgd(0.1), lambda s: s)
        tx.update(X0, tx.init(X0), X0)
    with pytest.raises(ValueError, match="should_skip_update_fn must return a boolean scalar"):
        ms = gc.MultiSteps(gc.sgd(0.1), 2, should_skip_update_fn=lambda u, s, p: (jnp.zeros(3, bool), ()))
        ms.init(X0)
    with pytest.raises(ValueError, match="keep_params_nonnegative needs the current parameters"):
        tx = gc.keep_params_nonnegative()
        tx.update(X0, tx.init(X0))


def test_partition_masks_extra_args_when_asked():
    seen = {}

    def init(params):
        return gc.EmptyState()

    def update(updates, state, params=None, *, tags=None):
        seen["tags"] = tags
        return updates, state

    spy = gc.GradientTransformationExtraArgs(init, update)
    tags = {"w": jnp.ones(1), "b": jnp.zeros(1)}
    for compatible, expected in [(False, 2), (True, 1)]:
        tx = gc.partition({"a": spy, "s": gc.set_to_zero()}, {"w": "a", "b": "s"}, mask_compatible_extra_args=compatible)
        tx.update(X0, tx.init(X0), X0, tags=tags)
        assert len(jax.tree.leaves(seen["tags"])) == expected


def test_lookahead_sync_is_the_interpolation_of_zhang_et_al():
    # at the last fast step of a period: slow += α·d, fast lands on the new slow (d = fast + u - slow)
    sync = gc.lookahead_sync(sync_period=2, slow_step_size=0.25)
    params = gc.LookaheadParams(fast={"x": jnp.array([2.0])}, slow={"x": jnp.array([1.0])})
    u = {"x": jnp.array([0.5])}
    state = sync.init(params.fast)
    first, state = sync.update(u, state, params)  # not a synchronisation: (u, 0)
    assert float(first.fast["x"][0]) == 0.5 and float(first.slow["x"][0]) == 0.0
    second, state = sync.update(u, state, params)
    new = gc.apply_updates(params, second)
    d = 2.0 + 0.5 - 1.0
    assert float(new.slow["x"][0]) == pytest.approx(1.0 + 0.25 * d)
    assert float(new.fast["x"][0]) == pytest.approx(1.0 + 0.25 * d)


def test_optax_inner_transformations_run_inside_gradchains_wrappers():
    # the same Optax inner on both sides: the wrapper alone is compared (a few steps)
    labels = {"w": "a", "b": "s"}
    pairs = [
        (gc.MultiSteps(optax.adam(0.1), 2), optax.MultiSteps(optax.adam(0.1), 2)),
        (gc.partition({"a": optax.adam(0.1), "s": optax.sgd(0.1)}, labels),
         optax.partition({"a": optax.adam(0.1), "s": optax.sgd(0.1)}, labels)),
        (gc.conditionally_mask(optax.adam(0.1), lambda s: s % 2 == 0),
         optax.conditionally_mask(optax.adam(0.1), lambda s: s % 2 == 0)),
    ]
    for ours, theirs in pairs:
        a, b = (jax.lax.fori_loop(0, 4, lambda _, p, tx=tx: _optax_step(tx, p), (X0, tx.init(X0)))[0]
                for tx in (ours, theirs))
        jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6), a, b)


def _optax_step(tx, carry):
    params, state = carry
    updates, state = tx.update(_grad(params), state, params)
    return optax.apply_updates(params, updates), state
