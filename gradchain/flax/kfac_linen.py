"""Flax Linen layers that carry K-FAC tags: ``nn.Dense``/``nn.Conv``-like, plus a scale-and-shift.

Parameters are named as in Flax (``kernel``, ``bias``; ``scale``, ``shift``).  Values are those of
:func:`gradchain.kfac_dense` etc.::

    class MLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            return glinen.KFACDense(10)(jnp.tanh(glinen.KFACDense(32)(x)))

    params = MLP().init(key, x)["params"]
    loss = lambda p, x, y: gc.kfac_softmax_cross_entropy(MLP().apply({"params": p}, x), y)
    curv = gc.kfac_curvature(loss, params, x, y)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn  # the Flax library (absolute import)
import jax.numpy as jnp

from gradchain.curvature.tags import kfac_conv2d, kfac_dense, kfac_scale_and_shift

__all__ = ["KFACConv", "KFACDense", "KFACScaleAndShift"]


class KFACDense(nn.Module):
    """``y = x @ kernel + bias``, tagged as a K-FAC dense layer (named after the module)."""

    features: int
    use_bias: bool = True
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        x = jnp.asarray(x)
        kernel = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        return kfac_dense(x, kernel, bias, name=_scope_name(self))


class KFACConv(nn.Module):
    """2-d convolution, NHWC input, HWIO ``kernel``, tagged for KFC."""

    features: int
    kernel_size: Sequence[int] = (3, 3)
    strides: int | Sequence[int] = 1
    padding: Any = "SAME"
    use_bias: bool = True
    kernel_init: Callable[..., Any] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Any] = nn.initializers.zeros_init()

    @nn.compact
    def __call__(self, x):
        x = jnp.asarray(x)
        kernel = self.param("kernel", self.kernel_init, tuple(self.kernel_size) + (x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,)) if self.use_bias else None
        return kfac_conv2d(x, kernel, bias, strides=self.strides, padding=self.padding,
                           name=_scope_name(self))


class KFACScaleAndShift(nn.Module):
    """``y = x * scale + shift`` over the last axis, with a diagonal K-FAC block."""

    @nn.compact
    def __call__(self, x):
        x = jnp.asarray(x)
        scale = self.param("scale", nn.initializers.ones_init(), (x.shape[-1],))
        shift = self.param("shift", nn.initializers.zeros_init(), (x.shape[-1],))
        return kfac_scale_and_shift(x, scale, shift, name=_scope_name(self))


def _scope_name(module) -> str | None:
    """The module's path in the Linen tree (``"Dense_0"``), the block's name in the K-FAC table."""
    scope = module.scope
    return None if scope is None else ("/".join(scope.path) or None)

