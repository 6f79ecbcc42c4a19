"""Schedules against their closed forms (NumPy, float64) and against Optax; tracing and errors.

Tolerance: float32 schedules are compared with |a - e| <= 1e-6 · max(1, |e|) (a few float32
ulps of values of order 1); float64 ones to 1e-12.  Derivation: a schedule's value is at most ~10
float32 operations (a division t/T, a cos, a few multiply-adds) on numbers no larger than
max(1, |value|), each rounding by at most U32 = 6e-8 of that, so |a - e| <= 10·U32·max(1, |e|) =
6e-7 < TOL in any evaluation order (with or without FMA); 10·U64 = 1.1e-15 < 1e-12 in float64.
The bound is absolute at the schedule's scale, not relative to the value: near the end of a
cosine (1 + cos ≈ 0) the value is small and its relative error is not.
"""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import U32

import gradchain as gc
from gradchain.schedules import (
    batch_scaled,
    constant_schedule,
    cosine_schedule,
    epochs_to_steps,
    inverse_sqrt_schedule,
    join_schedules,
    linear_schedule,
    plot_schedules,
    sgdr_schedule,
    step_schedule,
    warmup,
)

TOL = 1e-6


def assert_values(schedule, steps, expected, tol=TOL, wrap=lambda f: f):
    """schedule(step) for each step (one call each, through `wrap`) against `expected`."""
    f = wrap(schedule)
    actual = np.array([float(f(int(s))) for s in steps])
    expected = np.asarray(expected, np.float64)
    err = np.abs(actual - expected)
    bad = err > tol * np.maximum(1.0, np.abs(expected))
    assert not bad.any(), (
        f"steps {np.asarray(steps)[bad][:5]}: got {actual[bad][:5]}, expected {expected[bad][:5]}"
    )


def batched(schedule, steps):
    """All steps at once, as one jitted vmap."""
    return np.asarray(jax.jit(jax.vmap(schedule))(jnp.asarray(steps, jnp.int32)), np.float64)


def np_cosine(t, a0, T, end=0.0):
    t = np.minimum(t, T)
    return end + 0.5 * (a0 - end) * (1 + np.cos(np.pi * t / T))


def np_sgdr(t, a0, period, t_mult=1.0, end_value=0.0, decay=1.0):
    """The definition, walked restart by restart in Python floats."""
    start, length, i = 0.0, float(period), 0
    while t >= start + length:
        start += length
        length *= t_mult
        i += 1
    peak = a0 * decay**i
    return end_value + 0.5 * (peak - end_value) * (1 + math.cos(math.pi * (t - start) / length))


# ------------------------------------------------------------------------------------------
# Closed forms, eager and jit.

T = 100
STEPS = np.array([0, 1, 2, 17, 49, 50, 51, T - 1, T, T + 1, 2 * T, 12345])


def test_constant(jit_or_eager):
    assert_values(constant_schedule(0.3), STEPS, np.full(len(STEPS), 0.3), wrap=jit_or_eager)


def test_cosine_closed_form(jit_or_eager):
    assert_values(cosine_schedule(0.5, T), STEPS, np_cosine(STEPS, 0.5, T), wrap=jit_or_eager)
    assert_values(
        cosine_schedule(0.5, T, end_value=0.05), STEPS, np_cosine(STEPS, 0.5, T, 0.05), wrap=jit_or_eager
    )


def test_linear_closed_form(jit_or_eager):
    t = np.minimum(STEPS, T)
    assert_values(linear_schedule(0.5, T), STEPS, 0.5 * (1 - t / T), wrap=jit_or_eager)
    assert_values(
        linear_schedule(0.5, T, end_value=0.1), STEPS, 0.5 + (0.1 - 0.5) * t / T, wrap=jit_or_eager
    )


def test_step_closed_form(jit_or_eager):
    bounds = [30, 60, 90]
    steps = np.array([0, 29, 30, 31, 59, 60, 61, 89, 90, 91, 1000])
    n = np.array([sum(s >= b for b in bounds) for s in steps])
    assert_values(step_schedule(0.1, bounds), steps, 0.1 * 0.1**n, wrap=jit_or_eager)
    assert_values(step_schedule(0.1, bounds, factor=0.5), steps, 0.1 * 0.5**n, wrap=jit_or_eager)
    assert_values(step_schedule(0.1, []), steps, np.full(len(steps), 0.1), wrap=jit_or_eager)


