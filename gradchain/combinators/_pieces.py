"""The small pieces the combinators share: a gate that runs an inner transformation or not, the
running accumulation of k updates, and the checks of counts and limits (the other argument
checks are :mod:`gradchain.transforms._base`'s).

* :func:`run_if` — ``pred ? inner.update(...) : otherwise``, as one ``lax.cond``: the inner
  transformation runs only on the steps that use it, and its state is kept exactly as it was on
  the others (``conditionally_mask``, ``conditionally_transform``, ``MultiSteps``);
* :func:`accumulate` — the running sum ``a + g`` or the running mean ``a + (g - a)/(n + 1)``
  (Welford, Technometrics 1962: the mean of n + 1 values from the mean of n, without the sum's
  growth), and :func:`emits` — the counter gate ``n == k - 1`` (``apply_every``, ``MultiSteps``);
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from gradchain import hyper

# ---------------------------------------------------------------------------------------------
# Checks at construction.


def check_count(name: str, value: Any) -> Any:
    """An integer hyperparameter ≥ 1 (a period, a number of steps): a Python int, an integral
    array or a schedule whose value at step 0 is one; traced values pass unchecked."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int >= 1, got {value!r} of type {type(value).__name__}")
    hyper.check(name, value, low=1.0)
    probe = value(0) if callable(value) and not isinstance(value, (jax.Array, np.ndarray)) else value
    probe = hyper.unwrap(probe)
    if not isinstance(probe, Tracer) and not np.all(np.asarray(probe) == np.round(np.asarray(probe))):
        where = f"{name}(0)" if probe is not value else name
        raise ValueError(f"{where} must be an integer >= 1, got {probe!r}")
    return value


def check_nonnegative(name: str, value: Any) -> None:
    """``value`` ≥ 0 (``inf`` allowed: no limit) when concrete; NaN and non-numbers refused."""
    value = hyper.unwrap(value)
    if isinstance(value, Tracer):
        return
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, jax.Array, np.ndarray, np.generic)):
        raise TypeError(f"{name} must be a real number or array, got {value!r} of type {type(value).__name__}")
    array = np.asarray(value)
    if np.any(np.isnan(array)) or np.any(array < 0):
        raise ValueError(f"{name} must be >= 0 (inf for no limit), got {value!r}")


def as_count(value: jax.Array) -> jax.Array:
    """A stored (float) period as the int32 it stands for."""
    return jnp.round(jnp.asarray(value)).astype(jnp.int32)


# ---------------------------------------------------------------------------------------------
# The gate and the accumulator.


def like(new_state: Any, old_state: Any) -> Any:
    """``new_state`` in the dtypes of ``old_state`` (both branches of a ``lax.cond`` must agree)."""
    return jax.tree.map(lambda n, o: jnp.asarray(n).astype(jnp.result_type(o)), new_state, old_state)


def zeros_like_output(apply: Callable[[], tuple[Any, Any]]) -> Any:
    """Zero updates shaped as what ``apply()`` would return, without running it."""
    shapes, _ = jax.eval_shape(apply)
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)


def run_if(
    pred: jax.Array,
    apply: Callable[[], tuple[Any, Any]],
    otherwise: Callable[[], tuple[Any, Any]],
    old_state: Any,
) -> tuple[Any, Any]:
    """``apply()`` when ``pred`` else ``otherwise()``, each returning ``(updates, inner_state)``;
    only the branch taken runs (a ``lax.cond`` when traced; under ``vmap`` with a batched ``pred``
    both run and are selected; a concrete ``pred``, outside ``jit``, picks the branch in Python
    instead of compiling both).  The new inner state is cast to ``old_state``'s dtypes."""

    def taken(_):
        updates, state = apply()
        return updates, like(state, old_state)

    return cond(pred, taken, lambda _: otherwise())


def cond(pred: Any, true_fun: Callable[[Any], Any], false_fun: Callable[[Any], Any]) -> Any:
    """``lax.cond(pred, true_fun, false_fun, None)``, or the branch itself for a concrete ``pred``
    (an eager update then runs op by op, with no compilation of the two branches)."""
    if not isinstance(pred, Tracer):
        return true_fun(None) if bool(pred) else false_fun(None)
    return jax.lax.cond(pred, true_fun, false_fun, None)


def check_predicate(pred: Any, name: str) -> jax.Array:
    pred = jnp.asarray(pred)
    if pred.shape != () or pred.dtype != jnp.bool_:
        raise ValueError(f"{name} must return a boolean scalar, got an array of dtype {pred.dtype} and shape {pred.shape}")
    return pred


def accumulate(grad: jax.Array, acc: jax.Array, n: jax.Array, mean: bool) -> jax.Array:
    """One step of accumulation over the current window, whose ``n`` earlier values ``acc`` holds:
    the sum ``acc + g``, or the mean ``acc + (g - acc)/(n + 1)`` (Welford 1962)."""
    return acc + (grad - acc) / (n + 1) if mean else grad + acc


def emits(n: jax.Array, k: jax.Array) -> jax.Array:
    """The counter gate: the ``n``-th micro-step (from 0) of a window of ``k`` is its last."""
    return n == k - 1


# ---------------------------------------------------------------------------------------------
# Short reprs of the combinators' states.


def install_reprs(*state_types: type) -> None:
    """Short reprs (``gradchain.state.short_repr``: shapes for buffers, values for scalars) for
    these state classes, as gradchain's own states print."""
    from gradchain.state import short_repr

    for state_type in state_types:
        state_type.__repr__ = lambda self: short_repr(self)  # type: ignore[method-assign]
