"""Normalising updates: centring each leaf, dividing by the update norm.

=======================================  ======================================================
piece                                    formula
=======================================  ======================================================
``centralize()``                         ``u <- u - mean(u over all axes but the first)``, per
                                         leaf of rank ≥ 2 (Yong et al., ECCV 2020)
``normalize_by_update_norm(s, eps)``     ``u <- s · u / (‖u‖ + eps)``, ‖·‖ over the whole tree
=======================================  ======================================================
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.core import EmptyState, GradientTransformation
from gradchain.state import short_repr
from gradchain.transforms._base import cast_like
from gradchain.transforms.clipping import global_norm
from gradchain.transforms.naming import live_transformation

__all__ = ["NormalizeByUpdateNormState", "centralize", "normalize_by_update_norm"]


class NormalizeByUpdateNormState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict


NormalizeByUpdateNormState.__repr__ = lambda self: short_repr(self)  # type: ignore[method-assign]


def _stateless(fn) -> GradientTransformation:
    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(fn, updates), state

    return GradientTransformation(init, update)


def _subtract_mean(u):
    if jnp.ndim(u) > 1:
        return u - u.mean(tuple(range(1, u.ndim)), keepdims=True)
    return u


def centralize() -> GradientTransformation:
    """Gradient centralisation (Yong et al., ECCV 2020, eq. 4): subtract from each leaf of rank
    ≥ 2 its mean over every axis but the first; vectors and scalars pass unchanged.

    Per leaf, with each leaf's real shape (on packed or :mod:`gradchain.flat` buffers every leaf
    would be a vector and nothing would change).

    Returns:
      A stateless transformation (state ``EmptyState()``).
    """
    return _stateless(_subtract_mean)


def normalize_by_update_norm(
    scale_factor: hyper.Hyperparameter = 1.0, eps: hyper.Hyperparameter = 1e-6
) -> GradientTransformation:
    """Divide by the norm of the whole update: ``u <- u / ((‖u‖ + eps) / scale_factor)``.

    The norm is over every leaf together (as :func:`gradchain.global_norm`), so the result has
    norm ≈ ``|scale_factor|``: normalised gradient descent (Nesterov 1984; Hazan et al. 2015).

    Args:
      scale_factor: any finite number, array or schedule (``-lr`` for a descent step).
      eps: ≥ 0, added to the norm.

    Returns:
      A transformation with state ``NormalizeByUpdateNormState(count, hyperparams)``.
    """
    hyper.check("scale_factor", scale_factor)
    hyper.check("eps", eps, low=0.0)

    def formula(updates, buffers, params, count, scale_factor, eps):
        norm = global_norm(updates)
        denominator = (norm + cast_like(eps, norm)) / cast_like(scale_factor, norm)
        return jax.tree.map(lambda u: u / denominator.astype(u.dtype), updates), buffers

    return live_transformation(
        NormalizeByUpdateNormState, formula, {"scale_factor": scale_factor, "eps": eps}
    )