def test_step_with_epochs_to_steps_is_the_resnet_recipe():
    assert epochs_to_steps([30, 60, 90], 390) == [11700, 23400, 35100]
    assert epochs_to_steps(5, 10) == 50
    s = step_schedule(0.1, epochs_to_steps([30, 60, 90], 390))
    assert_values(s, [0, 11699, 11700, 23400, 35099, 35100], [0.1, 0.1, 0.01, 1e-3, 1e-3, 1e-4])


def test_inverse_sqrt_closed_form(jit_or_eager):
    steps = np.array([0, 1, 2, 3, 4, 100, 10_000])
    assert_values(
        inverse_sqrt_schedule(0.5), steps, 0.5 / np.sqrt(np.maximum(steps, 1)), wrap=jit_or_eager
    )
    tau = 4
    assert_values(
        inverse_sqrt_schedule(0.5, timescale=tau),
        steps,
        0.5 * np.sqrt(tau / np.maximum(steps, tau)),
        wrap=jit_or_eager,
    )


@pytest.mark.parametrize("shift", [True, False])
def test_warmup_closed_form_and_continuous_join(shift, jit_or_eager):
    W, inner = 10, cosine_schedule(1.0, T, end_value=0.1)
    steps = np.array([0, 1, 5, W - 1, W, W + 1, W + T - 1, W + T, 500])
    target = np_cosine(0 if shift else W, 1.0, T, 0.1)
    inner_t = np_cosine(np.maximum(steps - W, 0) if shift else steps, 1.0, T, 0.1)
    expected = np.where(steps < W, 0.02 + (target - 0.02) * steps / W, inner_t)
    s = warmup(inner, W, init_value=0.02, shift=shift)
    assert_values(s, steps, expected, wrap=jit_or_eager)
    # continuous: one ramp step before the switch is one ramp increment below the switch value
    ramp_step = (target - 0.02) / W
    assert abs(float(s(W)) - float(s(W - 1)) - ramp_step) < TOL


def test_join_closed_form(jit_or_eager):
    s = join_schedules(
        [constant_schedule(0.5), linear_schedule(0.4, 20), cosine_schedule(0.2, 30)], [10, 40]
    )
    steps = np.arange(0, 90)
    expected = np.where(
        steps < 10,
        0.5,
        np.where(steps < 40, 0.4 * (1 - np.minimum(steps - 10, 20) / 20), np_cosine(steps - 40, 0.2, 30)),
    )
    np.testing.assert_allclose(batched(s, steps), expected, rtol=0, atol=TOL)
    assert_values(s, [0, 9, 10, 11, 39, 40, 41], expected[[0, 9, 10, 11, 39, 40, 41]], wrap=jit_or_eager)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(t_mult=1.0),
        dict(t_mult=2.0),
        dict(t_mult=3.0, end_value=0.01),
        dict(t_mult=1.5, decay=0.8),
        dict(t_mult=1.0, decay=0.5, end_value=0.05),
    ],
    ids=["tmult1", "tmult2", "tmult3_end", "tmult1.5_decay", "tmult1_decay_end"],
)
def test_sgdr_matches_restart_loop_at_every_step(kwargs):
    steps = np.arange(0, 1300)
    expected = [np_sgdr(int(t), 0.7, 10, **kwargs) for t in steps]
    np.testing.assert_allclose(batched(sgdr_schedule(0.7, 10, **kwargs), steps), expected, rtol=0, atol=TOL)


