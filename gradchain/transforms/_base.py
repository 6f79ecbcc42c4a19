"""The plumbing every transformation with hyperparameters is built from.

A transformation's state is a typed ``NamedTuple`` with

* ``count``: the number of updates done so far (int32, saturating);
* ``hyperparams``: ``{name: value}``, the values the next update will use
  (see :mod:`gradchain.hyper`);
* any number of other fields: *buffers* with the structure of the parameters (moments,
  velocities) and, for the parameter-free methods, scalars (a distance estimate) or the states of
  inner transformations.

``transformation`` writes the ``init``/``update`` plumbing once, so that each transform only
states its formula; the argument checks below give every constructor the same error messages.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradchain import hyper
from gradchain.core import GradientTransformation, GradientTransformationExtraArgs, check_same_structure

_RESERVED = ("count", "hyperparams")


def transformation(
    state_type: type,
    step: Callable[..., tuple[Any, dict[str, Any]]],
    hypers: dict[str, hyper.Hyperparameter],
    init_buffers: Callable[[Any], dict[str, Any]] = lambda params: {},
    *,
    shaped: Iterable[str] | None = None,
    extra_args: bool = False,
) -> GradientTransformation:
    """Build the ``(init, update)`` pair of one formula.

    ``step(updates, buffers, params, count, *hyperparameter_values, **extra) -> (updates, buffers)``
    receives the hyperparameter values read from the state, as arrays, in the order of
    ``hypers``; ``count`` is the index of this update (0 for the first).  ``init_buffers(params)``
    returns the state's fields other than ``count`` and ``hyperparams``.

    Args:
      state_type: the state ``NamedTuple`` (fields ``count``, ``hyperparams`` and the buffers).
      step: the update rule.
      hypers: ``{name: number, array or schedule}``, stored in ``state.hyperparams``.
      init_buffers: ``params -> {field: value}``.
      shaped: the fields that must have the structure of the updates (checked at every update);
        default: all of them.  The others hold scalars or inner states.
      extra_args: ``update`` takes keyword arguments beyond ``params`` (a loss value, a key) and
        hands them to ``step``.
    """
    shaped_fields = None if shaped is None else tuple(shaped)

    def init(params):
        return state_type(count=jnp.zeros([], jnp.int32), hyperparams=initial_hyperparams(hypers), **init_buffers(params))

    def _update(updates, state, params, extra):
        check_state(state, state_type, hypers)
        buffers = {f: getattr(state, f) for f in state._fields if f not in _RESERVED}
        for field in buffers if shaped_fields is None else shaped_fields:
            check_same_structure(updates, buffers[field], name="updates", reference_name=f"state.{field}")
        values = [state.hyperparams[name] for name in hypers]
        updates, buffers = step(updates, buffers, params, state.count, *values, **extra)
        return updates, state_type(
            count=hyper.increment(state.count),
            hyperparams=next_hyperparams(hypers, state.hyperparams, state.count),
            **buffers,
        )

    if extra_args:

        def update_extra(updates, state, params=None, **extra):
            return _update(updates, state, params, extra)

        return GradientTransformationExtraArgs(init, update_extra)

    def update(updates, state, params=None):
        return _update(updates, state, params, {})

    return GradientTransformation(init, update)


def initial_hyperparams(hypers: dict[str, hyper.Hyperparameter]) -> dict[str, jax.Array]:
    """``{name: initial value as an array}``: what ``init`` stores in ``state.hyperparams``."""
    return {name: hyper.initial(value) for name, value in hypers.items()}


def next_hyperparams(hypers: dict[str, hyper.Hyperparameter], stored: dict[str, Any], count: jax.Array) -> dict:
    """The values the update after update ``count`` uses (schedules advanced, constants kept)."""
    return {name: hyper.next_value(value, stored[name], count) for name, value in hypers.items()}


def check_state(state: Any, state_type: type, hypers: Iterable[str]) -> None:
    """Refuse a state that another transformation's ``init`` made."""
    if not isinstance(state, state_type):
        raise TypeError(
            f"state must be a {state_type.__name__} (from this transformation's init), got {type(state).__name__}"
        )
    if set(state.hyperparams) != set(hypers):
        raise ValueError(
            f"state belongs to another transformation: it holds hyperparameters {sorted(state.hyperparams)}, "
            f"this one expects {sorted(hypers)}"
        )


def cast_like(value, leaf):
    """A hyperparameter value in the dtype of the leaf it multiplies (keeps bf16 as bf16)."""
    return jnp.asarray(value).astype(jnp.asarray(leaf).dtype)


def require_params(params, transform: str) -> None:
    if params is None:
        raise ValueError(
            f"{transform} needs the current parameters: call update(updates, state, params)"
        )


# ---------------------------------------------------------------------------------------------
# Argument checks for what is not a hyperparameter (those are :func:`gradchain.hyper.check`'s).


def check_bool(name: str, value: Any) -> bool:
    """A Python (or NumPy) bool, returned as a Python bool; anything else is a ``TypeError``."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r} of type {type(value).__name__}")
    return bool(value)


def check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def canonical_dtype(name: str, dtype: Any) -> Any:
    """A storage dtype argument (``mu_dtype``, ``accumulator_dtype``): ``None`` (each
    parameter's own) or anything ``jnp.dtype`` reads."""
    if dtype is None:
        return None
    try:
        return jnp.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"{name} must be a dtype or None, got {dtype!r}") from err


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_transformation(name: str, tx: Any) -> None:
    """A ``TypeError`` naming ``name`` unless ``tx`` has callable ``init`` and ``update``."""
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        raise TypeError(
            f"{name} must be a gradient transformation with `init` and `update` (gradchain's or "
            f"Optax's), got {tx!r} of type {type(tx).__name__}"
        )
