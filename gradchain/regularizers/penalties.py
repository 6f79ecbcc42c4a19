"""Loss-side penalties: the terms ``λ R(W)`` the lecture adds to the data loss.

    L2:           R(w) = l2 · Σ w²                  (weight decay)
    L1:           R(w) = l1 · Σ |w|
    elastic net:  R(w) = l1 · Σ |w| + l2 · Σ w²      (Zou & Hastie, JRSS-B 2005)

The conventions are those of :func:`gradchain.add_elastic_net_penalty`, the gradient-side
transform: ``jax.grad`` of these functions is exactly what that transform adds to the gradient,
``l1 · sign(w) + 2 · l2 · w``, so "penalise the loss" and "add the penalty's gradient" train the
same model (checked in the tests).

``mask`` chooses the leaves a penalty applies to.  The default, :func:`gradchain.decay_mask`,
penalises weight matrices and kernels (``ndim >= 2``) and spares biases and norm scales, the
usual practice (a penalty on a bias or a BatchNorm scale only fights the model's offset/scale).
``mask=None`` penalises every leaf; a callable ``params -> bool tree`` or a pytree of Python bools
with the structure of ``params`` (or a prefix of it: one bool for a whole sub-tree) chooses
explicitly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import jax
import jax.numpy as jnp

from gradchain.regularizers import _checks
from gradchain.transforms.wrappers import decay_mask, full_mask

__all__ = ["l2_penalty", "l1_penalty", "elastic_net_penalty"]

Mask = Any  # None | pytree of Python bools (or a prefix) | params -> such a pytree


def _selected_leaves(fn: str, params: Any, mask: Mask | Callable[[Any], Mask]) -> list[jax.Array]:
    leaves = jax.tree.leaves(params)
    if mask is None:
        return leaves
    try:
        flags = jax.tree.leaves(full_mask(mask, params))
    except (TypeError, ValueError) as err:
        raise type(err)(f"{fn}: {err}") from err
    return [w for w, keep in zip(leaves, flags) if keep]


def _total(leaves: list[jax.Array], term: Callable[[jax.Array], jax.Array]) -> jax.Array:
    if not leaves:
        return jnp.zeros((), jnp.result_type(float))
    return cast(jax.Array, sum(jnp.sum(term(jnp.asarray(w))) for w in leaves))


def l2_penalty(params: Any, l2: Any, mask: Mask | Callable[[Any], Mask] = decay_mask) -> jax.Array:
    """``l2 · Σ w²`` over the masked leaves of ``params`` (the lecture's L2 term, "weight decay").

    Its gradient is ``2 · l2 · w``, what :func:`gradchain.add_l2_penalty` adds.

    Args:
      params: a pytree of arrays.
      l2: ≥ 0; may be a traced array (``vmap`` over penalty strengths).
      mask: which leaves count (default :func:`gradchain.decay_mask`: no biases, no norm scales).

    Returns:
      A scalar.
    """
    _checks.number("l2_penalty", "l2", l2, low=0.0)
    return l2 * _total(_selected_leaves("l2_penalty", params, mask), jnp.square)


def l1_penalty(params: Any, l1: Any, mask: Mask | Callable[[Any], Mask] = decay_mask) -> jax.Array:
    """``l1 · Σ |w|`` over the masked leaves of ``params`` (the lecture's L1 term).

    Its (sub)gradient is ``l1 · sign(w)`` (0 at w = 0, as ``jax.grad`` of ``abs`` gives), what
    :func:`gradchain.add_l1_penalty` adds.

    Args:
      params: a pytree of arrays.
      l1: ≥ 0.
      mask: which leaves count (default :func:`gradchain.decay_mask`).

    Returns:
      A scalar.
    """
    _checks.number("l1_penalty", "l1", l1, low=0.0)
    return l1 * _total(_selected_leaves("l1_penalty", params, mask), jnp.abs)


def elastic_net_penalty(
    params: Any, l1: Any, l2: Any, mask: Mask | Callable[[Any], Mask] = decay_mask
) -> jax.Array:
    """``l1 · Σ |w| + l2 · Σ w²`` (elastic net, Zou & Hastie 2005) over the masked leaves.

    Its gradient is ``l1 · sign(w) + 2 · l2 · w``, what :func:`gradchain.add_elastic_net_penalty`
    adds.

    Args:
      params: a pytree of arrays.
      l1: ≥ 0.
      l2: ≥ 0.
      mask: which leaves count (default :func:`gradchain.decay_mask`).

    Returns:
      A scalar.
    """
    _checks.number("elastic_net_penalty", "l1", l1, low=0.0)
    _checks.number("elastic_net_penalty", "l2", l2, low=0.0)
    leaves = _selected_leaves("elastic_net_penalty", params, mask)
    return l1 * _total(leaves, jnp.abs) + l2 * _total(leaves, jnp.square)
