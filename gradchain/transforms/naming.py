"""Optax's names for gradchain's pieces, and the hyperparameters an optimizer exposes.

Two small tools that let a named optimizer reuse gradchain's transforms and still read like
Optax's state:

* :func:`renamed` gives an existing transformation Optax's names: its hyperparameters
  (``add_decayed_weights``' ``weight_decay`` is Adafactor's ``weight_decay_rate``) and, by
  retyping its state positionally, its buffer fields (``moment``'s ``moment`` is LAMB's ``mu``,
  ``scale_by_momentum``'s ``velocity`` is LARS's ``trace``), so that ``gc.tree_get(state, "mu")``
  finds them;
* :func:`live_transformation` is :func:`gradchain.transforms._base.transformation` for a formula
  with several arguments, of which an optimizer exposes only some as hyperparameters (stored in
  the state under the optimizer's names) and fixes the others as constants (LAMB's trust ratio
  has ``eps = 0`` and no hyperparameter of its own, so ``set_hyperparams(eps=...)`` reaches only
  Adam's ``eps``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax.numpy as jnp

from gradchain import hyper
from gradchain.core import GradientTransformation, GradientTransformationExtraArgs, accepted_extra_args
from gradchain.transforms._base import transformation

__all__ = ["live_transformation", "renamed"]


def _is_named_tuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def _rename_hyperparams(state: Any, mapping: Mapping[str, str]) -> Any:
    """``state`` with every ``hyperparams`` key ``old`` renamed ``mapping[old]``, at any depth."""
    if _is_named_tuple(state):
        changes = {field: _rename_hyperparams(getattr(state, field), mapping) for field in state._fields}
        if "hyperparams" in state._fields and isinstance(state.hyperparams, dict):
            changes["hyperparams"] = {mapping.get(k, k): v for k, v in state.hyperparams.items()}
        return type(state)(**changes)
    if isinstance(state, tuple):
        return tuple(_rename_hyperparams(child, mapping) for child in state)
    if isinstance(state, list):
        return [_rename_hyperparams(child, mapping) for child in state]
    if isinstance(state, dict):
        return {k: _rename_hyperparams(v, mapping) for k, v in state.items()}
    return state


def renamed(
    inner: GradientTransformation,
    retype: tuple[type, type] | None = None,
    **hyperparams: str,
) -> GradientTransformationExtraArgs:
    """``inner`` with Optax's names: hyperparameters renamed, buffer fields retyped.

    Args:
      inner: any transformation whose state holds gradchain ``hyperparams`` dicts.
      retype: ``(InnerState, OuterState)``: two ``NamedTuple`` types with the same number of
        fields; ``inner``'s top-level state (an ``InnerState``) is shown as an ``OuterState``,
        field by field in order (``(MomentState, ScaleByAdamMuState)`` shows ``moment`` as
        ``mu``).
      **hyperparams: ``old="new"``: the hyperparameter ``old`` of ``inner`` is stored, read and set
        as ``new``.

    Returns:
      A transformation computing exactly what ``inner`` computes.

    Example:
      >>> import jax.numpy as jnp, gradchain as gc
      >>> from gradchain.transforms.naming import renamed
      >>> tx = renamed(gc.add_decayed_weights(1e-3), weight_decay="weight_decay_rate")
      >>> sorted(gc.get_hyperparams(tx.init(jnp.zeros(2))))
      ['weight_decay_rate']
    """
    forward = dict(hyperparams)
    backward = {new: old for old, new in forward.items()}
    if len(backward) != len(forward):
        raise ValueError(f"renamed: two hyperparameters would get the same name: {forward}")
    if retype is not None:
        inner_type, outer_type = retype
        if len(inner_type._fields) != len(outer_type._fields):
            raise ValueError(
                f"renamed: {inner_type.__name__} has fields {inner_type._fields} but "
                f"{outer_type.__name__} has {outer_type._fields}; they must correspond one to one"
            )

    def outward(state):
        state = _rename_hyperparams(state, forward) if forward else state
        if retype is not None:
            if not isinstance(state, retype[0]):
                raise TypeError(f"renamed: expected the inner state to be a {retype[0].__name__}, got {type(state).__name__}")
            state = retype[1](*state)
        return state

    def inward(state):
        if retype is not None:
            if not isinstance(state, retype[1]):
                raise TypeError(
                    f"state must be a {retype[1].__name__} (from this transformation's init), "
                    f"got {type(state).__name__}"
                )
            state = retype[0](*state)
        return _rename_hyperparams(state, backward) if backward else state

    def init(params):
        return outward(inner.init(params))

    def update(updates, state, params=None, **extra_args):
        updates, state = inner.update(updates, inward(state), params, **accepted_extra_args(inner.update, extra_args))
        return updates, outward(state)

    return GradientTransformationExtraArgs(init, update)


def live_transformation(
    state_type: type,
    formula: Callable[..., tuple[Any, dict[str, Any]]],
    values: Mapping[str, Any],
    names: Mapping[str, str | None] | None = None,
    init_buffers: Callable[[Any], dict[str, Any]] = lambda params: {},
) -> GradientTransformation:
    """:func:`~gradchain.transforms._base.transformation` with only some arguments live.

    ``formula(updates, buffers, params, count, **arguments) -> (updates, buffers)`` receives every
    argument of ``values`` by its own name.  ``names`` maps an argument to the name it is stored
    under in ``state.hyperparams`` (default: its own), or to ``None`` to make it a constant of this
    transformation (not stored, not settable: for the arguments an optimizer does not expose).

    Args:
      state_type: the state ``NamedTuple`` (fields ``count``, ``hyperparams`` and buffers).
      formula: the update rule.
      values: ``{argument: value}`` (numbers, arrays or schedules).
      names: ``{argument: stored name or None}``.
      init_buffers: ``params -> {field: buffer}``.

    Returns:
      A transformation whose state holds the live arguments under their stored names.
    """
    names = dict(names or {})
    unknown = sorted(set(names) - set(values))
    if unknown:
        raise ValueError(f"names {unknown} are not arguments of this formula ({sorted(values)})")
    stored = {arg: names.get(arg, arg) for arg in values}
    live = [arg for arg in values if stored[arg] is not None]
    constants = {arg: value for arg, value in values.items() if stored[arg] is None}
    hypers = {name: values[arg] for arg in live if (name := stored[arg]) is not None}

    def step(updates, buffers, params, count, *live_values):
        arguments = {arg: _at(value, count) for arg, value in constants.items()}
        arguments.update(zip(live, live_values))
        return formula(updates, buffers, params, count, **arguments)

    return transformation(state_type, step, hypers, init_buffers)


def _at(value: Any, count: Any) -> Any:
    """A constant argument's value at update ``count`` (a schedule evaluated there)."""
    if callable(value) and not hasattr(value, "shape"):
        return jnp.asarray(value(count), hyper.float_dtype())
    return value
