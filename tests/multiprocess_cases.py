"""What each process runs for tests/test_multiprocess.py, started by ``gradchain.distributed.launch``.

Every function builds its mesh from ``jax.devices()`` (global under ``jax.distributed``), reads
only its own rows of each batch (``local_rows``) and gathers what it returns, so one function is
both the 2-process × 4-device run and its 1-process × 8-device reference.  The parts share one
launch per topology (``suite``): starting JAX processes and compiling is what costs on a CPU.
"""

from __future__ import annotations

import os
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import gradchain as gc
import gradchain.distributed as gd

STEPS = 4  # optimizer steps of every training part
LR = 1e-2
BATCH = 64  # global batch: 8 rows per device


def _mesh(name: str = "data") -> Mesh:
    return Mesh(np.array(jax.devices()), (name,))  # Auto axes: XLA propagates the shardings


# ---------------------------------------------------------------------------------------------
# The problems (host-identical on every process: NumPy from fixed seeds).


def _mlp_params() -> dict:
    r = np.random.RandomState(0)
    return {"w1": (r.randn(8, 16) / 3).astype(np.float32), "b1": np.zeros(16, np.float32),
            "w2": (r.randn(16, 8) / 4).astype(np.float32), "b2": np.zeros(8, np.float32)}


def _regression() -> tuple[np.ndarray, np.ndarray]:
    r = np.random.RandomState(1)
    x = r.randn(BATCH, 8).astype(np.float32)
    return x, np.tanh(x @ r.randn(8, 8).astype(np.float32)).astype(np.float32)


def _mlp_loss(p, x, y):
    h = jnp.tanh(x @ p["w1"] + p["b1"])
    return jnp.mean((h @ p["w2"] + p["b2"] - y) ** 2)


def _my_rows(mesh, *arrays):
    rows = gd.local_rows(BATCH, mesh, "data")
    return gd.global_batch(tuple(a[rows] for a in arrays), mesh, "data")


def _train(loss, params, state, tx, batch, *, extra=(), out_shardings=None):
    def step(p, s, *args):
        g = jax.grad(loss)(p, *args)
        u, s = tx.update(g, s, p)
        return gc.apply_updates(p, u), s

    step = jax.jit(step) if out_shardings is None else jax.jit(step, out_shardings=out_shardings)
    for _ in range(STEPS):
        params, state = step(params, state, *extra, *batch)
    return params, state


def _bytes(tree) -> dict:
    """Per local device: bytes of the shards of arrays (ndim >= 1) and of scalars, and the global bytes."""
    arrays = [x for x in jax.tree.leaves(tree) if isinstance(x, jax.Array) and x.ndim]
    scalars = [x for x in jax.tree.leaves(tree) if isinstance(x, jax.Array) and not x.ndim]
    per = gd.bytes_per_device(arrays)
    return {"arrays_per_device": sorted(set(per.values())), "scalars_per_device": sorted(set(gd.bytes_per_device(scalars).values())),
            "arrays_global": sum(x.size * x.dtype.itemsize for x in arrays)}


def _nnx_factory(rngs):
    from flax import nnx

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(8, 16, rngs=rngs)
            self.l2 = nnx.Linear(16, 8, rngs=rngs)

        def __call__(self, x):
            return self.l2(jnp.tanh(self.l1(x)))

    return MLP(rngs)


# ---------------------------------------------------------------------------------------------
# The parts.


