"""Learning-rate schedules: pure functions ``schedule(step) -> value``.

A schedule is any callable from a step to a value.  Every schedule here

* accepts a Python int, or an integer array, concrete or traced (``jit``, ``vmap``, ``lax.scan``);
  an array of steps gives an array of values, elementwise;
* returns an array of the default float dtype (``jnp.result_type(float)``: float32, or float64
  under ``jax_enable_x64``), decided when the schedule is *called*, not when it is built;
* treats a negative step as step 0.

Hyperparameters that set a *value* (``init_value``, ``end_value``, ``factor``, ``decay``,
``t_mult``) may be Python numbers or JAX arrays — traced under ``vmap``, so a population of
schedules is one program; they broadcast against the step.  Hyperparameters that set the *shape*
of the schedule in steps (``decay_steps``, ``boundaries``, ``period``, ``warmup_steps``,
``timescale``) are Python ints, checked when the schedule is built.

Any of these schedules can be passed wherever gradchain takes a hyperparameter::

    lr = warmup(cosine_schedule(0.1, decay_steps=9_000), warmup_steps=1_000)
    opt = gradchain.sgd(lr, momentum=0.9)

The optimizer evaluates the schedule at its own update count, and
``get_hyperparams(state)["learning_rate"]`` is the value the next update will use.
"""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradchain import hyper

__all__ = [
    "batch_scaled",
    "constant_schedule",
    "cosine_schedule",
    "epochs_to_steps",
    "inverse_sqrt_schedule",
    "join_schedules",
    "linear_schedule",
    "plot_schedules",
    "sgdr_schedule",
    "step_schedule",
    "warmup",
]

Schedule = hyper.Schedule
Number = Any  # a Python number or a JAX/NumPy array (possibly traced)


# ---------------------------------------------------------------------------------------------
# Validation and conversion helpers.