@pytest.mark.parametrize(
    "t_mult, cycles", [(1.0, [1, 2, 3, 100]), (2.0, [1, 2, 3, 4, 5, 6, 10]), (3.0, [1, 2, 3, 4, 5, 6])]
)
def test_sgdr_restarts_exactly_on_cycle_boundaries(t_mult, cycles, jit_or_eager):
    """On S_i the value is the fresh peak; one step before, the last step of cycle i - 1."""
    P, decay = 10, 0.5
    s = jit_or_eager(sgdr_schedule(1.0, P, t_mult=t_mult, decay=decay))
    for i in cycles:
        start = P * i if t_mult == 1 else round(P * (t_mult**i - 1) / (t_mult - 1))
        prev_length = P * t_mult ** (i - 1)
        prev_end = decay ** (i - 1) * 0.5 * (1 + math.cos(math.pi * (prev_length - 1) / prev_length))
        assert float(s(start)) == pytest.approx(decay**i, rel=TOL), f"step {start}"
        assert float(s(start - 1)) == pytest.approx(prev_end, rel=1e-5, abs=TOL), f"step {start - 1}"
        first = decay**i * 0.5 * (1 + math.cos(math.pi / (P * t_mult**i)))
        assert float(s(start + 1)) == pytest.approx(first, rel=TOL), f"step {start + 1}"


def test_sgdr_boundaries_float64():
    with jax.enable_x64(True):
        s = jax.jit(sgdr_schedule(1.0, 7, t_mult=2.0))
        for i in range(1, 25):  # restarts up to step ~1.2e8
            start, prev_length = 7 * (2**i - 1), 7 * 2 ** (i - 1)
            prev_end = 0.5 * (1 + math.cos(math.pi * (prev_length - 1) / prev_length))
            assert float(s(start)) == 1.0, f"step {start}"
            assert float(s(start - 1)) == pytest.approx(prev_end, rel=1e-9, abs=1e-12), f"step {start - 1}"


def test_sgdr_t_mult_may_be_a_traced_array():
    steps = np.arange(0, 200)
    ms = jnp.array([1.0, 2.0, 1.5])
    values = jax.jit(jax.vmap(lambda m: jax.vmap(sgdr_schedule(0.7, 10, t_mult=m))(jnp.asarray(steps))))(ms)
    for row, m in zip(np.asarray(values), [1.0, 2.0, 1.5]):
        np.testing.assert_allclose(row, [np_sgdr(int(t), 0.7, 10, m) for t in steps], atol=TOL)


def test_batch_scaled_linear_scaling_rule():
    assert batch_scaled(0.1, 1024, 256) == pytest.approx(0.4)
    np.testing.assert_allclose(batch_scaled(jnp.array([0.1, 0.2]), 128, 256), [0.05, 0.1], rtol=TOL)
    s = batch_scaled(cosine_schedule(0.1, T), 1024, 256)
    assert_values(s, STEPS, 4 * np_cosine(STEPS, 0.1, T))


# ------------------------------------------------------------------------------------------
# Against Optax's equivalents, ≤ 1e-6.

OPTAX_STEPS = np.arange(0, 400)


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (cosine_schedule(0.3, 250), optax.cosine_decay_schedule(0.3, 250)),
        (cosine_schedule(0.3, 250, end_value=0.03), optax.cosine_decay_schedule(0.3, 250, alpha=0.1)),
        (linear_schedule(0.3, 250), optax.linear_schedule(0.3, 0.0, 250)),
        (linear_schedule(0.3, 250, end_value=0.1), optax.linear_schedule(0.3, 0.1, 250)),
        (
            step_schedule(0.3, [100, 200, 300]),
            optax.piecewise_constant_schedule(0.3, {100: 0.1, 200: 0.1, 300: 0.1}),
        ),
        (
            warmup(cosine_schedule(0.3, 250, end_value=0.01), 50, init_value=0.001),
            optax.warmup_cosine_decay_schedule(0.001, 0.3, 50, 300, end_value=0.01),
        ),
        (
            join_schedules([linear_schedule(0.3, 100), constant_schedule(0.05)], [150]),
            optax.join_schedules([optax.linear_schedule(0.3, 0.0, 100), optax.constant_schedule(0.05)], [150]),
        ),
    ],
    ids=["cosine", "cosine_alpha", "linear", "linear_end", "step", "warmup_cosine", "join"],
)
def test_matches_optax(ours, theirs):
    expected = np.array([float(theirs(int(t))) for t in OPTAX_STEPS[::37]])
    assert_values(ours, OPTAX_STEPS[::37], expected)
    steps = jnp.asarray(OPTAX_STEPS)
    np.testing.assert_allclose(batched(ours, OPTAX_STEPS), np.asarray(jax.vmap(theirs)(steps)), rtol=0, atol=TOL)


