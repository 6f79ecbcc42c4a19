"""Optax's optimizers and transforms that need each leaf's shape or norm, from gradchain's pieces.

Every name here has Optax's keyword arguments and defaults, is a short chain (shown in its
docstring) and equals Optax step for step (tests/test_zoo_layerwise.py: float64 to 1e-9 relative
after 60 steps).  They run **per leaf**: a trust ratio, a factored second moment or a block RMS
is a statistic of one layer's whole array, so these are *not* wrapped in
:func:`gradchain.multi_tensor` (packing would turn a model's many leaves into one buffer per
dtype), and :mod:`gradchain.flat` (the whole model as one vector) would change what they compute.
Their cost grows with the number of leaves like Optax's.

All hyperparameters are stored in the state under Optax's argument names: numbers, arrays
(``jax.vmap`` a population over them) or schedules, read and set with ``gc.get_hyperparams`` /
``gc.set_hyperparams`` without recompiling.  Buffers carry Optax's field names (``v_row``,
``v_col``, ``v``, ``mu``, ``nu``, ``trace``, ``ema``), so ``gc.tree_get(state, "v_row")`` finds
them.

The new pieces live in ``gradchain.transforms``: :mod:`~gradchain.transforms.factored`,
:mod:`~gradchain.transforms.trust_ratio`, :mod:`~gradchain.transforms.block`,
:mod:`~gradchain.transforms.normalize`, :mod:`~gradchain.transforms.layer_moments` and the
naming helpers of :mod:`~gradchain.transforms.naming`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.combinators.accumulation import TraceState
from gradchain.core import GradientTransformation, GradientTransformationExtraArgs, chain
from gradchain.optimizers import _front
from gradchain.state import short_repr
from gradchain.transforms._base import check_bool
from gradchain.transforms.adaptive import MomentState, moment, ratio, shift, sqrt
from gradchain.transforms.block import (
    _clip_by_block_rms,
    _scale_by_param_block_rms,
    adaptive_grad_clip,
    clip_by_block_rms,
    scale_by_param_block_norm,
    scale_by_param_block_rms,
)
from gradchain.transforms.decay import add_decayed_weights
from gradchain.transforms.elementwise_pieces import ema, negate
from gradchain.transforms.factored import factored_rms, scale_by_factored_rms
from gradchain.transforms.layer_moments import scale_by_novograd, scale_by_sm3, sm3 as _sm3
from gradchain.transforms.momentum import ScaleByMomentumState, scale_by_momentum
from gradchain.transforms.naming import renamed
from gradchain.transforms.normalize import centralize, normalize_by_update_norm
from gradchain.transforms.scaling import scale, scale_by_learning_rate
from gradchain.transforms.trust_ratio import fromage_step, scale_by_trust_ratio, trust_ratio
from gradchain.transforms.wrappers import masked

__all__ = [
    # optimizers
    "adafactor",
    "fromage",
    "lamb",
    "lars",
    "novograd",
    "sm3",
    # transforms
    "scale_by_factored_rms",
    "scale_by_trust_ratio",
    "clip_by_block_rms",
    "adaptive_grad_clip",
    "centralize",
    "normalize_by_update_norm",
    "scale_by_param_block_rms",
    "scale_by_param_block_norm",
    "scale_by_novograd",
    "scale_by_sm3",
]


class ScaleByAdamMuState(NamedTuple):
    """LAMB's first moment (``moment``'s state) under Optax's name: ``mu``."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    mu: Any


class ScaleByAdamNuState(NamedTuple):
    """LAMB's second moment (``moment``'s state) under Optax's name: ``nu``."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    nu: Any


for _state in (ScaleByAdamMuState, ScaleByAdamNuState):
    _state.__repr__ = lambda self: short_repr(self)  # type: ignore[method-assign]


def _optional_mask(mask: Any) -> Any:
    """Optax's ``True`` mask (every leaf) as no mask at all."""
    return None if mask is True else mask