def _positive_int(name: str, value: Any) -> int:
    """A structural step count: a Python (or NumPy) int > 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be a positive int, got {value!r} of type {type(value).__name__}"
        )
    if value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _boundaries(name: str, values: Any) -> tuple[int, ...]:
    """A strictly increasing sequence of non-negative Python ints."""
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, (Sequence, np.ndarray)):
        raise TypeError(
            f"{name} must be a sequence of non-negative ints, got {values!r} "
            f"of type {type(values).__name__}"
        )
    result = []
    for i, b in enumerate(values):
        if isinstance(b, (bool, np.bool_)) or not isinstance(b, numbers.Integral):
            raise TypeError(
                f"{name} must be a sequence of non-negative ints, got {name}[{i}] = {b!r} "
                f"of type {type(b).__name__}"
            )
        if b < 0:
            raise ValueError(f"{name} must be non-negative, got {name}[{i}] = {b!r} in {values!r}")
        result.append(int(b))
    if any(a >= b for a, b in itertools.pairwise(result)):
        raise ValueError(f"{name} must be strictly increasing, got {values!r}")
    return tuple(result)


def _value(name: str, value: Any, **bounds: Any) -> Number:
    """A value hyperparameter: a finite number or array (not a schedule), inside ``bounds``."""
    if callable(value) and not isinstance(value, (jax.Array, np.ndarray)):
        raise TypeError(
            f"{name} must be a real number or a JAX array, got the callable {value!r}; "
            "to compose schedules use warmup, join_schedules or batch_scaled"
        )
    return hyper.check(name, value, **bounds)


def _schedule(name: str, value: Any) -> Schedule:
    if not callable(value) or isinstance(value, (jax.Array, np.ndarray)):
        raise TypeError(
            f"{name} must be a schedule (a callable step -> value), got {value!r} "
            f"of type {type(value).__name__}; wrap a number with constant_schedule(value)"
        )
    return value


def _step(step: Any) -> jax.Array:
    """The step as an array (int stays int), negative steps clamped to 0."""
    step = jnp.asarray(step)
    if step.dtype == jnp.bool_ or not (
        jnp.issubdtype(step.dtype, jnp.integer) or jnp.issubdtype(step.dtype, jnp.floating)
    ):
        raise TypeError(f"step must be an int or an integer (or real) array, got dtype {step.dtype}")
    return jnp.maximum(step, 0)


def _float(x: Any) -> jax.Array:
    return jnp.asarray(x, dtype=hyper.float_dtype())


# ---------------------------------------------------------------------------------------------
# Schedules.


def constant_schedule(value: Number) -> Schedule:
    """``α_t = value`` for every step.

    Args:
      value: a finite number or array (traced under ``vmap``).

    Returns:
      A schedule ``step -> value`` (an int or an integer array, concrete or traced, in; an
      array of the default float dtype out).
    """
    _value("value", value)

    def schedule(step):
        return jnp.zeros_like(_step(step), dtype=hyper.float_dtype()) + _float(value)

    return schedule


def step_schedule(init_value: Number, boundaries: Sequence[int], factor: Number = 0.1) -> Schedule:
    """Step decay: multiply by ``factor`` at each boundary.

    ``α_t = init_value · factor^n(t)``, where ``n(t)`` is the number of ``boundaries`` ``<= t``:
    the new value applies *from* the boundary step on.  The ResNet recipe (He et al., CVPR 2016)
    is ``step_schedule(0.1, epochs_to_steps([30, 60, 90], steps_per_epoch), factor=0.1)``.

    Optax's ``piecewise_constant_schedule(init_value, {b: factor for b in boundaries})`` gives
    the same values.

    Args:
      init_value: the value before the first boundary.
      boundaries: strictly increasing non-negative ints (steps, not epochs: see
        :func:`epochs_to_steps`); may be empty.
      factor: > 0, the multiplier at each boundary.

    Returns:
      A schedule ``step -> value`` (an int or an integer array, concrete or traced, in; an
      array of the default float dtype out).
    """
    _value("init_value", init_value)
    bounds = _boundaries("boundaries", boundaries)
    _value("factor", factor, low=0.0, low_open=True)

    def schedule(step):
        s = _step(step)
        if bounds:
            n = jnp.sum(s[..., None] >= jnp.asarray(bounds, s.dtype), axis=-1)
        else:
            n = jnp.zeros_like(s)
        return _float(init_value) * _float(factor) ** n.astype(hyper.float_dtype())

    return schedule


def epochs_to_steps(epochs: int | Sequence[int], steps_per_epoch: int) -> int | list[int]:
    """Turn an epoch count (or a list of epoch boundaries) into step counts.

    ``epochs_to_steps([30, 60, 90], 390) == [11700, 23400, 35100]``; an int gives an int.

    Args:
      epochs: a non-negative int, or a sequence of them.
      steps_per_epoch: a positive int.

    Returns:
      ``epochs * steps_per_epoch``: an int, or a list of ints.
    """
    steps_per_epoch = _positive_int("steps_per_epoch", steps_per_epoch)

    def one(name, e):
        if isinstance(e, (bool, np.bool_)) or not isinstance(e, numbers.Integral):
            raise TypeError(
                f"{name} must be a non-negative int, got {e!r} of type {type(e).__name__}"
            )
        if e < 0:
            raise ValueError(f"{name} must be a non-negative int, got {e!r}")
        return int(e) * steps_per_epoch

    if isinstance(epochs, (Sequence, np.ndarray)) and not isinstance(epochs, (str, bytes)):
        return [one(f"epochs[{i}]", e) for i, e in enumerate(epochs)]
    return one("epochs", epochs)


def cosine_schedule(init_value: Number, decay_steps: int, end_value: Number = 0.0) -> Schedule:
    """Cosine decay (Loshchilov & Hutter, "SGDR", ICLR 2017), one cycle, no restart::

        α_t = end + ½ (α₀ − end) (1 + cos(π t / T))    for t ≤ T,
        α_t = end                                      for t ≥ T,

    with ``α₀ = init_value``, ``T = decay_steps`` (a positive int) and ``end = end_value``.  The
    lecture's form is ``end_value = 0``.  Same values as ``optax.cosine_decay_schedule`` with
    ``alpha = end_value / init_value``: gradchain names the final *value*, Optax its fraction.

    Args:
      init_value: the value at step 0.
      decay_steps: ``T``, a positive int: the value is ``end_value`` from step ``T`` on.
      end_value: the final value (not a fraction of ``init_value``).

    Returns:
      A schedule ``step -> value`` (an int or an integer array, concrete or traced, in; an
      array of the default float dtype out).
    """
    _value("init_value", init_value)
    T = _positive_int("decay_steps", decay_steps)
    _value("end_value", end_value)

    def schedule(step):
        t = jnp.minimum(_step(step), T).astype(hyper.float_dtype())
        a0, end = _float(init_value), _float(end_value)
        return end + 0.5 * (a0 - end) * (1.0 + jnp.cos(jnp.pi * t / T))

    return schedule


def linear_schedule(init_value: Number, decay_steps: int, end_value: Number = 0.0) -> Schedule:
    """Linear decay (as in BERT, Devlin et al. 2018)::

        α_t = α₀ + (end − α₀) · t / T    for t ≤ T,        α_t = end    for t ≥ T,

    which is the lecture's ``α₀ (1 − t/T)`` when ``end_value = 0``.  ``T = decay_steps``, a
    positive int.  Same values as ``optax.linear_schedule(init_value, end_value, decay_steps)``:
    note the order, gradchain's second argument is the number of steps.

    Args:
      init_value: the value at step 0.
      decay_steps: ``T``, a positive int.
      end_value: the value from step ``T`` on.

    Returns:
      A schedule ``step -> value`` (an int or an integer array, concrete or traced, in; an
      array of the default float dtype out).
    """
    _value("init_value", init_value)
    T = _positive_int("decay_steps", decay_steps)
    _value("end_value", end_value)

    def schedule(step):
        t = jnp.minimum(_step(step), T).astype(hyper.float_dtype())
        a0, end = _float(init_value), _float(end_value)
        return a0 + (end - a0) * (t / T)

    return schedule


def inverse_sqrt_schedule(init_value: Number, timescale: int = 1) -> Schedule:
    """Inverse square-root decay (Vaswani et al., "Attention is all you need", NIPS 2017)::

        α_t = α₀ · √(τ / max(t, τ))

    i.e. flat at ``α₀ = init_value`` up to step ``τ = timescale`` (a positive int), then
    ``α₀ √τ / √t``.  With the default ``τ = 1`` this is the lecture's ``α₀ / √t`` for every
    ``t ≥ 1``.

    Step 0: ``α₀/√t`` is infinite at ``t = 0``; we hold the value at ``α₀`` instead of shifting
    the clock (``α₀/√(t + 1)``), because then (a) the formula is exactly the lecture's from step
    ``τ`` on, (b) ``init_value`` is the largest value the schedule takes, so it reads as the peak
    learning rate, and (c) the schedule is continuous at ``τ``.  Vaswani et al.'s schedule — a
    linear warmup to the peak over ``W`` steps, then ``∝ 1/√t`` — is::

        warmup(inverse_sqrt_schedule(peak, timescale=W), warmup_steps=W, shift=False)

    Args:
      init_value: ``α₀``, the peak value.
      timescale: ``τ``, a positive int: the value is flat up to step ``τ``.

    Returns:
      A schedule ``step -> value`` (an int or an integer array, concrete or traced, in; an
      array of the default float dtype out).
    """
    _value("init_value", init_value)
    tau = _positive_int("timescale", timescale)

    def schedule(step):
        t = jnp.maximum(_step(step), tau).astype(hyper.float_dtype())
        return _float(init_value) * jnp.sqrt(tau / t)

    return schedule


def warmup(
    schedule: Schedule, warmup_steps: int, init_value: Number = 0.0, shift: bool = True
) -> Schedule:
    """Linear warmup in front of ``schedule`` (Goyal et al., "Accurate, Large Minibatch SGD", 2017).

    For ``t < W`` (``W = warmup_steps``, a positive int) the value rises linearly from
    ``init_value`` to the value the inner schedule starts with; from ``t = W`` on it is the inner
    schedule::

        shift=True  (default):  α_t = init + (s(0) − init) · t/W   for t < W,   s(t − W)   after;
        shift=False:            α_t = init + (s(W) − init) · t/W   for t < W,   s(t)       after.

    With ``shift=True`` the inner clock starts at 0 when the warmup ends, so the inner schedule
    runs in full after the warmup (``warmup(cosine_schedule(lr, T), W)`` lasts ``W + T`` steps;
    same values as ``optax.warmup_cosine_decay_schedule(init, lr, W, W + T)``).  With
    ``shift=False`` the inner schedule keeps the global clock and the warmup replaces its first
    ``W`` steps.  Either way the join is continuous: the ramp ends exactly at the inner
    schedule's value at the switch step.

    Args:
      schedule: the schedule after the warmup.
      warmup_steps: ``W``, a positive int.
      init_value: the value at step 0.
      shift: start the inner schedule's clock at 0 when the warmup ends.

    Returns:
      A schedule ``step -> value`` (an int or an integer array, concrete or traced, in; an
      array of the default float dtype out).
    """
    inner = _schedule("schedule", schedule)
    W = _positive_int("warmup_steps", warmup_steps)
    _value("init_value", init_value)
    if not isinstance(shift, (bool, np.bool_)):
        raise TypeError(f"shift must be a bool, got {shift!r} of type {type(shift).__name__}")

    def warmed(step):
        s = _step(step)
        switch = jnp.full((), 0 if shift else W, s.dtype)
        target = _float(inner(switch))
        init = _float(init_value)
        t = jnp.minimum(s, W).astype(hyper.float_dtype())
        ramp = init + (target - init) * (t / W)
        after = _float(inner(jnp.maximum(s - W, 0) if shift else s))
        return jnp.where(s < W, ramp, after)

    return warmed


def sgdr_schedule(
    init_value: Number,
    period: int,
    t_mult: Number = 1.0,
    end_value: Number = 0.0,
    decay: Number = 1.0,
) -> Schedule:
    """Cosine annealing with warm restarts, SGDR (Loshchilov & Hutter, ICLR 2017).

    Cycle ``i = 0, 1, ...`` lasts ``T_i = period · t_mult^i`` steps and starts at step
    ``S_i = period · (t_mult^i − 1)/(t_mult − 1)`` (``= i · period`` for ``t_mult = 1``).  Inside
    it, with ``τ = t − S_i``::

        α_t = end + ½ (α₀ · decay^i − end) (1 + cos(π τ / T_i))

    so the value restarts at ``α₀ · decay^i`` at each ``S_i`` and anneals towards ``end_value``.

    ``period``: a positive int.  ``t_mult`` ≥ 1 (the paper uses 1 or 2; non-integer values give
    fractional cycle lengths).  ``decay`` > 0 shrinks the peak at each restart (1: no shrink).

    The cycle index is computed in closed form, no loop over restarts: ``t // period`` in
    integer arithmetic for ``t_mult = 1``, otherwise
    ``i = ⌊log(1 + t (t_mult − 1)/period) / log t_mult⌋`` followed by a one-step correction
    against ``S_i`` and ``S_{i+1}``, so that a step exactly on a restart lands in the new cycle
    despite float rounding of the logarithm.

    Args:
      init_value: ``α₀``, the value at the first restart.
      period: the first cycle's length, a positive int.
      t_mult: ≥ 1, each cycle is ``t_mult`` times longer than the previous one.
      end_value: the value each cycle anneals towards.
      decay: > 0, the peak shrinks by this factor at each restart.

    Returns:
      A schedule ``step -> value`` (an int or an integer array, concrete or traced, in; an
      array of the default float dtype out).
    """
    _value("init_value", init_value)
    P = _positive_int("period", period)
    _value("t_mult", t_mult, low=1.0)
    _value("end_value", end_value)
    _value("decay", decay, low=0.0, low_open=True)
    static_one = isinstance(t_mult, numbers.Real) and t_mult == 1
    static_more = isinstance(t_mult, numbers.Real) and float(t_mult) > 1

    def constant_periods(s, dt):
        i = s // P
        return i.astype(dt), (s - i * P).astype(dt), jnp.asarray(P, dt)

    def growing_periods(s, m, dt):
        t = s.astype(dt)
        start = lambda k: P * (m**k - 1.0) / (m - 1.0)
        i = jnp.floor(jnp.log1p(t * (m - 1.0) / P) / jnp.log(m))
        i = jnp.maximum(jnp.where(t < start(i), i - 1.0, i), 0.0)
        i = jnp.where(t >= start(i + 1.0), i + 1.0, i)
        return i, t - start(i), P * m**i

    def schedule(step):
        dt = hyper.float_dtype()
        s = _step(step)
        if static_one:
            i, tau, length = constant_periods(s, dt)
        elif static_more:
            i, tau, length = growing_periods(s, _float(t_mult), dt)
        else:  # an array t_mult (e.g. under vmap): both forms, chosen elementwise
            m = _float(t_mult)
            one = m == 1.0
            i1, tau1, len1 = constant_periods(s, dt)
            i2, tau2, len2 = growing_periods(s, jnp.where(one, 2.0, m), dt)
            i, tau, length = (
                jnp.where(one, a, b) for a, b in ((i1, i2), (tau1, tau2), (len1, len2))
            )
        peak = _float(init_value) * _float(decay) ** i
        end = _float(end_value)
        return end + 0.5 * (peak - end) * (1.0 + jnp.cos(jnp.pi * tau / length))

    return schedule


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Run ``schedules[0]`` until ``boundaries[0]``, then ``schedules[1]``, and so on.

    Schedule ``i`` is used on ``[boundaries[i-1], boundaries[i])`` and sees the step relative to
    the start of its interval, ``t − boundaries[i-1]`` (schedule 0 sees ``t``), so each piece can be
    written as if it started at step 0 — the convention of ``optax.join_schedules``.  The join is
    not made continuous: use :func:`warmup` for a continuous ramp.

    Args:
      schedules: ``len(boundaries) + 1`` schedules.
      boundaries: strictly increasing non-negative ints.

    Returns:
      A schedule ``step -> value`` (an int or an integer array, concrete or traced, in; an
      array of the default float dtype out).
    """
    if isinstance(schedules, (str, bytes, Mapping)) or not isinstance(schedules, Sequence):
        raise TypeError(
            f"schedules must be a sequence of schedules, got {schedules!r} "
            f"of type {type(schedules).__name__}"
        )
    pieces = [_schedule(f"schedules[{i}]", s) for i, s in enumerate(schedules)]
    bounds = _boundaries("boundaries", boundaries)
    if len(pieces) != len(bounds) + 1:
        raise ValueError(
            f"join_schedules needs len(schedules) == len(boundaries) + 1, got "
            f"{len(pieces)} schedules and {len(bounds)} boundaries {list(bounds)}"
        )

    def joined(step):
        s = _step(step)
        out = _float(pieces[0](s))
        for b, piece in zip(bounds, pieces[1:]):
            out = jnp.where(s >= b, _float(piece(jnp.maximum(s - b, 0))), out)
        return out

    return joined


