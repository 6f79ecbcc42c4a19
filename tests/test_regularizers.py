"""Regularizers: statistics with fixed keys, parity with Flax / torch, jit & vmap, gradients, errors.

Tolerances are stated per test; Monte-Carlo checks allow 5 standard errors of the estimate.
Each test computes what it checks in one or two compiled programs and compares in NumPy: on
2 CPU cores, XLA compiles (not the arithmetic) are what a test pays for.

Round-off: float32 results are compared with k·U32 for k roundings (U32 = 2**-24), and sums of n
terms with (n - 1)·U32·Σ|terms| (any summation order; the vector width and FMA of another CPU
change the order, not the bound).  The Monte-Carlo checks draw fixed keys, so their estimates are
fixed numbers that round-off moves by ~1e-7 relative; measured, they use at most 0.69 of their 5
standard errors (the same to 7 digits with and without FMA, XLA_FLAGS=--xla_cpu_max_isa=AVX).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import U32

from gradchain.regularizers import (
    BatchNormState,
    batch_norm,
    batch_norm_init,
    cutmix,
    cutout,
    dropconnect,
    dropout,
    elastic_net_penalty,
    fractional_max_pool,
    fractional_pool_regions,
    l1_penalty,
    l2_penalty,
    linear_decay_survival,
    marginalize,
    mixup,
    stochastic_depth,
)
from gradchain.transforms.decay import add_elastic_net_penalty, add_l1_penalty, add_l2_penalty
from gradchain.transforms.wrappers import decay_mask

KEY = jax.random.PRNGKey(0)
KEYS = jax.random.split(jax.random.PRNGKey(1), 4)
MANY = jax.random.split(jax.random.PRNGKey(2), 20_000)  # Monte-Carlo keys


def normal(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def close(actual, expected, rtol, atol=0.0):
    """Leaf-wise |actual - expected| <= atol + rtol·|expected| (NumPy: no compiles); ``atol`` may
    be an array (a bound per element)."""
    for a, e in zip(jax.tree.leaves(actual), jax.tree.leaves(expected), strict=True):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        if np.ndim(atol):
            err, bound = np.abs(a - e), atol + rtol * np.abs(e)
            assert np.all(err <= bound), f"max |a - e| - bound = {np.max(err - bound):.3g}"
        else:
            np.testing.assert_allclose(a, e, rtol=rtol, atol=atol)


def random_params():
    return {
        "dense": {"w": normal(7, 5, seed=1), "b": normal(5, seed=2)},
        "scale": normal(seed=3),
        "conv": [normal(3, 3, 2, seed=4)],
    }


# ----------------------------------------------------------------------------------------------
# Penalties


def test_penalties_closed_form_and_masks():
    params = random_params()
    big = [params["dense"]["w"], params["conv"][0]]  # ndim >= 2: the default mask's leaves
    everything = jax.tree.leaves(params)
    sq = lambda ls: sum(float(np.sum(np.square(w, dtype=np.float64))) for w in ls)
    ab = lambda ls: sum(float(np.sum(np.abs(w), dtype=np.float64)) for w in ls)
    prefix = {"dense": True, "scale": False, "conv": [False]}  # one bool for the "dense" sub-tree

    @jax.jit
    def values(p):
        return {
            "l2": l2_penalty(p, 0.3),
            "l1": l1_penalty(p, 0.2),
            "l2_all": l2_penalty(p, 0.3, mask=None),
            "en": elastic_net_penalty(p, 0.2, 0.3),
            "prefix": l2_penalty(p, 1.0, mask=prefix),
            "callable": l2_penalty(p, 1.0, mask=lambda q: decay_mask(q)),
            "none": l2_penalty(p, 1.0, mask=jax.tree.map(lambda _: False, p)),
        }

    v = {k: float(x) for k, x in values(params).items()}
    # float32 sums of n non-negative terms (each a rounded square or |w|) and a scaling, against
    # float64: ≤ (n + 2)·U32 relative in any summation order (1e-6 was below that bound for
    # n ≥ 15; the 53 decayed entries give 3.3e-6)
    rel = lambda leaves: (sum(np.size(w) for w in leaves) + 2) * U32
    assert v["l2"] == pytest.approx(0.3 * sq(big), rel=rel(big))
    assert v["l1"] == pytest.approx(0.2 * ab(big), rel=rel(big))
    assert v["l2_all"] == pytest.approx(0.3 * sq(everything), rel=rel(everything))
    assert v["en"] == pytest.approx(0.2 * ab(big) + 0.3 * sq(big), rel=rel(big) + U32)
    assert v["prefix"] == pytest.approx(sq([params["dense"]["w"], params["dense"]["b"]]), rel=rel([params["dense"]["w"], params["dense"]["b"]]))
    assert v["callable"] == pytest.approx(sq(big), rel=rel(big))
    assert v["none"] == 0.0


@pytest.mark.parametrize("mask", [None, decay_mask])
def test_penalty_gradient_is_what_the_transform_adds(mask):
    """jax.grad of the loss-side term == what the gradient-side transform adds (1e-6)."""
    params = random_params()
    cases = [
        (lambda p: elastic_net_penalty(p, 0.1, 0.3, mask=mask), add_elastic_net_penalty(0.1, 0.3, mask=mask)),
        (lambda p: l2_penalty(p, 0.3, mask=mask), add_l2_penalty(0.3, mask=mask)),
        (lambda p: l1_penalty(p, 0.1, mask=mask), add_l1_penalty(0.1, mask=mask)),
    ]

    @jax.jit
    def both(p):
        zeros = jax.tree.map(jnp.zeros_like, p)
        return [(jax.grad(loss)(p), tx.update(zeros, tx.init(p), p)[0]) for loss, tx in cases]

    # 2·l2·w + l1·sign(w) two ways: ≤ 3 roundings each, of terms ≤ 2·0.3·max|w| + 0.1
    scale = 2 * 0.3 * max(float(np.max(np.abs(w))) for w in jax.tree.leaves(params)) + 0.1
    for grad, added in both(params):
        close(grad, added, rtol=6 * U32, atol=6 * U32 * scale)


def test_penalty_eager_and_vmapped_over_strength():
    params = random_params()
    strengths = np.array([0.0, 0.5, 2.0], np.float32)
    out = jax.jit(jax.vmap(lambda l2: l2_penalty(params, l2)))(strengths)
    # the sum of the 53 decayed squares may be ordered differently under vmap: ≤ (53 + 2)·U32
    close(out, strengths * float(l2_penalty(params, 1.0)), rtol=(53 + 2) * U32)


def test_penalty_bad_input():
    params = random_params()
    with pytest.raises(ValueError, match=r"l2_penalty: l2 .*\[0, inf\].*-1"):
        l2_penalty(params, -1.0)
    with pytest.raises(ValueError, match="elastic_net_penalty: l1"):
        elastic_net_penalty(params, -0.1, 0.1)
    with pytest.raises(TypeError, match="mask leaves must be Python bools"):
        l1_penalty(params, 0.1, mask=jax.tree.map(lambda _: 1, params))
    with pytest.raises(ValueError, match="l2_penalty: mask must have the structure of the parameters"):
        l2_penalty(params, 0.1, mask={"dense": True})


# ----------------------------------------------------------------------------------------------
# Dropout and DropConnect


def test_inverted_dropout_keeps_the_mean():
    x = np.full((200_000,), 3.0, np.float32)
    rate = 0.3
    y = np.asarray(dropout(KEY, x, rate))
    assert np.mean(y == 0) == pytest.approx(rate, abs=5 * math.sqrt(rate * (1 - rate) / x.size))
    np.testing.assert_allclose(np.unique(y), [0.0, 3.0 / 0.7], rtol=1e-6)  # kept units scaled by 1/p (≤ 2·U32)
    se = 3.0 / 0.7 * math.sqrt(rate * (1 - rate) / x.size)
    assert y.mean() == pytest.approx(3.0, abs=5 * se)
    np.testing.assert_array_equal(dropout(None, x, rate, deterministic=True), x)  # test: identity


def test_vanilla_dropout_test_output_is_training_expectation():
    x = normal(8, 6)
    rate = 0.4
    test = np.asarray(dropout(None, x, rate, deterministic=True, inverted=False))
    close(test, 0.6 * x, rtol=4 * U32)  # x·(1 - 0.4) and x·0.6 in float32: ≤ 2 roundings each
    train = np.asarray(jax.jit(jax.vmap(lambda k: dropout(k, x, rate, inverted=False)))(MANY))
    assert set(np.unique(train / x).round(6).tolist()) == {0.0, 1.0}  # unscaled in training
    se = np.abs(x) * math.sqrt(rate * (1 - rate) / len(MANY))
    assert np.all(np.abs(train.mean(0) - test) <= 5 * se)


@pytest.mark.parametrize("broadcast_dims", [(), (0,), (1, 2)])
def test_dropout_masks_equal_flax_nnx(broadcast_dims):
    """Bit-for-bit the outputs of nnx.Dropout for the same key, eager and under jit."""
    nnx = pytest.importorskip("flax.nnx", reason="the reference is Flax's nnx.Dropout: pip install flax")
    x = jnp.asarray(normal(4, 5, 6, 3))  # (nnx.Dropout divides a NumPy input with NumPy)
    for rate in (0.1, 0.5):
        ours = dropout(KEYS[1], x, rate, broadcast_dims=broadcast_dims)
        theirs = nnx.Dropout(rate, broadcast_dims=broadcast_dims)(x, deterministic=False, rngs=KEYS[1])
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(dropout(None, x, 0.1, deterministic=True), nnx.Dropout(0.1)(x, deterministic=True))
    layer = nnx.Dropout(0.1, broadcast_dims=broadcast_dims)  # XLA may fuse x / keep under jit
    theirs = jax.jit(lambda k, x: layer(x, deterministic=False, rngs=k))(KEYS[1], x)
    ours = jax.jit(lambda k, x: dropout(k, x, 0.1, broadcast_dims=broadcast_dims))(KEYS[1], x)
    np.testing.assert_array_equal(ours, theirs)
    zero = np.asarray(ours) == 0
    if broadcast_dims == (1, 2):  # spatial dropout: one value per (example, channel)
        assert np.array_equal(zero, np.broadcast_to(zero[:, :1, :1, :], zero.shape))


def test_dropout_same_key_same_mask_different_keys_differ():
    x = np.ones((64, 64), np.float32)
    a, b, c = (np.asarray(dropout(k, x, 0.5)) for k in (KEYS[0], KEYS[0], KEYS[1]))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert np.array_equal(dropout(KEYS[0], x, 0.0), x)


def test_dropout_gradient_is_mask_over_keep():
    x, w = normal(5, 7, seed=1), normal(5, 7, seed=2)
    rate = 0.25

    @jax.jit
    def grads(x):
        train = jax.grad(lambda x: jnp.sum(w * dropout(KEYS[3], x, rate)))(x)
        test = jax.grad(lambda x: jnp.sum(w * dropout(None, x, rate, deterministic=True, inverted=False)))(x)
        return train, test, dropout(KEYS[3], jnp.ones_like(x), rate) != 0

    train, test, mask = grads(x)
    # w/0.75 and w·0.75 against the same in float32 two other ways: ≤ 3 roundings (1.8e-7)
    close(train, np.where(mask, w / 0.75, 0.0), rtol=1e-6)
    close(test, 0.75 * w, rtol=1e-6)


def test_dropout_jit_and_vmap_over_keys_and_rates():
    x = np.ones((1000,), np.float32)
    f = jax.jit(lambda k, r: dropout(k, x, r))
    eager = [np.asarray(dropout(k, x, 0.5)) for k in KEYS]
    np.testing.assert_array_equal(f(KEYS[0], 0.5), eager[0])
    per_key = np.asarray(jax.jit(jax.vmap(lambda k: dropout(k, x, 0.5)))(KEYS))
    np.testing.assert_array_equal(per_key, np.stack(eager))
    rates = np.array([0.0, 0.2, 0.5, 0.8], np.float32)
    per_rate = np.asarray(jax.jit(jax.vmap(lambda r: dropout(KEYS[0], x, r)))(rates))
    # fixed keys, 1000 draws: the dropped fraction's standard error is ≤ 0.016 (0.06 = 3.8 of them,
    # measured 0.37 of it); the mean's is ≤ 0.063 at rate 0.8 (0.25 = 4 of them, measured 0.2)
    close(np.mean(per_rate == 0, axis=1), rates, rtol=0.0, atol=0.06)
    close(np.mean(per_rate, axis=1), np.ones(4), rtol=0.0, atol=0.25)


def test_dropconnect_expectation_and_test_path():
    x, w = normal(3, 6, seed=1), normal(6, 4, seed=2)
    rate = 0.5

    @jax.jit
    def run(keys):
        inverted = jax.vmap(lambda k: x @ dropconnect(k, w, rate))(keys).mean(0)
        vanilla = jax.vmap(lambda k: x @ dropconnect(k, w, rate, inverted=False))(keys).mean(0)
        return inverted, vanilla

    inverted, vanilla = run(MANY)
    # Var of x @ (M ⊙ W)/p per output: Σ_i x_i² w_i² (1-p)/p
    se = np.sqrt((x**2) @ (w**2) * rate / (1 - rate) / len(MANY))
    assert np.all(np.abs(inverted - x @ w) <= 5 * se)
    np.testing.assert_array_equal(dropconnect(None, w, rate, deterministic=True), w)  # all connections
    test = x @ np.asarray(dropconnect(None, w, rate, deterministic=True, inverted=False))
    close(test, 0.5 * (x @ w), rtol=1e-6)  # scaling by 0.5 is exact: the same 6-term products
    assert np.all(np.abs(vanilla - test) <= 5 * se * (1 - rate))
    # the mask is per weight: some but not all weights are zero, the same mask as dropout's
    wd = np.asarray(dropconnect(KEYS[2], w, rate))
    assert 0 < np.sum(wd == 0) < w.size
    np.testing.assert_array_equal(wd, dropout(KEYS[2], w, rate))


@pytest.mark.parametrize(
    "call, match",
    [
        (
            lambda: dropout(KEY, np.ones(3), 1.0),
            r"dropout: rate \(probability of dropping\) must be in \[0, 1\), got 1.0",
        ),
        (lambda: dropout(KEY, np.ones(3), -0.1), r"rate .* must be in \[0, 1\), got -0.1"),
        (lambda: dropconnect(KEY, np.ones((2, 2)), 1.5), r"dropconnect: rate .*got 1.5"),
        (lambda: dropout(None, np.ones(3), 0.5), r"dropout: key is None but deterministic=False"),
        (lambda: dropout(KEY, np.ones(3), 0.5, broadcast_dims=(3,)), r"broadcast_dims must be axes .* got \(3,\)"),
    ],
)
def test_dropout_bad_input_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_dropout_bad_input_type_error():
    with pytest.raises(TypeError, match="dropout: x must be a floating-point array, got dtype int32"):
        dropout(KEY, np.ones(3, np.int32), 0.5)
    with pytest.raises(TypeError, match="dropout: rate .* got '0.5'"):
        dropout(KEY, np.ones(3), "0.5")
    with pytest.raises(TypeError, match="dropout: key must be a JAX PRNG key"):
        dropout(np.ones(3), np.ones(3), 0.5)


# ----------------------------------------------------------------------------------------------
# Batch norm


@pytest.mark.parametrize("fast", [False, True])
def test_batch_norm_matches_nnx_batchnorm(fast):
    """Same numbers as nnx.BatchNorm, with its two-pass variance and with its default one-pass
    one.  In float64: in float32 two batch statistics of n = 120 values summed in different orders
    (jit against eager, another CPU's vector width or FMA) may differ by up to 2n·U32·mean|x|,
    which normalised is ~2e-4, far above the 1e-6 the two happened to agree to here.  In float64
    everything agrees to 2n·U64·(the same terms) ≈ 1e-13 ≤ 1e-12 (nnx's running statistics,
    float32 whatever the dtype, are replaced by float64 ones)."""
    shape = (6, 5, 4, 3)  # NHWC: per-channel statistics over N, H, W
    scale = np.array([1.0, 2.0, 0.5])
    bias = np.array([0.0, -1.0, 3.0])
    xs = [2.0 * normal(*shape, seed=step).astype(np.float64) + step for step in range(3)]
    x_test = normal(*shape, seed=9).astype(np.float64)
    nnx = pytest.importorskip("flax.nnx", reason="the reference is Flax's nnx.BatchNorm: pip install flax")

    with jax.enable_x64(True):
        reference = nnx.BatchNorm(3, use_fast_variance=fast, param_dtype=jnp.float64, rngs=nnx.Rngs(0))
        reference.mean = nnx.BatchStat(jnp.zeros(3, jnp.float64))
        reference.var = nnx.BatchStat(jnp.ones(3, jnp.float64))
        reference.scale[...] = scale
        reference.bias[...] = bias

        @jax.jit
        def ours(xs, x_test):
            state, ys = batch_norm_init(3, jnp.float64), []
            for x in xs:
                y, state = batch_norm(x, state, scale, bias, training=True)
                ys.append((y, state))
            y_test, same = batch_norm(x_test, state, scale, bias, training=False)
            return ys, y_test, same, state

        ys, y_test, same, state = ours(xs, x_test)
        assert y_test.dtype == jnp.float64
        for x, (y, st) in zip(xs, ys):
            close(y, reference(x), rtol=1e-12, atol=1e-12)
            assert reference.mean[...].dtype == jnp.float64
            close(st, BatchNormState(reference.mean[...], reference.var[...]), rtol=1e-12, atol=1e-12)
        close(same, state, rtol=0)  # testing leaves the statistics alone
        reference.eval()
        close(y_test, reference(x_test), rtol=1e-12, atol=1e-12)


def test_batch_norm_training_statistics_and_running_update():
    x = 3.0 * normal(64, 4) + 5.0
    state = BatchNormState(jnp.full((4,), 1.0), jnp.full((4,), 2.0))
    y, new = batch_norm(x, state, training=True, momentum=0.9, eps=1e-5)
    y_test, same = batch_norm(x, new, training=False, eps=1e-5)
    assert same is new
    y, y_test, new = np.asarray(y), np.asarray(y_test), jax.tree.map(np.asarray, new)
    mu, var = x.mean(0), x.var(0)  # biased variance
    # float32 statistics of n = 64 values against NumPy's: a sum of n terms errs by ≤ n·U32·mean|·|
    # in any order (mean|x|/|μ| ≈ 1 and E[x²]/var ≈ 4 here), so the batch mean of y ≈ 0 by
    # ≤ 64·U32·mean|y| ≈ 3e-6 < 1e-5, mean(y²) and the running mean by ≤ (n + 4)·U32 = 4e-6
    # relative, the running variance by ≤ 2·(n + 4)·U32·E[x²]/var ≈ 3.2e-5 relative (rtol 1e-6
    # was below these bounds; measured ≤ 0.09 of it)
    n = len(x)
    close(y.mean(0), np.zeros(4), rtol=0, atol=1e-5)
    close((y**2).mean(0), var / (var + 1e-5), rtol=1e-5)
    close(new.mean, 0.9 * 1.0 + 0.1 * mu, rtol=(n + 4) * U32 * 2)
    close(new.var, 0.9 * 2.0 + 0.1 * var, rtol=2 * (n + 4) * U32 * float(np.max((x**2).mean(0) / var)) * 2)
    close(y_test, (x - new.mean) / np.sqrt(new.var + 1e-5), rtol=1e-5, atol=1e-5)  # the same 4 roundings


def test_batch_norm_gradient_matches_closed_form():
    """d/dx of Σ g ⊙ BN(x), against the textbook backward pass (Ioffe & Szegedy 2015, §3)."""
    x, g = normal(10, 3, seed=1).astype(np.float64), normal(10, 3, seed=2).astype(np.float64)
    scale, eps = np.array([1.5, -0.5, 2.0]), 1e-3
    state = batch_norm_init(3)

    @jax.jit
    def grads(x):
        loss = lambda x: jnp.sum(g * batch_norm(x, state, scale, None, training=True, eps=eps)[0])
        stats = lambda x: jnp.sum(batch_norm(x, state, training=True)[1].mean)
        return jax.grad(loss)(x), jax.grad(stats)(x)

    grad, stat_grad = grads(x.astype(np.float32))
    n = x.shape[0]
    # float32 against the float64 closed form; n = 10 values a channel: ≤ ~(3n + 10)·U32 relative
    # to the terms (2.4e-6), far inside rtol 1e-4 / atol 1e-5 (measured ≤ 0.004 of them)
    inv = 1.0 / np.sqrt(x.var(0) + eps)
    xhat = (x - x.mean(0)) * inv
    dy = g * scale
    close(grad, inv / n * (n * dy - dy.sum(0) - xhat * (dy * xhat).sum(0)), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(stat_grad, 0.0)  # no gradient into the running statistics


def test_batch_norm_vmap_with_axis_name_equals_batched():
    x = normal(8, 4)
    state = batch_norm_init(4)
    scale = np.arange(1.0, 5.0, dtype=np.float32)
    batched = batch_norm(x, state, scale, training=True)  # eager
    per_example = jax.jit(
        jax.vmap(lambda xi: batch_norm(xi, state, scale, training=True, axis_name="batch"), axis_name="batch")
    )(x)
    # the statistics of 8 values through a psum under vmap against a mean: ≤ (8 + 2)·U32 = 6e-7
    # relative apart (1e-6), the normalised outputs ≤ ~(2·8 + 6)·U32·|x|/σ (rtol 1e-5, atol 1e-6;
    # measured ≤ 0.009 of that)
    close(per_example[0], batched[0], rtol=1e-5, atol=1e-6)
    close(jax.tree.map(lambda a: a[0], per_example[1]), batched[1], rtol=1e-6)


def test_batch_norm_bad_input():
    state = batch_norm_init(4)
    with pytest.raises(ValueError, match=r"state.mean must have the feature shape \(3,\).*got shape \(4,\)"):
        batch_norm(np.ones((2, 3)), state, training=True)
    with pytest.raises(ValueError, match="batch_norm: momentum must be in"):
        batch_norm(np.ones((2, 4)), state, training=True, momentum=1.5)
    with pytest.raises(ValueError, match="batch_norm: eps must be in"):
        batch_norm(np.ones((2, 4)), state, training=True, eps=0.0)
    with pytest.raises(ValueError, match="no axis to take batch statistics over"):
        batch_norm(np.ones(4), state, training=True)
    with pytest.raises(TypeError, match="batch_norm: training must be a Python bool"):
        batch_norm(np.ones((2, 4)), state, training=np.array(True))
    with pytest.raises(TypeError, match="batch_norm: x must be a floating-point array"):
        batch_norm(np.ones((2, 4), np.int32), state, training=True)
    with pytest.raises(ValueError, match="batch_norm_init: num_features"):
        batch_norm_init(0)


# ----------------------------------------------------------------------------------------------
# Stochastic depth


def test_stochastic_depth_expected_output_and_test_path():
    r = normal(4, 3)
    p = 0.7

    @jax.jit
    def means(keys):
        inverted = jax.vmap(lambda k: stochastic_depth(k, r, p))(keys).mean(0)
        vanilla = jax.vmap(lambda k: stochastic_depth(k, r, p, inverted=False))(keys).mean(0)
        return inverted, vanilla

    inverted, vanilla = means(MANY)
    se = np.abs(r) / p * math.sqrt(p * (1 - p) / len(MANY))
    assert np.all(np.abs(inverted - r) <= 5 * se)
    np.testing.assert_array_equal(stochastic_depth(None, r, p, deterministic=True), r)  # all layers
    vanilla_test = np.asarray(stochastic_depth(None, r, p, deterministic=True, inverted=False))
    close(vanilla_test, p * r, rtol=2 * U32)  # one float32 product each way
    assert np.all(np.abs(vanilla - vanilla_test) <= 5 * se * p)


def test_stochastic_depth_row_and_batch_modes():
    r = np.ones((400, 3), np.float32)
    rows = np.asarray(stochastic_depth(KEY, r, 0.5, "row"))
    assert np.all(rows == rows[:, :1])  # a whole example survives or not
    assert set(np.unique(rows).tolist()) == {0.0, 2.0}
    assert 0.4 < np.mean(rows[:, 0] > 0) < 0.6
    whole = np.asarray(jax.jit(jax.vmap(lambda k: stochastic_depth(k, r, 0.5, "batch")))(KEYS))
    assert all(len(np.unique(w)) == 1 for w in whole)
    per_p = jax.jit(jax.vmap(lambda p: stochastic_depth(KEY, r, p).mean()))(np.array([0.25, 0.5, 1.0], np.float32))
    # fixed key, 400 rows: the mean's standard error is sqrt((1 - p)/(p·400)) ≤ 0.087 (p = 0.25):
    # 0.3 = 3.5 of them (measured 0.18 of it)
    close(per_p, np.ones(3), rtol=0.0, atol=0.3)


def test_linear_decay_survival():
    p = np.asarray(linear_decay_survival(10, 0.5))
    # 1 - l/L·(1 - p_L) in float32: ≤ 3 roundings (a division, a product, a difference) plus the
    # float32 inputs: 4·U32 = 2.4e-7 (rtol 1e-7 was below it, and used 0.87 of itself); ×2
    close(p, 1.0 - np.arange(1, 11) / 10 * 0.5, rtol=2 * 4 * U32)
    assert p[-1] == 0.5 and p[0] == pytest.approx(0.95)  # 0.5 exactly; 0.95 to 4·U32 < 1e-6
    assert p.sum() == pytest.approx((3 * 10 - 1) / 4)  # ≤ (10 + 4)·U32 = 8.3e-7 < 1e-6
    with pytest.raises(ValueError, match="linear_decay_survival: final_prob"):
        linear_decay_survival(4, 0.0)
    with pytest.raises(ValueError, match="num_layers must be an int >= 1, got 0"):
        linear_decay_survival(0)


def test_stochastic_depth_bad_input():
    with pytest.raises(ValueError, match=r"survival_prob must be in \(0, 1\], got 0.0"):
        stochastic_depth(KEY, np.ones((2, 2)), 0.0)
    with pytest.raises(ValueError, match="survival_prob .*got 1.2"):
        stochastic_depth(KEY, np.ones((2, 2)), 1.2)
    with pytest.raises(ValueError, match="mode must be 'row' or 'batch', got 'layer'"):
        stochastic_depth(KEY, np.ones((2, 2)), 0.5, "layer")


# ----------------------------------------------------------------------------------------------
# Fractional max pooling


def _naive_pool(x, rows, cols):
    """Independent reference: a loop over the 2-D regions."""
    out = np.empty((len(rows[0]), len(cols[0]), x.shape[-1]), x.dtype)
    for i, (r0, rn) in enumerate(zip(*rows)):
        for j, (c0, cn) in enumerate(zip(*cols)):
            out[i, j] = x[r0 : r0 + rn, c0 : c0 + cn].max(axis=(0, 1))
    return out


@pytest.mark.parametrize("n_in, n_out", [(25, 17), (9, 6), (10, 4), (7, 7)])
def test_graham_regions(n_in, n_out):
    alpha = n_in / n_out
    steps = {math.floor(alpha), math.ceil(alpha)}
    us = np.array([0.0, 0.3, 0.77, 0.999], np.float32)

    @jax.jit
    def regions(us, keys):
        def one(u, k):
            return (
                fractional_pool_regions(u, n_in, n_out),
                fractional_pool_regions(u, n_in, n_out, overlapping=True),
                fractional_pool_regions(k, n_in, n_out, pseudo_random=False),
            )

        return jax.vmap(one)(us, keys)

    disjoint, overlapping, shuffled = jax.tree.map(np.asarray, regions(us, KEYS))
    for starts, sizes in zip(*disjoint):
        assert starts[0] == 0 and starts[-1] + sizes[-1] == n_in
        assert np.all(starts[1:] == starts[:-1] + sizes[:-1])  # disjoint, tiling the input
        assert set(sizes.tolist()) <= steps
    for starts, sizes in zip(*shuffled):
        assert starts[0] == 0 and starts[-1] + sizes[-1] == n_in
        assert np.all(starts[1:] == starts[:-1] + sizes[:-1])
        assert np.sum(sizes == math.ceil(alpha)) == (n_in % n_out if alpha != int(alpha) else n_out)
    (starts, sizes), (o_starts, o_sizes) = disjoint, overlapping
    np.testing.assert_array_equal(o_starts, starts)
    np.testing.assert_array_equal(o_sizes[:, :-1], sizes[:, :-1] + 1)  # [a_{i-1}, a_i]: one more
    np.testing.assert_array_equal(o_starts[:, -1] + o_sizes[:, -1], n_in)  # the last one clipped


@pytest.mark.parametrize("pseudo_random, overlapping", [(True, False), (True, True), (False, False), (False, True)])
def test_fractional_max_pool_values_against_loop(pseudo_random, overlapping):
    x = normal(2, 11, 9, 3)
    kwargs = dict(pseudo_random=pseudo_random, overlapping=overlapping)
    if pseudo_random:
        draws = np.array([[0.2, 0.9], [0.55, 0.1]], np.float32)
        y = fractional_max_pool(None, x, output_size=(7, 6), samples=draws, **kwargs)
    else:
        draws = jax.random.split(KEYS[0], (2, 2))  # the documented draw: one key per image and axis
        y = fractional_max_pool(KEYS[0], x, output_size=(7, 6), **kwargs)
    assert y.shape == (2, 7, 6, 3)
    for n in range(2):
        rows = [np.asarray(a) for a in fractional_pool_regions(draws[n][0], 11, 7, **kwargs)]
        cols = [np.asarray(a) for a in fractional_pool_regions(draws[n][1], 9, 6, **kwargs)]
        np.testing.assert_array_equal(np.asarray(y[n]), _naive_pool(x[n], rows, cols))


def test_fractional_max_pool_matches_torch():
    """Same windows and values as torch.nn.functional.fractional_max_pool2d for the same u,
    and the same output size as torch.nn.FractionalMaxPool2d(output_ratio=1/ratio)."""
    torch = pytest.importorskip("torch")
    x = normal(2, 13, 10, 3)
    u = np.random.default_rng(5).uniform(size=(2, 2)).astype(np.float32)
    xt = torch.tensor(x).permute(0, 3, 1, 2)
    samples = torch.tensor(np.repeat(u[:, None, ::-1], 3, axis=1).copy())  # torch: (N, C, [w, h])
    for k, out in [(2, (9, 7)), (3, (6, 5)), (2, (12, 9)), ((2, 3), (8, 8)), (2, (1, 1))]:
        theirs = torch.nn.functional.fractional_max_pool2d(xt, k, output_size=out, _random_samples=samples)
        ours = fractional_max_pool(None, x, output_size=out, kernel_size=k, samples=u)
        np.testing.assert_array_equal(np.asarray(ours), theirs.permute(0, 2, 3, 1).numpy())
    for ratio in (math.sqrt(2), 1.5, 1.9):  # floor(n / ratio) == int(n * output_ratio)
        want = tuple(torch.nn.FractionalMaxPool2d(2, output_ratio=1 / ratio)(xt).permute(0, 2, 3, 1).shape)
        assert jax.eval_shape(lambda x: fractional_max_pool(KEY, x, ratio), x).shape == want
        assert jax.eval_shape(lambda x: fractional_max_pool(KEY, x, ratio, kernel_size=2), x).shape == want


def test_fractional_max_pool_randomness_test_path_and_gradient():
    x = normal(3, 16, 16, 2)
    a, b, c = (np.asarray(fractional_max_pool(k, x)) for k in (KEYS[0], KEYS[0], KEYS[1]))
    assert a.shape == (3, 11, 11, 2)  # floor(16 / √2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    det = fractional_max_pool(None, x, deterministic=True)  # no key: the regions of u = 1/2
    np.testing.assert_array_equal(det, fractional_max_pool(None, x, samples=np.full((3, 2), 0.5)))
    fmp = lambda k, x: fractional_max_pool(k, x, 1.5)

    @jax.jit
    def run(x):
        grad = jax.grad(lambda x: jnp.sum(fractional_max_pool(KEYS[2], x)))(x)
        average = marginalize(fmp, KEYS[3], x, 8)  # test time: average over region draws
        explicit = jax.vmap(lambda k: fmp(k, x))(jax.random.split(KEYS[3], 8)).mean(0)
        per_key = jax.vmap(lambda k: fractional_max_pool(k, x))(KEYS)
        return grad, average, explicit, per_key, fractional_max_pool(KEYS[0], x[0])

    grad, average, explicit, per_key, single = run(x)
    # disjoint regions: each output's gradient goes to exactly one input (its max)
    assert set(np.unique(grad).tolist()) == {0.0, 1.0}
    assert float(grad.sum()) == 3 * 11 * 11 * 2
    close(average, explicit, rtol=1e-6, atol=1e-6)  # the same 8 maxima averaged: ≤ 8·U32·|x|max
    np.testing.assert_array_equal(per_key[0], a)  # jit + vmap over keys == eager
    assert single.shape == (11, 11, 2)  # one HWC image


def test_fractional_max_pool_bad_input():
    with pytest.raises(ValueError, match=r"fractional_max_pool: x must have rank 3 or 4 .*got shape \(8, 8\)"):
        fractional_max_pool(KEY, np.ones((8, 8)))
    with pytest.raises(ValueError, match="ratio must be a number >= 1.*got 0.5"):
        fractional_max_pool(KEY, np.ones((1, 8, 8, 1)), 0.5)
    with pytest.raises(ValueError, match=r"height of 2 pixels pooled by ratio=3 leaves no output"):
        fractional_max_pool(KEY, np.ones((1, 2, 8, 1)), 3.0)
    with pytest.raises(ValueError, match="does not fit the input"):
        fractional_max_pool(KEY, np.ones((1, 8, 8, 1)), output_size=7, kernel_size=3)
    with pytest.raises(ValueError, match=r"samples must have shape \(1, 2\)"):
        fractional_max_pool(None, np.ones((1, 8, 8, 1)), samples=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="fractional_max_pool: key is None"):
        fractional_max_pool(None, np.ones((1, 8, 8, 1)))


# ----------------------------------------------------------------------------------------------
# Cutout


def test_cutout_removes_a_clipped_square():
    h, w, size = 10, 12, 4
    images = np.ones((300, h, w, 2), np.float32)
    out = np.asarray(cutout(KEY, images, size))
    clipped = 0
    for img in out:
        hole = img[..., 0] == 0
        assert np.array_equal(hole, img[..., 1] == 0)  # every channel
        rows, cols = np.flatnonzero(hole.any(1)), np.flatnonzero(hole.any(0))
        assert hole.sum() == len(rows) * len(cols)  # a rectangle
        assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)
        assert 1 <= len(rows) <= size and 1 <= len(cols) <= size
        if 0 < rows[0] and rows[-1] < h - 1:
            assert len(rows) == size  # away from the border it is the full square
        if 0 < cols[0] and cols[-1] < w - 1:
            assert len(cols) == size
        clipped += len(rows) * len(cols) < size * size
    assert 0 < clipped < len(out)  # centres are uniform over the image: some squares are clipped
    assert not np.array_equal(out[0], out[1])  # one centre per image
    np.testing.assert_array_equal(cutout(None, images, size, deterministic=True), images)


def test_cutout_jit_vmap_grad_and_single_image():
    images = normal(4, 8, 8, 1)
    eager = np.asarray(cutout(KEYS[0], images, 3))

    @jax.jit
    def run(images):
        per_image = jax.vmap(lambda k, im: cutout(k, im, 3))(KEYS, images)  # HWC under vmap
        grad = jax.grad(lambda im: jnp.sum(cutout(KEYS[1], im, 3)))(images)
        return cutout(KEYS[0], images, 3), per_image, grad, cutout(KEYS[1], jnp.ones_like(images), 3)

    jitted, per_image, grad, ones = run(images)
    np.testing.assert_array_equal(jitted, eager)
    assert all(np.sum(per_image[i] == 0) > 0 for i in range(4))  # one square per image
    np.testing.assert_array_equal(grad, ones)  # gradient 1 outside the square, 0 inside


def test_cutout_bad_input():
    with pytest.raises(ValueError, match=r"cutout: size=9 is larger than the images \(8×8 pixels\)"):
        cutout(KEY, np.ones((2, 8, 8, 1)), 9)
    with pytest.raises(ValueError, match=r"cutout: images must have rank 3 or 4 .*got shape \(8, 8\)"):
        cutout(KEY, np.ones((8, 8)), 2)
    with pytest.raises(ValueError, match="cutout: size must be an int >= 1.*got 0"):
        cutout(KEY, np.ones((2, 8, 8, 1)), 0)


# ----------------------------------------------------------------------------------------------
# mixup and CutMix


def _mix_matrix(key, n, alpha):
    """mixup is linear in the images: with the identity as the batch, it returns its matrix."""
    m, _ = mixup(key, jnp.eye(n), jnp.eye(n), alpha)
    return m


def test_mixup_labels_sum_to_one_and_share_lambda_with_images():
    n, classes = 16, 5
    labels = np.arange(n) % classes
    images = np.eye(classes, dtype=np.float32)[labels]  # images that *are* the labels: same λ, pairs
    soft = np.random.default_rng(0).dirichlet(np.ones(classes), n).astype(np.float32)

    @jax.jit
    def run(keys):
        hard = jax.vmap(lambda k: mixup(k, images, labels, 0.4, num_classes=classes))(keys)
        return hard, mixup(keys[0], images, soft, 1.0)[1]

    (mixed_x, mixed_y), mixed_soft = run(KEYS)
    # λ + (1 - λ) and sums of ≤ 5 mixed probabilities: ≤ (5 + 3)·U32 = 4.8e-7 < 1e-6
    close(np.sum(mixed_y, -1), np.ones((4, n)), rtol=1e-6)
    close(mixed_x, mixed_y, rtol=1e-6)
    close(np.sum(mixed_soft, -1), np.ones(n), rtol=1e-6)
    assert not np.allclose(mixed_y, np.eye(classes)[labels])  # something was mixed


def test_mixup_lambda_is_beta_distributed():
    """λ = G₁/(G₁+G₂): the gamma draws pass a KS test against scipy's Gamma(α); λ's quantiles
    match Beta(α, α)'s (a KS test on λ itself is spoilt by float32 rounding of λ near 1); the λ
    that mixup uses, read off its mixing matrix, has the Beta mean and variance."""
    stats = pytest.importorskip("scipy.stats")
    from gradchain.regularizers.mixing import _log_gamma_pair

    keys = MANY[:2000]
    alphas = np.array([0.2, 1.0, 3.0], np.float32)
    n, alpha = 8, 0.4

    @jax.jit
    def run(keys):
        log_g = jax.vmap(jax.vmap(_log_gamma_pair, (None, 0)), (0, None))(keys, alphas)
        return log_g, jax.vmap(lambda k: _mix_matrix(k, n, alpha))(keys)

    log_g, mats = run(keys)
    log_g = np.asarray(log_g, np.float64)
    q = np.array([0.1, 0.25, 0.5, 0.75, 0.9])
    # Fixed keys: the draws are fixed numbers.  Round-off can move a draw by ~1e-7, or flip a
    # rejection step and replace one of the 2000, which moves a quantile by about one gap between
    # order statistics (~1/(n·density) ≈ 1e-3); the checks use ≤ 0.48 of their tolerances
    # (the quantiles' is 2-5 standard errors), leaving room for ten such flips.
    for i, a in enumerate(alphas.tolist()):
        assert stats.kstest(np.exp(log_g[:, i]).ravel(), stats.gamma(a).cdf).pvalue > 1e-3
        lam = 1 / (1 + np.exp(log_g[:, i, 1] - log_g[:, i, 0]))
        np.testing.assert_allclose(np.quantile(lam, q), stats.beta(a, a).ppf(q), rtol=0.1, atol=0.02)
    # row i = λ e_i + (1 - λ) e_π(i); a row with π(i) != i has diagonal λ
    diag = np.diagonal(np.asarray(mats), axis1=1, axis2=2)
    moved = diag < 1 - 1e-6
    lam = (np.where(moved, diag, 0).sum(1) / np.maximum(moved.sum(1), 1))[moved.any(1)]
    var = 1 / (4 * (2 * alpha + 1))  # Beta(α, α): mean 1/2
    assert abs(lam.mean() - 0.5) < 5 * math.sqrt(var / lam.size)
    assert lam.var() == pytest.approx(var, rel=0.1)


def test_mixup_gradient_is_the_transposed_mix():
    n = 6
    x, c = normal(n, 4, seed=1), normal(n, 4, seed=2)
    labels = np.arange(n) % 3

    @jax.jit
    def run(x):
        m = _mix_matrix(KEYS[1], n, 0.7)
        mixed = mixup(KEYS[1], x, labels, 0.7, num_classes=3)[0]
        grad = jax.grad(lambda x: jnp.sum(c * mixup(KEYS[1], x, labels, 0.7, num_classes=3)[0]))(x)
        return m, mixed, grad

    m, mixed, grad = map(np.asarray, run(x))
    # 2-term mixes against 6-term products with the matrix: ≤ 8·U32·max|x| (≈ 1.4e-6 for |x| ≤ 3)
    close(mixed, m @ x, rtol=1e-5, atol=1e-6)
    close(grad, m.T @ c, rtol=1e-5, atol=1e-6)


def test_mixup_jit_vmap_over_alpha_and_test_path():
    x = normal(8, 3)
    y = np.arange(8) % 4
    eager = mixup(KEYS[0], x, y, 0.3, num_classes=4)
    # jit against eager: λ = sigmoid(log G₁ - log G₂) from a float32 Gamma sampler (float32 by
    # design, whatever x's dtype), whose log(u)/α term reaches |log tiny|/0.3 = 290: fused or not,
    # each log G may round differently by ≤ 2·U32·290 + 10·U32·5 (the log d + log v part), so
    # Δλ ≤ ¼·2·that = 1.9e-5 and the mix moves by ≤ Δλ·max|x_i - x_j| (it used 0.6 of the old
    # rtol 1e-5 with FMA).  A different λ or pairing would move it by ~0.1.
    d_lam = 0.25 * 2 * (2 * U32 * 290 + 10 * U32 * 5)
    jitted = jax.jit(lambda k: mixup(k, x, y, 0.3, num_classes=4))(KEYS[0])
    close(jitted[0], eager[0], rtol=0, atol=d_lam * 2 * float(np.max(np.abs(x))) + 4 * U32 * float(np.max(np.abs(x))))
    close(jitted[1], eager[1], rtol=0, atol=d_lam + 4 * U32)
    xs, ys = jax.jit(jax.vmap(lambda a: mixup(KEYS[0], x, y, a, num_classes=4)))(np.array([0.1, 1.0, 10.0]))
    assert xs.shape == (3, 8, 3) and ys.shape == (3, 8, 4)
    same_x, one_hot = mixup(None, x, y, 0.3, num_classes=4, deterministic=True)
    np.testing.assert_array_equal(same_x, x)
    np.testing.assert_array_equal(one_hot, np.eye(4)[y])


def test_cutmix_mixes_labels_by_pasted_area():
    n, h, w = 6, 9, 7
    labels = np.arange(n)
    images = np.broadcast_to(np.eye(n, dtype=np.float32)[:, None, None, :], (n, h, w, n))  # image i: e_i

    @jax.jit
    def run(keys):
        mixed = jax.vmap(lambda k: cutmix(k, images, labels, 1.0, num_classes=n))(keys)
        grad = jax.grad(lambda x: jnp.sum(cutmix(keys[0], x, labels, 1.0, num_classes=n)[0]))(images)
        return mixed, grad

    (mixed_x, mixed_y), grad = jax.tree.map(np.asarray, run(MANY[:12]))
    close(mixed_y.sum(-1), np.ones((12, n)), rtol=1e-6)  # λ + (1 - λ): ≤ 3·U32
    # the fraction of the pixels of image i that came from each source == the mixed label
    # (a float64 mean of 0/1 pixels against λ = area/63 in float32: ≤ 2·U32)
    close(mixed_x.mean((2, 3)), mixed_y, rtol=1e-5, atol=1e-6)
    pasted = np.any(mixed_x != images, -1)  # (12, n, h, w)
    areas = set()
    for box in pasted.any(1):  # the union over the batch: one box shared by all images
        rows, cols = np.flatnonzero(box.any(1)), np.flatnonzero(box.any(0))
        assert box.sum() == len(rows) * len(cols)
        areas.add(int(box.sum()))
    assert len(areas) > 2
    assert grad.sum() == pytest.approx(images.size)  # every output pixel comes from one input
    _, one_hot = cutmix(None, images, labels, 1.0, num_classes=n, deterministic=True)
    np.testing.assert_array_equal(one_hot, np.eye(n))


@pytest.mark.parametrize("fn", [mixup, cutmix])
def test_mixing_bad_input(fn):
    images, labels = np.ones((4, 5, 5, 1), np.float32), np.arange(4)
    with pytest.raises(ValueError, match=rf"{fn.__name__}: alpha must be in \(0, inf\], got 0.0"):
        fn(KEY, images, labels, 0.0, num_classes=4)
    with pytest.raises(ValueError, match=r"alpha must be .*got -1"):
        fn(KEY, images, labels, -1, num_classes=4)
    with pytest.raises(ValueError, match=r"same batch size .*\(4, 5, 5, 1\).*\(3,\)"):
        fn(KEY, images, labels[:3], 1.0, num_classes=4)
    with pytest.raises(ValueError, match="int labels .* need num_classes"):
        fn(KEY, images, labels, 1.0)
    with pytest.raises(TypeError, match="images must be a floating-point array"):
        fn(KEY, images.astype(np.uint8), labels, 1.0, num_classes=4)
    if fn is cutmix:
        with pytest.raises(ValueError, match=r"cutmix: images must have rank 3 or 4"):
            fn(KEY, np.ones((4, 25)), labels, 1.0, num_classes=4)


# ----------------------------------------------------------------------------------------------
# marginalize


def test_marginalize_mean_over_keys_any_batch_size():
    x = np.arange(1.0, 7.0, dtype=np.float32)
    fn = lambda k, x: {"y": dropout(k, x, 0.5), "n": jnp.ones(())}

    @jax.jit
    def run(x):
        want = jax.vmap(lambda k: fn(k, x)["y"])(jax.random.split(KEY, 10)).mean(0)
        # batch_size=3: three chunks in a lax.scan plus a remainder of one
        return want, marginalize(fn, KEY, x, 10), marginalize(fn, KEY, x, 10, batch_size=3)

    want, all_at_once, chunked = run(x)
    for got in (all_at_once, chunked):
        close(got["y"], want, rtol=1e-6)  # means of 10 values, chunked or not: ≤ 12·U32 = 7e-7
        assert float(got["n"]) == 1.0
    # eager: Monte-Carlo dropout converges to the deterministic (inverted) output; fixed key, 4000
    # draws: relative standard error 1/√4000 = 0.016, rtol 0.1 = 6 of them (measured 0.34 of it)
    close(marginalize(lambda k, x: dropout(k, x, 0.5), KEYS[0], x, 4000), x, rtol=0.1)


def test_marginalize_bad_input():
    with pytest.raises(ValueError, match="marginalize: num_samples must be an int >= 1, got 0"):
        marginalize(lambda k, x: x, KEY, np.ones(2), 0)
    with pytest.raises(TypeError, match="marginalize: fn must be a callable"):
        marginalize(None, KEY, np.ones(2), 3)
