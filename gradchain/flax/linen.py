"""Flax Linen layers around gradchain's pure regularizers.

Linen's conventions: randomness from ``self.make_rng(rng_collection)`` (``"dropout"`` by
default, so ``model.apply(variables, x, rngs={"dropout": key})``), the mode from a
``deterministic`` field or call argument (merged with ``nn.merge_param``: give it in exactly one
place), batch statistics in the ``"batch_stats"`` collection (``mutable=["batch_stats"]`` in
training).  The numbers are those of :mod:`gradchain.regularizers`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn  # the Flax library (absolute import)
import jax
import jax.numpy as jnp

from gradchain.hyper import is_zero
from gradchain.regularizers import (
    BatchNormState,
    batch_norm,
    cutout,
    dropconnect,
    dropout,
    fractional_max_pool,
    stochastic_depth,
)

__all__ = ["Dropout", "DropConnectDense", "BatchNorm", "StochasticDepth", "FractionalMaxPool", "Cutout"]


class Dropout(nn.Module):
    """:func:`gradchain.dropout`; same masks as ``flax.linen.Dropout`` for the same rng."""

    rate: float
    broadcast_dims: Sequence[int] = ()
    inverted: bool = True
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, x, deterministic: bool | None = None):
        det = nn.merge_param("deterministic", self.deterministic, deterministic)
        key = None if det or is_zero(self.rate) else self.make_rng(self.rng_collection)
        return dropout(
            key, x, self.rate, deterministic=det, inverted=self.inverted, broadcast_dims=tuple(self.broadcast_dims)
        )


class DropConnectDense(nn.Module):
    """``y = x @ W' + b``, ``W' = dropconnect(key, W, rate)`` (Wan et al. 2013); one mask per call."""

    features: int
    rate: float
    use_bias: bool = True
    drop_bias: bool = False
    inverted: bool = True
    deterministic: bool | None = None
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros_init()
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, x, deterministic: bool | None = None):
        det = nn.merge_param("deterministic", self.deterministic, deterministic)
        x = jnp.asarray(x)
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        k_w = k_b = None
        if not det:
            k_w, k_b = jax.random.split(self.make_rng(self.rng_collection))
        y = x @ dropconnect(k_w, kernel, self.rate, deterministic=det, inverted=self.inverted)
        if self.use_bias:
            bias = self.param("bias", self.bias_init, (self.features,))
            if self.drop_bias:
                bias = dropconnect(k_b, bias, self.rate, deterministic=det, inverted=self.inverted)
            y = y + bias
        return y


class BatchNorm(nn.Module):
    """:func:`gradchain.batch_norm` with ``flax.linen.BatchNorm``'s variables and conventions.

    Params ``scale``, ``bias``; ``batch_stats``: ``mean``, ``var``.  The running statistics are
    not updated while the module is being initialised (as in Flax).
    """

    use_running_average: bool | None = None
    axis: int = -1
    momentum: float = 0.99
    epsilon: float = 1e-5
    use_bias: bool = True
    use_scale: bool = True
    axis_name: str | None = None

    @nn.compact
    def __call__(self, x, use_running_average: bool | None = None):
        ura = nn.merge_param("use_running_average", self.use_running_average, use_running_average)
        x = jnp.asarray(x)
        shape = (x.shape[self.axis],)
        mean = self.variable("batch_stats", "mean", lambda: jnp.zeros(shape, jnp.float32))
        var = self.variable("batch_stats", "var", lambda: jnp.ones(shape, jnp.float32))
        scale = self.param("scale", nn.initializers.ones_init(), shape) if self.use_scale else None
        bias = self.param("bias", nn.initializers.zeros_init(), shape) if self.use_bias else None
        y, new = batch_norm(
            x,
            BatchNormState(mean.value, var.value),
            scale,
            bias,
            training=not ura,
            momentum=self.momentum,
            eps=self.epsilon,
            axis=self.axis,
            axis_name=self.axis_name,
        )
        if not ura and not self.is_initializing():
            mean.value, var.value = new.mean, new.var
        return y


class StochasticDepth(nn.Module):
    """Wrap a residual branch: ``x + StochasticDepth(p)(f(x), deterministic=not train)``."""

    survival_prob: float
    mode: str = "row"
    inverted: bool = True
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, residual, deterministic: bool | None = None):
        det = nn.merge_param("deterministic", self.deterministic, deterministic)
        key = None if det else self.make_rng(self.rng_collection)
        return stochastic_depth(key, residual, self.survival_prob, self.mode, deterministic=det, inverted=self.inverted)


class FractionalMaxPool(nn.Module):
    """:func:`gradchain.fractional_max_pool` on NHWC inputs; fixed ``u = 1/2`` regions at test."""

    ratio: float | tuple[float, float] = math.sqrt(2.0)
    pseudo_random: bool = True
    overlapping: bool = False
    output_size: int | tuple[int, int] | None = None
    kernel_size: int | tuple[int, int] | None = None
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, x, deterministic: bool | None = None):
        det = nn.merge_param("deterministic", self.deterministic, deterministic)
        key = None if det else self.make_rng(self.rng_collection)
        return fractional_max_pool(
            key,
            x,
            self.ratio,
            self.pseudo_random,
            self.overlapping,
            deterministic=det,
            output_size=self.output_size,
            kernel_size=self.kernel_size,
        )


class Cutout(nn.Module):
    """:func:`gradchain.cutout` on NHWC images; the identity when deterministic."""

    size: int | tuple[int, int]
    fill: float = 0.0
    deterministic: bool | None = None
    rng_collection: str = "dropout"

    @nn.compact
    def __call__(self, images, deterministic: bool | None = None):
        det = nn.merge_param("deterministic", self.deterministic, deterministic)
        key = None if det else self.make_rng(self.rng_collection)
        return cutout(key, images, self.size, deterministic=det, fill=self.fill)

# K-FAC-tagged layers (gradchain.curvature), defined in kfac_linen.py.
from gradchain.flax.kfac_linen import KFACConv, KFACDense, KFACScaleAndShift  # noqa: E402

__all__ += ["KFACDense", "KFACConv", "KFACScaleAndShift"]
