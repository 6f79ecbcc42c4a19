"""Reading, editing and resetting optimizer states.

A gradchain state is a tree of typed ``NamedTuple``\\ s: every transformation with
hyperparameters holds ``count`` (its update count) and ``hyperparams`` (``{name: value}``), plus
its buffers (moments, velocities) with the structure of the parameters.  The helpers here read
and write that tree by name, the way ``optax.tree_utils`` does, with two differences that make
them work on gradchain's nesting:

* ``count`` occurs once per transformation in a chain (all equal in the named optimizers):
  :func:`tree_get` returns the outermost one and :func:`tree_set` sets them all;
* a hyperparameter name means the hyperparameter, wherever it is stored.

``optax.tree_utils.tree_get(state, "b2")``, ``tree_set`` and ``tree_map_params`` also work on
gradchain states (``"count"`` is the one key Optax's ``tree_get`` finds several times).

Every state class prints short: shapes for buffers, values for scalars
(``MomentState(count=3, hyperparams={b1: 0.9}, moment={w: f32[3,2]})``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from gradchain import hyper
from gradchain.core import ParamsPlaceholder
from gradchain.multi_tensor import MultiTensorState, Packed

__all__ = ["reset_state", "short_repr", "tree_get", "tree_map_params", "tree_set"]


def _is_named_tuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def _matches(state: Any, key: str, path: str = "") -> Iterator[tuple[str, Any]]:
    """``(path, value)`` of every NamedTuple field or dict entry named ``key``, outermost first."""
    if _is_named_tuple(state):
        if key in state._fields:
            yield f"{path}.{key}", getattr(state, key)
        for field in state._fields:
            yield from _matches(getattr(state, field), key, f"{path}.{field}")
    elif isinstance(state, (tuple, list)):
        for i, child in enumerate(state):
            yield from _matches(child, key, f"{path}[{i}]")
    elif isinstance(state, dict):
        if key in state:
            yield f"{path}[{key!r}]", state[key]
        for name, child in state.items():
            yield from _matches(child, key, f"{path}[{name!r}]")


def tree_get(state: Any, key: str, default: Any = None) -> Any:
    """The value named ``key`` in ``state``: ``"count"``, a hyperparameter or a buffer field.

    ``tree_get(state, "count")`` is the step count (the outermost ``count``; every
    transformation of a named optimizer counts the same updates); ``tree_get(state, "b2")`` a
    hyperparameter (the value the next update uses); ``tree_get(state, "moment")`` a buffer,
    when only one transformation holds a field of that name.

    Args:
      state: an optimizer state (gradchain's, Optax's or a mix).
      key: a field name, dict key or hyperparameter name.
      default: returned when nothing has that name.

    Returns:
      The value, or ``default``.

    Raises:
      KeyError: several different fields have that name (the message lists their paths).

    Example:
      >>> import jax.numpy as jnp, gradchain as gc
      >>> state = gc.adam(1e-3).init({"w": jnp.zeros((3, 2))})
      >>> float(gc.tree_get(state, "learning_rate")), int(gc.tree_get(state, "count"))
      (0.0010000000474974513, 0)
    """
    hyperparams = hyper.get_hyperparams(state)
    if key in hyperparams:
        return hyperparams[key]
    found = list(_matches(state, key))
    if not found:
        return default
    if key == "count" or len(found) == 1:
        return hyper.unwrap(found[0][1])
    raise KeyError(
        f"{len(found)} fields are named {key!r} in this state: "
        + ", ".join(path for path, _ in found)
        + "; read the one you mean by its path"
    )


def tree_set(state: Any, **values: Any) -> Any:
    """A copy of ``state`` with the named values replaced.

    Hyperparameters are set as :func:`gradchain.set_hyperparams` does (everywhere they are
    stored, in their stored dtype: no recompile); ``count=`` sets every update count; any other
    name replaces every field of that name.

    Args:
      state: an optimizer state.
      **values: ``name=new value``.

    Returns:
      The new state.

    Raises:
      ValueError: a name that occurs nowhere in ``state``.
    """
    known = hyper.get_hyperparams(state)
    hyper_values = {k: v for k, v in values.items() if k in known}
    others = {k: v for k, v in values.items() if k not in known}
    missing = [k for k in others if not any(True for _ in _matches(state, k))]
    if missing:
        raise ValueError(
            f"no field or hyperparameter named {', '.join(map(repr, missing))} in this state; "
            f"its hyperparameters are {sorted(known)}"
        )
    if hyper_values:
        state = hyper.set_hyperparams(state, **hyper_values)
    return _replace_fields(state, others) if others else state


def _replace_fields(state: Any, values: dict[str, Any]) -> Any:
    if _is_named_tuple(state):
        changes = {}
        for field in state._fields:
            if field in values:
                old = getattr(state, field)
                new = values[field]
                if field == "count" or isinstance(old, jax.Array):
                    new = jnp.array(new, dtype=jnp.asarray(old).dtype, copy=True)
                changes[field] = new
            else:
                changes[field] = _replace_fields(getattr(state, field), values)
        return type(state)(**changes)
    if isinstance(state, tuple):
        return tuple(_replace_fields(child, values) for child in state)
    if isinstance(state, list):
        return [_replace_fields(child, values) for child in state]
    if isinstance(state, dict):
        return {k: values[k] if k in values else _replace_fields(v, values) for k, v in state.items()}
    return state


def reset_state(state: Any) -> Any:
    """The state of a fresh start that keeps the hyperparameters: every count and buffer zeroed.

    This is the safe form of Optax's ``jax.tree.map(jnp.zeros_like, state)``, which on a
    gradchain state also zeroes the learning rate, b1, b2 and eps (they live in the state) and
    the offsets of packed buffers, so that the next update is NaN.  ``reset_state`` keeps every
    ``hyperparams`` dict and ``multi_tensor``'s slots as they are, zeroes everything else and
    marks ``apply_if_finite``'s last step finite.  A schedule-driven value restarts from the
    schedule after the first update; for buffers that do not start at zero
    (``adagrad(initial_accumulator_value=0.1)``) call ``tx.init(params)`` instead.

    Args:
      state: an optimizer state (gradchain's; Optax states inside are zeroed leaf by leaf).

    Returns:
      The reset state, with the structure, dtypes and shapes of ``state``.

    Example:
      >>> import jax, jax.numpy as jnp, gradchain as gc
      >>> tx = gc.adam(0.1)
      >>> params = jnp.ones(2)
      >>> _, state = tx.update(jnp.ones(2), tx.init(params), params)
      >>> fresh = gc.reset_state(state)
      >>> int(gc.tree_get(fresh, "count")), float(gc.tree_get(fresh, "learning_rate"))
      (0, 0.10000000149011612)
      >>> jax.tree.map(jnp.zeros_like, state) is not None  # Optax's idiom: zeroes lr too
      True
    """
    if _is_named_tuple(state):
        changes = {}
        for field in state._fields:
            value = getattr(state, field)
            if field == "hyperparams" and isinstance(value, dict):
                changes[field] = value
            elif isinstance(state, MultiTensorState) and field == "slots":
                changes[field] = value
            elif field == "last_finite":
                changes[field] = jnp.ones_like(value)
            else:
                changes[field] = reset_state(value)
        return type(state)(**changes)
    if isinstance(state, tuple):
        return tuple(reset_state(child) for child in state)
    if isinstance(state, list):
        return [reset_state(child) for child in state]
    if isinstance(state, dict):
        return {k: reset_state(v) for k, v in state.items()}
    if state is None:
        return None
    return jax.tree.map(jnp.zeros_like, state)


def tree_map_params(
    initable: Any,
    f: Callable[..., Any],
    state: Any,
    /,
    *rest: Any,
    transform_non_params: Callable[[Any], Any] | None = None,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
    """Apply ``f`` to every leaf of every parameter-shaped buffer in ``state``, as
    ``optax.tree_utils.tree_map_params`` (which works on gradchain's states too).

    A packed state (``multi_tensor`` keeps the many small leaves of a big tree in one flat buffer
    per dtype) holds each parameter-shaped buffer as a :class:`~gradchain.Packed` of those flat
    buffers and the loose big leaves: ``f`` is applied to each of them, which is what an
    element-wise ``f`` (a cast, ``zeros_like``, a scaling, a sharding spec per buffer) means.

    Args:
      initable: the transformation (or its ``init``) that made ``state``.
      f: ``f(leaf, *rest_leaves) -> new leaf``.
      state: the state to map over.
      *rest: trees with the structure of the parameters, passed to ``f`` leaf by leaf (not
        possible on a packed state: its buffers do not have the parameters' structure).
      transform_non_params: applied to every other leaf (counts, hyperparameters, the packing
        slots); default: kept.
      is_leaf: passed to ``jax.tree.map`` over the parameter trees.

    Returns:
      The mapped state.
    """
    init = initable.init if hasattr(initable, "init") else initable
    with_placeholders = init(ParamsPlaceholder())

    def map_params(placeholder_or_value, value):
        if isinstance(placeholder_or_value, ParamsPlaceholder):
            if rest and isinstance(value, Packed):
                raise ValueError(
                    "tree_map_params: this state holds packed buffers (multi_tensor packs the small "
                    "leaves of a tree with many of them into one flat buffer per dtype), so the "
                    "trees in *rest, which have the parameters' structure, cannot be mapped "
                    "alongside them. Map without *rest, or build the optimizer unpacked: "
                    "gc.multi_tensor(gc.chain(...), max_leaf_size=0)."
                )
            return jax.tree.map(f, value, *rest, is_leaf=is_leaf)
        return value if transform_non_params is None else jax.tree.map(transform_non_params, value)

    return jax.tree.map(map_params, with_placeholders, state, is_leaf=lambda v: isinstance(v, ParamsPlaceholder))


# ---------------------------------------------------------------------------------------------
# Short reprs.

_DTYPE_SHORT = {"float32": "f32", "float64": "f64", "float16": "f16", "bfloat16": "bf16",
                "int32": "i32", "int64": "i64", "bool": "bool", "int8": "i8", "uint8": "u8"}


def _array_repr(x: Any) -> str:
    dtype = np.dtype(x.dtype).name if hasattr(x, "dtype") else type(x).__name__
    short = _DTYPE_SHORT.get(dtype, dtype)
    shape = tuple(getattr(x, "shape", ()))
    if shape == () and not isinstance(x, Tracer) and isinstance(x, (jax.Array, np.ndarray, np.generic)):
        try:
            value = np.asarray(x).item()
        except Exception:
            return f"{short}[]"
        return f"{value:.4g}" if isinstance(value, float) else repr(value)
    return f"{short}[{','.join(map(str, shape))}]"


def short_repr(x: Any, depth: int = 0) -> str:
    """A one-line description of a state: arrays as ``f32[3,2]`` (scalars by value)."""
    if depth > 12:
        return "..."
    if isinstance(x, MultiTensorState):
        if x.slots is None:
            slots = "None"
        else:
            packed = sum(slot is not None for slot in x.slots)
            slots = f"<{packed} of {len(x.slots)} leaves packed>"
        return f"MultiTensorState(inner={short_repr(x.inner, depth + 1)}, slots={slots})"
    if isinstance(x, Packed):
        groups = ", ".join(f"{k}: {_array_repr(v)}" for k, v in x.groups.items())
        return f"Packed({{{groups}}}, loose={short_repr(x.loose, depth + 1)})"
    if _is_named_tuple(x):
        fields = ", ".join(f"{f}={short_repr(getattr(x, f), depth + 1)}" for f in x._fields)
        return f"{type(x).__name__}({fields})"
    if isinstance(x, Mapping):  # a dict, or Flax NNX's State
        return "{" + ", ".join(f"{k}: {short_repr(v, depth + 1)}" for k, v in x.items()) + "}"
    if isinstance(x, tuple):
        inner = ", ".join(short_repr(v, depth + 1) for v in x)
        return f"({inner},)" if len(x) == 1 else f"({inner})"
    if isinstance(x, list):
        return "[" + ", ".join(short_repr(v, depth + 1) for v in x) + "]"
    if isinstance(x, (jax.Array, np.ndarray, np.generic, jax.ShapeDtypeStruct)):
        return _array_repr(x)
    inner = hyper.unwrap(x)
    if inner is not x:  # a Flax NNX Variable around an array
        return f"{type(x).__name__}({_array_repr(inner)})"
    text = repr(x)
    return text if len(text) <= 60 else text[:57] + "..."


def _install_reprs() -> None:
    from gradchain import core, optimizers
    from gradchain.transforms import adaptive, clipping, decay, momentum, scaling, wrappers

    for module in (core, optimizers, adaptive, clipping, decay, momentum, scaling, wrappers):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, tuple) and hasattr(value, "_fields"):
                if value.__module__ == module.__name__:
                    value.__repr__ = lambda self: short_repr(self)  # type: ignore[method-assign]
    MultiTensorState.__repr__ = lambda self: short_repr(self)  # type: ignore[method-assign]
    Packed.__repr__ = lambda self: short_repr(self)  # type: ignore[method-assign]


_install_reprs()