def batch_scaled(
    value: Number | Schedule, batch_size: int, base_batch_size: int
) -> Number | Schedule:
    """Linear scaling rule (Goyal et al., "Accurate, Large Minibatch SGD", 2017).

    ``value · batch_size / base_batch_size``: a learning rate tuned at ``base_batch_size`` used at
    ``batch_size``.  ``value`` may be a number or array (the result is one too) or a schedule
    (the result is a schedule, every value scaled).

    Args:
      value: a number, array or schedule tuned at ``base_batch_size``.
      batch_size: a positive int, the batch size used.
      base_batch_size: a positive int, the batch size ``value`` was tuned at.

    Returns:
      ``value · batch_size / base_batch_size`` (a schedule when ``value`` is one).
    """
    batch_size = _positive_int("batch_size", batch_size)
    base_batch_size = _positive_int("base_batch_size", base_batch_size)
    ratio = batch_size / base_batch_size
    if callable(value) and not isinstance(value, (jax.Array, np.ndarray)):
        inner = value

        def scaled(step):
            return _float(inner(step)) * ratio

        return scaled
    _value("value", value)
    return value * ratio


# ---------------------------------------------------------------------------------------------
# Plotting (optional: needs matplotlib, ``pip install gradchain[plot]``).


def plot_schedules(schedules: Mapping[str, Schedule], num_steps: int, ax: Any = None) -> Any:
    """Draw each schedule of ``{label: schedule}`` over the steps 0 to ``num_steps - 1``.

    Draws on ``ax`` if given, otherwise on a new figure; returns the matplotlib ``Axes``
    (``ax.figure`` is its figure).  Schedules are evaluated with ``jax.vmap`` over the steps,
    falling back to one Python call per step for schedules that cannot be traced.

    Args:
      schedules: ``{label: schedule}``.
      num_steps: a positive int.
      ax: a matplotlib ``Axes`` to draw on, or ``None`` for a new figure.

    Returns:
      The matplotlib ``Axes``.  Needs matplotlib (``pip install 'gradchain[plot]'``).
    """
    if not isinstance(schedules, Mapping):
        raise TypeError(
            f"schedules must be a dict {{label: schedule}}, got {schedules!r} "
            f"of type {type(schedules).__name__}"
        )
    for label, s in schedules.items():
        _schedule(f"schedules[{label!r}]", s)
    num_steps = _positive_int("num_steps", num_steps)
    try:  # after the checks: a bad call says what is wrong even without matplotlib
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "plot_schedules needs matplotlib, an optional dependency: pip install gradchain[plot]"
        ) from err

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4))
    steps = np.arange(num_steps)
    for label, s in schedules.items():
        try:
            values = jax.vmap(s)(jnp.asarray(steps, jnp.int32))
        except Exception:
            values = [s(int(k)) for k in steps]
        ax.plot(steps, np.asarray(values, dtype=float), label=str(label))
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    ax.legend()
    return ax

