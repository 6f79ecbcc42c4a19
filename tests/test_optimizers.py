"""The lecture's optimizers against Optax and against NumPy transcriptions of the slides."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import assert_close, float64, gradient, random_tree, run

import gradchain as gc

STEPS = 500
PARAMS = random_tree(jax.random.PRNGKey(0))


def close_to(expected, rtol=1e-6):
    """≤ rtol relative, measured against each leaf's scale (entries cross zero over 500 steps).

    Against Optax in float32 (the SGD and the array-hyperparameter Adam tests) the two libraries
    do the same IEEE operations in the same order: measured bitwise equal over 5 seeds, with and
    without FMA (XLA_FLAGS=--xla_cpu_max_isa=AVX); 1e-6 of the scale is the margin for a compiler
    that contracts a multiply-add differently (a few ulps).  The float64 comparisons are where the
    formulas are held to ~1e-12."""
    return dict(rtol=rtol, atol=rtol * max(float(jnp.max(jnp.abs(e))) for e in jax.tree.leaves(expected)))


@pytest.mark.parametrize(
    "ours, theirs",
    [
        (gc.sgd(0.05), optax.sgd(0.05)),
        (gc.sgd(0.05, momentum=0.9), optax.sgd(0.05, momentum=0.9)),
        (gc.sgd(0.05, momentum=0.9, nesterov=True), optax.sgd(0.05, momentum=0.9, nesterov=True)),
    ],
    ids=["plain", "momentum", "nesterov"],
)
def test_sgd_matches_optax_over_500_steps(ours, theirs):
    expected, _ = run(theirs, PARAMS, STEPS)
    actual, _ = run(ours, PARAMS, STEPS)
    assert_close(actual, expected, **close_to(expected))


ADAM_CASES = {
    "adam": (lambda: gc.adam(1e-2, eps=1e-8), optax.adam, dict(learning_rate=1e-2, eps=1e-8)),
    "adamw": (
        lambda: gc.adamw(1e-2, eps=1e-8, weight_decay=1e-2),
        optax.adamw,
        dict(learning_rate=1e-2, eps=1e-8, weight_decay=1e-2),
    ),
}


@pytest.mark.parametrize("name", sorted(ADAM_CASES))
def test_adam_matches_optax_float32_with_array_hyperparameters(name):
    # gradchain keeps every hyperparameter as an array in the state, which is what
    # optax.inject_hyperparams does; plain Optax instead folds 1 - b2 in double precision from
    # the Python float, a 1.3e-5 relative difference in (1 - b2) (see BUILD_NOTES.md).
    ours, optax_fn, kwargs = ADAM_CASES[name]
    expected, _ = run(optax.inject_hyperparams(optax_fn)(**kwargs), PARAMS, STEPS)
    actual, _ = run(ours(), PARAMS, STEPS)
    assert_close(actual, expected, **close_to(expected))


@pytest.mark.parametrize("name", sorted(ADAM_CASES))
def test_adam_matches_plain_optax_float64(name):
    # Bound: 500 steps × ~10 roundings × U64 × Adam's amplification (≤ 1/(1 - b1) = 10, measured
    # differences are 0) ≈ 5.6e-12 of the scale; tolerance 1e-12 of the scale plus 1e-12 relative
    # (measured: equal, 5 seeds, with and without FMA).
    ours, optax_fn, kwargs = ADAM_CASES[name]
    with jax.enable_x64(True):
        params = random_tree(jax.random.PRNGKey(0), jnp.float64)
        expected, _ = run(optax_fn(**kwargs), params, STEPS)
        actual, _ = run(ours(), params, STEPS)
        assert jax.tree.leaves(actual)[0].dtype == jnp.float64
        assert_close(actual, expected, **close_to(expected, rtol=1e-12))


def test_adam_plain_optax_float32_stays_within_float32_noise():
    """Plain Optax folds 1 - b2 from the Python float; gradchain keeps b2 as a float32 array, so
    (1 - b2) differs by delta = 1.29e-5 relative.  That changes √v, hence each step, by ~delta/2
    relative: after STEPS steps of lr = 1e-2, STEPS·lr·delta/2 = 3.2e-5 to first order (the
    gradients feed differences back, so this is an estimate, not a bound).  Measured ≤ 7.6e-6 over
    8 seeds, the same with and without FMA (XLA_FLAGS=--xla_cpu_max_isa=AVX); the tolerance, three
    times the estimate (9.7e-5), is 12× the largest measured difference.  The old tolerance, 2e-5
    of each leaf's scale, was reached to 84% on one of 5 seeds."""
    expected, _ = run(optax.adam(1e-2, eps=1e-8), PARAMS, STEPS)
    actual, _ = run(gc.adam(1e-2, eps=1e-8), PARAMS, STEPS)
    delta = abs(float(np.float32(1) - np.float32(0.999)) - (1 - 0.999)) / (1 - 0.999)
    assert_close(actual, expected, rtol=0.0, atol=3 * STEPS * 1e-2 * delta / 2)