def data_parallel_and_fsdp(mesh) -> dict:
    """A plain JAX MLP with gc.adamw: batch split over all devices, params replicated (data
    parallel); then params and state split (FSDP); then the same model as one gc.flat buffer split
    along its one axis."""
    x, y = _my_rows(mesh, *_regression())
    tx = gc.adamw(LR, weight_decay=1e-3)
    out = {}

    params = gd.replicate(_mlp_params(), mesh)
    state = gd.to_mesh(tx.init(params), mesh)
    p, s = _train(_mlp_loss, params, state, tx, (x, y))
    out["dp"] = gd.gather(p)
    out["dp_bytes"] = _bytes((p, s))

    shardings = gd.fsdp_shardings(_mlp_params(), mesh, "data")
    params = gd.place(_mlp_params(), shardings)
    state = gd.to_mesh(tx.init(params), mesh)  # eagerly: the moments take the params' shardings
    state_sh = jax.tree.map(lambda a: a.sharding, state)
    p, s = _train(_mlp_loss, params, state, tx, (x, y), out_shardings=(shardings, state_sh))
    out["fsdp"] = gd.gather(p)
    out["fsdp_specs"] = {k: tuple(v.sharding.spec) for k, v in p.items()}
    out["fsdp_bytes"] = _bytes((p, s))

    flat, layout = gc.flat.ravel(_mlp_params())  # 280 floats: 35 per device
    split = gd.place(flat, NamedSharding(mesh, P("data")))
    state = gd.to_mesh(tx.init(split), mesh)
    state_sh = jax.tree.map(lambda a: a.sharding, state)
    flat_loss = lambda f, lay, x, y: _mlp_loss(lay.unravel(f), x, y)
    f, s = _train(flat_loss, split, state, tx, (x, y), extra=(layout,),
                  out_shardings=({"float32": NamedSharding(mesh, P("data"))}, state_sh))
    out["flat"] = gd.gather(layout.unravel(gd.gather(f)))
    out["flat_spec"] = tuple(f["float32"].sharding.spec)
    out["flat_bytes"] = _bytes((f, s))
    return out


def nnx_parts(mesh) -> dict:
    """A Flax NNX model (gc.adapters.from_nnx) with gc.adamw, data parallel and fully sharded."""
    model = gc.adapters.from_nnx(_nnx_factory)
    params0, mstate = model.init(jax.random.PRNGKey(0))  # the same on every process
    host = jax.tree.map(np.asarray, params0)
    x, y = _my_rows(mesh, *_regression())

    def loss(p, x, y):
        out, _ = model.apply(p, mstate, x, train=True)
        return jnp.mean((out - y) ** 2)

    tx = gc.adamw(LR, weight_decay=1e-3)
    out = {}
    params = gd.replicate(host, mesh)
    p, _ = _train(loss, params, gd.to_mesh(tx.init(params), mesh), tx, (x, y))
    out["nnx_dp"] = [np.asarray(a) for a in jax.tree.leaves(gd.gather(p))]
    shardings = gd.fsdp_shardings(host, mesh, "data")
    params = gd.place(host, shardings)
    state = gd.to_mesh(tx.init(params), mesh)
    p, s = _train(loss, params, state, tx, (x, y),
                  out_shardings=(shardings, jax.tree.map(lambda a: a.sharding, state)))
    out["nnx_fsdp"] = [np.asarray(a) for a in jax.tree.leaves(gd.gather(p))]
    out["nnx_fsdp_bytes"] = _bytes((p, s))
    out["nnx_dp_bytes_global"] = _bytes((params, state))["arrays_global"]
    return out


def multi_tensor_part() -> dict:
    """multi_tensor's packing decided under jit from the tracers' types on a mesh of Explicit
    axes: the leaf split over the global mesh stays loose, the 40 replicated small ones are packed."""
    from jax.sharding import AxisType

    mesh = Mesh(np.array(jax.devices()), ("data",), axis_types=(AxisType.Explicit,))
    host = {f"b{i:02d}": np.full((8,), 0.1 * i, np.float32) for i in range(40)}
    host["w"] = np.arange(128.0, dtype=np.float32).reshape(16, 8) / 128
    placed = gd.place(host, {k: NamedSharding(mesh, P("data") if k == "w" else P()) for k in host})
    tx = gc.adam(LR)
    out = {}
    with jax.set_mesh(mesh):
        state = jax.jit(tx.init)(placed)
        out["loose_under_jit"] = [k for k, slot in zip(sorted(host), state.slots) if slot is None]

        def step(p, s):
            u, s = tx.update(jax.tree.map(jnp.cos, p), s, p)
            return gc.apply_updates(p, u), s

        p = placed
        for _ in range(STEPS):
            p, state = jax.jit(step)(p, state)
    out["mt_w_spec"] = tuple(p["w"].sharding.spec)
    out["mt"] = gd.gather(p)
    auto = gd.place(host, {k: NamedSharding(_mesh(), P("data") if k == "w" else P()) for k in host})
    eager = tx.init(auto)
    out["loose_eager_auto"] = [k for k, slot in zip(sorted(host), eager.slots) if slot is None]
    told = gc.multi_tensor(gc.scale_by_adam(), sharded=lambda p: {k: k == "w" for k in p})
    out["loose_jit_auto_told"] = [k for k, slot in zip(sorted(host), jax.jit(told.init)(auto).slots) if slot is None]
    return out


