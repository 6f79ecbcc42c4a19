"""The transformation algebra: a gradient transformation is a pair of pure functions.

    init(params) -> state
    update(updates, state, params=None) -> (updates, new_state)

An optimizer is a composition of such pairs.  Two combinators build every optimizer of the
lecture:

* :func:`chain` runs transformations one after the other (``g -> t1 -> t2 -> ...``);
* :func:`gradchain.ratio` gives the *same* incoming updates to two transformations and divides
  their outputs leaf by leaf.  Adam needs it: its first and second moments are statistics of the
  same raw gradient, which a purely sequential chain cannot express.

The pair is structurally the same as Optax's ``GradientTransformation`` (a ``NamedTuple`` of
``init`` and ``update``), so transformations cross freely between the two libraries.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

Params = Any  # a pytree of arrays
Updates = Any  # a pytree of arrays with the structure of Params
OptState = Any  # a pytree of arrays (usually NamedTuples)


class InitFn(Protocol):
    def __call__(self, params: Params) -> OptState: ...


class UpdateFn(Protocol):
    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None
    ) -> tuple[Updates, OptState]: ...


class UpdateFnExtraArgs(Protocol):
    def __call__(
        self, updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]: ...


class GradientTransformation(NamedTuple):
    """A pure ``(init, update)`` pair; see the module docstring."""

    init: InitFn
    update: UpdateFn


class GradientTransformationExtraArgs(GradientTransformation):
    """A transformation whose ``update`` takes keyword arguments beyond ``params``.

    ``update(updates, state, params=None, **extra_args)``: the extra arguments carry what a step
    needs besides the gradient (a loss ``value=`` for a plateau schedule, curvature statistics for
    K-FAC).  :func:`chain` forwards them, as ``optax.chain`` does for Optax's class of this name.
    """

    update: UpdateFnExtraArgs  # pyright: ignore[reportIncompatibleVariableOverride] - a wider signature, as Optax's


def accepted_extra_args(update: Any, extra_args: dict[str, Any]) -> dict[str, Any]:
    """The subset of ``extra_args`` that ``update`` accepts by its signature.

    An ``update`` with ``**kwargs`` receives them all; one with named keyword parameters receives
    those; a plain ``update(updates, state, params=None)`` receives none (it never asked for them).
    """
    if not extra_args:
        return {}
    try:
        parameters = inspect.signature(update).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: assume the plain protocol
        return {}
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return dict(extra_args)
    names = {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return {k: v for k, v in extra_args.items() if k in names}


class EmptyState(NamedTuple):
    """The state of a transformation that keeps none."""


def identity() -> GradientTransformation:
    """Pass updates through unchanged.

    Returns:
      A transformation with state ``EmptyState()``.
    """

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        return updates, state

    return GradientTransformation(init, update)


def _check_transformations(name: str, transforms: Sequence[Any]) -> None:
    for i, tx in enumerate(transforms):
        if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
            raise TypeError(
                f"{name}[{i}] must be a gradient transformation with `init` and `update`, "
                f"got {tx!r} of type {type(tx).__name__}"
            )


def chain(*transforms: GradientTransformation) -> GradientTransformationExtraArgs:
    """Apply ``transforms`` in sequence: the output updates of one are the input of the next.

    The state is the tuple of the inner states, as in ``optax.chain``, so a gradchain chain and an
    Optax chain hold the same state for the same transformations.  Keyword arguments given to
    ``update`` beyond ``params`` (``value=`` for ``optax.contrib.reduce_on_plateau``, curvature
    statistics for K-FAC) reach every inner transformation whose ``update`` accepts them by name
    or through ``**kwargs``; the others never see them (see :func:`accepted_extra_args`).

    Args:
      *transforms: gradient transformations (gradchain's or Optax's), applied left to right.

    Returns:
      A :class:`GradientTransformationExtraArgs` whose state is the tuple of the inner states.

    Example:
      >>> import jax.numpy as jnp, gradchain as gc
      >>> tx = gc.chain(gc.clip(1.0), gc.scale(-0.5))
      >>> updates, _ = tx.update(jnp.array([3.0, -0.2]), tx.init(jnp.zeros(2)))
      >>> updates
      Array([-0.5,  0.1], dtype=float32)
    """
    _check_transformations("transforms", transforms)

    def init(params):
        return tuple(tx.init(params) for tx in transforms)

    def update(updates, state, params=None, **extra_args):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            raise ValueError(
                f"state does not belong to this chain of {len(transforms)} transformations: "
                f"got {type(state).__name__} of length {len(state) if isinstance(state, tuple) else '?'}"
            )
        new_states = []
        for tx, s in zip(transforms, state):
            updates, s = tx.update(updates, s, params, **accepted_extra_args(tx.update, extra_args))
            new_states.append(s)
        return updates, tuple(new_states)

    return GradientTransformationExtraArgs(init, update)


def apply_updates(params: Params, updates: Updates) -> Params:
    """Return ``params + updates``, leaf by leaf, keeping each parameter's dtype.

    Args:
      params: a pytree of arrays (a leaf that is not an array, such as an Equinox model's
        activation function, is kept when its update is ``None``).
      updates: the optimizer's output, with the structure of ``params`` (``None`` where a leaf
        has no update).

    Returns:
      The new parameters, with the structure and dtypes of ``params``.
    """
    is_none = lambda x: x is None
    if jax.tree.structure(updates, is_leaf=is_none) != jax.tree.structure(params, is_leaf=is_none):
        check_same_structure(updates, params, name="updates", reference_name="params")
    return jax.tree.map(_apply_leaf, params, updates, is_leaf=is_none)


def _apply_leaf(p: Any, u: Any) -> Any:
    if p is None or u is None:
        return p
    return jnp.asarray(p + u).astype(jnp.asarray(p).dtype)


def check_same_structure(tree: Any, reference: Any, *, name: str, reference_name: str) -> None:
    """Raise a ``ValueError`` naming both trees when their structures differ.

    Runs at trace time only (structures are static), so it costs nothing inside ``jit``.
    """
    got, want = jax.tree.structure(tree), jax.tree.structure(reference)
    if got != want:
        raise ValueError(
            f"{name} do not have the structure of {reference_name}:\n"
            f"  {name}: {got}\n  {reference_name}: {want}\n"
            "Pass the updates of the same parameters the state was initialised with."
        )


# ---------------------------------------------------------------------------------------------
# The stand-in for the parameters in ``tree_map_params``.


class ParamsPlaceholder:
    """Stands for the parameter tree in :func:`gradchain.tree_map_params` (a pytree with no leaves)."""


jax.tree_util.register_pytree_node(ParamsPlaceholder, lambda p: ((), None), lambda aux, children: ParamsPlaceholder())


def is_placeholder(params: Any) -> bool:
    """True for the leafless stand-in ``tree_map_params`` (gradchain's or Optax's) passes to init."""
    if isinstance(params, ParamsPlaceholder):
        return True
    kind = type(params)
    return kind.__name__ == "_ParamsPlaceholder" and kind.__module__.startswith("optax")
