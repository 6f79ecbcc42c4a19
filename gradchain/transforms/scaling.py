"""Scaling by a factor or by the (negated) learning rate."""

from __future__ import annotations

from typing import NamedTuple

import jax

from gradchain import hyper
from gradchain.core import GradientTransformation
from gradchain.transforms._base import cast_like, check_bool, transformation


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


def scale_by_learning_rate(
    learning_rate: hyper.Hyperparameter, *, flip_sign: bool = True, name: str = "learning_rate"
) -> GradientTransformation:
    """``u <- -learning_rate * u``, so that applying it takes the descent step ``x -= lr * u``
    (``flip_sign=False``: ``u <- +learning_rate * u``, as Optax's ``flip_sign``).

    Args:
      learning_rate: finite and ≥ 0; a number, an array or a schedule ``step -> value``.
      flip_sign: negate, so that applying the update descends.
      name: the key in ``get_hyperparams`` (Muon's AdamW branch: ``"adam_learning_rate"``).

    Returns:
      A transformation with state ``ScaleState(count, hyperparams={name: ...})``.
    """
    hyper.check(name, learning_rate, low=0.0)
    sign = -1 if check_bool("flip_sign", flip_sign) else 1

    def step(updates, buffers, params, count, learning_rate):
        return jax.tree.map(lambda u: u * cast_like(sign * learning_rate, u), updates), buffers

    return transformation(ScaleState, step, {name: learning_rate})
