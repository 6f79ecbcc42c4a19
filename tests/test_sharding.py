"""Multi-device behaviour on 8 simulated CPU devices (a subprocess sets XLA_FLAGS before JAX starts)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import gradchain as gc
    from gradchain import tuning
    from gradchain.examples.digits import digits
    from gradchain.examples.digits_recipe import adamw_from_config, three_way
    from gradchain.examples.models import mlp_model
    from gradchain.tuning.training import _vmapped

    assert len(jax.devices()) == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("d",))

    # 1. Params sharded over the mesh: the optimizer state gets the same sharding (init called
    #    eagerly; under jit, XLA places data-independent zeros as it likes unless out_shardings
    #    is given — the same holds for Optax).
    params = {"w": jnp.arange(64.0).reshape(16, 4), "b": jnp.ones(16)}
    sharded = jax.device_put(params, NamedSharding(mesh, P("d")))
    tx = gc.adamw(1e-2, weight_decay=1e-3)
    state = tx.init(sharded)
    moments = [s.moment for s in jax.tree.leaves(state, is_leaf=lambda s: hasattr(s, "moment")) if hasattr(s, "moment")]
    for m in moments:
        for name in ("w", "b"):
            assert m[name].sharding.is_equivalent_to(sharded[name].sharding, m[name].ndim), (name, m[name].sharding)

    # Tolerances (float32): in 2 and 5 each shard runs the element-wise steps on its own slice, the
    # same IEEE operations; 2, 5 and 6 measured equal, with and without FMA (XLA_FLAGS=
    # --xla_cpu_max_isa=AVX).  In 3 the batch gradient sums across devices in another order (≤ 64
    # terms: ≤ 64·U32 relative to Σ|terms|), which one Adam step g/(|g| + eps) passes on scaled by
    # eps/|g|; 4 compounds 20 steps of that: measured ≤ 0.033 of their tolerances (rtol 1e-5).

    # 2. Fully sharded training step == single-device step.
    grads = jax.tree.map(lambda p: jnp.sin(p), params)
    step = jax.jit(lambda p, s, g: (lambda u, s: (gc.apply_updates(p, u), s))(*tx.update(g, s, p)))
    single = step(params, tx.init(params), grads)
    multi = step(sharded, state, jax.device_put(grads, NamedSharding(mesh, P("d"))))
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(multi)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    new_params, new_state = multi
    assert new_params["w"].sharding.is_equivalent_to(sharded["w"].sharding, 2), new_params["w"].sharding
    new_moment = [s.moment for s in jax.tree.leaves(new_state, is_leaf=lambda s: hasattr(s, "moment")) if hasattr(s, "moment")][0]
    assert new_moment["w"].sharding.is_equivalent_to(sharded["w"].sharding, 2), new_moment["w"].sharding

    # 3. Data-parallel training (batch sharded, params replicated) == single device.
    x = jax.random.normal(jax.random.PRNGKey(0), (64, 4)); y = x @ jnp.array([1.0, -1.0, 2.0, 0.5])
    loss = lambda p, x, y: jnp.mean((x @ p["w"][:4].T.sum(0) + p["b"][0] - y) ** 2)
    dstep = jax.jit(lambda p, s, x, y: (lambda u, s: (gc.apply_updates(p, u), s))(*tx.update(jax.grad(loss)(p, x, y), s, p)))
    replicated = jax.device_put(params, NamedSharding(mesh, P()))
    a = dstep(params, tx.init(params), x, y)
    b = dstep(replicated, tx.init(replicated), jax.device_put(x, NamedSharding(mesh, P("d"))), jax.device_put(y, NamedSharding(mesh, P("d"))))
    for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-6)

    # 4. A population's axis sharded over the devices == the unsharded population.
    data, _ = three_way(digits(jax.random.PRNGKey(0)))
    fit = tuning.make_fit(gc.supervised(mlp_model((64, 128, 128, 10))), adamw_from_config, data, steps=20, batch_size=32)
    configs = tuning.stack_configs([{"learning_rate": 10 ** -(2 + i / 4), "weight_decay": 1e-4} for i in range(8)])
    keys = jax.random.split(jax.random.PRNGKey(1), 8)
    spread = tuning.train_population(fit, configs, keys)
    assert len(spread.losses.sharding.device_set) == 8, spread.losses.sharding
    plain = _vmapped(fit)(configs, keys)
    np.testing.assert_allclose(np.asarray(spread.losses), np.asarray(plain.losses), rtol=1e-5, atol=1e-6)

    # 5. multi_tensor: replicated small leaves are packed, a leaf sharded over the mesh stays
    #    loose (packing it would gather it), and the step equals the single-device one.
    many = {f"b{i:02d}": jnp.full((8,), float(i)) for i in range(40)} | {"w": jnp.arange(64.0).reshape(16, 4)}
    placed = {k: jax.device_put(v, NamedSharding(mesh, P("d") if k == "w" else P())) for k, v in many.items()}
    mt = gc.adam(1e-2)
    mstate = mt.init(placed)
    assert [slot is None for slot in mstate.slots] == [k == "w" for k in sorted(placed)], mstate.slots
    mgrads = jax.tree.map(jnp.cos, many)
    mstep = jax.jit(lambda p, s, g: (lambda u, s: (gc.apply_updates(p, u), s))(*mt.update(g, s, p)))
    one = mstep(many, mt.init(many), mgrads)[0]
    eight = mstep(placed, mstate, jax.device_put(mgrads, jax.tree.map(lambda x: x.sharding, placed)))[0]
    for k in many:
        np.testing.assert_allclose(np.asarray(one[k]), np.asarray(eight[k]), rtol=1e-6, atol=1e-7)
    assert eight["w"].sharding.is_equivalent_to(placed["w"].sharding, 2), eight["w"].sharding

    # 6. gc.flat, fully sharded (FSDP): the flat buffer is split over the mesh, unravel gathers
    #    each leaf where the model uses it, the step equals the single-device one and the new
    #    buffer stays split.
    model = {f"l{i}": {"w": jnp.full((4, 4), 0.1 * i), "b": jnp.full((4,), 0.01 * i)} for i in range(6)}
    flat, layout = gc.flat.ravel(model)  # 6 * 20 = 120 floats: 15 per device
    loss = lambda f, l, x: sum(jnp.sum(jnp.tanh(x @ p["w"] + p["b"]) ** 2) for p in l.unravel(f).values())
    fopt = gc.adam(1e-2)
    def fstep(f, s, l, x):
        u, s = fopt.update(jax.grad(loss)(f, l, x), s, f)
        return gc.apply_updates(f, u), s
    xs = jnp.linspace(-1.0, 1.0, 32).reshape(8, 4)
    split = jax.device_put(flat, NamedSharding(mesh, P("d")))
    one = jax.jit(fstep)(flat, fopt.init(flat), layout, xs)[0]
    new, fstate = jax.jit(fstep)(split, fopt.init(split), layout, xs)
    np.testing.assert_allclose(np.asarray(new["float32"]), np.asarray(one["float32"]), rtol=1e-6, atol=1e-7)
    assert new["float32"].sharding.is_equivalent_to(split["float32"].sharding, 1), new["float32"].sharding
    print("SHARDING OK")
""")


def test_eight_device_sharding_matches_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "SHARDING OK" in done.stdout, done.stdout + done.stderr