# --- NumPy transcriptions of the lecture's pseudo-code --------------------------------------------


def numpy_run(update_rule, steps=STEPS, dtype=jnp.float32):
    """Run a slide's loop in float64 NumPy, on the gradients the JAX run of `dtype` sees."""
    x = jax.tree.map(lambda p: np.asarray(p, np.float64), PARAMS)
    state = jax.tree.map(lambda p: {}, x)
    keys = jax.random.split(jax.random.PRNGKey(42), steps)
    for t, k in enumerate(keys, start=1):
        grads = gradient(jax.tree.map(lambda v: jnp.asarray(v, dtype), x), k)
        x = jax.tree.map(lambda v, g, s: update_rule(v, np.asarray(g, np.float64), s, t), x, grads, state)
    return x


def adagrad_slide(lr):
    def rule(x, dx, s, t):
        s["grad_squared"] = s.get("grad_squared", 0.0) + dx * dx
        return x - lr * dx / (np.sqrt(s["grad_squared"]) + 1e-7)

    return rule


def rmsprop_slide(lr, decay_rate):
    def rule(x, dx, s, t):
        gs = s.get("grad_squared", 0.0)
        s["grad_squared"] = decay_rate * gs + (1 - decay_rate) * dx * dx
        return x - lr * dx / (np.sqrt(s["grad_squared"]) + 1e-7)

    return rule


def adam_slide(lr, beta1, beta2, unbias):
    def rule(x, dx, s, t):
        s["m"] = beta1 * s.get("m", 0.0) + (1 - beta1) * dx
        s["v"] = beta2 * s.get("v", 0.0) + (1 - beta2) * dx * dx
        m, v = s["m"], s["v"]
        if unbias:
            m, v = m / (1 - beta1**t), v / (1 - beta2**t)
        return x - lr * m / (np.sqrt(v) + 1e-7)

    return rule


@pytest.mark.parametrize(
    "ours, slide",
    [
        (gc.adagrad(0.05), adagrad_slide(0.05)),
        (gc.rmsprop(1e-2, decay=0.9), rmsprop_slide(1e-2, 0.9)),
        (gc.adam(1e-2, b1=0.9, b2=0.99), adam_slide(1e-2, 0.9, 0.99, True)),
        (gc.adam(1e-2, b1=0.9, b2=0.99, bias_correction=False), adam_slide(1e-2, 0.9, 0.99, False)),
    ],
    ids=["adagrad", "rmsprop", "adam", "adam_almost"],
)
def test_matches_numpy_transcription_of_the_slides(ours, slide):
    # float64 on both sides so that the comparison measures the formula, not float32 rounding:
    # 100 steps × ~10 roundings × U64 ≈ 1e-13 of the scale, against a tolerance of 1e-6 of it, which
    # any error in a formula (a missing bias correction, eps inside the sqrt) exceeds by orders.
    with jax.enable_x64(True):
        actual, _ = run(ours, jax.tree.map(lambda p: p.astype(jnp.float64), PARAMS), 100)
        expected = numpy_run(slide, 100, jnp.float64)
    assert_close(actual, expected, **close_to(expected))


