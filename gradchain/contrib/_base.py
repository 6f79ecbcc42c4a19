"""The tree reductions (sums, norms, inner products) the contrib formulas use.

Their states are built by :func:`gradchain.transforms._base.transformation`, with ``shaped=``
naming the fields that have the parameters' structure: the parameter-free methods (DoG, Prodigy,
D-Adaptation, ...) also keep scalars (a distance estimate, a running sum of squared norms) and
other states (Sophia's Hessian estimator, schedule-free's base optimizer).
"""

from __future__ import annotations

import functools
import operator
from typing import Any, TypeGuard

import jax
import jax.numpy as jnp


def is_named_tuple(node: Any) -> TypeGuard[Any]:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def lowest_dtype(tree: Any) -> jnp.dtype:
    """The lowest-precision dtype among the leaves (Optax's ``tree.dtype(tree, "lowest")``): the
    dtype Optax keeps its scalar statistics in, so that they never promote the updates."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.asarray(leaves).dtype
    dtypes = [jnp.asarray(x).dtype for x in leaves]
    return functools.reduce(lambda a, b: b if jnp.finfo(b).bits < jnp.finfo(a).bits else a, dtypes)


def tree_sum(tree: Any) -> jax.Array:
    """``Σ`` over every element of every leaf (leaf sums added in leaf order, as Optax)."""
    return jnp.asarray(jax.tree.reduce(operator.add, jax.tree.map(jnp.sum, tree), initializer=0))


def tree_norm(tree: Any, squared: bool = False) -> jax.Array:
    """The Euclidean norm of the whole tree, ``‖x‖₂`` (or ``‖x‖₂²``)."""
    sq = tree_sum(jax.tree.map(lambda x: jnp.square(x.real) + jnp.square(x.imag), tree))
    return jnp.asarray(sq if squared else jnp.sqrt(sq))


def tree_vdot(a: Any, b: Any) -> jax.Array:
    """``⟨a, b⟩`` over the whole tree, each leaf's product at the highest matmul precision."""

    def leaf(x, y):
        x, y = jnp.asarray(x), jnp.asarray(y)
        if jnp.iscomplexobj(x):
            x = jnp.conj(x)
        return jnp.tensordot(x, y, x.ndim, precision=jax.lax.Precision.HIGHEST)

    return jnp.asarray(jax.tree.reduce(operator.add, jax.tree.map(leaf, a, b), initializer=0))


def copy_tree(tree: Any, dtype: Any = None) -> Any:
    """A copy of every leaf (a state owns its buffers: donating it never frees the caller's)."""
    return jax.tree.map(lambda x: jnp.array(x, dtype=dtype, copy=True), tree)


def zeros_like(tree: Any, dtype: Any = None) -> Any:
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)
