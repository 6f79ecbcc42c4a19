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

Half precision.  Second-moment buffers (``moment(β, order=2)``, ``accumulate_squares``, the
second moment of ``variance``) of float16 and bfloat16 leaves are kept in float32 unless a
``dtype`` is given; first moments keep the leaf's dtype.  float16's smallest normal is
2⁻¹⁴ ≈ 6.1e-5 and its smallest subnormal 2⁻²⁴ ≈ 6.0e-8, so with β₂ = 0.999 the increment
``(1-β₂)·g²`` falls below the smallest float16 when ``g² < 2⁻²⁴/10⁻³``, i.e. ``|g| < 7.7e-3``: a
fresh ``v`` rounds to 0 (or to 2⁻²⁴) and Adam's step degenerates to ``lr·g/eps``; even a settled
``v ≈ g²`` is subnormal, with fewer than 11 significant bits, for ``|g| < 2⁻⁷ ≈ 7.8e-3``.
bfloat16 has float32's exponent range but 8 significant bits: a value ``v`` lies at least
``2⁻⁸·v`` from its neighbours, so a change below ``2⁻⁹·v ≈ 2e-3·v`` rounds away, and with
β₂ = 0.999 the change ``(1-β₂)·(g² - v)`` is that small unless ``g² > 3v``: a bfloat16 ``v``
never decreases and grows only on gradients well above its RMS.  The outputs of these
statistics stay in float32 up to :func:`ratio`, which hands back its numerator's dtype (the
leaf's, for Adam, RMSProp and AdaGrad), so the update has the parameter's dtype as before.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.core import EmptyState, GradientTransformation, chain, identity
from gradchain.transforms._base import cast_like, transformation


class MomentState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    moment: Any  # a pytree like the parameters


class AccumulateSquaresState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    sum_of_squares: Any  # a pytree like the parameters


class BiasCorrectionState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict


class RatioState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    numerator: Any
    denominator: Any


_HALF = (jnp.dtype(jnp.float16), jnp.dtype(jnp.bfloat16))


def _storage(leaf, dtype, *, second: bool):
    """The dtype a statistic of ``leaf`` is stored in: ``dtype`` when given, else the leaf's own,
    except float32 for a second moment of a float16/bfloat16 leaf (the module docstring)."""
    if dtype is not None:
        return dtype
    own = jnp.dtype(leaf.dtype if hasattr(leaf, "dtype") else jnp.result_type(leaf))
    return jnp.dtype(jnp.float32) if second and own in _HALF else own


def _zeros(dtype, *, second: bool = False):
    return lambda params: jax.tree.map(
        lambda p: jnp.zeros_like(p, dtype=_storage(p, dtype, second=second)), params
    )