def adafactor(
    learning_rate: hyper.Hyperparameter | None = None,
    min_dim_size_to_factor: int = 128,
    decay_rate: hyper.Hyperparameter = 0.8,
    decay_offset: hyper.Hyperparameter = 0,
    multiply_by_parameter_scale: bool = True,
    clipping_threshold: hyper.Hyperparameter | None = 1.0,
    momentum: hyper.Hyperparameter | None = None,
    dtype_momentum: Any = jnp.float32,
    weight_decay_rate: hyper.Hyperparameter | None = None,
    eps: hyper.Hyperparameter = 1e-30,
    factored: bool = True,
    weight_decay_mask: Any = None,
) -> GradientTransformationExtraArgs:
    """Adafactor (Shazeer & Stern, ICML 2018), the form of ``optax.adafactor``::

        chain(scale_by_factored_rms(factored, decay_rate, decay_offset, min_dim_size_to_factor, eps),
              clip_by_block_rms(clipping_threshold),          # if clipping_threshold is not None
              scale(learning_rate),                           # if learning_rate is not None
              scale_by_param_block_rms(1e-3),                 # if multiply_by_parameter_scale
              ema(momentum, debias=False, dtype_momentum),    # if momentum is not None
              add_decayed_weights(weight_decay_rate, weight_decay_mask),  # if not None
              negate())

    Per leaf, not packed: a leaf whose two largest axes have at least ``min_dim_size_to_factor``
    elements keeps a row and a column second moment (``v_row``, ``v_col``) instead of a full one
    (``v``); the choice needs each leaf's real shape, so :mod:`gradchain.flat` (one vector) would
    factor nothing.

    Args:
      learning_rate: ≥ 0, or ``None`` (the relative step alone); a number, array or schedule.
      min_dim_size_to_factor: int ≥ 1: factor only leaves whose second largest axis is this big.
      decay_rate: c ≥ 0 of the second-moment decay ``β_t = 1 - (t+1)^-c``.
      decay_offset: ≥ 0, subtracted from the step count in ``β_t`` (fine-tuning).
      multiply_by_parameter_scale: scale each leaf's step by ``max(RMS(w), 1e-3)``.
      clipping_threshold: > 0 or ``None``: clip each leaf's update RMS to it (the paper's d = 1).
      momentum: ``None`` (no momentum) or in [0, 1): an exponential moving average (no
        debiasing) of the scaled updates.
      dtype_momentum: storage dtype of the momentum.
      weight_decay_rate: ``None`` or ≥ 0: ``+ weight_decay_rate · w`` (not multiplied by the
        learning rate, as in Optax).
      eps: ε > 0, added to ``g²``.
      factored: use factored second moments at all.
      weight_decay_mask: which leaves decay (a bool tree, or ``params -> bool tree``).

    Returns:
      A gradient transformation; ``gc.tree_get(state, "v_row")`` reads the row statistics.
    """
    if learning_rate is not None:
        hyper.check("learning_rate", learning_rate, low=0.0)
    check_bool("multiply_by_parameter_scale", multiply_by_parameter_scale)
    if momentum is not None:
        hyper.check("momentum", momentum, low=0.0, high=1.0, high_open=True)
    if weight_decay_rate is not None:
        hyper.check("weight_decay_rate", weight_decay_rate, low=0.0)
    try:
        momentum_dtype = jnp.dtype(dtype_momentum)
    except TypeError as err:
        raise TypeError(f"dtype_momentum must be a dtype, got {dtype_momentum!r}") from err

    txs: list[GradientTransformation] = [
        factored_rms(
            factored,
            decay_rate,
            decay_offset,
            min_dim_size_to_factor,
            eps,
            names={"step_offset": "decay_offset", "epsilon": "eps"},
        )
    ]
    if clipping_threshold is not None:
        txs.append(_clip_by_block_rms(clipping_threshold, names={"threshold": "clipping_threshold"}))
    if learning_rate is not None:
        txs.append(scale(learning_rate, name="learning_rate"))
    if multiply_by_parameter_scale:
        txs.append(_scale_by_param_block_rms(1e-3, names={"min_scale": None}))
    if momentum is not None:
        txs.append(ema(momentum, debias=False, accumulator_dtype=momentum_dtype, name="momentum"))
    if weight_decay_rate is not None:
        txs.append(add_decayed_weights(weight_decay_rate, weight_decay_mask, name="weight_decay_rate"))
    txs.append(negate())
    return _front(chain(*txs), "adafactor", stateless=False)


