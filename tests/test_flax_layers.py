"""Flax layers (gradchain.flax.nnx / .linen): Flax's rng and train/eval conventions, the numbers of
the pure regularizers, parity with flax's own Dropout and BatchNorm."""

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# gradchain.flax wraps Flax (the flax extra): without it this module is skipped, saying so
nn = pytest.importorskip("flax.linen", reason="gradchain.flax needs Flax: pip install 'gradchain[flax]'")
nnx = pytest.importorskip("flax.nnx", reason="gradchain.flax needs Flax: pip install 'gradchain[flax]'")

import gradchain.flax  # noqa: E402
from gradchain.flax import linen as glinen, nnx as gnnx  # noqa: E402
from gradchain.regularizers import cutout, dropout, fractional_max_pool, stochastic_depth  # noqa: E402


def normal(*shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


# The BatchNorm parity tests run in float64 (jax.enable_x64).  In float32 the two layers happen to
# reduce in the same order (bit-identical here, with and without FMA), but nothing fixes that
# order: two batch statistics of n values summed differently may differ by up to 2n·U32·mean|x|,
# ~2e-4 once normalised for n = 200, and the gradient of Σ y³ sums 3y²·x̂ terms that cancel.  In
# float64 that bound is 2n·U64·(the same terms) ≈ 1e-13: the tolerances are 1e-12, and 1e-11 for
# the gradients (a factor 3·max y² ≈ 30 more).
F64_TOL = 1e-11


def nnx_float64(layer):
    """``layer`` with its parameters and batch statistics in float64 (both BatchNorms create them
    in float32 whatever the input's dtype)."""
    for name in ("mean", "var", "scale", "bias"):
        variable = getattr(layer, name)
        setattr(layer, name, type(variable)(jnp.asarray(variable[...], jnp.float64)))
    return layer


def test_subpackage_named_flax_imports_the_real_flax():
    assert gnnx.nnx is sys.modules["flax.nnx"]
    assert glinen.nn is sys.modules["flax.linen"]
    assert gradchain.flax.__name__ == "gradchain.flax" and sys.modules["flax"].__file__ != gradchain.flax.__file__


# ----------------------------------------------------------------------------------------------
# NNX


def test_nnx_dropout_same_masks_as_nnx_dropout_and_modes():
    x = normal(4, 6)
    ours, theirs = gnnx.Dropout(0.3, rngs=nnx.Rngs(3)), nnx.Dropout(0.3, rngs=nnx.Rngs(3))
    for _ in range(2):  # the streams advance alike
        np.testing.assert_array_equal(ours(x), theirs(x))
    key = jax.random.PRNGKey(7)  # a key at call time, as nnx.Dropout accepts
    np.testing.assert_array_equal(ours(x, rngs=key), dropout(key, x, 0.3))
    ours.eval()
    assert ours.deterministic is True
    np.testing.assert_array_equal(ours(x), x)
    assert not np.array_equal(ours(x, deterministic=False), x)  # call-time override
    ours.train()
    assert ours.deterministic is False
    viewed = nnx.view(ours, deterministic=True)
    np.testing.assert_array_equal(viewed(x), x)
    vanilla = gnnx.Dropout(0.3, inverted=False, deterministic=True)
    np.testing.assert_allclose(vanilla(x), 0.7 * x, rtol=1e-6)  # 1 - 0.3 and one product: <= 2 ulp = 1.2e-7
    with pytest.raises(ValueError, match="Dropout: deterministic=False needs random keys"):
        gnnx.Dropout(0.3)(x)


def test_nnx_batchnorm_matches_nnx_batchnorm_in_a_jitted_train_step():
    ours = gnnx.BatchNorm(3)
    theirs = nnx.BatchNorm(3, use_fast_variance=False, rngs=nnx.Rngs(0))

    @nnx.jit
    def step(model, x):
        grads = nnx.grad(lambda m: jnp.sum(m(x) ** 3))(model)
        return grads

    assert isinstance(ours.mean, nnx.BatchStat) and isinstance(ours.scale, nnx.Param)
    with jax.enable_x64(True):  # see F64_TOL
        ours, theirs = nnx_float64(ours), nnx_float64(theirs)
        for i in range(3):
            x = (2.0 * normal(8, 5, 5, 3, seed=i) + i).astype(jnp.float64)
            g_ours, g_theirs = step(ours, x), step(theirs, x)
            assert g_ours["scale"][...].dtype == jnp.float64
            np.testing.assert_allclose(g_ours["scale"][...], g_theirs["scale"][...], rtol=F64_TOL, atol=F64_TOL)
            np.testing.assert_allclose(g_ours["bias"][...], g_theirs["bias"][...], rtol=F64_TOL, atol=F64_TOL)
        np.testing.assert_allclose(ours.mean[...], theirs.mean[...], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ours.var[...], theirs.var[...], rtol=1e-12, atol=1e-12)
        assert isinstance(ours.mean, nnx.BatchStat) and isinstance(ours.scale, nnx.Param)
        ours.eval(), theirs.eval()
        x = normal(4, 5, 5, 3, seed=9).astype(jnp.float64)
        before = np.asarray(ours.mean[...])
        np.testing.assert_allclose(ours(x), theirs(x), rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(ours.mean[...], before)  # eval leaves the statistics alone


def test_nnx_dropconnect_linear():
    layer = gnnx.DropConnectLinear(6, 4, rate=0.5, rngs=nnx.Rngs(0))
    x = normal(3, 6)
    w, b = layer.kernel[...], layer.bias[...]
    train = layer(x)
    assert train.shape == (3, 4) and not np.allclose(train, x @ w + b)
    assert not np.array_equal(layer(x), train)  # a new mask each call
    layer.eval()
    # all connections at test: the same x @ W + b as the reference, bit-identical (measured 0, 6 seeds, both ISAs)
    np.testing.assert_allclose(layer(x), x @ w + b, rtol=1e-6)
    keys = jax.random.split(jax.random.PRNGKey(5), 4000)
    means = jax.jit(jax.vmap(lambda k: layer(x, deterministic=False, rngs=k)))(keys).mean(0)
    # inverted: E[train] = test.  Monte Carlo over 4000 masks: the largest standard error is
    # sqrt(sum_k x_k^2 W_kj^2 / 4000) = 0.022, so 0.15 is 6.8 of them; the draws (threefry) are integer
    # arithmetic, the same on every CPU
    np.testing.assert_allclose(means, x @ w + b, atol=0.15)


def test_nnx_stochastic_depth_pool_and_cutout_layers():
    rngs = nnx.Rngs(1)
    x = normal(6, 16, 16, 2)
    sd = gnnx.StochasticDepth(0.5, rngs=rngs)
    out = np.asarray(sd(x))
    per_example = out.reshape(6, -1)
    assert all(np.all(r == 0) or np.allclose(r, 2 * np.asarray(x[i]).ravel()) for i, r in enumerate(per_example))
    pool = gnnx.FractionalMaxPool(rngs=rngs)
    assert pool(x).shape == (6, 11, 11, 2)
    cut = gnnx.Cutout(4, rngs=rngs)
    assert int(jnp.sum(cut(x) == 0)) > 0

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.sd, self.pool, self.cut = sd, pool, cut

        def __call__(self, x):
            return self.pool(self.cut(x + self.sd(x)))

    net = Net(rngs)
    net.eval()  # every layer to its test path at once
    np.testing.assert_array_equal(sd(x), x)
    np.testing.assert_array_equal(cut(x), x)
    np.testing.assert_array_equal(pool(x), fractional_max_pool(None, x, deterministic=True))
    jitted = nnx.jit(lambda m, x: m(x))(net, x)
    np.testing.assert_array_equal(jitted, fractional_max_pool(None, 2 * x, deterministic=True))
    net.train()
    assert sd.deterministic is False and cut.deterministic is False and pool.deterministic is False


# ----------------------------------------------------------------------------------------------
# Linen


def test_linen_dropout_same_masks_as_linen_dropout():
    x = normal(4, 6)
    rngs = {"dropout": jax.random.PRNGKey(3)}
    ours = glinen.Dropout(0.3).apply({}, x, deterministic=False, rngs=rngs)
    theirs = nn.Dropout(0.3).apply({}, x, deterministic=False, rngs=rngs)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(glinen.Dropout(0.3, deterministic=True).apply({}, x), x)
    with pytest.raises(Exception, match="deterministic"):
        glinen.Dropout(0.3).apply({}, x)  # given nowhere: Linen's merge_param error


def test_linen_batchnorm_matches_linen_batchnorm():
    x0 = normal(8, 4)
    ours, theirs = glinen.BatchNorm(momentum=0.9), nn.BatchNorm(momentum=0.9, use_fast_variance=False)
    variables = ours.init(jax.random.PRNGKey(0), x0, use_running_average=False)
    reference = theirs.init(jax.random.PRNGKey(0), x0, use_running_average=False)
    assert jax.tree.structure(variables) == jax.tree.structure(reference)
    np.testing.assert_array_equal(variables["batch_stats"]["mean"], 0.0)  # init does not update
    with jax.enable_x64(True):  # see F64_TOL
        to64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)
        variables, reference, x0 = to64(variables), to64(reference), to64(x0)
        for i in range(3):
            x = to64(3.0 * normal(8, 4, seed=i) + 1.0)
            y, updates = ours.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
            y_ref, ref_updates = theirs.apply(reference, x, use_running_average=False, mutable=["batch_stats"])
            assert y.dtype == jnp.float64
            np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
            variables = {**variables, **updates}
            reference = {**reference, **ref_updates}
        for a, b in zip(jax.tree.leaves(variables), jax.tree.leaves(reference)):
            assert a.dtype == b.dtype == jnp.float64
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(
            ours.apply(variables, x0, use_running_average=True),
            theirs.apply(reference, x0, use_running_average=True),
            rtol=1e-12,
            atol=1e-12,
        )


def test_linen_dropconnect_depth_pool_cutout():
    x = normal(3, 8, 8, 2)
    key = jax.random.PRNGKey(4)
    dense = glinen.DropConnectDense(5, rate=0.5)
    flat = x.reshape(3, -1)
    params = dense.init(key, flat, deterministic=True)
    w, b = params["params"]["kernel"], params["params"]["bias"]
    # the same x @ W + b as the reference (K = 128): bit-identical, measured 0 over 6 seeds on both ISAs
    np.testing.assert_allclose(dense.apply(params, flat, deterministic=True), flat @ w + b, rtol=1e-5, atol=1e-5)
    train = dense.apply(params, flat, deterministic=False, rngs={"dropout": key})
    assert not np.allclose(train, flat @ w + b)

    @jax.jit
    def run(key):
        sd = glinen.StochasticDepth(0.5).apply({}, x, deterministic=False, rngs={"dropout": key})
        pool = glinen.FractionalMaxPool().apply({}, x, deterministic=False, rngs={"dropout": key})
        cut = glinen.Cutout(3).apply({}, x, deterministic=False, rngs={"dropout": key})
        return sd, pool, cut

    sd, pool, cut = run(key)
    assert pool.shape == (3, 5, 5, 2)
    assert int(jnp.sum(cut == 0)) > 0
    assert set(np.unique(np.asarray(sd) / np.asarray(x)).round(5).tolist()) <= {0.0, 2.0}
    np.testing.assert_array_equal(glinen.Cutout(3).apply({}, x, deterministic=True), x)
    np.testing.assert_array_equal(glinen.StochasticDepth(0.5).apply({}, x, deterministic=True), x)
    np.testing.assert_array_equal(
        glinen.FractionalMaxPool().apply({}, x, deterministic=True), fractional_max_pool(None, x, deterministic=True)
    )
    # the layers draw from the "dropout" stream exactly as the pure functions do with that key
    k = jax.random.PRNGKey(11)
    sd_layer = glinen.StochasticDepth(0.5, deterministic=False)

    class Probe(nn.Module):
        @nn.compact
        def __call__(self, x):
            return self.make_rng("dropout")

    drawn = Probe().apply({}, x, rngs={"dropout": k})
    np.testing.assert_array_equal(sd_layer.apply({}, x, rngs={"dropout": k}), stochastic_depth(drawn, x, 0.5))
    cut = glinen.Cutout(3, deterministic=False).apply({}, x, rngs={"dropout": k})
    np.testing.assert_array_equal(cut, cutout(drawn, x, 3))
