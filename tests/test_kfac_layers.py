"""K-FAC with Flax NNX, Flax Linen and Equinox models, the scale-and-shift block, bad input and
the non-finite policy.

Each framework's model computes the same MLP as a plain tagged loss; its factors must equal the
plain ones (same parameters), whatever the framework does with its parameter trees.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import gradchain as gc

X = jax.random.normal(jax.random.PRNGKey(0), (32, 6))
Y = jnp.arange(32) % 4


def plain_loss(params, x, y):
    h = jnp.tanh(gc.kfac_dense(x, params["w1"], params["b1"]))
    return gc.kfac_softmax_cross_entropy(gc.kfac_dense(h, params["w2"], params["b2"]), y)


def exact_factors(loss, params, x=X, y=Y):
    curv = gc.kfac_curvature(loss, params, x, y, estimator="exact")
    return curv, jax.jit(curv.value_grad_and_statistics)(params, x, y)[2].factors


def assert_same_factors(a, b):
    # The frameworks hand the tags the same arrays, so the same float32 operations run: measured
    # identical (difference 0.0) for NNX, Linen and Equinox, on the default (AVX-512) and SSE4.2
    # code paths (Linen also AVX).  The tolerance only allows XLA to fuse the two programs differently: ≤ log2(32)
    # roundings per entry of a 32-row sum ≈ 5·U32 = 3e-7 relative; rtol 1e-5.
    assert len(a) == len(b)
    for fa, fb in zip(a, b):
        for k in fa:
            np.testing.assert_allclose(fa[k], fb[k], rtol=1e-5, atol=1e-7)


def test_nnx_model():
    nnx = pytest.importorskip("flax.nnx")
    from gradchain.flax import nnx as gnnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.fc1 = gnnx.KFACLinear(6, 5, rngs=rngs, name="fc1")
            self.fc2 = gnnx.KFACLinear(5, 4, rngs=rngs, name="fc2")

        def __call__(self, x):
            return self.fc2(jnp.tanh(self.fc1(x)))

    graphdef, params = nnx.split(MLP(nnx.Rngs(0)))
    loss = lambda p, x, y: gc.kfac_softmax_cross_entropy(nnx.merge(graphdef, p)(x), y)
    curv, factors = exact_factors(loss, params)
    assert [b.name for b in curv.blocks] == ["fc1", "fc2"] and not curv.untagged_paths
    m = nnx.merge(graphdef, params)
    plain = {"w1": m.fc1.kernel[...], "b1": m.fc1.bias[...], "w2": m.fc2.kernel[...], "b2": m.fc2.bias[...]}
    assert_same_factors(factors, exact_factors(plain_loss, plain)[1])


def test_linen_model():
    nn = pytest.importorskip("flax.linen")
    from gradchain.flax import linen as glinen

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return glinen.KFACDense(4, name="fc2")(jnp.tanh(glinen.KFACDense(5, name="fc1")(x)))

    params = MLP().init(jax.random.PRNGKey(1), X)["params"]
    loss = lambda p, x, y: gc.kfac_softmax_cross_entropy(MLP().apply({"params": p}, x), y)
    curv, factors = exact_factors(loss, params)
    assert [b.name for b in curv.blocks] == ["fc1", "fc2"]
    plain = {"w1": params["fc1"]["kernel"], "b1": params["fc1"]["bias"],
             "w2": params["fc2"]["kernel"], "b2": params["fc2"]["bias"]}
    assert_same_factors(factors, exact_factors(plain_loss, plain)[1])


def test_equinox_model_with_transposed_weights():
    eqx = pytest.importorskip("equinox")

    class Linear(eqx.Module):
        weight: jax.Array  # (out, in): Equinox's layout, y = x @ W.T + b
        bias: jax.Array

        def __call__(self, x):
            return gc.kfac_dense(x, self.weight, self.bias, transposed=True)

    class MLP(eqx.Module):
        layers: list

        def __call__(self, x):
            return self.layers[1](jnp.tanh(self.layers[0](x)))

    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    model = MLP([Linear(jax.random.normal(k1, (5, 6)), jnp.zeros(5)), Linear(jax.random.normal(k2, (4, 5)), jnp.ones(4))])
    params, static = eqx.partition(model, eqx.is_array)
    loss = lambda p, x, y: gc.kfac_softmax_cross_entropy(eqx.combine(p, static)(x), y)
    curv, factors = exact_factors(loss, params)
    plain = {"w1": model.layers[0].weight.T, "b1": model.layers[0].bias,
             "w2": model.layers[1].weight.T, "b2": model.layers[1].bias}
    assert_same_factors(factors, exact_factors(plain_loss, plain)[1])
    # the direction keeps Equinox's layout
    def direction_of(curv, params):
        tx = gc.kfac_precondition(curv, damping=1e-2, inverse="eigh")
        _, grads, stats = curv.value_grad_and_statistics(params, X, Y)
        return tx.update(grads, tx.init(params), params, kfac_statistics=stats)[0]

    direction = jax.jit(lambda p: direction_of(curv, p))(params)
    assert direction.layers[0].weight.shape == (5, 6)
    curv_plain = gc.kfac_curvature(plain_loss, plain, X, Y, estimator="exact")
    d2 = jax.jit(lambda p: direction_of(curv_plain, p))(plain)
    # the same factors (above) through the same float32 eigh: measured identical (default and SSE4.2); rtol 1e-4 leaves
    # room for a differently fused program through blocks of exact condition ≤ 89 (89·U32·n ≈ 1e-5)
    np.testing.assert_allclose(direction.layers[0].weight.T, d2["w1"], rtol=1e-4, atol=1e-6)


def test_scale_and_shift_gets_the_exact_fisher_diagonal():
    with jax.enable_x64(True):
        x = jax.random.normal(jax.random.PRNGKey(3), (16, 3, 4), jnp.float64)
        y = jnp.arange(16) % 3
        params = {"s": 1.0 + 0.1 * jnp.arange(4.0), "t": 0.05 * jnp.arange(4.0), "w": jax.random.normal(jax.random.PRNGKey(4), (12, 3), jnp.float64)}

        def loss(p, x, y):
            h = jnp.tanh(gc.kfac_scale_and_shift(x, p["s"], p["t"]))
            return gc.kfac_softmax_cross_entropy(h.reshape(16, 12) @ p["w"], y)

        curv = gc.kfac_curvature(loss, params, x, y, estimator="exact")
        assert curv.blocks[0].kind == "diagonal" and curv.untagged_paths == ("['w']",)
        _, _, stats = curv.value_grad_and_statistics(params, x, y)

        def per_example(p, xn, yn):  # exact Fisher of one example: J_zᵀ H J_z
            z = jnp.tanh(xn * p["s"] + p["t"]).reshape(12) @ params["w"]
            return z

        def fisher_diagonal(xn):
            jac = jax.jacrev(per_example)({"s": params["s"], "t": params["t"]}, xn, None)
            p = jax.nn.softmax(per_example(params, xn, None))
            H = jnp.diag(p) - jnp.outer(p, p)
            return {k: jnp.diag(jac[k].T @ H @ jac[k]) for k in jac}

        fisher = jax.tree.map(lambda a: a.mean(0), jax.jit(jax.vmap(fisher_diagonal))(x))
        # float64, sums of 16 examples × 12 outputs of non-negative terms: ≤ ~200·U64 ≈ 2e-14
        # relative (no cancellation); rtol 1e-10
        np.testing.assert_allclose(stats.factors[0]["scale"], fisher["s"], rtol=1e-10)
        np.testing.assert_allclose(stats.factors[0]["shift"], fisher["t"], rtol=1e-10)


# ---------------------------------------------------------------------------------------------
# Bad input


def params_():
    return {"w1": jnp.ones((6, 5)), "b1": jnp.zeros(5), "w2": jnp.ones((5, 4)), "b2": jnp.zeros(4)}


def test_tag_shape_mismatch_names_the_layer_and_shapes():
    with pytest.raises(ValueError, match=r"layer 'enc'.*shape \(32, 6\).*\(5, 4\)"):
        gc.kfac_dense(X, jnp.ones((5, 4)), name="enc")
    with pytest.raises(ValueError, match=r"bias of shape \(3,\)"):
        gc.kfac_dense(X, jnp.ones((6, 4)), jnp.ones(3))
    with pytest.raises(ValueError, match=r"kfac_conv2d input of shape \(32, 6\)"):
        gc.kfac_conv2d(X, jnp.ones((3, 3, 1, 2)))


def test_unknown_loss_kind():
    with pytest.raises(ValueError, match=r"unknown loss kind 'hinge'.*softmax_cross_entropy"):
        gc.kfac_loss("hinge", X, Y)


@pytest.mark.parametrize("damping", [0.0, -1.0, float("nan")])
def test_damping_must_be_positive(damping):
    curv = gc.kfac_curvature(plain_loss, params_(), X, Y)
    with pytest.raises(ValueError, match="damping"):
        gc.kfac_precondition(curv, damping=damping)
    with pytest.raises(ValueError, match="initial_damping"):
        gc.kfac_optimizer(curv, initial_damping=damping)


@pytest.mark.parametrize("period", [0, -3, 2.5])
def test_refresh_period_must_be_a_positive_int(period):
    curv = gc.kfac_curvature(plain_loss, params_(), X, Y)
    with pytest.raises(ValueError, match=f"refresh_every must be an int >= 1, got {period}"):
        gc.kfac_precondition(curv, refresh_every=period)


def test_parameter_tagged_twice_names_it_and_both_layers():
    def loss(p, x, y):
        h = jnp.tanh(gc.kfac_dense(x, p["w1"], p["b1"], name="first"))
        h = gc.kfac_dense(h @ jnp.ones((5, 6)), p["w1"], name="again")
        return gc.kfac_softmax_cross_entropy(h[:, :4], y)

    with pytest.raises(ValueError, match=r"parameter \['w1'\] is tagged twice: by layer 'first' and by layer 'again'"):
        gc.kfac_curvature(loss, params_(), X, Y)


def test_a_copy_of_a_parameter_is_refused():
    def loss(p, x, y):
        return gc.kfac_softmax_cross_entropy(gc.kfac_dense(x, p["w"].reshape(6, 4), name="fc"), y)

    with pytest.raises(ValueError, match=r"layer 'fc': its w .* not one of the parameter arrays"):
        gc.kfac_curvature(loss, {"w": jnp.ones(24)}, X, Y)


def test_other_bad_arguments():
    with pytest.raises(ValueError, match="estimator must be one of"):
        gc.kfac_curvature(plain_loss, params_(), X, Y, estimator="fisher")
    with pytest.raises(ValueError, match="registered no loss"):
        gc.kfac_curvature(lambda p, x, y: jnp.sum(gc.kfac_dense(x, p["w1"])), params_(), X, Y)
    curv = gc.kfac_curvature(plain_loss, params_(), X, Y)
    with pytest.raises(ValueError, match="pass key="):
        curv.value_grad_and_statistics(params_(), X, Y)
    with pytest.raises(ValueError, match="inverse must be one of"):
        gc.kfac_precondition(curv, inverse="cholesky")
    with pytest.raises(ValueError, match="untagged='error'"):
        gc.kfac_curvature(plain_loss, params_() | {"extra": jnp.ones(2)}, X, Y, untagged="error")


def test_non_finite_statistics_propagate_never_replaced():
    """The library's policy: plain arithmetic, a NaN batch gives NaN factors and NaN updates."""
    curv = gc.kfac_curvature(plain_loss, params_(), X, Y)
    tx = gc.kfac_precondition(curv, damping=1e-2)
    bad_x = X.at[0, 0].set(jnp.nan)

    @jax.jit
    def step(params, x):
        _, grads, stats = curv.value_grad_and_statistics(params, x, Y, key=jax.random.PRNGKey(0))
        return tx.update(grads, tx.init(params), params, kfac_statistics=stats)

    updates, state = step(params_(), bad_x)
    assert not np.isfinite(np.asarray(state.factors[0]["A"])).all()
    assert np.isnan(np.asarray(updates["w1"])).any()