def test_adagrad_and_rmsprop_float32_match_the_slides_to_1e_6():
    # float32 against float64: each of 50 steps rounds the parameter once and its step (≤ lr = 0.05
    # in size) a few times, |Δ| ≤ 50·(U32·|x| + 4·U32·0.05) ≤ 3e-6·|x| + 6e-7, and the iteration is
    # contractive here; tolerance 1e-5·|x| + 1e-6 (measured ≤ 0.05 of it).
    for ours, slide in [(gc.adagrad(0.05), adagrad_slide(0.05)), (gc.rmsprop(1e-2), rmsprop_slide(1e-2, 0.9))]:
        actual, _ = run(ours, PARAMS, 50)
        assert_close(actual, numpy_run(slide, 50), rtol=1e-5, atol=1e-6)


# --- transformations of the whole run ---------------------------------------------------------------


def test_jit_and_eager_agree():
    """jit fuses (and may contract into FMAs) what eager runs op by op: a parity check, in float64.
    Bound: 20 steps × ~10 roundings × U64 × Adam's amplification ≤ 10 = 2.2e-13 of the scale;
    tolerance 1e-11 of it (measured ≤ 1.8e-15 over 5 seeds, with and without FMA)."""
    tx = gc.adamw(1e-2, weight_decay=1e-3)
    key = jax.random.PRNGKey(3)
    with jax.enable_x64(True):
        params = float64(PARAMS)
        eager_params, eager_state = params, tx.init(params)
        jit_update = jax.jit(tx.update)
        jit_params, jit_state = params, tx.init(params)
        for k in jax.random.split(key, 20):
            g = gradient(eager_params, k)
            u, eager_state = tx.update(g, eager_state, eager_params)
            eager_params = gc.apply_updates(eager_params, u)
            g = gradient(jit_params, k)
            u, jit_state = jit_update(g, jit_state, jit_params)
            jit_params = gc.apply_updates(jit_params, u)
        assert jax.tree.leaves(jit_params)[0].dtype == jnp.float64
        assert_close(eager_params, jit_params, **close_to(jit_params, rtol=1e-11))


@pytest.mark.parametrize("make", [lambda lr: gc.sgd(lr, 0.9), gc.adam], ids=["momentum", "adam"])
def test_vmap_over_16_learning_rates_equals_16_runs(make):
    """vmap against a loop, a parity check, in float64 (in float32 Adam reached 0.17 of a 1e-6
    tolerance).  Bound: 30 steps × ~10 roundings × U64 × |params| ≤ 3 × Adam's amplification ≤ 10
    = 1e-12; tolerance 1e-11 (measured ≤ 4.4e-16, 5 seeds, with and without FMA)."""
    with jax.enable_x64(True):
        params = float64(PARAMS)
        rates = jnp.logspace(-4, -1, 16, dtype=jnp.float64)
        train = lambda lr: run(make(lr), params, 30)[0]
        population = jax.jit(jax.vmap(train))(rates)
        one_run = jax.jit(train)  # the rate is an input: compiled once, called 16 times
        for i, lr in enumerate(rates):
            single = one_run(lr)
            member = jax.tree.map(lambda x: x[i], population)
            assert_close(member, single, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float64])
@pytest.mark.parametrize("make", [gc.sgd, gc.adagrad, gc.rmsprop, gc.adam, gc.adamw], ids=lambda f: f.__name__)
def test_parameter_dtype_is_kept(make, dtype):
    with jax.enable_x64(dtype == jnp.float64):
        params = random_tree(jax.random.PRNGKey(0), dtype)
        tx = make(1e-3)
        final, state = run(tx, params, 3)
        assert {x.dtype for x in jax.tree.leaves(final)} == {jnp.dtype(dtype)}
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(final))


