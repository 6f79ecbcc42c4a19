"""Adafactor's factored second moment (Shazeer & Stern, ICML 2018, Alg. 4 and 5).

For a leaf whose two largest axes both have at least ``min_dim_size_to_factor`` elements, the
second moment is kept as a row and a column average of ``g² + ε`` instead of a full array::

    β_t   = decay_rate_fn(t - step_offset, decay_rate)         (default 1 - (t+1)^-decay_rate)
    R     <- β_t R + (1 - β_t) mean(g² + ε, over the largest axis)       # v_row
    C     <- β_t C + (1 - β_t) mean(g² + ε, over the second largest)    # v_col
    u     <- g / √(R C / mean(R))                                      (the rank-1 estimate)

and otherwise as the full ``v <- β_t v + (1 - β_t)(g² + ε)``, ``u <- g / √v``.  The choice is
made per leaf from its shape, so this runs per leaf: packed buffers or :mod:`gradchain.flat`'s
single vector would hide the shapes and nothing would be factored.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradchain import hyper
from gradchain.core import GradientTransformation
from gradchain.state import short_repr
from gradchain.transforms._base import cast_like, require_params
from gradchain.transforms.block import abs_sq
from gradchain.transforms.naming import live_transformation

__all__ = ["FactoredState", "factored_rms", "scale_by_factored_rms"]


class FactoredState(NamedTuple):
    """Optax's layout: ``v_row``/``v_col`` hold a factored leaf's statistics (``(1,)`` zeros for
    an unfactored leaf), ``v`` an unfactored leaf's full second moment (``(1,)`` zeros for a
    factored one)."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    v_row: Any
    v_col: Any
    v: Any


FactoredState.__repr__ = lambda self: short_repr(self)  # type: ignore[method-assign]


def decay_rate_pow(i: Any, exponent: Any = 0.8) -> jax.Array:
    """Adafactor's second-moment decay ``β = 1 - (i + 1)^(-exponent)`` (Shazeer & Stern, Sec. 7.2).

    Computed in float32, as Optax does (also under ``jax_enable_x64``), so that the two agree
    to the last bit of β.
    """
    t = jnp.asarray(i + 1).astype(jnp.float32)
    return 1.0 - t ** (-jnp.asarray(exponent).astype(jnp.float32))


def factored_dims(shape: tuple[int, ...], factored: bool, min_dim_size_to_factor: int) -> tuple[int, int] | None:
    """``(second largest axis, largest axis)`` of a leaf that is factored, else ``None``.

    A leaf is factored when ``factored`` and its second largest axis has at least
    ``min_dim_size_to_factor`` elements (ties broken as ``np.argsort`` does, as in Optax).
    """
    if not factored or len(shape) < 2:
        return None
    order = np.argsort(shape)
    if shape[order[-2]] < min_dim_size_to_factor:
        return None
    return int(order[-2]), int(order[-1])


def _without_axis(x: Any, axis: int) -> jax.Array:
    return jnp.zeros(tuple(d for i, d in enumerate(jnp.shape(x)) if i != axis), jnp.asarray(x).dtype)