# ------------------------------------------------------------------------------------------
# Python int, jit, vmap, arrays of steps, dtypes, no retracing.

ALL = {
    "constant": lambda: constant_schedule(0.1),
    "step": lambda: step_schedule(0.1, [3, 5]),
    "cosine": lambda: cosine_schedule(0.1, 10),
    "linear": lambda: linear_schedule(0.1, 10),
    "inverse_sqrt": lambda: inverse_sqrt_schedule(0.1, 2),
    "warmup": lambda: warmup(cosine_schedule(0.1, 10), 3),
    "sgdr": lambda: sgdr_schedule(0.1, 4, t_mult=2.0),
    "join": lambda: join_schedules([constant_schedule(0.1), linear_schedule(0.1, 5)], [3]),
    "batch_scaled": lambda: batch_scaled(cosine_schedule(0.1, 10), 64, 32),
}


@pytest.mark.parametrize("name", sorted(ALL))
def test_python_int_jit_vmap_and_step_arrays_agree(name):
    s = ALL[name]()
    steps = np.arange(0, 20)
    eager = np.array([float(s(int(t))) for t in steps])
    out = s(7)
    assert isinstance(out, jax.Array) and out.dtype == jnp.float32 and out.shape == ()
    # jit may fuse (and contract into FMAs) the arithmetic differently from eager: ≤ 10 roundings
    # of numbers ≤ the peak (0.2 for batch_scaled, 0.1 for the others), |Δ| ≤ 10·U32·0.2 = 1.2e-7
    # absolute (see the module docstring; atol 1e-8 was crossed to 0.81 near a cosine's end)
    atol = 10 * U32 * 0.2 * 2
    np.testing.assert_allclose(batched(s, steps), eager, rtol=1e-6, atol=atol)
    np.testing.assert_allclose(np.asarray(s(jnp.asarray(steps))), eager, rtol=1e-6, atol=atol)
    np.testing.assert_allclose(
        [float(jax.jit(s)(jnp.int32(t))) for t in steps], eager, rtol=1e-6, atol=atol
    )


@pytest.mark.parametrize("name", sorted(ALL))
def test_float64_under_enable_x64(name):
    with jax.enable_x64(True):
        s = ALL[name]()
        assert s(3).dtype == jnp.float64
        assert jax.jit(s)(jnp.int64(3)).dtype == jnp.float64
        assert jax.vmap(s)(jnp.arange(4)).dtype == jnp.float64
    assert s(3).dtype == jnp.float32  # the dtype is decided at call time


def test_negative_steps_count_as_step_zero():
    for name in sorted(ALL):
        s = ALL[name]()
        assert float(s(-5)) == float(s(0)), name


def test_new_step_does_not_retrace():
    s = warmup(sgdr_schedule(0.1, 10, t_mult=2.0), 5)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def f(step):
        return s(step)

    for t in range(0, 50, 7):
        f(jnp.int32(t))


