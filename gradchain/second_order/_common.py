"""Checks and small numerical helpers shared by the line searches, the methods and ``minimize``.

Everything in :mod:`gradchain.second_order` works on one flat vector ``x`` of shape ``(n,)``:
``minimize`` and ``lbfgs_transform`` ravel the parameter pytree once with
``jax.flatten_util.ravel_pytree`` (one buffer instead of one loop per leaf, see DESIGN.md) and
unravel the answer.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer
from jax.flatten_util import ravel_pytree


def check_positive(name: str, value: Any, *, integer: bool = False, upper: float | None = None) -> Any:
    """Raise a clear error unless ``value`` is a positive number (an int when ``integer``).

    Traced values (inside ``jit``) cannot be inspected and pass unchanged.
    """
    if isinstance(value, Tracer):
        if integer:
            raise TypeError(f"{name} must be a concrete Python int (it fixes array sizes), got a traced value")
        return value
    kind = "a positive int" if integer else "a positive real number"
    if upper is not None:
        kind = f"a real number in (0, {upper:g})"
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be {kind}, got {value!r} of type bool")
    if integer:
        if not isinstance(value, (numbers.Integral, np.integer)):
            raise TypeError(f"{name} must be {kind}, got {value!r} of type {type(value).__name__}")
        if value <= 0:
            raise ValueError(f"{name} must be {kind}, got {value!r}")
        return int(value)
    if not isinstance(value, (numbers.Real, np.ndarray, np.generic, jax.Array)):
        raise TypeError(f"{name} must be {kind}, got {value!r} of type {type(value).__name__}")
    array = np.asarray(value)
    if array.shape != () or not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"{name} must be {kind} (a real scalar), got {value!r}")
    if not np.isfinite(array) or array <= 0 or (upper is not None and array >= upper):
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return value


def check_fun(fun: Any, name: str = "fun") -> None:
    if not callable(fun):
        raise TypeError(f"{name} must be a callable returning a scalar, got {fun!r} of type {type(fun).__name__}")


def float_leaves_dtype(tree: Any, name: str) -> jnp.dtype:
    """The common floating dtype of the leaves of ``tree``; a clear error if there is none."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        raise ValueError(f"{name} must hold at least one array, got an empty pytree {tree!r}")
    dtypes = {jnp.result_type(leaf) for leaf in leaves}
    paths = [jax.tree_util.keystr(p) or "<root>" for p, _ in jax.tree_util.tree_leaves_with_path(tree)]
    bad = [(p, jnp.result_type(leaf)) for p, leaf in zip(paths, leaves)
           if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating)]
    if bad:
        path, dtype = bad[0]
        raise TypeError(
            f"{name} must hold real floating-point arrays (float32 or float64), but leaf {path} has "
            f"dtype {dtype}; convert it with jnp.asarray(..., jnp.float32)"
        )
    if len(dtypes) > 1:
        listing = ", ".join(f"{p}: {jnp.result_type(leaf)}" for p, leaf in zip(paths, leaves))
        raise TypeError(
            f"{name} mixes floating dtypes ({listing}); every leaf must have the same dtype, "
            "because the optimizer keeps one flat vector of the parameters"
        )
    size = sum(int(np.size(leaf)) for leaf in leaves)
    if size == 0:
        raise ValueError(f"{name} has no entries (all its arrays are empty)")
    return dtypes.pop()


def flat_objective(fun: Callable, x0: Any, args: tuple, name: str = "fun"):
    """Ravel ``x0`` and return ``(x_flat, unravel, objective)`` with ``objective(z) = fun(unravel(z), *args)``.

    Checks (at trace time, so they cost nothing when compiled) that ``fun`` returns a real scalar
    of the parameters' dtype, naming ``fun`` and the shape or dtype it returned otherwise.
    """
    dtype = float_leaves_dtype(x0, "x0")
    x_flat, unravel = ravel_pytree(x0)
    x_flat = x_flat.astype(dtype)
    out = jax.eval_shape(fun, x0, *args)
    if not hasattr(out, "shape") or not hasattr(out, "dtype"):
        raise TypeError(
            f"{name} must return a scalar array, got {type(out).__name__} "
            f"(structure {jax.tree.structure(out)}); if it returns (value, aux), drop the aux"
        )
    if out.shape != ():
        raise ValueError(
            f"{name} must return a scalar (shape ()), but {name}(x0) has shape {out.shape}; "
            "reduce it, e.g. with jnp.sum or jnp.mean"
        )
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise TypeError(f"{name} must return a real floating-point scalar, but {name}(x0) has dtype {out.dtype}")
    if out.dtype != dtype:
        raise TypeError(
            f"{name}(x0) returns {out.dtype} but x0 is {dtype}: the dtypes must match. Cast x0 "
            f"(jax.tree.map(lambda a: a.astype(jnp.{out.dtype}), x0)) or make {name} compute in {dtype}"
        )

    def objective(z):
        return fun(unravel(z), *args)

    return x_flat, unravel, objective


def inf_norm(v: jax.Array) -> jax.Array:
    return jnp.max(jnp.abs(v))


def cubic_minimizer(a, fa, da, b, fb, db):
    """Minimiser of the cubic interpolating ``φ(a)=fa, φ'(a)=da, φ(b)=fb, φ'(b)=db``.

    Nocedal & Wright (2006), eq. (3.59)::

        d1 = φ'(a) + φ'(b) - 3 (φ(a) - φ(b)) / (a - b)
        d2 = sign(b - a) · sqrt(d1² - φ'(a) φ'(b))
        t  = b - (b - a) · (φ'(b) + d2 - d1) / (φ'(b) - φ'(a) + 2 d2)

    Returns NaN where the cubic has no minimiser (negative discriminant, a == b, non-finite input);
    callers fall back to bisection and clip the result into their safeguard interval.
    """
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - da * db
    d2 = jnp.sign(b - a) * jnp.sqrt(jnp.maximum(disc, 0.0))
    t = b - (b - a) * (db + d2 - d1) / (db - da + 2.0 * d2)
    return jnp.where((disc >= 0) & jnp.isfinite(t), t, jnp.nan)