def fromage(learning_rate: hyper.Hyperparameter, min_norm: hyper.Hyperparameter = 1e-6) -> GradientTransformationExtraArgs:
    """Fromage, Frobenius matched gradient descent (Bernstein et al., NeurIPS 2020)::

        chain(scale_by_trust_ratio(min_norm),       # u · max(‖w‖, m) / max(‖u‖, m), per leaf
              fromage_step(learning_rate))          # w <- (w - lr·u) / √(1 + lr²)

    the form of ``optax.fromage``.  Per leaf, not packed (the trust ratio is each layer's);
    :mod:`gradchain.flat` would make it one global ratio.

    Args:
      learning_rate: ≥ 0, the relative step size; a number, array or schedule.
      min_norm: ≥ 0, the floor of both norms of the trust ratio.

    Returns:
      A gradient transformation (hyperparameters ``min_norm`` and ``learning_rate``).
    """
    tx = chain(trust_ratio(min_norm, names={"trust_coefficient": None, "eps": None}), fromage_step(learning_rate))
    return _front(tx, "fromage", stateless=False)


def lars(
    learning_rate: hyper.Hyperparameter,
    weight_decay: hyper.Hyperparameter = 0.0,
    weight_decay_mask: Any = True,
    trust_coefficient: hyper.Hyperparameter = 0.001,
    eps: hyper.Hyperparameter = 0.0,
    trust_ratio_mask: Any = True,
    momentum: hyper.Hyperparameter = 0.9,
    nesterov: bool = False,
) -> GradientTransformationExtraArgs:
    """LARS, layer-wise adaptive rate scaling (You et al. 2017), the form of ``optax.lars``::

        chain(add_decayed_weights(weight_decay, weight_decay_mask),
              masked(scale_by_trust_ratio(0, trust_coefficient, eps), trust_ratio_mask),
              scale_by_learning_rate(learning_rate),
              scale_by_momentum(momentum, nesterov))            # Optax's trace, as ``trace``

    Per leaf, not packed (each layer's trust ratio ``c·‖w‖ / (‖g + λw‖ + eps)``);
    :mod:`gradchain.flat` would make it one global ratio.

    Args:
      learning_rate: ≥ 0; a number, array or schedule.
      weight_decay: ≥ 0, added to the gradient before the trust ratio.
      weight_decay_mask: which leaves decay (``True``: all; a bool tree or a function).
      trust_coefficient: c ≥ 0.
      eps: ≥ 0, added to the update norm.
      trust_ratio_mask: which leaves get the trust ratio (``True``: all).
      momentum: in [0, 1).
      nesterov: Nesterov's form of the momentum.

    Returns:
      A gradient transformation; ``gc.tree_get(state, "trace")`` is the momentum buffer.
    """
    ratio_tx: GradientTransformation = trust_ratio(0.0, trust_coefficient, eps, names={"min_norm": None})
    if _optional_mask(trust_ratio_mask) is not None:
        ratio_tx = masked(ratio_tx, trust_ratio_mask)
    tx = chain(
        add_decayed_weights(weight_decay, _optional_mask(weight_decay_mask)),
        ratio_tx,
        scale_by_learning_rate(learning_rate),
        renamed(scale_by_momentum(momentum, nesterov), (ScaleByMomentumState, TraceState)),
    )
    return _front(tx, "lars", stateless=False)