def test_vmap_over_init_value():
    lrs = jnp.array([0.1, 0.01, 0.5])
    makers = [
        lambda lr: cosine_schedule(lr, T, end_value=lr / 10),
        lambda lr: linear_schedule(lr, T),
        lambda lr: step_schedule(lr, [10, 20], factor=lr),
        lambda lr: inverse_sqrt_schedule(lr),
        lambda lr: warmup(cosine_schedule(lr, T), 10, init_value=lr / 100),
        lambda lr: sgdr_schedule(lr, 10, t_mult=2.0, end_value=lr / 10, decay=0.9),
        lambda lr: constant_schedule(lr),
    ]
    # vmapped and jitted against eager: ≤ 10 roundings of numbers ≤ the largest rate 0.5, so
    # |Δ| ≤ 10·U32·0.5 = 3e-7 absolute (×2 below); rtol 1e-6 for the values themselves
    atol = 10 * U32 * 0.5 * 2
    for make in makers:
        got = jax.jit(jax.vmap(lambda lr: make(lr)(25)))(lrs)
        want = [float(make(float(lr))(25)) for lr in lrs]
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=atol)
        # an array init_value without vmap broadcasts too
        np.testing.assert_allclose(make(lrs)(25), want, rtol=1e-6, atol=atol)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_learning_rate_of_an_optimizer_in_a_10000_step_scan(optimizer):
    steps = 10_000
    lr = warmup(cosine_schedule(0.05, 8_000, end_value=0.001), 500)
    tx = gc.sgd(lr, momentum=0.9) if optimizer == "sgd" else gc.adam(lr)
    params = {"w": jnp.ones(3)}

    def step(carry, _):
        p, state = carry
        grads = jax.tree.map(lambda w: 2 * w, p)
        updates, state = tx.update(grads, state, p)
        return (gc.apply_updates(p, updates), state), gc.get_hyperparams(state)["learning_rate"]

    @jax.jit
    def train(p):
        return jax.lax.scan(step, (p, tx.init(p)), length=steps)

    (_, state), seen = train(params)
    # the state stores the value the *next* update will use: after update k, lr(k + 1)
    # the same schedule in the scan and eagerly: ≤ 10 roundings of numbers ≤ 0.05, |Δ| ≤ 10·U32·0.05
    # = 3e-8 absolute, and rtol 1e-6 (the values checked are ≥ 1e-4)
    assert float(gc.get_hyperparams(state)["learning_rate"]) == pytest.approx(float(lr(steps)), rel=1e-6, abs=10 * U32 * 0.05)
    np.testing.assert_allclose(seen[np.array([0, 499, 500, 4999])], [float(lr(k)) for k in (1, 500, 501, 5000)], rtol=1e-6, atol=10 * U32 * 0.05)


def test_schedule_as_learning_rate_under_vmap_population():
    tx_for = lambda lr: gc.sgd(cosine_schedule(lr, 100))

    def final_lr(lr):
        tx = tx_for(lr)
        p = jnp.ones(2)
        state = tx.init(p)
        for _ in range(3):
            _, state = tx.update(p, state, p)
        return gc.get_hyperparams(state)["learning_rate"]

    got = jax.jit(jax.vmap(final_lr))(jnp.array([0.1, 0.2]))
    # float32 against float64, values ≈ the rates: ≤ 10·U32 = 6e-7 relative
    np.testing.assert_allclose(got, [np_cosine(3, 0.1, 100), np_cosine(3, 0.2, 100)], rtol=1e-6)


# ------------------------------------------------------------------------------------------
# Plotting.


def test_plot_schedules_draws_one_line_per_schedule():
    matplotlib = pytest.importorskip("matplotlib")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    python_only = lambda t: 0.1 if t < 5 else 0.01
    ax = plot_schedules({"cosine": cosine_schedule(0.1, 20), "python": python_only}, 20)
    assert [line.get_label() for line in ax.get_lines()] == ["cosine", "python"]
    np.testing.assert_allclose(ax.get_lines()[0].get_ydata(), np_cosine(np.arange(20), 0.1, 20), atol=TOL)
    np.testing.assert_allclose(ax.get_lines()[1].get_ydata()[[4, 5]], [0.1, 0.01])
    _, given = plt.subplots()
    assert plot_schedules({"c": constant_schedule(1.0)}, 5, ax=given) is given
    plt.close("all")


def test_plot_schedules_without_matplotlib_says_how_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    with pytest.raises(ImportError, match=r"pip install gradchain\[plot\]"):
        plot_schedules({"c": constant_schedule(1.0)}, 5)


# ------------------------------------------------------------------------------------------
# Bad input: the error type, and a message that names the argument.

