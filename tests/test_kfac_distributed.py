"""Distributed K-FAC (Ba, Grosse & Martens 2017): the factors averaged over a data-parallel axis.

On 8 simulated CPU devices (a subprocess sets XLA_FLAGS before JAX starts), a step inside
``jax.shard_map`` with the batch split over the devices and ``axis_name`` given to
``kfac_curvature`` equals the one-device step on the whole batch: for the preconditioner in a
chain and for the adaptive optimizer (its Gauss-Newton products and the loss of the
damping-adaptation step averaged too).

TOLERANCES: the sharded step sums in another order by construction (per-shard means, then
``pmean``), so parity is checked in float64 (it used to be float32 at rtol 2e-5, where the chain's
worst element reached 0.40 of the tolerance on XLA's SSE4.2 code path — a margin of 2.5).  In
float64 the differences are round-off of u = 1.1e-16 through damped blocks of condition ≤ 402
(dense_mlp, λ = 1e-2) over 2–3 steps: ≲ 1e-13; measured ≤ 8.3e-4 of ``rtol=1e-10, atol=1e-12``
(default and ``XLA_FLAGS=--xla_cpu_max_isa=SSE4_2``), a margin above 1000.
"""

import os
import pathlib
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import Mesh, PartitionSpec as P
    import gradchain as gc

    jax.config.update("jax_enable_x64", True)  # parity is the point: float64, see TOLERANCES

    assert len(jax.devices()) == 8, jax.devices()
    mesh = Mesh(np.array(jax.devices()), ("data",))
    d = np.load("tests/data/kfac/dense_mlp.npz")
    params = [{"w": jnp.asarray(d[f"W{l}"], jnp.float64), "b": jnp.asarray(d[f"b{l}"], jnp.float64)} for l in range(3)]
    x, y = jnp.asarray(d["x"], jnp.float64), jnp.asarray(d["y"])

    def loss(params, x, y):
        h = x
        for i, p in enumerate(params):
            h = gc.kfac_dense(h, p["w"], p["b"])
            if i < 2:
                h = jnp.tanh(h)
        return gc.kfac_softmax_cross_entropy(h, y)

    def chain_steps(curv, params, x, y, n=2):
        tx = gc.chain(gc.kfac_precondition(curv, damping=1e-2, refresh_every=2), gc.scale_by_momentum(0.9),
                      gc.scale_by_learning_rate(0.3))
        s = tx.init(params)
        for _ in range(n):
            value, grads, stats = curv.value_grad_and_statistics(params, x, y)
            u, s = tx.update(grads, s, params, kfac_statistics=stats)
            params = gc.apply_updates(params, u)
        return params, value, s[0].factors

    def adaptive_steps(curv, params, x, y, n=3):
        opt = gc.kfac_optimizer(curv, initial_damping=1.0, adaptation_interval=2, refresh_every=2)
        s = opt.init(params)
        infos = []
        for _ in range(n):
            params, s, info = opt.step(params, s, x, y)
            infos.append(info)
        return params, jax.tree.map(lambda *a: jnp.stack(a), *infos)

    one = gc.kfac_curvature(loss, params, x, y, estimator="exact")
    many = gc.kfac_curvature(loss, params, x[:32], y[:32], estimator="exact", axis_name="data")
    spec = (P(), P("data"), P("data"))

    single = jax.jit(lambda p, x, y: chain_steps(one, p, x, y))(params, x, y)
    sharded = jax.jit(jax.shard_map(lambda p, x, y: chain_steps(many, p, x, y), mesh=mesh,
                                    in_specs=spec, out_specs=P()))(params, x, y)
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)

    single = jax.jit(lambda p, x, y: adaptive_steps(one, p, x, y))(params, x, y)
    sharded = jax.jit(jax.shard_map(lambda p, x, y: adaptive_steps(many, p, x, y), mesh=mesh,
                                    in_specs=spec, out_specs=P()))(params, x, y)
    assert np.all(np.isfinite(np.asarray(single[1].rho)[1::2])), single[1].rho
    for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-10, atol=1e-12)
    print("OK")
""")


def test_eight_devices_equal_one_device():
    root = pathlib.Path(__file__).resolve().parent.parent
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=root, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
