"""Small shared pieces for the tests: a random pytree, a reproducible training run, and the
round-off units the tolerances are derived from.

How the suite's float tolerances are derived (each assertion states its own numbers):

- One correctly rounded float operation errs by at most the unit round-off u (``U32``, ``U64``)
  relative to its result; k of them in a row by at most about k·u.  A sum of n terms in any order
  errs by at most (n - 1)·u·Σ|terms| (Higham, *Accuracy and Stability*, §4.2).  Where the bound
  is an a-priori worst case, the tolerance is that bound (rounded up).
- A multi-step float32 run compounds round-off through the optimizer's dynamics, so no useful
  a-priori bound exists (Adam's step g/(√v + eps) amplifies a rounding of g by up to lr/eps).
  Where two float32 programs must agree to "the same numbers" (a summation order, a packed or
  flat layout, vmap against a loop), the comparison runs in float64 (``jax.enable_x64``):
  ``steps × k roundings × U64 × scale`` is then ~1e-13, and the tolerance is that bound times
  a margin.  Where float32 itself is the point, the tolerance is ten times the largest
  difference measured over at least five seeds (and under ``XLA_FLAGS=--xla_cpu_max_isa=AVX`` /
  ``SSE4_2``, which turn off FMA and change the vector width like another CPU would).
"""

import jax
import jax.numpy as jnp
import numpy as np

U32 = float(np.finfo(np.float32).eps) / 2  # 2**-24 ≈ 6.0e-8: float32 unit round-off
U64 = float(np.finfo(np.float64).eps) / 2  # 2**-53 ≈ 1.1e-16: float64 unit round-off


def float64(tree):
    """``tree`` with every floating leaf cast to float64 (call inside ``jax.enable_x64(True)``)."""
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float64) if jnp.issubdtype(jnp.asarray(x).dtype, jnp.floating) else x, tree)


def random_tree(key, dtype=jnp.float32):
    """A nested pytree with a matrix, a vector, a scalar and a 3-d kernel."""
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return {
        "dense": {"w": jax.random.normal(k1, (7, 5), dtype), "b": jax.random.normal(k2, (5,), dtype)},
        "scale": jax.random.normal(k3, (), dtype),
        "conv": [jax.random.normal(k4, (3, 3, 2), dtype)],
    }


def gradient(params, key):
    """The gradient of a fixed ill-conditioned quadratic plus noise: depends on the parameters,
    so any difference between two optimizers compounds over the steps."""
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    grads = [
        (jnp.arange(1, p.size + 1, dtype=p.dtype).reshape(p.shape) / p.size) * p
        + 0.1 * jax.random.normal(k, p.shape, p.dtype)
        for p, k in zip(leaves, keys)
    ]
    return jax.tree.unflatten(treedef, grads)


def run(tx, params, steps, key=jax.random.PRNGKey(42), apply=None):
    """Run `steps` updates of `tx` inside one jitted `lax.scan`; return (params, state)."""
    if apply is None:
        from gradchain import apply_updates as apply

    def step(carry, k):
        p, s = carry
        updates, s = tx.update(gradient(p, k), s, p)
        return (apply(p, updates), s), None

    @jax.jit
    def go(p):
        (p, s), _ = jax.lax.scan(step, (p, tx.init(p)), jax.random.split(key, steps))
        return p, s

    return go(params)


def assert_close(actual, expected, rtol, atol=0.0):
    """Leaf-wise |actual - expected| <= atol + rtol * |expected|, with a readable failure."""
    flat_a = jax.tree_util.tree_leaves_with_path(actual)
    flat_e = jax.tree.leaves(expected)
    assert len(flat_a) == len(flat_e), "trees differ in size"
    for (path, a), e in zip(flat_a, flat_e):
        a = jnp.asarray(a, jnp.float64) if jax.config.jax_enable_x64 else jnp.asarray(a, jnp.float32)
        e = jnp.asarray(e, a.dtype)
        err = jnp.abs(a - e)
        bound = atol + rtol * jnp.abs(e)
        worst = float(jnp.max(err - bound))
        assert worst <= 0, (
            f"leaf {jax.tree_util.keystr(path)}: max |a-e| = {float(jnp.max(err)):.3g}, "
            f"exceeds atol={atol:g} + rtol={rtol:g}·|e|"
        )