def lamb(
    learning_rate: hyper.Hyperparameter,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-6,
    eps_root: hyper.Hyperparameter = 0.0,
    weight_decay: hyper.Hyperparameter = 0.0,
    mask: Any = None,
) -> GradientTransformationExtraArgs:
    """LAMB, layer-wise adaptive moments for large batches (You et al., ICLR 2020), the form of
    ``optax.lamb``::

        chain(ratio(moment(b1, debias=True),                                   # as ``mu``
                    chain(moment(b2, 2, debias=True), shift(eps_root), sqrt()),  # as ``nu``
                    eps),                                 # Adam's direction m̂ / (√(v̂ + eps_root) + eps)
              add_decayed_weights(weight_decay, mask),
              scale_by_trust_ratio(),                     # ‖w‖ / ‖u‖ per leaf (no hyperparameters)
              scale_by_learning_rate(learning_rate))

    Per leaf, not packed (each layer's trust ratio); :mod:`gradchain.flat` would make it one
    global ratio.

    Args:
      learning_rate: ≥ 0; a number, array or schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: > 0, outside the square root.
      eps_root: ≥ 0, inside the square root.
      weight_decay: ≥ 0, decoupled (added after Adam's direction, before the trust ratio).
      mask: which leaves decay (a bool tree or ``params -> bool tree``; default all).

    Returns:
      A gradient transformation; ``gc.tree_get(state, "mu")`` / ``"nu"`` are the moments.
    """
    hyper.check("eps_root", eps_root, low=0.0)
    first = renamed(moment(b1, 1, name="b1", debias=True), (MomentState, ScaleByAdamMuState))
    second = renamed(moment(b2, 2, name="b2", debias=True), (MomentState, ScaleByAdamNuState))
    adam_direction = ratio(first, chain(second, shift(eps_root, name="eps_root"), sqrt()), eps)
    tx = chain(
        adam_direction,
        add_decayed_weights(weight_decay, mask),
        trust_ratio(names={"min_norm": None, "trust_coefficient": None, "eps": None}),
        scale_by_learning_rate(learning_rate),
    )
    return _front(tx, "lamb", stateless=False)


def novograd(
    learning_rate: hyper.Hyperparameter,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.25,
    eps: hyper.Hyperparameter = 1e-6,
    eps_root: hyper.Hyperparameter = 0.0,
    weight_decay: hyper.Hyperparameter = 0.0,
) -> GradientTransformationExtraArgs:
    """NovoGrad (Ginsburg et al. 2019; Li et al. 2019), the form of ``optax.novograd``::

        chain(ratio(identity(),
                    chain(squared_norm_moment(b2), shift(eps_root), sqrt()),   # ν per leaf, as ``nu``
                    eps),
              add_decayed_weights(weight_decay),
              scale_by_momentum(b1),                                          # as ``mu``
              scale_by_learning_rate(learning_rate))

    i.e. ``m <- b1·m + g / (√(ν + eps_root) + eps) + weight_decay·w`` with ν one scalar per leaf
    (ν₁ = ‖g₁‖², then ``ν <- b2·ν + (1 - b2)·‖g‖²``).  Per leaf, not packed (ν is each layer's);
    :mod:`gradchain.flat` would give the whole model one ν.

    Args:
      learning_rate: ≥ 0; a number, array or schedule.
      b1: decay of the momentum, in [0, 1).
      b2: decay of the layer-wise second moment, in [0, 1).
      eps: > 0, outside the square root.
      eps_root: ≥ 0, inside the square root.
      weight_decay: ≥ 0.

    Returns:
      A gradient transformation; ``gc.tree_get(state, "nu")`` holds one scalar per leaf.
    """
    tx = chain(scale_by_novograd(b1, b2, eps, eps_root, weight_decay), scale_by_learning_rate(learning_rate))
    return _front(tx, "novograd", stateless=False)


def sm3(learning_rate: hyper.Hyperparameter, momentum: hyper.Hyperparameter = 0.9) -> GradientTransformationExtraArgs:
    """SM3 (Anil et al., NeurIPS 2019), the form of ``optax.sm3``::

        chain(scale_by_sm3(b1=momentum, b2=1, eps=1e-8),     # one accumulator per axis
              scale_by_learning_rate(learning_rate))

    Per leaf, not packed: each leaf keeps one accumulator per axis (its rows, its columns, ...),
    so memory is the sum of its dimensions, not their product; :mod:`gradchain.flat` would leave a
    single axis (a full, AdaGrad-like accumulator).

    Args:
      learning_rate: ≥ 0; a number, array or schedule (Optax takes a number only).
      momentum: in [0, 1), the decay of the momentum of the scaled gradient.

    Returns:
      A gradient transformation; ``gc.tree_get(state, "mu")`` are the axis accumulators.
    """
    tx = chain(_sm3(momentum, names={"b1": "momentum", "b2": None, "eps": None}), scale_by_learning_rate(learning_rate))
    return _front(tx, "sm3", stateless=False)