def population_part(mesh) -> dict:
    """train_population over the global mesh: 8 members, one per device; results on every process."""
    from gradchain import tuning
    from gradchain.examples.digits import digits
    from gradchain.examples.digits_recipe import adamw_from_config, three_way
    from gradchain.examples.models import mlp_model

    data, _ = three_way(digits(jax.random.PRNGKey(0)))
    fit = tuning.make_fit(gc.supervised(mlp_model((64, 16, 10))), adamw_from_config, data, steps=4, batch_size=16)
    configs = [{"learning_rate": 10 ** -(1 + i / 4), "weight_decay": 1e-4} for i in range(8)]
    keys = jax.random.split(jax.random.PRNGKey(1), 8)
    result = tuning.train_population(fit, configs, keys, progress=False)
    out = {"pop_losses": np.asarray(result.losses), "pop_val": np.asarray(result.metrics["val_loss"]),
           "pop_addressable": all(x.is_fully_addressable for x in jax.tree.leaves(result)),
           "pop_records": [tuning.run_record(result, j, history=False)["metrics"]["val_loss"] for j in range(8)]}
    try:
        tuning.train_population(fit, configs[:6], keys[:6], progress=False)
        out["pop_6"] = None
    except ValueError as error:
        out["pop_6"] = str(error)
    return out


def kfac_part(mesh) -> dict:
    """K-FAC's statistics averaged over the data axis (shard_map + axis_name) across processes."""
    d = np.load(os.path.join(os.path.dirname(__file__), "data", "kfac", "dense_mlp.npz"))
    host = [{"w": np.asarray(d[f"W{l}"], np.float32), "b": np.asarray(d[f"b{l}"], np.float32)} for l in range(3)]
    n = len(d["x"]) - len(d["x"]) % 8
    x_all, y_all = np.asarray(d["x"][:n], np.float32), np.asarray(d["y"][:n])
    rows = gd.local_rows(n, mesh, "data")
    x, y = gd.global_batch((x_all[rows], y_all[rows]), mesh, "data")
    params = gd.replicate(host, mesh)

    def loss(params, x, y):
        h = x
        for i, p in enumerate(params):
            h = gc.kfac_dense(h, p["w"], p["b"])
            if i < 2:
                h = jnp.tanh(h)
        return gc.kfac_softmax_cross_entropy(h, y)

    def chain_steps(curv, params, x, y, k=2):
        tx = gc.chain(gc.kfac_precondition(curv, damping=1e-2, refresh_every=2), gc.scale_by_momentum(0.9),
                      gc.scale_by_learning_rate(0.3))
        s = tx.init(params)
        for _ in range(k):
            value, grads, stats = curv.value_grad_and_statistics(params, x, y)
            u, s = tx.update(grads, s, params, kfac_statistics=stats)
            params = gc.apply_updates(params, u)
        return params, value

    def adaptive_steps(curv, params, x, y, k=2):
        opt = gc.kfac_optimizer(curv, initial_damping=1.0, adaptation_interval=2, refresh_every=2)
        s = opt.init(params)
        for _ in range(k):
            params, s, info = opt.step(params, s, x, y)
        return params, info.rho

    per = n // 8
    curv = gc.kfac_curvature(loss, host, x_all[:per], y_all[:per], estimator="exact", axis_name="data")
    spec = (P(), P("data"), P("data"))
    run = lambda f: jax.jit(jax.shard_map(lambda p, x, y: f(curv, p, x, y), mesh=mesh, in_specs=spec, out_specs=P()))
    out = {"kfac_chain": gd.gather(run(chain_steps)(params, x, y)),
           "kfac_adaptive": gd.gather(run(adaptive_steps)(params, x, y))}
    wrong = gc.kfac_curvature(loss, host, x_all[:per], y_all[:per], estimator="exact", axis_name="batch")
    try:
        jax.jit(jax.shard_map(lambda p, x, y: chain_steps(wrong, p, x, y, 1), mesh=mesh, in_specs=spec,
                              out_specs=P())).trace(params, x, y)
        out["kfac_wrong_axis"] = None
    except Exception as error:  # what JAX says for an axis the mesh does not have
        out["kfac_wrong_axis"] = f"{type(error).__name__}: {error}"
    return out


