"""Flax NNX layers around gradchain's pure regularizers.

They follow NNX's conventions: randomness from an ``nnx.Rngs`` stream (``rng_collection``,
``"dropout"`` by default, falling back to ``"default"`` as every NNX stream does), a
``deterministic`` attribute (``use_running_average`` for :class:`BatchNorm`) that
``model.eval()`` / ``model.train()`` and ``nnx.view`` set, and call-time overrides
``layer(x, deterministic=..., rngs=...)``.  The numbers are those of the pure functions in
:mod:`gradchain.regularizers`, which hold the formulas and papers.

    from flax import nnx
    from gradchain.flax import nnx as gnnx

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.fc = gnnx.DropConnectLinear(64, 128, rate=0.3, rngs=rngs)
            self.bn = gnnx.BatchNorm(128)
            self.drop = gnnx.Dropout(0.5, rngs=rngs)
            self.out = nnx.Linear(128, 10, rngs=rngs)

        def __call__(self, x):
            return self.out(self.drop(nnx.relu(self.bn(self.fc(x)))))

    model = Net(nnx.Rngs(0)); model.eval()   # test mode for every layer at once
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx  # the Flax library (absolute import), not this module

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

__all__ = ["Dropout", "DropConnectLinear", "BatchNorm", "StochasticDepth", "FractionalMaxPool", "Cutout"]

RngsLike = Any  # nnx.Rngs | nnx.RngStream | a PRNG key array | None


def _own_stream(rngs: RngsLike, collection: str, layer: str):
    """The stream a layer keeps: its own fork of ``rngs[collection]`` (independent per layer)."""
    if rngs is None:
        return None
    if isinstance(rngs, nnx.Rngs):
        return rngs[collection].fork()
    if isinstance(rngs, nnx.RngStream):
        return rngs.fork()
    raise TypeError(f"{layer}: rngs must be an nnx.Rngs, an nnx.RngStream or None, got {type(rngs).__name__}")


class _Stochastic(nnx.Module):
    """Shared plumbing: the ``deterministic`` switch and where a call's key comes from."""

    deterministic: bool | None
    rng_collection: str
    rngs: Any  # the layer's own nnx.RngStream (or None)

    def _mode(self, deterministic: bool | None) -> bool:
        mode = self.deterministic if deterministic is None else deterministic
        if mode is None:
            raise ValueError(
                f"{type(self).__name__}: deterministic is None both in the layer and in the call; "
                "set it with model.train() / model.eval(), nnx.view(model, deterministic=...), "
                "the constructor, or layer(x, deterministic=...)"
            )
        return bool(mode)

    def _key(self, rngs: RngsLike) -> jax.Array:
        source = self.rngs if rngs is None else rngs
        if source is None:
            raise ValueError(
                f"{type(self).__name__}: deterministic=False needs random keys, but no rngs were "
                "given; pass rngs=nnx.Rngs(...) to the constructor or rngs= to the call"
            )
        if isinstance(source, nnx.Rngs):
            return source[self.rng_collection]()
        if isinstance(source, nnx.RngStream):
            return source()
        if isinstance(source, jax.Array):
            return source
        raise TypeError(
            f"{type(self).__name__}: rngs must be an nnx.Rngs, an nnx.RngStream or a key, "
            f"got {type(source).__name__}"
        )

    def set_view(self, deterministic: bool | None = None):
        """Used by ``nnx.view(model, deterministic=...)``."""
        if deterministic is not None:
            self.deterministic = deterministic


