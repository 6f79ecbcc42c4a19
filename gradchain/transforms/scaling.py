"""Scaling by a factor or by the (negated) learning rate."""

from __future__ import annotations

from typing import NamedTuple

import jax

from gradchain import hyper
from gradchain.core import GradientTransformation
from gradchain.transforms._base import cast_like, transformation


class ScaleState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict


def scale(factor: hyper.Hyperparameter, *, name: str = "factor") -> GradientTransformation:
    """``u <- factor * u``.

    Args:
      factor: any finite number, array or schedule.
      name: the key of the factor in ``get_hyperparams``.

    Returns:
      A transformation with state ``ScaleState(count, hyperparams)``.
    """
    hyper.check("factor", factor)

    def step(updates, buffers, params, count, factor):
        return jax.tree.map(lambda u: u * cast_like(factor, u), updates), buffers

    return transformation(ScaleState, step, {name: factor})


def scale_by_learning_rate(learning_rate: hyper.Hyperparameter) -> GradientTransformation:
    """``u <- -learning_rate * u``, so that applying it takes the descent step ``x -= lr * u``.

    Args:
      learning_rate: finite and ≥ 0; a number, an array or a schedule ``step -> value``.

    Returns:
      A transformation with state ``ScaleState(count, hyperparams={"learning_rate": ...})``.
    """
    hyper.check("learning_rate", learning_rate, low=0.0)

    def step(updates, buffers, params, count, learning_rate):
        return jax.tree.map(lambda u: u * cast_like(-learning_rate, u), updates), buffers

    return transformation(ScaleState, step, {"learning_rate": learning_rate})