def bad_axis_part(mesh) -> dict:
    out = {}
    for name, call in (("global_batch", lambda: gd.global_batch(np.zeros((4, 2)), mesh, "batch")),
                       ("fsdp_shardings", lambda: gd.fsdp_shardings({"w": np.zeros(8)}, mesh, "model"))):
        try:
            call()
            out[f"bad_{name}"] = None
        except ValueError as error:
            out[f"bad_{name}"] = str(error)
    return out


# ---------------------------------------------------------------------------------------------
# Checkpoints: a packed multi_tensor state (40 small leaves packed, one split leaf loose) and a
# gc.flat state (one buffer split over the mesh), trained, saved with orbax, restored.


def _ckpt_problem(mesh):
    host_a = {f"b{i:02d}": np.full((8,), 0.05 * i, np.float32) for i in range(40)}
    host_a["w"] = (np.random.RandomState(2).randn(16, 8) / 4).astype(np.float32)
    a = gd.place(host_a, {k: NamedSharding(mesh, P("data") if k == "w" else P()) for k in host_a})
    flat, layout = gc.flat.ravel(_mlp_params())
    f = gd.place(flat, NamedSharding(mesh, P("data")))
    tx_a, tx_f = gc.adam(LR), gc.adamw(LR, weight_decay=1e-3)
    tree = gd.to_mesh({"a": a, "a_state": tx_a.init(a), "f": f, "f_state": tx_f.init(f)}, mesh)
    shardings = jax.tree.map(lambda x: x.sharding, tree)
    x, y = _my_rows(mesh, *_regression())

    def loss_a(p, x):
        return jnp.mean(jnp.tanh(jnp.concatenate([x, x], 1) @ p["w"] + sum(p[f"b{i:02d}"] for i in range(40))) ** 2)

    def step(t, layout, x, y):
        ga = jax.grad(loss_a)(t["a"], x)
        ua, sa = tx_a.update(ga, t["a_state"], t["a"])
        gf = jax.grad(lambda f: _mlp_loss(layout.unravel(f), x, y))(t["f"])
        uf, sf = tx_f.update(gf, t["f_state"], t["f"])
        return {"a": gc.apply_updates(t["a"], ua), "a_state": sa, "f": gc.apply_updates(t["f"], uf), "f_state": sf}

    return tree, jax.jit(step, out_shardings=shardings), layout, (x, y)


def _manager(directory):
    import orbax.checkpoint as ocp

    return ocp.CheckpointManager(os.path.abspath(directory))


def _abstract(tree):
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), tree)


