"""Functional batch normalisation (Ioffe & Szegedy, ICML 2015).

Training normalises with the statistics of the mini-batch, which makes each example's output
depend on the random batch it was drawn with: the lecture's "common pattern" (random noise in
training, marginalised at test).  Testing uses fixed running statistics:

    training:  μ_B = mean_B(x),  σ²_B = mean_B((x - μ_B)²)        (biased variance)
               y = γ · (x - μ_B) / √(σ²_B + ε) + β
               running_mean ← m · running_mean + (1 - m) · μ_B
               running_var  ← m · running_var  + (1 - m) · σ²_B
    test:      y = γ · (x - running_mean) / √(running_var + ε) + β

These are Flax's conventions (``flax.nnx.BatchNorm`` / ``flax.linen.BatchNorm``): momentum
``m = 0.99``, ``ε = 1e-5``, the *biased* batch variance is both used and tracked (torch tracks the
unbiased one), running statistics start at mean 0, variance 1.  Statistics are computed in at
least float32.  The variance is the two-pass ``mean((x - μ)²)``, Flax's
``use_fast_variance=False``; Flax's default one-pass ``E[x²] - E[x]²`` agrees to rounding.

The state is a pytree (:class:`BatchNormState`), so a training step threads it like an
optimizer state; gradients flow through the batch statistics, never into the running ones.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import NamedTuple, cast

import jax
import jax.numpy as jnp

from gradchain.regularizers import _checks

__all__ = ["BatchNormState", "batch_norm_init", "batch_norm"]


class BatchNormState(NamedTuple):
    """Running statistics, one entry per feature: ``mean`` (starts at 0), ``var`` (starts at 1)."""

    mean: jax.Array
    var: jax.Array


def batch_norm_init(num_features: int | Sequence[int], dtype=jnp.float32) -> BatchNormState:
    """Fresh running statistics for ``num_features`` features (an int, or the shape of several
    feature axes): mean 0, variance 1, as in Flax."""
    shape = (num_features,) if isinstance(num_features, numbers.Integral) else tuple(cast(Sequence[int], num_features))
    if not shape or any(isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1 for n in shape):
        raise ValueError(
            f"batch_norm_init: num_features must be a positive int or a tuple of them, got {num_features!r}"
        )
    return BatchNormState(jnp.zeros(shape, dtype), jnp.ones(shape, dtype))


def batch_norm(
    x: jax.Array,
    state: BatchNormState,
    scale: jax.Array | None = None,
    bias: jax.Array | None = None,
    *,
    training: bool,
    momentum: float = 0.99,
    eps: float = 1e-5,
    axis: int | Sequence[int] = -1,
    axis_name: str | None = None,
) -> tuple[jax.Array, BatchNormState]:
    """Normalise ``x`` per feature; return ``(y, new_state)``.  See the module docstring.

    Args:
      x: activations; ``axis`` holds the features, every other axis is reduced over (batch,
        and height/width for NHWC images: per-channel statistics).
      state: running statistics from :func:`batch_norm_init` (shape: the feature axes of ``x``).
      scale, bias: ``γ`` and ``β`` of the feature shape, or ``None`` for 1 and 0.
      training: ``True`` uses and updates batch statistics; ``False`` uses the running ones and
        returns ``state`` unchanged.  A Python bool (it picks the code path).
      momentum: ``m`` in the running-average update, in ``[0, 1]``.
      eps: added to the variance, ``> 0``.
      axis: the feature axis (or axes).
      axis_name: a ``vmap``/``pmap``/``shard_map`` axis name; the batch statistics are then
        averaged over it with ``jax.lax.pmean`` (cross-replica / per-example-vmapped batch norm).
        Each replica must hold the same number of elements.

    Gradients flow through ``μ_B`` and ``σ²_B`` (the true batch-norm backward pass); the
    running statistics are under ``stop_gradient``.
    """
    fn = "batch_norm"
    x = _checks.floating(fn, "x", x)
    training = _checks.flag(fn, "training", training)
    _checks.number(fn, "momentum", momentum, low=0.0, high=1.0)
    _checks.number(fn, "eps", eps, low=0.0, low_open=True)
    if not isinstance(state, BatchNormState):
        raise TypeError(
            f"{fn}: state must be a BatchNormState (from batch_norm_init), got {type(state).__name__}"
        )
    if x.ndim == 0:
        raise ValueError(f"{fn}: x must have a feature axis, got a scalar")
    feature_axes = _checks.axes(fn, "axis", axis, x.ndim)
    reduce_axes = tuple(i for i in range(x.ndim) if i not in feature_axes)
    if not reduce_axes and axis_name is None and training:
        raise ValueError(
            f"{fn}: x of shape {tuple(x.shape)} has no axis to take batch statistics over besides "
            f"the feature axis {axis!r}; pass a batch, or axis_name= under vmap"
        )
    feature_shape = tuple(x.shape[i] for i in feature_axes)
    for name, value in (("state.mean", state.mean), ("state.var", state.var), ("scale", scale), ("bias", bias)):
        if value is not None and tuple(jnp.shape(value)) != feature_shape:
            raise ValueError(
                f"{fn}: {name} must have the feature shape {feature_shape} of x (shape "
                f"{tuple(x.shape)}, axis={axis!r}), got shape {tuple(jnp.shape(value))}"
            )

    compute = jnp.promote_types(x.dtype, jnp.float32)
    xc = x.astype(compute)
    # Broadcast a feature-shaped vector against x.
    bshape = tuple(x.shape[i] if i in feature_axes else 1 for i in range(x.ndim))
    expand = lambda v: jnp.reshape(jnp.asarray(v, compute), bshape)

    if training:
        mean = jnp.mean(xc, axis=reduce_axes)
        if axis_name is not None:
            mean = jax.lax.pmean(mean, axis_name)
        var = jnp.mean(jnp.square(xc - expand(mean)), axis=reduce_axes)
        if axis_name is not None:
            var = jax.lax.pmean(var, axis_name)
        m = _checks.as_dtype(momentum, compute)
        new_state = BatchNormState(
            jax.lax.stop_gradient(m * state.mean + (1 - m) * mean).astype(state.mean.dtype),
            jax.lax.stop_gradient(m * state.var + (1 - m) * var).astype(state.var.dtype),
        )
    else:
        mean, var = state.mean, state.var
        new_state = state

    multiplier = jax.lax.rsqrt(expand(var) + _checks.as_dtype(eps, compute))
    if scale is not None:
        multiplier = multiplier * expand(scale)
    y = (xc - expand(mean)) * multiplier
    if bias is not None:
        y = y + expand(bias)
    return y.astype(x.dtype), new_state
