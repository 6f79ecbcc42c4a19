"""One helper that every transformation with hyperparameters is built from.

A transformation's state is a typed ``NamedTuple`` with

* ``count``: the number of updates done so far (int32, saturating);
* ``hyperparams``: ``{name: value}``, the values the next update will use
  (see :mod:`gradchain.hyper`);
* any number of *buffers*: pytrees with the structure of the parameters (moments, velocities).

``transformation`` writes the ``init``/``update`` plumbing once, so that each transform only
states its formula.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp

from gradchain import hyper
from gradchain.core import GradientTransformation, check_same_structure


def transformation(
    state_type: type,
    step: Callable[..., tuple[Any, dict[str, Any]]],
    hypers: dict[str, hyper.Hyperparameter],
    init_buffers: Callable[[Any], dict[str, Any]] = lambda params: {},
) -> GradientTransformation:
    """Build the ``(init, update)`` pair of one formula.

    ``step(updates, buffers, params, count, *hyperparameter_values) -> (updates, buffers)``
    receives the hyperparameter values read from the state, as arrays, in the order of
    ``hypers``; ``count`` is the index of this update (0 for the first).
    """

    def init(params):
        return state_type(
            count=jnp.zeros([], jnp.int32),
            hyperparams={name: hyper.initial(value) for name, value in hypers.items()},
            **init_buffers(params),
        )

    def update(updates, state, params=None):
        if not isinstance(state, state_type):
            raise TypeError(
                f"state must be a {state_type.__name__} (from this transformation's init), "
                f"got {type(state).__name__}"
            )
        if set(state.hyperparams) != set(hypers):
            raise ValueError(
                f"state belongs to another transformation: it holds hyperparameters "
                f"{sorted(state.hyperparams)}, this one expects {sorted(hypers)}"
            )
        values = [state.hyperparams[name] for name in hypers]
        buffers = {f: getattr(state, f) for f in state._fields if f not in ("count", "hyperparams")}
        for field, buffer in buffers.items():
            check_same_structure(updates, buffer, name="updates", reference_name=f"state.{field}")
        updates, buffers = step(updates, buffers, params, state.count, *values)
        next_values = {
            name: hyper.next_value(value, state.hyperparams[name], state.count)
            for name, value in hypers.items()
        }
        return updates, state_type(
            count=hyper.increment(state.count), hyperparams=next_values, **buffers
        )

    return GradientTransformation(init, update)


def cast_like(value, leaf):
    """A hyperparameter value in the dtype of the leaf it multiplies (keeps bf16 as bf16)."""
    return jnp.asarray(value).astype(jnp.asarray(leaf).dtype)


def require_params(params, transform: str) -> None:
    if params is None:
        raise ValueError(
            f"{transform} needs the current parameters: call update(updates, state, params)"
        )
