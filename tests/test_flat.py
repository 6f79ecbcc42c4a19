"""gc.flat: parameters kept in flat buffers give the model, the gradients and the optimizer steps
of the per-leaf tree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import U64, float64

import gradchain as gc


def mlp_params(key, layers=6, width=5):
    keys = jax.random.split(key, layers)
    return {
        f"layer{i}": {"w": jax.random.normal(k, (width, width)) / width**0.5, "b": jnp.full((width,), 0.1 * i)}
        for i, k in enumerate(keys)
    }


def mlp(params, x):
    for i in range(len(params)):
        layer = params[f"layer{i}"]
        x = jnp.tanh(x @ layer["w"] + layer["b"]) + x
    return jnp.mean(x**2)


PARAMS = mlp_params(jax.random.PRNGKey(0))
X = jax.random.normal(jax.random.PRNGKey(1), (8, 5))


def test_ravel_then_unravel_is_the_identity_and_keeps_every_dtype():
    params = {"w": jnp.arange(6.0).reshape(2, 3), "h": jnp.ones(4, jnp.bfloat16), "s": jnp.float32(7.0)}
    flat, layout = gc.flat.ravel(params)
    assert {k: v.dtype for k, v in flat.items()} == {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
    assert flat["float32"].shape == (7,) and flat["bfloat16"].shape == (4,)
    back = layout.unravel(flat)
    assert jax.tree.structure(back) == jax.tree.structure(params)
    for name in params:
        assert back[name].dtype == params[name].dtype
        np.testing.assert_array_equal(np.asarray(back[name], np.float32), np.asarray(params[name], np.float32))


@pytest.mark.parametrize("layout_as_argument", [True, False])
def test_gradient_arrives_flat_and_equals_the_per_leaf_gradient_bit_for_bit(layout_as_argument):
    flat, layout = gc.flat.ravel(PARAMS)
    if layout_as_argument:
        grad = jax.jit(jax.grad(lambda f, l: mlp(l.unravel(f), X)))(flat, layout)
    else:
        grad = jax.jit(jax.grad(lambda f: mlp(layout.unravel(f), X)))(flat)
    expected = layout.ravel(jax.jit(jax.grad(mlp))(PARAMS, X))
    np.testing.assert_array_equal(np.asarray(grad["float32"]), np.asarray(expected["float32"]))


def test_backward_is_one_concatenation_not_a_sum_of_padded_buffers():
    flat, layout = gc.flat.ravel(PARAMS)
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda f: mlp(layout.unravel(f), X)))(flat))
    assert jaxpr.count("concatenate") == 1 and " pad" not in jaxpr, jaxpr


def train(opt, params, steps, unravel=None, x=X):
    """``steps`` jitted, donated steps of ``opt`` on the MLP; with ``unravel``, ``params`` are flat."""
    loss = mlp if unravel is None else (lambda f, x: mlp(unravel(f), x))

    @jax.jit
    def step(p, s):
        updates, s = opt.update(jax.grad(loss)(p, x), s, p)
        return gc.apply_updates(p, updates), s

    state = opt.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return params


OPTIMIZERS = {
    "adam": lambda mask: gc.adam(1e-2),
    "sgd+nesterov": lambda mask: gc.sgd(0.1, momentum=0.9, nesterov=True),
    "adamw+cosine+clip, decay masked": lambda mask: gc.chain(
        gc.clip_by_global_norm(0.5), gc.adamw(gc.cosine_schedule(1e-2, 30), weight_decay=0.1, mask=mask)
    ),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_twenty_steps_on_flat_parameters_match_the_per_leaf_tree(name):
    """Element-wise math on the same numbers; the global norm sums in another order.

    Run in float64, where parity is the point: in float32, Adam's g/(√v + eps) turns the last-bit
    change of the norm that another CPU's summation order makes into 1.8e-6 relative after 20
    steps (an Xeon failed rtol 1e-6).  Bound: 20 steps × (180 terms of the norm + ~10 roundings a
    step) × U64 × |params| ≤ 3 = 1.3e-12; measured ≤ 4.4e-16 over 5 seeds, with and without FMA
    (XLA_FLAGS=--xla_cpu_max_isa=AVX)."""
    with jax.enable_x64(True):
        params, x = float64(PARAMS), float64(X)
        flat, layout = gc.flat.ravel(params, labels=gc.decay_mask(params))
        assert {b.dtype for b in flat.values()} == {jnp.dtype(jnp.float64)}
        per_leaf = train(OPTIMIZERS[name](gc.decay_mask), params, 20, x=x)
        packed = train(OPTIMIZERS[name](layout.mask(gc.decay_mask(params))), flat, 20, layout.unravel, x=x)
        unpacked = layout.unravel(packed)
    tol = 20 * (180 + 10) * U64 * 3
    for got, want in zip(jax.tree.leaves(unpacked), jax.tree.leaves(per_leaf)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=tol, atol=tol)


def test_labels_split_the_buffers_and_the_mask_follows_them():
    flat, layout = gc.flat.ravel(PARAMS, labels=gc.decay_mask(PARAMS))
    assert sorted(flat) == ["False.float32", "True.float32"]
    assert flat["True.float32"].size == 6 * 25 and flat["False.float32"].size == 6 * 5
    assert layout.mask(gc.decay_mask(PARAMS)) == {"True.float32": True, "False.float32": False}
    named, _ = gc.flat.ravel(PARAMS, labels=jax.tree.map(lambda d: "decay" if d else "no_decay", gc.decay_mask(PARAMS)))
    assert sorted(named) == ["decay.float32", "no_decay.float32"]


def test_a_population_of_flat_models_trains_under_vmap():
    """Four learning rates, one row of the flat buffer each; the layout is shared (in_axes None).

    vmap against a loop: the batched matmuls may sum in another order, so parity is checked in
    float64.  Bound for one Adam step: the gradient's sums (≤ 40 terms) differ by ≤ 40·U64
    relative to |terms|, and lr·g/(|g| + eps) with |g| ≥ 1e-4 here passes that on ×eps/|g| ≤ 1e-4,
    so |Δparams| ≤ 1 ulp of |params| ≤ 3 plus 4e-19: tolerance 100 ulp = 100·2·U64·3 = 6.7e-14;
    measured ≤ 2.2e-16 (5 seeds, with and without FMA)."""
    with jax.enable_x64(True):
        flat, layout = gc.flat.ravel(float64(PARAMS))
        x = float64(X)
        rates = jnp.array([1e-3, 1e-2, 3e-2, 1e-1], jnp.float64)

        def fit(lr, f, l):
            opt = gc.adam(lr)
            updates, _ = opt.update(jax.grad(lambda f: mlp(l.unravel(f), x))(f), opt.init(f), f)
            return gc.apply_updates(f, updates)

        rows = jax.tree.map(lambda b: jnp.broadcast_to(b, (4,) + b.shape), flat)
        population = jax.jit(jax.vmap(fit, in_axes=(0, 0, None)))(rates, rows, layout)
        singles = [fit(lr, flat, layout) for lr in rates]
    tol = 100 * 2 * U64 * 3
    for i, one in enumerate(singles):
        np.testing.assert_allclose(np.asarray(population["float64"][i]), np.asarray(one["float64"]), rtol=tol, atol=tol)


def test_layout_is_a_pytree_of_offsets_so_jit_traces_them():
    flat, layout = gc.flat.ravel(PARAMS)
    offsets, _ = jax.tree.flatten(layout)
    assert len(offsets) == 12 and [int(o) for o in offsets[:3]] == [0, 5, 30]  # b0, w0, b1 (sorted keys)
    assert jax.tree.unflatten(jax.tree.structure(layout), offsets).sizes == layout.sizes
    hlo = jax.jit(lambda f, l: l.unravel(f)).lower(flat, layout).as_text()
    assert hlo.count("dynamic_slice") == 12


def test_donated_flat_step_updates_in_place():
    flat, layout = gc.flat.ravel(PARAMS)
    opt = gc.adam(1e-2)

    def step(f, s, l):
        updates, s = opt.update(jax.grad(lambda f: mlp(l.unravel(f), X))(f), s, f)
        return gc.apply_updates(f, updates), s

    donated = jax.jit(step, donate_argnums=(0, 1))
    expected = jax.jit(step)(flat, opt.init(flat), layout)[0]
    got = donated(jax.tree.map(jnp.copy, flat), opt.init(flat), layout)[0]
    np.testing.assert_array_equal(np.asarray(got["float32"]), np.asarray(expected["float32"]))


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: gc.flat.ravel({}), ValueError, "at least one array"),
        (lambda: gc.flat.ravel({"i": jnp.arange(3)}), TypeError, "floating point, got a leaf of dtype int32"),
        (lambda: gc.flat.ravel(PARAMS, labels={"layer0": 1}), ValueError, "labels must have the structure"),
        (lambda: gc.flat.ravel({"a": jnp.ones(2)}, labels={"a": 3}), TypeError, "str or bool, got 3"),
        (lambda: gc.flat.ravel(PARAMS)[1].unravel({"float16": jnp.ones(3)}), ValueError, r"keys \['float32'\]"),
        (lambda: gc.flat.ravel(PARAMS)[1].unravel({"float32": jnp.ones(3)}), ValueError, r"shape \(180,\), got \(3,\)"),
        (lambda: gc.flat.ravel(PARAMS)[1].ravel({"w": jnp.ones(3)}), ValueError, "structure of the parameters"),
        (
            lambda: gc.flat.ravel(PARAMS)[1].ravel(jax.tree.map(lambda x: x[None], PARAMS)),
            ValueError,
            r"shape \(1, 5\) is where the layout has shape \(5,\)",
        ),
        (lambda: gc.flat.ravel(PARAMS)[1].mask(gc.decay_mask(PARAMS)), ValueError, "both in and out of the mask"),
        (lambda: gc.flat.ravel(PARAMS)[1].mask([True]), ValueError, "mask has 1 leaves, the layout 12"),
    ],
)
def test_bad_input_is_named(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_a_flax_linen_model_trains_the_same_on_flat_parameters():
    """Flax's nested parameter dicts go through unchanged: 10 Adam steps of a two-layer
    ``nn.Dense`` network on flat parameters match the per-leaf ones.

    In float64 (two programs compiled separately may round differently; in float32 Adam can
    amplify that): bound 10 steps × ~20 roundings a step × U64 × |params| ≤ 2 = 4.4e-14, tolerance
    1e-12; measured ≤ 4.4e-16 over 5 seeds, with and without FMA."""
    nn = pytest.importorskip("flax.linen")

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(1)(nn.tanh(nn.Dense(8)(x)))

    net = Net()
    with jax.enable_x64(True):
        x = float64(X)
        y = jnp.sin(x[:, :1])
        params = float64(net.init(jax.random.PRNGKey(2), X)["params"])
        loss = lambda p: jnp.mean((net.apply({"params": p}, x) - y) ** 2)
        flat, layout = gc.flat.ravel(params)
        assert flat["float64"].dtype == jnp.float64
        opt = gc.adam(1e-2)

    def steps(p, unravel):
        objective = loss if unravel is None else (lambda f: loss(unravel(f)))

        def step(carry, _):
            p, state = carry
            updates, state = opt.update(jax.grad(objective)(p), state, p)
            return (gc.apply_updates(p, updates), state), None

        return jax.lax.scan(step, (p, opt.init(p)), length=10)[0][0]

        per_leaf, packed = steps(params, None), steps(flat, layout.unravel)
        for got, want in zip(jax.tree.leaves(layout.unravel(packed)), jax.tree.leaves(per_leaf)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-12, atol=1e-12)
        assert float(loss(layout.unravel(packed))) < float(loss(params))


def test_a_flax_nnx_model_state_goes_through_flat():
    """``nnx.split`` gives a State pytree of Params; its gradient through ``unravel`` is the
    per-leaf one, packed.  The two programs compile separately and may sum in another order, so
    the check runs in float64: each gradient entry sums ≤ 64 products, |Δ| ≤ 2·64·U64·Σ|terms|
    (Σ|terms| ≤ 10 here) = 1.4e-13, tolerance 1e-12; measured ≤ 1e-16 with and without FMA."""
    nnx = pytest.importorskip("flax.nnx")
    model = nnx.Sequential(nnx.Linear(5, 8, rngs=nnx.Rngs(0)), nnx.Linear(8, 1, rngs=nnx.Rngs(1)))
    graphdef, params = nnx.split(model, nnx.Param)
    with jax.enable_x64(True):
        params, x = float64(params), float64(X)
        loss = lambda p: jnp.mean(nnx.merge(graphdef, p)(x) ** 2)
        flat, layout = gc.flat.ravel(params)
        assert flat["float64"].shape == (5 * 8 + 8 + 8 + 1,)
        got = jax.jit(jax.grad(lambda f, l: loss(l.unravel(f))))(flat, layout)
        want = layout.ravel(jax.jit(jax.grad(loss))(params))
    np.testing.assert_allclose(np.asarray(got["float64"]), np.asarray(want["float64"]), rtol=1e-12, atol=1e-12)
