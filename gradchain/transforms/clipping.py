"""Clipping: element-wise and by the global norm of the whole update tree."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.core import GradientTransformation
from gradchain.transforms._base import cast_like, transformation


class ClipState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict


def global_norm(tree: Any) -> jax.Array:
    """``√(Σ_leaves Σ_i x_i²)``, accumulated in at least float32.

    Args:
      tree: a pytree of arrays.

    Returns:
      A scalar array (0 for an empty tree).
    """
    squares = [
        jnp.sum(jnp.square(jnp.asarray(x, jnp.promote_types(jnp.asarray(x).dtype, jnp.float32))))
        for x in jax.tree.leaves(tree)
    ]
    return jnp.sqrt(sum(squares)) if squares else jnp.zeros([], jnp.float32)


def clip(max_delta: hyper.Hyperparameter) -> GradientTransformation:
    """Clip every element to ``[-max_delta, max_delta]``.

    Args:
      max_delta: ≥ 0, a number, an array or a schedule.

    Returns:
      A transformation with state ``ClipState(count, hyperparams)``.
    """
    hyper.check("max_delta", max_delta, low=0.0)

    def step(updates, buffers, params, count, max_delta):
        def clip_leaf(u):
            bound = cast_like(max_delta, u)
            return jnp.clip(u, -bound, bound)

        return jax.tree.map(clip_leaf, updates), buffers

    return transformation(ClipState, step, {"max_delta": max_delta})


def clip_by_global_norm(max_norm: hyper.Hyperparameter) -> GradientTransformation:
    """Rescale the whole tree so that its global norm is at most ``max_norm``:
    ``u <- u · max_norm / ‖u‖`` when ``‖u‖ > max_norm`` (Pascanu et al., ICML 2013).

    Args:
      max_norm: > 0, a number, an array or a schedule.

    Returns:
      A transformation with state ``ClipState(count, hyperparams)``.
    """
    hyper.check("max_norm", max_norm, low=0.0, low_open=True)

    def step(updates, buffers, params, count, max_norm):
        norm = global_norm(updates)
        keep = norm < max_norm

        def clip_leaf(u):
            scaled = (u / norm.astype(u.dtype)) * cast_like(max_norm, u)
            return jnp.where(keep, u, scaled)

        return jax.tree.map(clip_leaf, updates), buffers

    return transformation(ClipState, step, {"max_norm": max_norm})