def checkpoint_then_die(directory: str) -> None:
    """Train 2 steps, save (orbax; every process writes its shards), then every process is killed."""
    import orbax.checkpoint as ocp
    from jax.experimental import multihost_utils

    mesh = _mesh()
    tree, step, layout, (x, y) = _ckpt_problem(mesh)
    for _ in range(STEPS // 2):
        tree = step(tree, layout, x, y)
    mngr = _manager(directory)
    mngr.save(STEPS // 2, args=ocp.args.StandardSave(tree))
    mngr.wait_until_finished()
    multihost_utils.sync_global_devices("checkpoint written")
    os.kill(os.getpid(), signal.SIGKILL)


def checkpoint_part(mesh, resume_dir: str | None) -> dict:
    import orbax.checkpoint as ocp

    tree, step, layout, (x, y) = _ckpt_problem(mesh)
    fresh = tree
    half = None
    for i in range(STEPS):
        tree = step(tree, layout, x, y)
        if i == STEPS // 2 - 1:
            half = tree
    out = {"ckpt_whole": gd.gather((tree["a"], tree["f"])),
           "ckpt_slots_packed": sum(s is not None for s in tree["a_state"].slots)}
    if resume_dir is not None:
        mngr = _manager(resume_dir)
        restored = mngr.restore(mngr.latest_step(), args=ocp.args.StandardRestore(_abstract(fresh)))
        out["ckpt_step"] = mngr.latest_step()
        out["ckpt_restored_equals_saved"] = all(
            np.array_equal(a, b) for a, b in zip(jax.tree.leaves(gd.gather(restored)), jax.tree.leaves(gd.gather(half))))
        out["ckpt_shardings_kept"] = all(
            a.sharding.is_equivalent_to(b.sharding, a.ndim) for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(fresh)))
        for _ in range(STEPS - STEPS // 2):
            restored = step(restored, layout, x, y)
        out["ckpt_resumed"] = gd.gather((restored["a"], restored["f"]))
    return out


# ---------------------------------------------------------------------------------------------
# Entry points for launch.


def suite(resume_dir: str | None = None, parts: tuple[str, ...] = ("dp", "nnx", "mt", "pop", "kfac", "bad", "ckpt")) -> dict:
    mesh = _mesh()
    out = {"processes": jax.process_count(), "devices": len(jax.devices()), "local": len(jax.local_devices())}
    timings = {}
    for name, part in (("dp", lambda: data_parallel_and_fsdp(mesh)), ("nnx", lambda: nnx_parts(mesh)),
                       ("mt", multi_tensor_part), ("pop", lambda: population_part(mesh)),
                       ("kfac", lambda: kfac_part(mesh)), ("bad", lambda: bad_axis_part(mesh)),
                       ("ckpt", lambda: checkpoint_part(mesh, resume_dir))):
        if name in parts:
            t = time.perf_counter()
            out.update(part())
            timings[name] = round(time.perf_counter() - t, 2)
    out["timings"] = timings
    return out


def fails_on_one(process: int = 1) -> None:
    if jax.process_index() == process:
        raise ValueError(f"process {process} was told to fail")
    time.sleep(120)  # the other waits, as it would in a collective


def hangs() -> None:
    time.sleep(600)


def step_time(repeats: int = 50, hidden: int = 256, batch: int = 512) -> dict:
    """Seconds per data-parallel step (median of ``repeats``) of an MLP with gc.adamw, batch split over all
    devices: for BUILD_NOTES, 1 process × 8 devices against 2 × 4 (not asserted anywhere)."""
    mesh = _mesh()
    r = np.random.RandomState(0)
    host = {"w1": (r.randn(64, hidden) / 8).astype(np.float32), "b1": np.zeros(hidden, np.float32),
            "w2": (r.randn(hidden, 10) / 16).astype(np.float32), "b2": np.zeros(10, np.float32)}
    x_all = r.randn(batch, 64).astype(np.float32)
    y_all = r.randn(batch, 10).astype(np.float32)
    rows = gd.local_rows(batch, mesh)
    x, y = gd.global_batch((x_all[rows], y_all[rows]), mesh)
    params = gd.replicate(host, mesh)
    tx = gc.adamw(LR)
    state = gd.to_mesh(tx.init(params), mesh)

    @jax.jit
    def step(p, s, x, y):
        g = jax.grad(_mlp_loss)(p, x, y)
        u, s = tx.update(g, s, p)
        return gc.apply_updates(p, u), s

    params, state = step(params, state, x, y)
    jax.block_until_ready(params)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        params, state = step(params, state, x, y)
        jax.block_until_ready(params)
        times.append(time.perf_counter() - t)
    return {"median_s": float(np.median(times)), "min_s": float(np.min(times)),
            "bytes": gd.bytes_per_device((params, state))}


def recipe_job(out: str) -> dict:
    """The recipe run by every process of a job into one folder: each computes, process 0 writes."""
    import gradchain as gc
    from gradchain import tuning
    from gradchain.examples.digits import digits
    from gradchain.examples.digits_recipe import three_way
    from gradchain.examples.models import mlp_model

    data, test = three_way(digits(jax.random.PRNGKey(0)))
    data = data._replace(x_train=data.x_train[:256], y_train=data.y_train[:256])
    settings = tuning.RecipeSettings(epochs={"coarse": 1, "refine": 1, "final": 1, "max_refine": 1}, population=8,
                                     ensemble=8, max_rounds=1, progress=False)
    summary = tuning.recipe(gc.supervised(mlp_model((64, 16, 10))), data, {}, test=test, settings=settings, out=out)
    return {"config": summary["config"], "test_single": summary["test_single"], "process": jax.process_index()}
