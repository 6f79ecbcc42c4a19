"""The plumbing the contrib transforms share: :func:`transformation` with scalar state fields, and
the few tree reductions (sums, norms, inner products) their formulas use.

``gradchain.transforms._base.transformation`` checks that every buffer of a state has the
structure of the parameters.  The parameter-free methods (DoG, Prodigy, D-Adaptation, ...) also
keep scalars (a distance estimate, a running sum of squared norms) and other states (Sophia's
Hessian estimator, schedule-free's base optimizer) next to their parameter-shaped buffers.  The
helper here is the same ``init``/``update`` plumbing (``count`` and ``hyperparams`` in the state,
hyperparameters read from it, schedules advanced at each update) with ``shaped=`` naming the
fields that must have the parameters' structure, and optional extra ``update`` arguments.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable
from typing import Any, TypeGuard

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.core import GradientTransformation, GradientTransformationExtraArgs, check_same_structure

_RESERVED = ("count", "hyperparams")


def transformation(
    state_type: type,
    step: Callable[..., tuple[Any, dict[str, Any]]],
    hypers: dict[str, hyper.Hyperparameter],
    init_fields: Callable[[Any, dict[str, jax.Array]], dict[str, Any]] = lambda params, hp: {},
    *,
    shaped: Iterable[str] | None = None,
    extra_args: bool = False,
) -> GradientTransformation:
    """Build the ``(init, update)`` pair of one formula whose state has scalar fields too.

    ``init_fields(params, hp)`` returns the state's fields other than ``count`` and
    ``hyperparams`` (``hp``: the initial hyperparameter values, as arrays);
    ``step(updates, fields, params, count, *values, **extra) -> (updates, fields)`` receives the
    hyperparameter values read from the state, in the order of ``hypers``.  The fields named in
    ``shaped`` (default: all) must have the structure of the updates.  With ``extra_args`` the
    ``update`` takes keyword arguments beyond ``params`` and hands them to ``step``.
    """
    shaped_fields = None if shaped is None else tuple(shaped)

    def init(params):
        hp = {name: hyper.initial(value) for name, value in hypers.items()}
        return state_type(count=jnp.zeros([], jnp.int32), hyperparams=hp, **init_fields(params, hp))

    def _update(updates, state, params, extra):
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
        fields = {f: getattr(state, f) for f in state._fields if f not in _RESERVED}
        for field in fields if shaped_fields is None else shaped_fields:
            check_same_structure(updates, fields[field], name="updates", reference_name=f"state.{field}")
        updates, fields = step(updates, fields, params, state.count, *values, **extra)
        next_values = {
            name: hyper.next_value(value, state.hyperparams[name], state.count) for name, value in hypers.items()
        }
        return updates, state_type(count=hyper.increment(state.count), hyperparams=next_values, **fields)

    if extra_args:

        def update_extra(updates, state, params=None, **extra):
            return _update(updates, state, params, extra)

        return GradientTransformationExtraArgs(init, update_extra)

    def update(updates, state, params=None):
        return _update(updates, state, params, {})

    return GradientTransformation(init, update)


def is_named_tuple(node: Any) -> TypeGuard[Any]:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r} of type {type(value).__name__}")
    return value


def check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_transformation(name: str, tx: Any) -> None:
    if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
        raise TypeError(f"{name} must be a gradient transformation with `init` and `update`, got {tx!r}")


def lowest_dtype(tree: Any) -> jnp.dtype:
    """The lowest-precision dtype among the leaves (Optax's ``tree.dtype(tree, "lowest")``): the
    dtype Optax keeps its scalar statistics in, so that they never promote the updates."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.asarray(leaves).dtype
    dtypes = [jnp.asarray(x).dtype for x in leaves]
    return functools.reduce(lambda a, b: b if jnp.finfo(b).bits < jnp.finfo(a).bits else a, dtypes)


def tree_sum(tree: Any) -> jax.Array:
    """``Σ`` over every element of every leaf (leaf sums added in leaf order, as Optax)."""
    return jnp.asarray(jax.tree.reduce(operator.add, jax.tree.map(jnp.sum, tree), initializer=0))


def tree_norm(tree: Any, squared: bool = False) -> jax.Array:
    """The Euclidean norm of the whole tree, ``‖x‖₂`` (or ``‖x‖₂²``)."""
    sq = tree_sum(jax.tree.map(lambda x: jnp.square(x.real) + jnp.square(x.imag), tree))
    return jnp.asarray(sq if squared else jnp.sqrt(sq))


def tree_vdot(a: Any, b: Any) -> jax.Array:
    """``⟨a, b⟩`` over the whole tree, each leaf's product at the highest matmul precision."""

    def leaf(x, y):
        x, y = jnp.asarray(x), jnp.asarray(y)
        if jnp.iscomplexobj(x):
            x = jnp.conj(x)
        return jnp.tensordot(x, y, x.ndim, precision=jax.lax.Precision.HIGHEST)

    return jnp.asarray(jax.tree.reduce(operator.add, jax.tree.map(leaf, a, b), initializer=0))


def copy_tree(tree: Any, dtype: Any = None) -> Any:
    """A copy of every leaf (a state owns its buffers: donating it never frees the caller's)."""
    return jax.tree.map(lambda x: jnp.array(x, dtype=dtype, copy=True), tree)


def zeros_like(tree: Any, dtype: Any = None) -> Any:
    return jax.tree.map(lambda x: jnp.zeros_like(x, dtype=dtype), tree)
