"""Flax NNX layers that carry K-FAC tags: ``nnx.Linear``/``nnx.Conv``-like, plus a scale-and-shift.

Values are those of :func:`gradchain.kfac_dense`, :func:`gradchain.kfac_conv2d` and
:func:`gradchain.kfac_scale_and_shift` (plain ``x @ W + b`` etc. outside K-FAC); the tags see the
parameter arrays themselves, so K-FAC finds the blocks without a graph matcher::

    class MLP(nnx.Module):
        def __init__(self, rngs):
            self.fc1 = gnnx.KFACLinear(64, 32, rngs=rngs)
            self.fc2 = gnnx.KFACLinear(32, 10, rngs=rngs)

        def __call__(self, x):
            return self.fc2(jnp.tanh(self.fc1(x)))

    graphdef, params = nnx.split(MLP(nnx.Rngs(0)))
    loss = lambda p, x, y: gc.kfac_softmax_cross_entropy(nnx.merge(graphdef, p)(x), y)
    curv = gc.kfac_curvature(loss, params, x, y)   # curv.table() names fc1, fc2
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
from flax import nnx  # the Flax library (absolute import)

from gradchain.curvature.tags import kfac_conv2d, kfac_dense, kfac_scale_and_shift

__all__ = ["KFACConv", "KFACLinear", "KFACScaleAndShift"]


def _rngs(rngs, layer):
    if not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"{layer}: rngs must be an nnx.Rngs (it initialises the parameters), got {type(rngs).__name__}")
    return rngs


class KFACLinear(nnx.Module):
    """``y = x @ kernel + bias`` with ``kernel`` (in, out), tagged as a K-FAC dense layer."""

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool = True, name: str | None = None,
                 kernel_init=nnx.initializers.lecun_normal(), bias_init=nnx.initializers.zeros_init(), rngs):
        rngs = _rngs(rngs, "KFACLinear")
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features)))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,))) if use_bias else None
        self.name = name

    def __call__(self, x):
        bias = None if self.bias is None else self.bias[...]
        return kfac_dense(jnp.asarray(x), self.kernel[...], bias, name=self.name)


class KFACConv(nnx.Module):
    """2-d convolution, NHWC input, HWIO ``kernel``, tagged for KFC."""

    def __init__(self, in_features: int, out_features: int, kernel_size: Sequence[int] = (3, 3), *,
                 strides: int | Sequence[int] = 1, padding="SAME", use_bias: bool = True, name: str | None = None,
                 kernel_init=nnx.initializers.lecun_normal(), bias_init=nnx.initializers.zeros_init(), rngs):
        rngs = _rngs(rngs, "KFACConv")
        shape = tuple(kernel_size) + (in_features, out_features)
        self.kernel = nnx.Param(kernel_init(rngs.params(), shape))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,))) if use_bias else None
        self.strides, self.padding, self.name = strides, padding, name

    def __call__(self, x):
        bias = None if self.bias is None else self.bias[...]
        return kfac_conv2d(jnp.asarray(x), self.kernel[...], bias, strides=self.strides, padding=self.padding,
                           name=self.name)


class KFACScaleAndShift(nnx.Module):
    """``y = x * scale + shift`` over the last axis (a norm layer's affine part), diagonal block."""

    def __init__(self, num_features: int, *, name: str | None = None, rngs=None):
        del rngs
        self.scale = nnx.Param(jnp.ones((num_features,)))
        self.shift = nnx.Param(jnp.zeros((num_features,)))
        self.name = name

    def __call__(self, x):
        return kfac_scale_and_shift(jnp.asarray(x), self.scale[...], self.shift[...], name=self.name)