class Dropout(_Stochastic):
    """Dropout layer: :func:`gradchain.dropout` (``rate`` = probability of dropping).

    Same masks as ``nnx.Dropout(rate, rngs=rngs)`` for the same ``rngs`` (both fork their
    stream from ``rngs[rng_collection]`` and draw ``bernoulli(key, 1 - rate)``), plus the vanilla
    convention (``inverted=False``: no scaling in training, ``× (1 - rate)`` at test).
    """

    def __init__(
        self,
        rate: float,
        *,
        broadcast_dims: Sequence[int] = (),
        inverted: bool = True,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: RngsLike = None,
    ):
        self.rate = rate
        self.broadcast_dims = tuple(broadcast_dims)
        self.inverted = inverted
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs = _own_stream(rngs, rng_collection, "Dropout")

    def __call__(self, x, *, deterministic: bool | None = None, rngs: RngsLike = None):
        det = self._mode(deterministic)
        key = None if det or is_zero(self.rate) else self._key(rngs)  # a traced rate draws
        return dropout(
            key, x, self.rate, deterministic=det, inverted=self.inverted, broadcast_dims=self.broadcast_dims
        )


class DropConnectLinear(_Stochastic):
    """``y = x @ W' + b`` with ``W' = dropconnect(key, W, rate)`` (Wan et al. 2013).

    One mask per call (shared by the batch).  ``drop_bias=True`` also drops bias entries (the
    paper folds the bias into ``W``).  Kernel init: LeCun normal, as ``nnx.Linear``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        rate: float,
        *,
        use_bias: bool = True,
        drop_bias: bool = False,
        inverted: bool = True,
        deterministic: bool | None = False,
        kernel_init=nnx.initializers.lecun_normal(),
        bias_init=nnx.initializers.zeros_init(),
        rng_collection: str = "dropout",
        rngs: nnx.Rngs,
    ):
        if not isinstance(rngs, nnx.Rngs):
            raise TypeError(
                "DropConnectLinear: rngs must be an nnx.Rngs (it initialises the kernel), "
                f"got {type(rngs).__name__}"
            )
        self.kernel = nnx.Param(kernel_init(rngs.params(), (in_features, out_features)))
        self.bias = nnx.Param(bias_init(rngs.params(), (out_features,))) if use_bias else None
        self.in_features, self.out_features = in_features, out_features
        self.rate = rate
        self.drop_bias = drop_bias
        self.inverted = inverted
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs = _own_stream(rngs, rng_collection, "DropConnectLinear")

    def __call__(self, x, *, deterministic: bool | None = None, rngs: RngsLike = None):
        det = self._mode(deterministic)
        key = None if det else self._key(rngs)
        k_w, k_b = (None, None) if key is None else jax.random.split(key)
        kernel = dropconnect(k_w, self.kernel[...], self.rate, deterministic=det, inverted=self.inverted)
        y = jnp.asarray(x) @ kernel
        if self.bias is not None:
            bias = self.bias[...]
            if self.drop_bias:
                bias = dropconnect(k_b, bias, self.rate, deterministic=det, inverted=self.inverted)
            y = y + bias
        return y


class BatchNorm(nnx.Module):
    """Batch norm layer over the last axis: :func:`gradchain.batch_norm`, Flax's conventions.

    Same parameters (``scale``, ``bias``: ``nnx.Param``), statistics (``mean``, ``var``:
    ``nnx.BatchStat``) and numbers as ``nnx.BatchNorm(num_features, use_fast_variance=False)``;
    ``use_running_average`` is set by ``model.eval()`` / ``model.train()``.  ``rngs`` is accepted
    for signature compatibility and not needed (``scale`` starts at 1, ``bias`` at 0).
    """

    def __init__(
        self,
        num_features: int,
        *,
        use_running_average: bool | None = False,
        axis: int = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-5,
        use_bias: bool = True,
        use_scale: bool = True,
        axis_name: str | None = None,
        rngs: RngsLike = None,
    ):
        del rngs
        self.mean = nnx.BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = nnx.BatchStat(jnp.ones((num_features,), jnp.float32))
        self.scale = nnx.Param(jnp.ones((num_features,), jnp.float32)) if use_scale else None
        self.bias = nnx.Param(jnp.zeros((num_features,), jnp.float32)) if use_bias else None
        self.num_features = num_features
        self.use_running_average = use_running_average
        self.axis = axis
        self.momentum = momentum
        self.epsilon = epsilon
        self.axis_name = axis_name

    def __call__(self, x, use_running_average: bool | None = None):
        mode = self.use_running_average if use_running_average is None else use_running_average
        if mode is None:
            raise ValueError(
                "BatchNorm: use_running_average is None both in the layer and in the call; set it "
                "with model.train() / model.eval() or pass it"
            )
        training = not mode
        y, new = batch_norm(
            x,
            BatchNormState(self.mean[...], self.var[...]),
            None if self.scale is None else self.scale[...],
            None if self.bias is None else self.bias[...],
            training=training,
            momentum=self.momentum,
            eps=self.epsilon,
            axis=self.axis,
            axis_name=self.axis_name,
        )
        if training:
            self.mean[...] = new.mean
            self.var[...] = new.var
        return y

    def set_view(self, use_running_average: bool | None = None):
        """Used by ``nnx.view(model, use_running_average=...)``."""
        if use_running_average is not None:
            self.use_running_average = use_running_average


class StochasticDepth(_Stochastic):
    """Wrap a residual branch: ``x + layer(f(x))`` (:func:`gradchain.stochastic_depth`)."""

    def __init__(
        self,
        survival_prob: float,
        mode: str = "row",
        *,
        inverted: bool = True,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: RngsLike = None,
    ):
        self.survival_prob = survival_prob
        self.mode = mode
        self.inverted = inverted
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs = _own_stream(rngs, rng_collection, "StochasticDepth")

    def __call__(self, residual, *, deterministic: bool | None = None, rngs: RngsLike = None):
        det = self._mode(deterministic)
        key = None if det else self._key(rngs)
        return stochastic_depth(
            key, residual, self.survival_prob, self.mode, deterministic=det, inverted=self.inverted
        )


class FractionalMaxPool(_Stochastic):
    """Fractional max pooling of NHWC inputs (:func:`gradchain.fractional_max_pool`).

    In eval mode: the fixed regions of ``u = 1/2``; for the average over several region draws,
    use :func:`gradchain.marginalize` over a model kept in train mode.
    """

    def __init__(
        self,
        ratio: float | tuple[float, float] = math.sqrt(2.0),
        pseudo_random: bool = True,
        overlapping: bool = False,
        *,
        output_size: int | tuple[int, int] | None = None,
        kernel_size: int | tuple[int, int] | None = None,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: RngsLike = None,
    ):
        self.ratio = ratio
        self.pseudo_random = pseudo_random
        self.overlapping = overlapping
        self.output_size = output_size
        self.kernel_size = kernel_size
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs = _own_stream(rngs, rng_collection, "FractionalMaxPool")

    def __call__(self, x, *, deterministic: bool | None = None, rngs: RngsLike = None):
        det = self._mode(deterministic)
        key = None if det else self._key(rngs)
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


class Cutout(_Stochastic):
    """Cutout of NHWC images (:func:`gradchain.cutout`); the identity in eval mode."""

    def __init__(
        self,
        size: int | tuple[int, int],
        *,
        fill: float = 0.0,
        deterministic: bool | None = False,
        rng_collection: str = "dropout",
        rngs: RngsLike = None,
    ):
        self.size = size
        self.fill = fill
        self.deterministic = deterministic
        self.rng_collection = rng_collection
        self.rngs = _own_stream(rngs, rng_collection, "Cutout")

    def __call__(self, images, *, deterministic: bool | None = None, rngs: RngsLike = None):
        det = self._mode(deterministic)
        key = None if det else self._key(rngs)
        return cutout(key, images, self.size, deterministic=det, fill=self.fill)

# K-FAC-tagged layers (gradchain.curvature), defined in kfac_nnx.py.
from gradchain.flax.kfac_nnx import KFACConv, KFACLinear, KFACScaleAndShift  # noqa: E402

__all__ += ["KFACLinear", "KFACConv", "KFACScaleAndShift"]