def _check_size(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")


def factored_rms(
    factored: bool = True,
    decay_rate: hyper.Hyperparameter = 0.8,
    step_offset: hyper.Hyperparameter = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: hyper.Hyperparameter = 1e-30,
    decay_rate_fn: Callable[[Any, Any], Any] = decay_rate_pow,
    *,
    names: dict[str, str | None] | None = None,
) -> GradientTransformation:
    """:func:`scale_by_factored_rms` with its hyperparameters stored under ``names`` (Adafactor
    stores ``step_offset`` as ``decay_offset`` and ``epsilon`` as ``eps``)."""
    names = dict(names or {})
    if not isinstance(factored, bool):
        raise TypeError(f"factored must be a bool, got {factored!r}")
    _check_size("min_dim_size_to_factor", min_dim_size_to_factor)
    if not callable(decay_rate_fn):
        raise TypeError(f"decay_rate_fn must be a function (step, decay_rate) -> β, got {decay_rate_fn!r}")
    hyper.check(names.get("decay_rate", "decay_rate") or "decay_rate", decay_rate, low=0.0)
    hyper.check(names.get("step_offset", "step_offset") or "step_offset", step_offset, low=0.0)
    hyper.check(names.get("epsilon", "epsilon") or "epsilon", epsilon, low=0.0, low_open=True)

    def init_buffers(params):
        def one(p, which):
            dims = factored_dims(jnp.shape(p), factored, min_dim_size_to_factor)
            placeholder = jnp.zeros((1,), jnp.asarray(p).dtype)
            if dims is None:
                return jnp.zeros_like(p) if which == "v" else placeholder
            d1, d0 = dims
            if which == "v_row":
                return _without_axis(p, d0)
            return _without_axis(p, d1) if which == "v_col" else placeholder

        return {field: jax.tree.map(lambda p, f=field: one(p, f), params) for field in ("v_row", "v_col", "v")}

    def formula(updates, buffers, params, count, decay_rate, step_offset, epsilon):
        require_params(params, "scale_by_factored_rms")
        beta = decay_rate_fn(count - step_offset, decay_rate)

        def leaf(g, v_row, v_col, v, w):
            dtype = jnp.asarray(w).dtype
            dims = factored_dims(jnp.shape(w), factored, min_dim_size_to_factor)
            grad_sqr = abs_sq(g) + cast_like(epsilon, g)
            if dims is None:
                new_v = (beta * v + (1.0 - beta) * grad_sqr).astype(dtype)
                return g * new_v**-0.5, v_row, v_col, new_v
            d1, d0 = dims
            new_row = (beta * v_row + (1.0 - beta) * jnp.mean(grad_sqr, axis=d0)).astype(dtype)
            new_col = (beta * v_col + (1.0 - beta) * jnp.mean(grad_sqr, axis=d1)).astype(dtype)
            reduced_d1 = d1 - 1 if d1 > d0 else d1
            row_factor = (new_row / jnp.mean(new_row, axis=reduced_d1, keepdims=True)) ** -0.5
            col_factor = new_col**-0.5
            out = g * jnp.expand_dims(row_factor, axis=d0) * jnp.expand_dims(col_factor, axis=d1)
            return out, new_row, new_col, v

        results = jax.tree.map(leaf, updates, buffers["v_row"], buffers["v_col"], buffers["v"], params)
        is_result = lambda x: isinstance(x, tuple) and len(x) == 4 and not hasattr(x, "_fields")
        pick = lambda i: jax.tree.map(lambda r: r[i], results, is_leaf=is_result)
        return pick(0), {"v_row": pick(1), "v_col": pick(2), "v": pick(3)}

    values = {"decay_rate": decay_rate, "step_offset": step_offset, "epsilon": epsilon}
    return live_transformation(FactoredState, formula, values, names, init_buffers)


def scale_by_factored_rms(
    factored: bool = True,
    decay_rate: hyper.Hyperparameter = 0.8,
    step_offset: hyper.Hyperparameter = 0,
    min_dim_size_to_factor: int = 128,
    epsilon: hyper.Hyperparameter = 1e-30,
    decay_rate_fn: Callable[[Any, Any], Any] = decay_rate_pow,
) -> GradientTransformation:
    """Scale by a factored estimate of the gradient RMS (Adafactor; Shazeer & Stern, ICML 2018).

    See the module docstring for the formula.  Per leaf, from each leaf's real shape: on packed
    or :mod:`gradchain.flat` buffers nothing would be factored.  Needs ``params`` (their shapes
    and dtypes).

    Args:
      factored: factor the second moment of leaves large enough (else keep it whole).
      decay_rate: the exponent c ≥ 0 of the decay schedule ``β_t = 1 - (t+1)^-c``.
      step_offset: ≥ 0, subtracted from the step count (the first step of a fine-tuning run).
      min_dim_size_to_factor: int ≥ 1; factor only leaves whose second largest axis has at
        least this many elements.
      epsilon: ε > 0, added to ``g²`` (keeps zero gradients finite).
      decay_rate_fn: ``(step, decay_rate) -> β``, called with the stored hyperparameters; the
        default is Adafactor's power schedule, in float32 as Optax's.

    Returns:
      A transformation with state ``FactoredState(count, hyperparams, v_row, v_col, v)`` (Optax's
      fields; hyperparameters ``decay_rate``, ``step_offset``, ``epsilon``).
    """
    return factored_rms(factored, decay_rate, step_offset, min_dim_size_to_factor, epsilon, decay_rate_fn)
