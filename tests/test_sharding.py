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
    from gradchain.tuning.recipe import adamw_from_config, make_task
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
    task, _ = make_task(0)
    fit = tuning.make_fit(task, adamw_from_config, steps=20, batch_size=32)
    configs = tuning.stack_configs([{"learning_rate": 10 ** -(2 + i / 4), "weight_decay": 1e-4} for i in range(8)])
    keys = jax.random.split(jax.random.PRNGKey(1), 8)
    spread = tuning.train_population(fit, configs, keys)
    assert len(spread.losses.sharding.device_set) == 8, spread.losses.sharding
    plain = _vmapped(fit)(configs, keys)
    np.testing.assert_allclose(np.asarray(spread.losses), np.asarray(plain.losses), rtol=1e-5, atol=1e-6)
    print("SHARDING OK")
""")


def test_eight_device_sharding_matches_one_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "SHARDING OK" in done.stdout, done.stdout + done.stderr
