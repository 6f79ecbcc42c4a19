"""Hyperparameters: a Python number, a JAX array, or a schedule ``step -> value``.

Every transformation stores each of its hyperparameters in its state, as an array, and reads it
from there when it updates.  That gives three properties at once:

* **no recompiles** — a learning rate is an input of the compiled step, not a constant baked into
  it; a new value (``set_hyperparams``) reuses the same program;
* **readable** — ``get_hyperparams(state)`` returns the value the *next* update will use, for a
  schedule too;
* **one code path** — a live-settable optimizer *is* the plain optimizer, so setting
  hyperparameters cannot change the numerics (unlike wrapping a finished optimizer, Optax #583).

The state, not the transformation object, is where the values live: a state handed to another
optimizer object keeps its own values.  Change them with ``set_hyperparams``.

Under ``jax.vmap`` a hyperparameter may be a traced array: a population of learning rates is one
program.  A schedule is evaluated at the transformation's own step count.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterator
from typing import Any, TypeGuard

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

Schedule = Callable[[Any], Any]
Hyperparameter = float | int | jax.Array | np.ndarray | Schedule


def float_dtype() -> jnp.dtype:
    """The default float dtype: float32, or float64 when ``jax_enable_x64`` is on."""
    return jnp.result_type(float)


#: Steps at which :func:`check` probes a schedule when asked to look beyond step 0: every step up
#: to 16, then the powers of two up to 2²⁴ (~1.7e7 updates).  A grid, not a proof: a schedule can
#: still leave its interval between two probes, so the transformations that need a valid value at
#: every step (K-FAC's damping) also guard it when they update.
PROBE_STEPS: tuple[int, ...] = tuple(range(17)) + tuple(2**k for k in range(5, 25))


def check(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    steps: tuple[int, ...] = (0,),
) -> Hyperparameter:
    """Validate a hyperparameter at construction time and return it unchanged.

    Concrete numbers and arrays must be real, finite and inside the interval given by
    ``low``/``high`` (closed unless ``low_open``/``high_open``).  A schedule is evaluated at each
    of ``steps`` (default: step 0 only; :data:`PROBE_STEPS` for a grid) and every value checked;
    a schedule that raises at step 0 is refused, one that raises at a later (concrete Python int)
    step is not checked there.  Traced values (inside ``jit``/``vmap``) cannot be inspected and
    are accepted as they are.
    """
    if _is_schedule(value):
        try:
            probe = value(0)
        except Exception as err:
            raise TypeError(
                f"{name} is callable, so it must be a schedule step -> value, but {name}(0) "
                f"raised {type(err).__name__}: {err}"
            ) from err
        check_value(f"{name}(0)", probe, low, high, low_open, high_open)
        for step in steps:
            if step == 0:
                continue
            try:
                probe = value(step)
            except Exception:
                continue
            check_value(f"{name}({step})", probe, low, high, low_open, high_open)
        return value
    check_value(name, value, low, high, low_open, high_open)
    return value


def _interval(low, high, low_open, high_open) -> str:
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{left}{lo}, {hi}{right}"


def check_value(name, value, low=None, high=None, low_open=False, high_open=False) -> None:
    """Check a concrete real number or array (not a schedule); traced values pass unchecked."""
    value = unwrap(value)
    if isinstance(value, Tracer):
        return
    allowed = "a real number, a JAX array or a schedule (step -> value)"
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (numbers.Real, jax.Array, np.ndarray, np.generic)
    ):
        raise TypeError(f"{name} must be {allowed}, got {value!r} of type {type(value).__name__}")
    array = np.asarray(value)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} must be {allowed}, got an array of dtype {array.dtype}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    interval = _interval(low, high, low_open, high_open)
    too_low = low is not None and np.any(array <= low if low_open else array < low)
    too_high = high is not None and np.any(array >= high if high_open else array > high)
    if too_low or too_high:
        raise ValueError(f"{name} must be in {interval}, got {value!r}")


def initial(value: Hyperparameter) -> jax.Array:
    """The value to store in a fresh state: the number itself, or the schedule at step 0.

    Always a new buffer (``copy=True``): a state owns its arrays, so donating it never deletes
    an array of the caller's, and no two leaves of a state share one buffer.
    """
    if _is_schedule(value):
        value = value(jnp.zeros((), jnp.int32))
    return jnp.array(unwrap(value), dtype=float_dtype(), copy=True)


def unwrap(value: Any) -> Any:
    """The array inside a wrapper such as Flax NNX's ``OptArray``/``Variable`` (``.value``);
    anything else unchanged."""
    if isinstance(value, (jax.Array, np.ndarray, np.generic, numbers.Number)):
        return value
    getter = getattr(value, "get_value", None)  # Flax NNX >= 0.12; `.value` is deprecated there
    inner = getter() if callable(getter) else getattr(value, "value", None)
    if inner is not None and isinstance(inner, (jax.Array, np.ndarray, np.generic, numbers.Number)):
        return inner
    return value


def next_value(value: Hyperparameter, stored: jax.Array, count: jax.Array) -> jax.Array:
    """The value to store after the update with index ``count`` (the one the next update uses)."""
    if _is_schedule(value):
        return jnp.asarray(value(increment(count)), dtype=float_dtype())
    return stored


def _is_schedule(value: Any) -> TypeGuard[Schedule]:
    return callable(value) and not isinstance(value, (jax.Array, np.ndarray))


def increment(count: jax.Array) -> jax.Array:
    """``count + 1`` that saturates at the int32 maximum instead of wrapping to negative."""
    return jnp.where(count < jnp.iinfo(jnp.int32).max, count + 1, count)


# ---------------------------------------------------------------------------------------------
# Reading and setting hyperparameters in a (possibly nested) optimizer state.
#
# Every gradchain state that has hyperparameters is a NamedTuple with a field
# ``hyperparams: dict[str, Array]``.  The names are the user-facing ones (``learning_rate``,
# ``b1``, ``b2``, ``eps``, ...); Adam's two uses of ``b2`` (moment and bias correction) share
# the name, so that setting ``b2`` changes both.  The helpers walk any state: tuples of states,
# wrappers, Optax states mixed in.


def _walk(state: Any) -> Iterator[Any]:
    """Yield every state node that carries a ``hyperparams`` dict."""
    if _is_named_tuple(state):
        if "hyperparams" in state._fields and isinstance(state.hyperparams, dict):
            yield state
        for field in state._fields:
            yield from _walk(getattr(state, field))
    elif isinstance(state, (tuple, list)):
        for child in state:
            yield from _walk(child)
    elif isinstance(state, dict):
        for child in state.values():
            yield from _walk(child)


def get_hyperparams(state: Any) -> dict[str, jax.Array]:
    """Return ``{name: value}`` for every hyperparameter in ``state``.

    Each value is the one the next update will use (for a schedule: the schedule at the next
    step).  A name that occurs in several places (Adam's ``b2``) is reported once; use distinct
    names (the ``name=`` argument of the transforms) to tell two occurrences apart.

    Args:
      state: an optimizer state (gradchain's, Optax's mixed in, or Flax NNX's wrapped one).

    Returns:
      ``{name: JAX scalar or array}``, in the order the state nests them; NNX ``OptArray`` values are
      unwrapped, so ``f"{v:.3g}"`` works.

    Example:
      >>> import jax.numpy as jnp, gradchain as gc
      >>> state = gc.sgd(0.1, momentum=0.9).init(jnp.zeros(2))
      >>> {k: round(float(v), 3) for k, v in gc.get_hyperparams(state).items()}
      {'momentum': 0.9, 'learning_rate': 0.1}
    """
    result: dict[str, jax.Array] = {}
    for node in _walk(state):
        for name, value in node.hyperparams.items():
            result.setdefault(name, jnp.asarray(unwrap(value)))
    return result


def set_hyperparams(state: Any, **values: Any) -> Any:
    """Return a copy of ``state`` with the named hyperparameters replaced everywhere they occur.

    ``set_hyperparams(state, learning_rate=1e-4)``.  The new value takes the stored dtype and
    shape, so a jit-compiled step is not retraced and computes exactly what an optimizer built
    with that value would.  A hyperparameter driven by a schedule is recomputed from the schedule
    at the next update, so setting it has no lasting effect.

    Args:
      state: an optimizer state.
      **values: ``name=value`` for hyperparameters the state holds.

    Returns:
      The new state (the old one is unchanged).

    Raises:
      ValueError: a name the state does not hold, or a non-finite value.
    """
    known = {name for node in _walk(state) for name in node.hyperparams}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(
            f"no hyperparameter named {', '.join(map(repr, unknown))} in this state; "
            f"it has {sorted(known)}"
        )
    for name, value in values.items():
        check_value(name, value, None, None, False, False)
    return _replace(state, values)


def _is_named_tuple(state: Any) -> TypeGuard[Any]:
    return isinstance(state, tuple) and hasattr(state, "_fields")


def _replace(state: Any, values: dict[str, Any]) -> Any:
    if _is_named_tuple(state):
        changes = {field: _replace(getattr(state, field), values) for field in state._fields}
        if "hyperparams" in state._fields and isinstance(state.hyperparams, dict):
            changes["hyperparams"] = {
                name: _retyped(values[name], old) if name in values else old
                for name, old in state.hyperparams.items()
            }
        return type(state)(**changes)
    if isinstance(state, tuple):
        return tuple(_replace(child, values) for child in state)
    if isinstance(state, list):
        return [_replace(child, values) for child in state]
    if isinstance(state, dict):
        return {key: _replace(child, values) for key, child in state.items()}
    return state


def _retyped(value: Any, old: Any) -> Any:
    old_array = jnp.asarray(unwrap(old))
    new = jnp.array(unwrap(value), dtype=old_array.dtype, copy=True)
    if new.ndim < old_array.ndim:
        new = jnp.broadcast_to(new, old_array.shape)
    if old is not unwrap(old) and hasattr(old, "replace"):  # a Flax NNX Variable: keep its type
        return old.replace(value=new)
    return new


def is_zero(value: Any) -> bool:
    """True only for a concrete Python number equal to zero (arrays and schedules are live)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == 0