def test_moment_dtypes_are_configurable():
    params = random_tree(jax.random.PRNGKey(0), jnp.bfloat16)
    tx = gc.adam(1e-3, mu_dtype=jnp.float32, nu_dtype=jnp.float32)
    _, state = run(tx, params, 3)
    moments = [s.moment for s in jax.tree.leaves(state, is_leaf=lambda s: hasattr(s, "moment")) if hasattr(s, "moment")]
    assert len(moments) == 2
    assert {x.dtype for m in moments for x in jax.tree.leaves(m)} == {jnp.dtype(jnp.float32)}


def test_adam_half_precision_zero_gradients_stay_finite():
    for dtype in (jnp.float16, jnp.bfloat16):
        params = {"w": jnp.ones((4,), dtype)}
        tx = gc.adam(1e-3)
        state = tx.init(params)
        for _ in range(3):
            u, state = tx.update({"w": jnp.zeros((4,), dtype)}, state, params)
            params = gc.apply_updates(params, u)
        assert bool(jnp.all(jnp.isfinite(params["w"]))), dtype


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_half_precision_adam_tracks_float32_adam(dtype):
    """β2 = 0.999 rounds to 1 in bfloat16: a moment updated in the leaf's dtype would never grow
    and m / eps would overflow.  The moments' arithmetic runs in float32, so 50 steps stay finite
    and follow the float32 run: the total deviation is under a third of the total movement.

    Measured deviation / movement: bfloat16 (its 8-bit mantissa rounds every step) 0.108 here and
    0.108-0.159 over 6 seeds (mean 0.127, sd 0.017: the bound 1/3 is the mean + 12 sd); float16
    0.031 here and 0.031-0.066 over seeds 0-7.  Round-off does not move either (the same to 3
    digits with and without FMA, XLA_FLAGS=--xla_cpu_max_isa=AVX).  While v was stored in the
    leaf's float16 other seeds gave ratios of 13 and 36 (v underflowed for |g| < 7.7e-3 and the
    step became lr·g/eps); it is stored in float32 now (test_half_precision_second_moments_...)."""
    params = random_tree(jax.random.PRNGKey(0), jnp.float32)
    half, _ = run(gc.adam(1e-2), jax.tree.map(lambda x: x.astype(dtype), params), 50)
    full, _ = run(gc.adam(1e-2), params, 50)
    pairs = list(zip(jax.tree.leaves(half), jax.tree.leaves(full), jax.tree.leaves(params)))
    assert all(h.dtype == dtype and bool(jnp.all(jnp.isfinite(h))) for h, _, _ in pairs)
    deviation = sum(float(jnp.sum(jnp.abs(h.astype(jnp.float32) - f))) for h, f, _ in pairs)
    movement = sum(float(jnp.sum(jnp.abs(f - p))) for _, f, p in pairs)
    assert deviation < movement / 3



