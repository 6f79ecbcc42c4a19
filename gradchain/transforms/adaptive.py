"""Adaptive per-parameter scaling: the pieces AdaGrad, RMSProp and Adam are assembled from.

The lecture's update rules all have the shape ``x -= lr * numerator / (denominator + eps)``,
with both statistics taken of the *same* raw gradient.  :func:`ratio` is the combinator that
expresses this (a sequential ``chain`` cannot); the statistics are small transforms:

==========================  =====================================================  ==========
piece                       formula (per element)                                  state
==========================  =====================================================  ==========
``moment(β, order=1)``      ``m <- β m + (1 - β) g``                               ``m``
``moment(β, order=2)``      ``v <- β v + (1 - β) g²``                              ``v``
``accumulate_squares()``    ``s <- s + g²``                                        ``s``
``bias_correction(β)``      ``u <- u / (1 - β^t)``, t = 1, 2, ...                  count
``sqrt()``                  ``u <- √u``                                            none
``ratio(n, d, eps)``        ``n(g) / (d(g) + eps)``                                n's, d's
==========================  =====================================================  ==========

Accumulators start at zero and eps is added outside the square root, exactly as in the
lecture's pseudo-code (Duchi et al. 2011; Tieleman & Hinton 2012; Kingma & Ba 2015).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.core import GradientTransformation, EmptyState, chain, identity
from gradchain.transforms._base import cast_like, transformation


class MomentState(NamedTuple):
    count: jax.Array
    hyperparams: dict
    moment: Any  # a pytree like the parameters


class AccumulateSquaresState(NamedTuple):
    count: jax.Array
    hyperparams: dict
    sum_of_squares: Any  # a pytree like the parameters


class BiasCorrectionState(NamedTuple):
    count: jax.Array
    hyperparams: dict


class RatioState(NamedTuple):
    count: jax.Array
    hyperparams: dict
    numerator: Any
    denominator: Any


def _zeros(dtype):
    return lambda params: jax.tree.map(lambda p: jnp.zeros_like(p, dtype=dtype), params)


def moment(
    decay: hyper.Hyperparameter, order: int = 1, *, dtype=None, name: str = "decay"
) -> GradientTransformation:
    """Exponential moving average of ``g**order``, starting at zero: ``m <- β m + (1-β) g^k``.

    Args:
      decay: β in [0, 1).
      order: 1 for the first moment (mean), 2 for the second (uncentred variance).
      dtype: dtype of the stored average (Adam's ``mu_dtype``/``nu_dtype``); default: each
        parameter's own.  The output is computed before this cast, as in Optax, and the
        arithmetic is done in at least float32 (half-precision moments stay finite).
      name: key of β in ``get_hyperparams`` (Adam uses ``"b1"`` and ``"b2"``).
    """
    hyper.check(name, decay, low=0.0, high=1.0, high_open=True)
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")

    def step(updates, buffers, params, count, decay):
        def average(g, m):
            # In at least float32: in bfloat16, β = 0.999 rounds to 1 and v would never grow.
            # For float32/float64 leaves this is exactly the plain formula.
            wide = jnp.promote_types(m.dtype, jnp.float32)
            g_wide = g.astype(wide)
            statistic = g_wide if order == 1 else g_wide * g_wide
            beta = jnp.asarray(decay).astype(wide)
            mean = (1 - beta) * statistic + beta * m.astype(wide)
            return mean.astype(jnp.promote_types(g.dtype, m.dtype))

        new = jax.tree.map(average, updates, buffers["moment"])
        stored = jax.tree.map(lambda m, old: m.astype(old.dtype), new, buffers["moment"])
        return new, {"moment": stored}

    return transformation(
        MomentState, step, {name: decay}, lambda params: {"moment": _zeros(dtype)(params)}
    )


def accumulate_squares(*, dtype=None) -> GradientTransformation:
    """Running sum of squared gradients, starting at zero: ``s <- s + g²`` (AdaGrad)."""

    def step(updates, buffers, params, count):
        new = jax.tree.map(lambda g, s: s + g * g, updates, buffers["sum_of_squares"])
        stored = jax.tree.map(lambda s, old: s.astype(old.dtype), new, buffers["sum_of_squares"])
        return new, {"sum_of_squares": stored}

    return transformation(
        AccumulateSquaresState, step, {}, lambda p: {"sum_of_squares": _zeros(dtype)(p)}
    )


def bias_correction(decay: hyper.Hyperparameter, *, name: str = "decay") -> GradientTransformation:
    """Divide by ``1 - β^t`` at the t-th update (t = 1, 2, ...), undoing the zero start of an
    exponential moving average with decay β (Kingma & Ba 2015, Alg. 1)."""
    hyper.check(name, decay, low=0.0, high=1.0, high_open=True)

    def step(updates, buffers, params, count, decay):
        t = hyper.increment(count)

        def correct(u):
            correction = 1 - jnp.asarray(decay) ** t
            return u / correction.astype(u.dtype)

        return jax.tree.map(correct, updates), buffers

    return transformation(BiasCorrectionState, step, {name: decay})


_bias_correction = bias_correction  # scale_by_adam's flag of the same name shadows it


def sqrt() -> GradientTransformation:
    """Element-wise square root, ``u <- √u`` (turns a second moment into an RMS)."""

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(jnp.sqrt, updates), state

    return GradientTransformation(init, update)


def ratio(
    numerator: GradientTransformation,
    denominator: GradientTransformation,
    eps: hyper.Hyperparameter = 1e-7,
) -> GradientTransformation:
    """Fan-out combinator: ``u <- numerator(g) / (denominator(g) + eps)``.

    Both transforms receive the same incoming updates ``g``; their outputs are divided leaf by
    leaf.  This is how the lecture's adaptive methods read: a statistic of the gradient over a
    normaliser of the same gradient, with ``eps`` (> 0) outside the square root.
    """
    hyper.check("eps", eps, low=0.0, low_open=True)
    for arg, tx in (("numerator", numerator), ("denominator", denominator)):
        if not (callable(getattr(tx, "init", None)) and callable(getattr(tx, "update", None))):
            raise TypeError(f"{arg} must be a gradient transformation, got {tx!r}")

    def init(params):
        return RatioState(
            count=jnp.zeros([], jnp.int32),
            hyperparams={"eps": hyper.initial(eps)},
            numerator=numerator.init(params),
            denominator=denominator.init(params),
        )

    def update(updates, state, params=None):
        top, numerator_state = numerator.update(updates, state.numerator, params)
        bottom, denominator_state = denominator.update(updates, state.denominator, params)
        current = state.hyperparams["eps"]
        out = jax.tree.map(lambda n, d: n / (d + cast_like(current, d)), top, bottom)
        return out, RatioState(
            count=hyper.increment(state.count),
            hyperparams={"eps": hyper.next_value(eps, current, state.count)},
            numerator=numerator_state,
            denominator=denominator_state,
        )

    return GradientTransformation(init, update)


def scale_by_sum_of_squares(eps: hyper.Hyperparameter = 1e-7, *, dtype=None):
    """AdaGrad's scaling: ``g / (√(Σ g²) + eps)`` (Duchi et al., JMLR 2011)."""
    return ratio(identity(), chain(accumulate_squares(dtype=dtype), sqrt()), eps)


def scale_by_rms(decay: hyper.Hyperparameter = 0.9, eps: hyper.Hyperparameter = 1e-7, *, dtype=None):
    """RMSProp's scaling, "leaky AdaGrad": ``g / (√v + eps)``, ``v <- ρ v + (1-ρ) g²``
    (Tieleman & Hinton 2012)."""
    return ratio(identity(), chain(moment(decay, 2, dtype=dtype), sqrt()), eps)


def scale_by_adam(
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-7,
    *,
    bias_correction: bool = True,
    mu_dtype=None,
    nu_dtype=None,
) -> GradientTransformation:
    """Adam's direction ``m̂ / (√v̂ + eps)`` (Kingma & Ba, ICLR 2015).

    With ``bias_correction=False`` it is the lecture's "Adam (almost)": ``m / (√v + eps)``.
    """
    if not isinstance(bias_correction, bool):
        raise TypeError(f"bias_correction must be a bool, got {bias_correction!r}")
    first = [moment(b1, 1, dtype=mu_dtype, name="b1")]
    second = [moment(b2, 2, dtype=nu_dtype, name="b2")]
    if bias_correction:
        first.append(_bias_correction(b1, name="b1"))
        second.append(_bias_correction(b2, name="b2"))
    return ratio(chain(*first), chain(*second, sqrt()), eps)