def moment(
    decay: hyper.Hyperparameter,
    order: int = 1,
    *,
    dtype: Any = None,
    name: str = "decay",
    debias: bool = False,
    nesterov: bool = False,
) -> GradientTransformation:
    """Exponential moving average of ``g**order``, starting at zero: ``m <- β m + (1-β) g^k``.

    Args:
      decay: β in [0, 1).
      order: 1 for the first moment (mean), 2 for the second (uncentred variance).
      dtype: dtype of the stored average (Adam's ``mu_dtype``/``nu_dtype``); default: each
        parameter's own, except float32 for the second moment (``order=2``) of a float16 or
        bfloat16 parameter, whose ``(1-β)·g²`` would underflow or round away there (module
        docstring).  The output is computed before this cast, as in Optax, in at least float32
        (half-precision moments stay finite), and has the wider of the gradient's and the
        stored average's dtypes.
      name: key of β in ``get_hyperparams`` (Adam uses ``"b1"`` and ``"b2"``).
      debias: output ``m / (1 - β^t)`` at the t-th update (the same as chaining
        :func:`bias_correction` after it, with β stored once in this state).
      nesterov: output Nesterov's look-ahead ``β·m + (1-β)·g`` (NAdam, Dozat 2016); with
        ``debias``: ``β·m/(1 - β^(t+1)) + (1-β)·g/(1 - β^t)``, as ``optax.nadam``.

    Returns:
      A transformation whose state is a ``MomentState(count, hyperparams, moment)``.
    """
    hyper.check(name, decay, low=0.0, high=1.0, high_open=True)
    if order not in (1, 2):
        raise ValueError(f"order must be 1 or 2, got {order!r}")
    for flag, value in (("debias", debias), ("nesterov", nesterov)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be a bool, got {value!r}")

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
        t = hyper.increment(count)
        if nesterov:
            beta = jnp.asarray(decay)
            c_next = 1 - beta ** hyper.increment(t) if debias else jnp.ones_like(beta)
            c_now = 1 - beta**t if debias else jnp.ones_like(beta)

            def look_ahead(m, g):
                b = beta.astype(m.dtype)
                return b * m / c_next.astype(m.dtype) + (1 - b) * g.astype(m.dtype) / c_now.astype(m.dtype)

            new = jax.tree.map(look_ahead, new, updates)
        elif debias:
            correction = 1 - jnp.asarray(decay) ** t
            new = jax.tree.map(lambda u: u / correction.astype(u.dtype), new)
        return new, {"moment": stored}

    return transformation(
        MomentState, step, {name: decay}, lambda params: {"moment": _zeros(dtype, second=order >= 2)(params)}
    )


def accumulate_squares(*, dtype: Any = None, initial_value: float = 0.0) -> GradientTransformation:
    """Running sum of squared gradients: ``s <- s + g²`` (AdaGrad).

    Args:
      dtype: storage dtype of ``s`` (default: each parameter's, but float32 for a float16 or
        bfloat16 parameter: see the module docstring).  The sum is taken in at least float32.
      initial_value: the start of ``s`` (≥ 0): 0 as in the lecture, 0.1 as ``optax.adagrad``.

    Returns:
      A transformation with state ``AccumulateSquaresState(count, hyperparams, sum_of_squares)``.
    """
    hyper.check_value("initial_value", initial_value, low=0.0)

    def step(updates, buffers, params, count):
        def add(g, s):  # for float32/float64 leaves exactly ``s + g * g``
            wide = jnp.promote_types(s.dtype, jnp.float32)
            g_wide = g.astype(wide)
            return (s.astype(wide) + g_wide * g_wide).astype(jnp.promote_types(g.dtype, s.dtype))

        new = jax.tree.map(add, updates, buffers["sum_of_squares"])
        stored = jax.tree.map(lambda s, old: s.astype(old.dtype), new, buffers["sum_of_squares"])
        return new, {"sum_of_squares": stored}

    def init_buffers(params):
        start = lambda p: jnp.full_like(p, initial_value, dtype=_storage(p, dtype, second=True))
        return {"sum_of_squares": jax.tree.map(start, params)}

    return transformation(AccumulateSquaresState, step, {}, init_buffers)


class VarianceState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    mean: Any  # a pytree like the parameters
    second_moment: Any  # a pytree like the parameters


def variance(decay: hyper.Hyperparameter, *, dtype: Any = None, name: str = "decay") -> GradientTransformation:
    """Exponential moving variance: ``m <- βm + (1-β)g``, ``v <- βv + (1-β)g²``, output
    ``max(v - m², 0)`` (centred RMSProp's statistic, Graves 2013).

    Args:
      decay: β in [0, 1).
      dtype: storage dtype of both averages (default: each parameter's, but float32 for the
        second moment of a float16 or bfloat16 parameter: see the module docstring).  Both are
        updated, and ``v - m²`` taken, in at least float32.
      name: key of β in ``get_hyperparams``.

    Returns:
      A transformation with state ``VarianceState(count, hyperparams, mean, second_moment)``.
    """
    hyper.check(name, decay, low=0.0, high=1.0, high_open=True)

    def step(updates, buffers, params, count, decay):
        def averages(g, m, v):  # for float32/float64 leaves exactly the plain formulas
            wide = jnp.promote_types(jnp.promote_types(m.dtype, v.dtype), jnp.float32)
            beta = jnp.asarray(decay).astype(wide)
            g = g.astype(wide)
            mean = (1 - beta) * g + beta * m.astype(wide)
            second = (1 - beta) * g * g + beta * v.astype(wide)
            out = jnp.maximum(second - mean * mean, 0).astype(jnp.promote_types(m.dtype, v.dtype))
            return out, mean.astype(m.dtype), second.astype(v.dtype)

        triples = jax.tree.map(averages, updates, buffers["mean"], buffers["second_moment"])
        is_triple = lambda x: isinstance(x, tuple) and len(x) == 3 and not hasattr(x, "_fields")
        out, mean, second = (jax.tree.map(lambda tr, i=i: tr[i], triples, is_leaf=is_triple) for i in range(3))
        return out, {"mean": mean, "second_moment": second}

    def init_buffers(params):
        return {"mean": _zeros(dtype)(params), "second_moment": _zeros(dtype, second=True)(params)}

    return transformation(VarianceState, step, {name: decay}, init_buffers)


class ShiftState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict


def shift(value: hyper.Hyperparameter, *, name: str = "shift") -> GradientTransformation:
    """``u <- u + value`` (Adam's ``eps_root`` before the square root).

    Args:
      value: a finite number, array or schedule.
      name: key of ``value`` in ``get_hyperparams``.

    Returns:
      A transformation with state ``ShiftState(count, hyperparams)``.
    """
    hyper.check(name, value)

    def step(updates, buffers, params, count, value):
        return jax.tree.map(lambda u: u + cast_like(value, u), updates), buffers

    return transformation(ShiftState, step, {name: value})


def bias_correction(decay: hyper.Hyperparameter, *, name: str = "decay") -> GradientTransformation:
    """Divide by ``1 - β^t`` at the t-th update (t = 1, 2, ...), undoing the zero start of an
    exponential moving average with decay β (Kingma & Ba 2015, Alg. 1).

    Args:
      decay: β in [0, 1), the decay of the average this follows.
      name: key of β in ``get_hyperparams``.

    Returns:
      A transformation with state ``BiasCorrectionState(count, hyperparams)``.  (Adam uses
      ``moment(..., debias=True)`` instead, which stores β once.)
    """
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
    """Element-wise square root, ``u <- √u`` (turns a second moment into an RMS).

    Returns:
      A stateless transformation (state ``EmptyState()``).
    """

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
    normaliser of the same gradient, with ``eps`` (> 0) outside the square root.  The quotient
    is taken in the wider of the two dtypes and has the numerator's: a float32 second moment of
    a half-precision leaf (see the module docstring) does not widen the update.

    Args:
      numerator: a transformation (``identity()`` for the raw gradient).
      denominator: a transformation of the same gradient.
      eps: > 0, added to the denominator.

    Returns:
      A transformation with state ``RatioState(count, hyperparams, numerator, denominator)``.
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
        out = jax.tree.map(lambda n, d: (n / (d + cast_like(current, d))).astype(jnp.result_type(n)), top, bottom)
        return out, RatioState(
            count=hyper.increment(state.count),
            hyperparams={"eps": hyper.next_value(eps, current, state.count)},
            numerator=numerator_state,
            denominator=denominator_state,
        )

    return GradientTransformation(init, update)


def scale_by_sum_of_squares(
    eps: hyper.Hyperparameter = 1e-7, *, dtype: Any = None, initial_value: float = 0.0
) -> GradientTransformation:
    """AdaGrad's scaling: ``g / (√(s₀ + Σ g²) + eps)`` (Duchi et al., JMLR 2011).

    Args:
      eps: > 0, outside the square root.
      dtype: storage dtype of the sum (default: each parameter's; float32 for float16/bfloat16).
      initial_value: ``s₀`` ≥ 0 (0 here, 0.1 in ``optax.adagrad``).

    Returns:
      ``ratio(identity(), chain(accumulate_squares(), sqrt()), eps)``.
    """
    squares = accumulate_squares(dtype=dtype, initial_value=initial_value)
    return ratio(identity(), chain(squares, sqrt()), eps)


def scale_by_centred_rms(
    decay: hyper.Hyperparameter = 0.9, eps: hyper.Hyperparameter = 1e-7, *, dtype: Any = None
) -> GradientTransformation:
    """Centred RMSProp's scaling ``g / (√(v - m²) + eps)`` (Graves 2013, eq. 38-40).

    Args:
      decay: ρ in [0, 1) of both averages.
      eps: > 0, outside the square root (``optax.rmsprop(centered=True)`` adds it inside).
      dtype: storage dtype of the averages (default: see :func:`variance`).

    Returns:
      ``ratio(identity(), chain(variance(decay), sqrt()), eps)``.
    """
    return ratio(identity(), chain(variance(decay, dtype=dtype), sqrt()), eps)


def scale_by_rms(
    decay: hyper.Hyperparameter = 0.9, eps: hyper.Hyperparameter = 1e-7, *, dtype: Any = None
) -> GradientTransformation:
    """RMSProp's scaling, "leaky AdaGrad": ``g / (√v + eps)``, ``v <- ρ v + (1-ρ) g²``
    (Tieleman & Hinton 2012).

    Args:
      decay: ρ in [0, 1).
      eps: > 0, outside the square root.
      dtype: storage dtype of ``v`` (default: each parameter's; float32 for float16/bfloat16).

    Returns:
      ``ratio(identity(), chain(moment(decay, 2), sqrt()), eps)``.
    """
    return ratio(identity(), chain(moment(decay, 2, dtype=dtype), sqrt()), eps)


def scale_by_adam(
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-7,
    *,
    bias_correction: bool = True,
    eps_root: hyper.Hyperparameter = 0.0,
    nesterov: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformation:
    """Adam's direction ``m̂ / (√(v̂ + eps_root) + eps)`` (Kingma & Ba, ICLR 2015).

    Args:
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: > 0, outside the square root.
      bias_correction: divide by ``1 - β^t``; ``False`` is the lecture's "Adam (almost)":
        ``m / (√v + eps)``.
      eps_root: ≥ 0 inside the square root (a :func:`shift` before :func:`sqrt`; none at 0).
      nesterov: NAdam's look-ahead first moment (see :func:`moment`).
      mu_dtype: storage dtype of ``m`` (default: each parameter's).  The update has the dtype
        of ``m``'s output: the wider of the parameter's dtype and ``mu_dtype``.
      nu_dtype: storage dtype of ``v`` (default: each parameter's, but float32 for float16 and
        bfloat16 parameters, whose ``v`` would underflow or stop moving: see :func:`moment`).

    Returns:
      ``ratio(chain(moment(b1, debias=True)), chain(moment(b2, 2, debias=True), sqrt()), eps)``:
      each of b1 and b2 is stored once, in its moment's state.
    """
    if not isinstance(bias_correction, bool):
        raise TypeError(f"bias_correction must be a bool, got {bias_correction!r}")
    hyper.check("eps_root", eps_root, low=0.0)
    first = moment(b1, 1, dtype=mu_dtype, name="b1", debias=bias_correction, nesterov=nesterov)
    second = [moment(b2, 2, dtype=nu_dtype, name="b2", debias=bias_correction)]
    if not hyper.is_zero(eps_root):
        second.append(shift(eps_root, name="eps_root"))
    return ratio(chain(first), chain(*second, sqrt()), eps)
