"""Model ensembles: train M independent members at once, average their probabilities.

"Train multiple independent models; at test time average their predicted probability
distributions, then choose the argmax" — the lecture's ~2% for free.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class EnsembleReport(NamedTuple):
    member_accuracies: jax.Array  # [M]
    ensemble_accuracy: float
    gain: float  # ensemble accuracy minus the mean member accuracy


def ensemble_probabilities(apply: Callable[[Any, jax.Array], jax.Array], stacked_params: Any, x: jax.Array) -> jax.Array:
    """Mean over members of softmax(apply(params_m, x)); ``stacked_params`` has a leading M axis."""
    return jnp.mean(jax.vmap(lambda p: jax.nn.softmax(apply(p, x)))(stacked_params), axis=0)


def evaluate_ensemble(apply, stacked_params, x, y) -> EnsembleReport:
    members = jax.vmap(lambda p: jnp.mean(jnp.argmax(apply(p, x), -1) == y))(stacked_params)
    ensemble = float(jnp.mean(jnp.argmax(ensemble_probabilities(apply, stacked_params, x), -1) == y))
    return EnsembleReport(members, ensemble, ensemble - float(jnp.mean(members)))
