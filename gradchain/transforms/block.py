"""Per-block statistics: each parameter leaf (a weight vector, matrix or kernel) is one block.

These transforms look at a whole leaf at once (its RMS, its norm, the norm of each unit), so they
run per leaf and cannot run on :func:`gradchain.multi_tensor`'s packed buffers, nor on
:mod:`gradchain.flat`'s single vector (a whole model would become one block).

========================================  =====================================================
piece                                     formula, per leaf ``u`` (parameters ``w``)
========================================  =====================================================
``clip_by_block_rms(d)``                  ``u / max(1, RMS(u) / d)``
``scale_by_param_block_rms(m)``           ``u · max(RMS(w), m)``
``scale_by_param_block_norm(m)``          ``u · max(‖w‖, m)``
``adaptive_grad_clip(λ, eps)``            ``u_i · min(1, λ·max(‖w_i‖, eps) / ‖u_i‖)`` per unit i
========================================  =====================================================

(Shazeer & Stern 2018 for the first two, Adafactor's update clipping and relative step size;
Brock et al. 2021 for unit-wise adaptive gradient clipping.)
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.core import GradientTransformation
from gradchain.state import short_repr
from gradchain.transforms._base import cast_like, require_params
from gradchain.transforms.naming import live_transformation

__all__ = ["AdaptiveGradClipState", "ClipByBlockRmsState", "ScaleByParamBlockNormState", "ScaleByParamBlockRmsState", "adaptive_grad_clip", "clip_by_block_rms", "scale_by_param_block_norm", "scale_by_param_block_rms"]


class ClipByBlockRmsState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict


class ScaleByParamBlockRmsState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict


class ScaleByParamBlockNormState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict


class AdaptiveGradClipState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict


for _state in (ClipByBlockRmsState, ScaleByParamBlockRmsState, ScaleByParamBlockNormState, AdaptiveGradClipState):
    _state.__repr__ = lambda self: short_repr(self)  # type: ignore[method-assign]


def abs_sq(x: Any) -> jax.Array:
    """``|x|²`` element-wise (``x·x`` for real ``x``; ``Re(x̄·x)`` for complex)."""
    x = jnp.asarray(x)
    return (x.conj() * x).real if jnp.iscomplexobj(x) else x * x


def safe_norm(x: Any, min_norm: Any) -> jax.Array:
    """``max(‖x‖, min_norm)`` over the whole leaf, with a finite gradient where ``‖x‖ <= min_norm``
    (as ``optax.safe_norm``: the masked branch never takes the root of zero)."""
    norm = jnp.sqrt(jnp.sum(abs_sq(x)))
    masked = jnp.where(norm <= min_norm, jnp.ones_like(x), x)
    return jnp.where(norm <= min_norm, min_norm, jnp.sqrt(jnp.sum(abs_sq(masked))))


def safe_rms(x: Any, min_rms: Any) -> jax.Array:
    """``max(RMS(x), min_rms)``, ``RMS(x) = √(mean |x|²)``, with a finite gradient (as
    ``optax.safe_root_mean_squares``)."""
    rms = jnp.sqrt(jnp.mean(abs_sq(x)))
    masked = jnp.where(rms <= min_rms, jnp.ones_like(x), x)
    return jnp.where(rms <= min_rms, min_rms, jnp.sqrt(jnp.mean(abs_sq(masked))))


def unitwise_norm(x: Any, axis: int | tuple[int, ...] | None = None) -> jax.Array:
    """The L2 norm of each *unit* of ``x``, broadcast to ``x``'s shape (``optax.unitwise_norm``).

    ``axis`` names the axes a unit spans; by default, from the rank: a scalar or vector is one
    unit; a matrix ``(in, out)`` or a 3-d multi-head kernel has one unit per slice along axis 0's
    complement (the norm over axis 0); a 4-d ``HWIO`` kernel the norm over ``H, W, I``; a 5-d
    ``DHWIO`` one over ``D, H, W, I``.
    """
    x = jnp.asarray(x)
    if axis is not None:
        squared = jnp.sum(abs_sq(x), axis=axis, keepdims=True)
    elif jnp.squeeze(x).ndim <= 1:
        squared = jnp.sum(abs_sq(x), keepdims=True)
    elif x.ndim in (2, 3):
        squared = jnp.sum(abs_sq(x), axis=0, keepdims=True)
    elif x.ndim == 4:
        squared = jnp.sum(abs_sq(x), axis=(0, 1, 2), keepdims=True)
    elif x.ndim == 5:
        squared = jnp.sum(abs_sq(x), axis=(0, 1, 2, 3), keepdims=True)
    else:
        raise ValueError(
            f"unitwise_norm: a parameter of shape {x.shape} has no default unit (ranks 0-5 do); "
            "pass axis= (the axes one unit spans)"
        )
    return jnp.broadcast_to(jnp.sqrt(squared), x.shape)


def _check_all(values: dict[str, Any], names: dict[str, str | None], bounds: dict[str, dict]) -> None:
    for arg, value in values.items():
        name = names.get(arg, arg) or arg
        hyper.check(name, value, **bounds.get(arg, {}))


def _clip_by_block_rms(threshold, *, names=None) -> GradientTransformation:
    names = dict(names or {})
    _check_all({"threshold": threshold}, names, {"threshold": {"low": 0.0, "low_open": True}})

    def formula(updates, buffers, params, count, threshold):
        def clip_leaf(u):
            denominator = jnp.maximum(1.0, jnp.sqrt(jnp.mean(abs_sq(u))) / cast_like(threshold, u))
            return u / denominator

        return jax.tree.map(clip_leaf, updates), buffers

    return live_transformation(ClipByBlockRmsState, formula, {"threshold": threshold}, names)


def clip_by_block_rms(threshold: hyper.Hyperparameter) -> GradientTransformation:
    """Clip each leaf's RMS to ``threshold``: ``u <- u / max(1, RMS(u) / threshold)``.

    Adafactor's update clipping (Shazeer & Stern, ICML 2018, Sec. 6, with ``d = threshold``).
    Per leaf: every parameter vector, matrix or kernel is clipped on its own (so it cannot run on
    packed or :mod:`gradchain.flat` buffers, where the whole model would be one block).

    Args:
      threshold: > 0, the largest RMS an update leaf may keep; a number, array or schedule.

    Returns:
      A transformation with state ``ClipByBlockRmsState(count, hyperparams={"threshold": ...})``.
    """
    return _clip_by_block_rms(threshold)


def _scale_by_param_block_rms(min_scale: hyper.Hyperparameter = 1e-3, *, names=None) -> GradientTransformation:
    names = dict(names or {})
    _check_all({"min_scale": min_scale}, names, {"min_scale": {"low": 0.0}})

    def formula(updates, buffers, params, count, min_scale):
        require_params(params, "scale_by_param_block_rms")
        out = jax.tree.map(lambda u, w: u * safe_rms(w, cast_like(min_scale, w)), updates, params)
        return out, buffers

    return live_transformation(ScaleByParamBlockRmsState, formula, {"min_scale": min_scale}, names)


def scale_by_param_block_rms(min_scale: hyper.Hyperparameter = 1e-3) -> GradientTransformation:
    """Scale each leaf by the RMS of its parameters: ``u <- u · max(RMS(w), min_scale)``.

    Adafactor's relative step size (Shazeer & Stern, ICML 2018, Sec. 8: ``α_t = max(ε₂, RMS(X))
    ρ_t``).  Per leaf; needs ``params``.

    Args:
      min_scale: ≥ 0, the floor of the scale (keeps zero-initialised leaves moving).

    Returns:
      A transformation with state ``ScaleByParamBlockRmsState(count, hyperparams)``.
    """
    return _scale_by_param_block_rms(min_scale)


def scale_by_param_block_norm(min_scale: hyper.Hyperparameter = 1e-3) -> GradientTransformation:
    """Scale each leaf by the norm of its parameters: ``u <- u · max(‖w‖, min_scale)``.

    The layer-wise scale of LARS/Fromage-style methods (You et al. 2017) without the update's own
    norm.  Per leaf; needs ``params``.

    Args:
      min_scale: ≥ 0, the floor of the scale.

    Returns:
      A transformation with state ``ScaleByParamBlockNormState(count, hyperparams)``.
    """
    hyper.check("min_scale", min_scale, low=0.0)

    def formula(updates, buffers, params, count, min_scale):
        require_params(params, "scale_by_param_block_norm")
        out = jax.tree.map(lambda u, w: u * safe_norm(w, cast_like(min_scale, w)), updates, params)
        return out, buffers

    return live_transformation(ScaleByParamBlockNormState, formula, {"min_scale": min_scale})


def adaptive_grad_clip(
    clipping: hyper.Hyperparameter,
    eps: hyper.Hyperparameter = 1e-3,
    axis: int | tuple[int, ...] | None = None,
) -> GradientTransformation:
    """Unit-wise adaptive gradient clipping (AGC; Brock et al., ICML 2021, eq. 3)::

        u_i <- u_i                                   if ‖u_i‖ < λ·max(‖w_i‖, eps)
        u_i <- u_i · λ·max(‖w_i‖, eps) / ‖u_i‖        otherwise

    for every unit ``i`` of every leaf (see :func:`unitwise_norm`: a column of a dense kernel,
    an output channel of a convolution).  Per leaf, with each leaf's real shape: it cannot run
    on packed or :mod:`gradchain.flat` buffers.  Needs ``params``.

    Args:
      clipping: λ > 0, the largest ratio of a unit's update norm to its parameter norm.
      eps: ≥ 0, the floor of the parameter norm (lets zero-initialised units move).
      axis: the axes one unit spans (default: from each leaf's rank, see :func:`unitwise_norm`).

    Returns:
      A transformation with state ``AdaptiveGradClipState(count, hyperparams)``.
    """
    hyper.check("clipping", clipping, low=0.0, low_open=True)
    hyper.check("eps", eps, low=0.0)
    _check_axis(axis)

    def formula(updates, buffers, params, count, clipping, eps):
        require_params(params, "adaptive_grad_clip")

        def clip_leaf(u, w):
            u_norm = unitwise_norm(u, axis)
            max_norm = cast_like(clipping, u) * jnp.maximum(unitwise_norm(w, axis), cast_like(eps, w))
            clipped = u * (max_norm / jnp.maximum(u_norm, 1e-6))
            return jnp.where(u_norm < max_norm, u, clipped)

        return jax.tree.map(clip_leaf, updates, params), buffers

    return live_transformation(AdaptiveGradClipState, formula, {"clipping": clipping, "eps": eps})


def _check_axis(axis: Any) -> None:
    is_int = lambda a: isinstance(a, int) and not isinstance(a, bool)
    if axis is None or is_int(axis):
        return
    if isinstance(axis, tuple) and all(is_int(a) for a in axis):
        return
    raise TypeError(f"axis must be None, an int or a tuple of ints, got {axis!r}")