def _state_dtypes(state):
    """``{(buffer path, leaf name): dtype}`` of a state's per-parameter buffers."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        *where, last = path
        if isinstance(last, jax.tree_util.DictKey) and last.key in ("h", "b", "f"):
            out[(jax.tree_util.keystr(tuple(where)), last.key)] = jnp.dtype(leaf.dtype)
    return out


@pytest.mark.parametrize(
    "make, first, second",
    [(gc.adam, "numerator", "denominator"), (gc.adamw, "numerator", "denominator"),
     (gc.rmsprop, None, "denominator"), (gc.adagrad, None, "sum_of_squares"),
     (lambda lr: gc.rmsprop(lr, centered=True), "mean", "second_moment")],
    ids=["adam", "adamw", "rmsprop", "adagrad", "rmsprop_centered"],
)
def test_half_precision_second_moments_are_float32(make, first, second):
    # before: nu, the sum of squares and the centred second moment were stored in float16 /
    # bfloat16, where (1-b2)·g² underflows (|g| < 7.7e-3) or rounds away (gradchain.transforms.adaptive)
    params = {"h": jnp.ones((3,), jnp.float16), "b": jnp.ones((2,), jnp.bfloat16), "f": jnp.ones((4,), jnp.float32)}
    tx = make(1e-3)
    dtypes = _state_dtypes(tx.init(params))
    seconds = {k: d for k, d in dtypes.items() if second in k[0]}
    assert {leaf for _, leaf in seconds} == {"h", "b", "f"}, dtypes
    assert set(seconds.values()) == {jnp.dtype(jnp.float32)}, seconds
    firsts = {k: d for k, d in dtypes.items() if first is not None and first in k[0] and second not in k[0]}
    assert all(d == params[leaf].dtype for (_, leaf), d in firsts.items()), firsts  # first moments: the leaf's
    assert len(firsts) == (0 if first is None else 3), dtypes
    updates, state = tx.update(jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params), tx.init(params), params)
    assert {k: u.dtype for k, u in updates.items()} == {k: p.dtype for k, p in params.items()}  # the leaf's
    assert _state_dtypes(state) == dtypes  # stored back in the same dtypes


def test_an_explicit_second_moment_dtype_wins():
    params = {"h": jnp.ones((3,), jnp.float16), "b": jnp.ones((2,), jnp.bfloat16), "f": jnp.ones((4,), jnp.float32)}
    dtypes = _state_dtypes(gc.adam(1e-3, nu_dtype=jnp.bfloat16).init(params))
    assert {d for (where, _), d in dtypes.items() if "denominator" in where} == {jnp.dtype(jnp.bfloat16)}
    dtypes = _state_dtypes(gc.rmsprop(1e-3, accumulator_dtype=jnp.float16).init(params))
    assert set(dtypes.values()) == {jnp.dtype(jnp.float16)}, dtypes


def test_a_packed_float16_group_keeps_its_second_moment_in_float32():
    # gc.adam packs 40 small float16 leaves into one buffer (gc.multi_tensor): that buffer's nu is
    # float32 too, and the packed updates are bit-for-bit the unpacked ones, in float16
    params = {f"b{i:02d}": jnp.full((4,), 0.1 * i, jnp.float16) for i in range(40)}
    grads = jax.tree.map(lambda p: jnp.full_like(p, 1e-3), params)
    tx = gc.adam(1e-3)
    state = tx.init(params)
    groups = {jax.tree_util.keystr(k): leaf.dtype for k, leaf in jax.tree_util.tree_flatten_with_path(state)[0]
              if "groups" in jax.tree_util.keystr(k)}
    assert groups == {".inner[0].numerator[0].moment.groups['float16']": jnp.float16,
                      ".inner[0].denominator[0].moment.groups['float16']": jnp.float32}, groups
    packed, _ = tx.update(grads, state, params)  # eager, as the unpacked run: the same per-op roundings
    loose = gc.multi_tensor(gc.chain(gc.scale_by_adam(), gc.scale_by_learning_rate(1e-3)), max_leaf_size=0)
    unpacked, _ = loose.update(grads, loose.init(params), params)
    assert all(u.dtype == jnp.float16 for u in jax.tree.leaves(packed))
    assert_close(packed, unpacked, rtol=0, atol=0)

@pytest.mark.parametrize("make", [gc.adam, gc.rmsprop, gc.adagrad], ids=lambda f: f.__name__)
def test_float16_steps_with_small_gradients_equal_the_float32_steps(make):
    """T = 8 updates on constant float16 gradients from 7e-5 (far below the 7.7e-3 where a float16
    ``(1-b2)·g²`` underflows) to 2e-2 equal the float32 updates from the same gradients, cast to
    float16.  Before the second moments were kept in float32, Adam's first update for g = 1e-3
    was -8.4 instead of -1e-3 (v rounded to 0: the step became ~lr·g/eps).

    Tolerance: u = 2⁻¹¹, float16's unit round-off, bounds each float16 rounding by a relative u
    (float32's 2⁻²⁴ is negligible beside it).  Adam's float16 path rounds m at every step, and
    the m of step t carries 0.9 of the rounding of step t-1: ≤ u·Σ_{k<8} 0.9ᵏ = 5.7u; then the
    bias correction 1 - b1ᵗ and the division by it (2u), the quotient m̂/(√v̂ + eps) taken in
    float32 and cast back (u), the learning rate cast to float16 and the product (2u); the float32
    reference is cast once (u): 11.7u < 12u = 5.9e-3 relative, at most 12 float16 ulps (RMSProp and
    AdaGrad round fewer times: 4u).  Measured: 2.9e-3 (Adam, 3 ulps), 1.2e-3 (RMSProp) and 1.1e-3
    (AdaGrad).  A wrong learning rate, a missing bias correction or an underflowed v is off by
    10% or more."""
    g = jnp.array([1e-3, -1e-3, 3e-4, -5e-3, 2e-2, 7e-5], jnp.float16)

    def updates(g):
        tx, p = make(1e-3), {"w": jnp.zeros(g.shape, g.dtype)}
        state, out = tx.init(p), []
        for _ in range(8):
            u, state = tx.update({"w": g}, state, p)
            out.append(u["w"])
        return jnp.stack(out)

    half = updates(g)
    full = updates(g.astype(jnp.float32)).astype(jnp.float16)
    assert half.dtype == jnp.float16
    half, full = np.asarray(half, np.float64), np.asarray(full, np.float64)
    np.testing.assert_array_less(np.abs(half - full), 12 * 2.0**-11 * np.abs(full))

# --- bad input ---------------------------------------------------------------------------------------

BAD = [
    (lambda: gc.sgd(-0.1), ValueError, "learning_rate"),
    (lambda: gc.sgd(float("nan")), ValueError, "learning_rate"),
    (lambda: gc.sgd(float("inf")), ValueError, "learning_rate"),
    (lambda: gc.sgd("0.1"), TypeError, "learning_rate"),
    (lambda: gc.sgd(None), TypeError, "learning_rate"),
    (lambda: gc.sgd([0.1]), TypeError, "learning_rate"),
    (lambda: gc.sgd(0.1, momentum=1.0), ValueError, "momentum"),
    (lambda: gc.sgd(0.1, momentum=-0.5), ValueError, "momentum"),
    (lambda: gc.sgd(0.1, momentum=0.9, nesterov="yes"), TypeError, "nesterov"),
    (lambda: gc.rmsprop(0.1, decay=1.5), ValueError, "decay"),
    (lambda: gc.rmsprop(0.1, eps=0.0), ValueError, "eps"),
    (lambda: gc.adagrad(0.1, eps=-1e-7), ValueError, "eps"),
    (lambda: gc.adam(b1=1.0), ValueError, "b1"),
    (lambda: gc.adam(b2=-0.1), ValueError, "b2"),
    (lambda: gc.adam(eps=0.0), ValueError, "eps"),
    (lambda: gc.adam(learning_rate=1e-3 + 0j), TypeError, "learning_rate"),
    (lambda: gc.adam(bias_correction=1), TypeError, "bias_correction"),
    (lambda: gc.adamw(weight_decay=-1e-4), ValueError, "weight_decay"),
    (lambda: gc.adam(learning_rate=lambda step: "fast"), TypeError, "learning_rate"),
    (lambda: gc.adam(learning_rate=jnp.array([1e-3, -1.0])), ValueError, "learning_rate"),
]


@pytest.mark.parametrize("make, error, argument", BAD, ids=[f"{i}-{b[2]}" for i, b in enumerate(BAD)])
def test_bad_hyperparameters_are_refused_at_construction(make, error, argument):
    with pytest.raises(error, match=argument):
        make()


def test_mismatched_update_tree_is_a_clear_error():
    tx = gc.adam()
    state = tx.init(PARAMS)
    with pytest.raises(ValueError, match="structure"):
        tx.update({"w": jnp.ones(3)}, state, PARAMS)
