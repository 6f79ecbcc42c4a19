"""Argument checks shared by the regularizers: every error names the function, the argument,
the value and what would be valid.  Checks run at trace time on concrete values only; a traced
value (a rate under ``vmap``, say) cannot be inspected and is accepted as it is."""

from __future__ import annotations

import numbers
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from gradchain import hyper


def is_traced(value: Any) -> bool:
    return isinstance(value, Tracer)


def number(
    fn: str,
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    meaning: str = "",
) -> Any:
    """Check a real hyperparameter: a Python number or a (possibly traced) JAX/NumPy array."""
    what = f" ({meaning})" if meaning else ""
    hyper.check_value(f"{fn}: {name}{what}", value, low, high, low_open, high_open)
    return value


def positive_int(fn: str, name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral,)):
        raise TypeError(f"{fn}: {name} must be an int >= {minimum}, got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def int_pair(fn: str, name: str, value: Any, *, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints, each >= ``minimum``: (rows, columns)."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"{fn}: {name} must be an int or a pair of ints, got {value!r}")
    for v in pair:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or v < minimum:
            raise ValueError(
                f"{fn}: {name} must be an int >= {minimum} or a pair of such ints, got {value!r}"
            )
    return int(pair[0]), int(pair[1])


def flag(fn: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{fn}: {name} must be a Python bool (it selects a code path at trace time), "
            f"got {value!r} of type {type(value).__name__}"
        )
    return bool(value)


def key(fn: str, key: Any) -> jax.Array:
    """The PRNG key of a stochastic call: required unless ``deterministic=True``."""
    if key is None:
        raise ValueError(
            f"{fn}: key is None but deterministic=False; pass a key "
            "(jax.random.key(0) or jax.random.PRNGKey(0)) or use deterministic=True at test time"
        )
    if isinstance(key, (jax.Array, np.ndarray)) and not is_traced(key):
        dtype = key.dtype
        typed = jnp.issubdtype(dtype, jax.dtypes.prng_key)
        if not typed and not (dtype == jnp.uint32 and jnp.shape(key)[-1:] == (2,)):
            raise TypeError(
                f"{fn}: key must be a JAX PRNG key (jax.random.key or jax.random.PRNGKey), "
                f"got an array of dtype {dtype} and shape {jnp.shape(key)}"
            )
    elif not isinstance(key, (jax.Array, np.ndarray)):
        raise TypeError(
            f"{fn}: key must be a JAX PRNG key (jax.random.key or jax.random.PRNGKey), "
            f"got {key!r} of type {type(key).__name__}"
        )
    return cast(jax.Array, key)  # a NumPy uint32 pair is accepted as it is


def floating(fn: str, name: str, x: Any) -> jax.Array:
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.inexact):
        raise TypeError(
            f"{fn}: {name} must be a floating-point array, got dtype {x.dtype}; "
            f"convert it first, e.g. {name}.astype(jnp.float32)"
        )
    return x


def rank(fn: str, name: str, x: jax.Array, allowed: tuple[int, ...], layout: str) -> None:
    if x.ndim not in allowed:
        ranks = " or ".join(str(r) for r in allowed)
        raise ValueError(f"{fn}: {name} must have rank {ranks} ({layout}), got shape {tuple(x.shape)}")


def axes(fn: str, name: str, value: Any, ndim: int) -> tuple[int, ...]:
    """Normalise an int or a sequence of ints to non-negative axes of an array of rank ``ndim``."""
    seq = (value,) if isinstance(value, numbers.Integral) else tuple(value)
    out = []
    for a in seq:
        if isinstance(a, bool) or not isinstance(a, numbers.Integral) or not -ndim <= int(a) < ndim:
            raise ValueError(
                f"{fn}: {name} must be axes of an array of rank {ndim} "
                f"(ints in [{-ndim}, {ndim - 1}]), got {value!r}"
            )
        out.append(int(a) % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"{fn}: {name} has a repeated axis, got {value!r}")
    return tuple(out)


def as_dtype(value: Any, dtype) -> Any:
    """Leave Python numbers weakly typed; cast arrays so that they do not promote ``x``."""
    return value if isinstance(value, numbers.Real) else jnp.asarray(value, dtype)


def probability_array(value: Any) -> jax.Array:
    """A probability as a floating array for ``jax.random.bernoulli``: Python numbers become the
    default float dtype (one rounding of the exact value), arrays keep their float dtype."""
    array = jnp.asarray(value)
    if not jnp.issubdtype(array.dtype, jnp.floating):
        array = array.astype(jnp.result_type(float))
    return array
