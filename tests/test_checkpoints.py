"""Optimizer states save and restore bit for bit; resumed training equals uninterrupted training."""

import subprocess
import sys
import textwrap

import chex
import jax
import pytest
from helpers import gradient, random_tree

import gradchain as gc

PARAMS = random_tree(jax.random.PRNGKey(0))
OPTIMIZERS = {
    "sgd": lambda: gc.sgd(0.05, momentum=0.9, nesterov=True),
    "adagrad": lambda: gc.adagrad(0.05),
    "rmsprop": lambda: gc.rmsprop(1e-2),
    "adam": lambda: gc.adam(gc.warmup(gc.cosine_schedule(1e-2, 100), 10)),
    "adamw_masked_guarded": lambda: gc.apply_if_finite(gc.adamw(1e-2, mask=gc.decay_mask), 3),
    "clipped": lambda: gc.chain(gc.clip_by_global_norm(1.0), gc.add_l2_penalty(1e-3), gc.adam(1e-3)),
}


def _compiled(tx):
    return jax.jit(lambda p, s, k: (lambda u, s: (gc.apply_updates(p, u), s))(*tx.update(gradient(p, k), s, p)))


def _steps(step, params, state, keys):
    for k in keys:
        params, state = step(params, state, k)
    return params, state


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_flax_serialization_round_trip_and_resume(name):
    serialization = pytest.importorskip("flax.serialization", reason="Flax's msgpack serialization: pip install flax")

    tx = OPTIMIZERS[name]()
    step = _compiled(tx)
    keys = jax.random.split(jax.random.PRNGKey(1), 20)
    params, state = _steps(step, PARAMS, tx.init(PARAMS), keys[:10])
    blob = serialization.to_bytes((params, state))
    template = (PARAMS, tx.init(PARAMS))
    restored = serialization.from_bytes(template, blob)
    chex.assert_trees_all_equal(restored, (params, state))  # bit for bit, counts and hyperparameters too
    chex.assert_trees_all_equal_dtypes(restored, (params, state))
    resumed = _steps(step, *restored, keys[10:])
    straight = _steps(step, PARAMS, tx.init(PARAMS), keys)
    chex.assert_trees_all_equal(resumed, straight)


def test_orbax_round_trip(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    tx = OPTIMIZERS["adam"]()
    params, state = _steps(_compiled(tx), PARAMS, tx.init(PARAMS), jax.random.split(jax.random.PRNGKey(1), 5))
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
    with ocp.StandardCheckpointer() as checkpointer:
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": state})
        restored = checkpointer.restore(tmp_path / "ckpt", abstract)
    chex.assert_trees_all_equal(restored, {"params": params, "opt_state": state})
    assert float(gc.get_hyperparams(restored["opt_state"])["learning_rate"]) == float(gc.get_hyperparams(state)["learning_rate"])


DETERMINISM = textwrap.dedent("""
    import jax, numpy as np, sys
    sys.path.insert(0, "tests")
    import gradchain as gc
    from helpers import random_tree, run
    params, _ = run(gc.adamw(1e-2), random_tree(jax.random.PRNGKey(0)), 50)
    sys.stdout.write(np.concatenate([np.asarray(x).ravel() for x in jax.tree.leaves(params)]).tobytes().hex())
""")


def test_two_processes_give_bitwise_identical_results():
    outputs = [
        subprocess.run([sys.executable, "-c", DETERMINISM], capture_output=True, text=True, check=True).stdout
        for _ in range(2)
    ]
    assert outputs[0] == outputs[1] and len(outputs[0]) > 100