BAD = [
    (lambda: cosine_schedule(0.1, 0), ValueError, "decay_steps must be a positive int, got 0"),
    (lambda: cosine_schedule(0.1, -3), ValueError, "decay_steps"),
    (lambda: cosine_schedule(0.1, 10.0), TypeError, "decay_steps must be a positive int, got 10.0"),
    (lambda: cosine_schedule(0.1, True), TypeError, "decay_steps"),
    (lambda: linear_schedule(0.1, 0), ValueError, "decay_steps"),
    (lambda: linear_schedule(0.1, "10"), TypeError, "decay_steps"),
    (lambda: cosine_schedule(float("nan"), 10), ValueError, "init_value"),
    (lambda: cosine_schedule("0.1", 10), TypeError, "init_value"),
    (lambda: cosine_schedule(constant_schedule(0.1), 10), TypeError, "init_value"),
    (lambda: linear_schedule(0.1, 10, end_value=float("inf")), ValueError, "end_value"),
    (lambda: step_schedule(0.1, [60, 30]), ValueError, "boundaries must be strictly increasing"),
    (lambda: step_schedule(0.1, [30, 30]), ValueError, "boundaries"),
    (lambda: step_schedule(0.1, [-1, 30]), ValueError, r"boundaries.*-1"),
    (lambda: step_schedule(0.1, [10, 20.5]), TypeError, "boundaries"),
    (lambda: step_schedule(0.1, 30), TypeError, "boundaries"),
    (lambda: step_schedule(0.1, [30], factor=0.0), ValueError, "factor"),
    (lambda: step_schedule(0.1, [30], factor=-0.1), ValueError, "factor"),
    (lambda: epochs_to_steps([30, 60], 0), ValueError, "steps_per_epoch"),
    (lambda: epochs_to_steps([30, 6.5], 10), TypeError, "epochs"),
    (lambda: epochs_to_steps(-1, 10), ValueError, "epochs"),
    (lambda: inverse_sqrt_schedule(0.1, timescale=0), ValueError, "timescale"),
    (lambda: inverse_sqrt_schedule(0.1, timescale=2.5), TypeError, "timescale"),
    (lambda: warmup(cosine_schedule(0.1, 10), 0), ValueError, "warmup_steps"),
    (lambda: warmup(cosine_schedule(0.1, 10), -5), ValueError, "warmup_steps"),
    (lambda: warmup(cosine_schedule(0.1, 10), 5.0), TypeError, "warmup_steps"),
    (lambda: warmup(0.1, 5), TypeError, "schedule must be a schedule"),
    (lambda: warmup(cosine_schedule(0.1, 10), 5, shift="yes"), TypeError, "shift"),
    (lambda: sgdr_schedule(0.1, 0), ValueError, "period"),
    (lambda: sgdr_schedule(0.1, 10.0), TypeError, "period"),
    (lambda: sgdr_schedule(0.1, 10, t_mult=0.5), ValueError, "t_mult"),
    (lambda: sgdr_schedule(0.1, 10, decay=0.0), ValueError, "decay"),
    (lambda: join_schedules([constant_schedule(0.1)], [10]), ValueError, r"len\(schedules\)"),
    (lambda: join_schedules([constant_schedule(0.1), 0.2], [10]), TypeError, r"schedules\[1\]"),
    (lambda: join_schedules(constant_schedule(0.1), []), TypeError, "schedules"),
    (lambda: join_schedules([constant_schedule(0.1)] * 3, [20, 10]), ValueError, "boundaries"),
    (lambda: batch_scaled(0.1, 0, 256), ValueError, "batch_size"),
    (lambda: batch_scaled(0.1, 512, 256.0), TypeError, "base_batch_size"),
    (lambda: constant_schedule(None), TypeError, "value"),
    (lambda: plot_schedules([cosine_schedule(0.1, 10)], 10), TypeError, "schedules"),
    (lambda: plot_schedules({"a": 0.1}, 10), TypeError, "schedules"),
    (lambda: plot_schedules({"a": constant_schedule(0.1)}, 0), ValueError, "num_steps"),
]


@pytest.mark.parametrize("make, error, match", BAD, ids=[f"{b[2][:40]}-{i}" for i, b in enumerate(BAD)])
def test_bad_input_raises_a_clear_error(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_error_message_shows_the_value():
    with pytest.raises(ValueError, match=r"t_mult must be in \[1, inf\], got 0.5"):
        sgdr_schedule(0.1, 10, t_mult=0.5)
    with pytest.raises(ValueError, match=r"got \[60, 30\]"):
        step_schedule(0.1, [60, 30])
