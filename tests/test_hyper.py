"""Hyperparameters: numbers, arrays or schedules; readable and settable without recompiling."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import gradient, random_tree

import gradchain as gc
from gradchain import hyper

PARAMS = random_tree(jax.random.PRNGKey(0))


def test_every_hyperparameter_is_readable_by_its_name():
    state = gc.adamw(2e-3, b1=0.8, b2=0.99, eps=1e-6, weight_decay=1e-2).init(PARAMS)
    values = {k: float(v) for k, v in gc.get_hyperparams(state).items()}
    # stored as float32: each value is its decimal rounded once, ≤ U32 = 6e-8 relative, far inside
    # approx's default rel=1e-6 (no arithmetic, so no CPU dependence)
    assert values == pytest.approx(
        {"learning_rate": 2e-3, "b1": 0.8, "b2": 0.99, "eps": 1e-6, "weight_decay": 1e-2}
    )


def test_a_schedule_shows_the_value_the_next_step_uses():
    schedule = lambda step: 1.0 / (1.0 + step)
    tx = gc.sgd(schedule)
    state = tx.init(PARAMS)
    assert float(gc.get_hyperparams(state)["learning_rate"]) == 1.0
    seen = []
    for _step in range(4):
        lr = float(gc.get_hyperparams(state)["learning_rate"])
        grads = jax.tree.map(jnp.ones_like, PARAMS)
        updates, state = tx.update(grads, state, PARAMS)
        seen.append(-float(updates["scale"]))  # the step taken is -lr * 1
        assert seen[-1] == pytest.approx(lr)  # -(lr·1) is exact in float32: equal in fact
    # float32 of 1/(1 + step): one division, ≤ U32 = 6e-8 relative; approx's default rel=1e-6
    assert seen == pytest.approx([1.0, 1 / 2, 1 / 3, 1 / 4])


def test_setting_hyperparameters_gives_bit_for_bit_the_plain_optimizer():
    keys = jax.random.split(jax.random.PRNGKey(1), 10)
    live_step, plain_step = _compiled_step(gc.adam(1e-3)), _compiled_step(gc.adam(1e-4, b2=0.99))
    live = (PARAMS, gc.set_hyperparams(gc.adam(1e-3).init(PARAMS), learning_rate=1e-4, b2=0.99))
    plain = (PARAMS, gc.adam(1e-4, b2=0.99).init(PARAMS))
    for k in keys:
        live, plain = live_step(*live, k), plain_step(*plain, k)
    chex.assert_trees_all_equal(live, plain)


def test_setting_the_learning_rate_between_steps_does_not_recompile():
    traces = []
    step = _compiled_step(gc.adam(1e-3), on_trace=lambda: traces.append(1))
    params, state = PARAMS, gc.adam(1e-3).init(PARAMS)
    for i, k in enumerate(jax.random.split(jax.random.PRNGKey(1), 6)):
        state = gc.set_hyperparams(state, learning_rate=10.0 ** -(i + 1))
        params, state = step(params, state, k)
    assert len(traces) == 1
    # float32(1e-6): one rounding, ≤ U32 relative; approx's default rel=1e-6
    assert float(gc.get_hyperparams(state)["learning_rate"]) == pytest.approx(1e-6)


def _compiled_step(tx, on_trace=lambda: None):
    @jax.jit
    def step(params, state, key):
        on_trace()
        updates, state = tx.update(gradient(params, key), state, params)
        return gc.apply_updates(params, updates), state

    return step


def test_set_hyperparams_keeps_dtype_and_refuses_unknown_names():
    state = gc.sgd(0.1, momentum=0.9).init(PARAMS)
    new = gc.set_hyperparams(state, learning_rate=np.float64(0.05))
    assert gc.get_hyperparams(new)["learning_rate"].dtype == jnp.float32
    with pytest.raises(ValueError, match="'lr'"):
        gc.set_hyperparams(state, lr=0.1)
    with pytest.raises(ValueError, match="learning_rate must be finite"):
        gc.set_hyperparams(state, learning_rate=float("nan"))


def test_hyperparameters_may_be_arrays_for_a_population():
    rates = jnp.array([0.1, 0.01, 0.001])
    state = jax.vmap(lambda lr: gc.sgd(lr).init(PARAMS))(rates)
    chex.assert_trees_all_equal(gc.get_hyperparams(state)["learning_rate"], rates)


def test_schedule_validated_at_step_zero():
    with pytest.raises(ValueError, match=r"learning_rate\(0\) must be in"):
        gc.sgd(lambda step: -1.0)
    with pytest.raises(TypeError, match="learning_rate is callable"):
        gc.sgd(lambda: 0.1)


def test_float64_hyperparameters_under_x64():
    with jax.enable_x64(True):
        state = gc.adam(1e-3).init({"w": jnp.ones(2, jnp.float64)})
        assert gc.get_hyperparams(state)["learning_rate"].dtype == jnp.float64


def test_increment_saturates_instead_of_wrapping():
    top = jnp.array(jnp.iinfo(jnp.int32).max, jnp.int32)
    assert int(hyper.increment(top)) == int(top)


def test_schedule_checked_on_a_grid_of_steps_when_asked():
    # K-FAC's damping uses hyper.PROBE_STEPS: a schedule that leaves its interval after step 0 is
    # refused naming the step; one that cannot be evaluated at a later concrete step is not
    with pytest.raises(ValueError, match=r"damping\(2\) must be in \(0, inf\], got -0.5"):
        hyper.check("damping", lambda t: 1.0 - 0.75 * t, low=0.0, low_open=True, steps=hyper.PROBE_STEPS)
    table = np.array([0.1, 0.2, 0.3])
    assert hyper.check("lr", lambda t: table[t], low=0.0, steps=hyper.PROBE_STEPS) is not None
    # the default probes step 0 only (every optimizer's hyperparameters, unchanged)
    hyper.check("learning_rate", lambda t: 1.0 - 0.75 * t, low=0.0)
