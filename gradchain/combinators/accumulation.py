"""Accumulating updates across steps: traces, moving averages, and applying every k steps.

==========================  ===============================================  ==========================
name                        formula                                          built from
==========================  ===============================================  ==========================
``trace(decay)``            ``t <- decay·t + g``; out ``t`` (or ``g + decay·t``)  ``scale_by_momentum``
``ema(decay)``              ``e <- decay·e + (1-decay)·g``; out ``e/(1-decay^t)``  ``elementwise_pieces.ema``
``apply_every(k)``          sum ``k`` updates, emit the sum every k-th step   counter gate + sum
``MultiSteps(opt, k)``      mean (or sum) of k gradients into ``opt``         counter gate + Welford
                            once every k micro-steps
==========================  ===============================================  ==========================

The counter gate and the running accumulation are shared pieces
(:mod:`gradchain.combinators._pieces`).  ``MultiSteps`` is Optax's class of that name;
gradchain's own :func:`gradchain.accumulate_gradients` (sum in a wide dtype, then divide) stays
as it is: ``MultiSteps`` adds what Optax's has on top (a schedule for k, a sum instead of the
mean, a float32 accumulator by default, a test that skips a micro-step).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.combinators._pieces import (
    accumulate,
    as_count,
    check_count,
    check_nonnegative,
    cond,
    emits,
    install_reprs,
    run_if,
    zeros_like_output,
)
from gradchain.core import GradientTransformation, GradientTransformationExtraArgs, accepted_extra_args
from gradchain.transforms._base import canonical_dtype, check_bool, check_transformation, transformation
from gradchain.transforms.elementwise_pieces import EmaState, ema
from gradchain.transforms.momentum import ScaleByMomentumState, scale_by_momentum
from gradchain.transforms.naming import renamed
from gradchain.transforms.wrappers import _all_finite

__all__ = [
    "ApplyEvery",
    "EmaState",
    "MultiSteps",
    "MultiStepsState",
    "ShouldSkipUpdateFunction",
    "TraceState",
    "apply_every",
    "ema",
    "skip_large_updates",
    "skip_not_finite",
    "trace",
]


class TraceState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict  # {"decay": ...}
    trace: Any  # a pytree like the parameters (Optax's field name)


def trace(decay: hyper.Hyperparameter, nesterov: bool = False, accumulator_dtype: Any = None) -> GradientTransformation:
    """A trace of past updates, ``t <- decay·t + g`` (heavy-ball momentum: Polyak 1964;
    Nesterov's form ``g + decay·t``: Sutskever et al., ICML 2013), as ``optax.trace``.

    It is :func:`gradchain.scale_by_momentum` with Optax's names: the velocity is the ``trace``
    field and the momentum the hyperparameter ``decay``.

    Args:
      decay: in [0, 1): a number, an array or a schedule.
      nesterov: output Nesterov's ``g + decay·t`` instead of ``t``.
      accumulator_dtype: storage dtype of the trace (default: each parameter's).

    Returns:
      A transformation with state ``TraceState(count, hyperparams={"decay"}, trace)``.
    """
    hyper.check("decay", decay, low=0.0, high=1.0, high_open=True)
    check_bool("nesterov", nesterov)
    inner = scale_by_momentum(decay, bool(nesterov), dtype=canonical_dtype("accumulator_dtype", accumulator_dtype))
    return renamed(inner, (ScaleByMomentumState, TraceState), momentum="decay")


class ApplyEvery(NamedTuple):
    """The state of :func:`apply_every` (Optax's class name).  ``count`` is the number of
    updates so far (the micro-step within the window is ``count % k``; Optax stores that)."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict  # {"k": ...}
    grad_acc: Any  # the sum of the updates of the current window


def apply_every(k: hyper.Hyperparameter = 1) -> GradientTransformation:
    """Sum the updates of ``k`` steps and emit the sum on the k-th, zeros on the others
    (``optax.apply_every``).  With ``n = count mod k``::

        acc <- g            if n == 0  (a new window)
        acc <- acc + g      otherwise
        out  = acc if n == k - 1 else 0

    In a chain, the transformations before it still update their state every step; to step an
    optimizer once per k micro-batches use :class:`MultiSteps` (or
    :func:`gradchain.accumulate_gradients`).

    Args:
      k: the window, an int >= 1 (an integral array or a schedule also work: read live from
        the state).

    Returns:
      A transformation with state ``ApplyEvery(count, hyperparams={"k"}, grad_acc)``.
    """
    check_count("k", k)

    def step(updates, buffers, params, count, k):
        window = as_count(k)
        n = count % window
        grad_acc = jax.tree.map(
            lambda g, a: accumulate(g, jnp.where(n != 0, a, jnp.zeros_like(a)), n, mean=False),
            updates,
            buffers["grad_acc"],
        )
        emit = emits(n, window)
        out = jax.tree.map(lambda a: jnp.where(emit, a, jnp.zeros_like(a)), grad_acc)
        stored = jax.tree.map(lambda a, old: a.astype(old.dtype), grad_acc, buffers["grad_acc"])
        return out, {"grad_acc": stored}

    init_buffers = lambda params: {"grad_acc": jax.tree.map(jnp.zeros_like, params)}
    return transformation(ApplyEvery, step, {"k": k}, init_buffers)


# ---------------------------------------------------------------------------------------------
# MultiSteps and its skip tests.


class ShouldSkipUpdateFunction(Protocol):
    """``(updates, gradient_step, params) -> (should_skip: bool scalar, skip_state: pytree)``."""

    def __call__(self, updates: Any, gradient_step: Any, params: Any) -> tuple[Any, Any]: ...


def skip_not_finite(updates: Any, gradient_step: Any, params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Skip a micro-step whose updates hold an infinity or a NaN (for ``MultiSteps``).

    The test is :func:`gradchain.apply_if_finite`'s (one piece for both).

    Args:
      updates: the micro-step's updates.
      gradient_step: unused (see :class:`ShouldSkipUpdateFunction`).
      params: unused.

    Returns:
      ``(should_skip, {"should_skip": ..., "num_not_finite": number of inf/NaN elements})``.
    """
    del gradient_step, params
    should_skip = jnp.logical_not(_all_finite(updates))
    counts = [jnp.sum(jnp.logical_not(jnp.isfinite(u))) for u in jax.tree.leaves(updates)]
    num_not_finite = jnp.sum(jnp.array(counts)) if counts else jnp.zeros([], jnp.int32)
    return should_skip, {"should_skip": should_skip, "num_not_finite": num_not_finite}


def skip_large_updates(
    updates: Any, gradient_step: Any, params: Any, max_squared_norm: Any
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Skip a micro-step whose updates have ``‖u‖² >= max_squared_norm`` (or a NaN norm), for
    ``MultiSteps(..., should_skip_update_fn=functools.partial(skip_large_updates,
    max_squared_norm=...))``.

    Args:
      updates: the micro-step's updates.
      gradient_step: unused.
      params: unused.
      max_squared_norm: ≥ 0 (``inf``: never skip); an array works (traced under ``vmap``).

    Returns:
      ``(should_skip, {"should_skip": ..., "norm_squared": ‖u‖²})``.

    Raises:
      ValueError: a concrete ``max_squared_norm`` that is negative or NaN.
    """
    del gradient_step, params
    check_nonnegative("max_squared_norm", max_squared_norm)
    squares = [jnp.sum(u**2) for u in jax.tree.leaves(updates)]
    norm_sq = jnp.sum(jnp.array(squares)) if squares else jnp.zeros([])
    should_skip = jnp.logical_not(norm_sq < max_squared_norm)  # a NaN norm is skipped too
    return should_skip, {"should_skip": should_skip, "norm_squared": norm_sq}


def _never_skip(updates, gradient_step, params):
    del updates, gradient_step, params
    return jnp.array(False), ()


class MultiStepsState(NamedTuple):
    """Optax's ``MultiStepsState`` fields, plus ``hyperparams`` (``{"every_k_schedule": k}``, the
    window the next update uses)."""

    mini_step: jax.Array  # int32: micro-steps accumulated in the current window
    gradient_step: jax.Array  # int32: inner optimizer steps taken
    inner_opt_state: Any
    acc_grads: Any  # the running mean (or sum) of the window, in accumulator_dtype
    skip_state: Any
    hyperparams: dict


class MultiSteps:
    """Accumulate gradients over ``k`` micro-steps and step ``opt`` once, on their mean (or sum);
    zeros on the other micro-steps (``optax.MultiSteps``).

    With ``n = mini_step`` (0-based in the window)::

        acc <- acc + (g - acc)/(n + 1)        (use_grad_mean: Welford's running mean)
        acc <- acc + g                        (otherwise)
        n == k - 1:  out, opt_state = opt.update(acc, ...); acc <- 0; gradient_step += 1
        otherwise:   out = 0; opt_state unchanged

    A micro-step for which ``should_skip_update_fn`` is true is ignored (nothing changes but
    ``skip_state``).  ``opt`` runs only on the micro-steps that use it (one ``lax.cond``).  For a
    loss that is a mean over the batch, k micro-batches of B give the step of one batch of kB
    (Goyal et al., "Accurate, Large Minibatch SGD", 2017).

    Args:
      opt: the optimizer to step (gradchain's or Optax's).
      every_k_schedule: micro-steps per step: an int >= 1, an integral array, or a schedule
        ``gradient_step -> k`` (vary the batch size over training); stored in the state, so
        ``gc.set_hyperparams(state, every_k_schedule=4)`` changes it.
      use_grad_mean: average the window's gradients (``True``) or sum them.
      should_skip_update_fn: ``(updates, gradient_step, params) -> (bool, skip_state)``, e.g.
        :func:`skip_not_finite` or ``functools.partial(skip_large_updates,
        max_squared_norm=...)``.
      accumulator_dtype: dtype of ``acc_grads`` (Optax's default float32; ``None``: each
        parameter's).

    The state is :class:`MultiStepsState`; ``opt``'s hyperparameters are reachable in it by
    ``gc.get_hyperparams`` / ``gc.set_hyperparams``.
    """

    def __init__(
        self,
        opt: GradientTransformation,
        every_k_schedule: int | Callable[[Any], Any],
        use_grad_mean: bool = True,
        should_skip_update_fn: ShouldSkipUpdateFunction | None = None,
        accumulator_dtype: Any = jnp.float32,
    ):
        check_transformation("opt", opt)
        check_count("every_k_schedule", every_k_schedule)
        check_bool("use_grad_mean", use_grad_mean)
        if should_skip_update_fn is not None and not callable(should_skip_update_fn):
            raise TypeError(
                "should_skip_update_fn must be None or a function (updates, gradient_step, params) -> "
                f"(bool, skip_state), got {should_skip_update_fn!r}"
            )
        self._opt = opt
        self._every_k_schedule = every_k_schedule
        self._use_grad_mean = bool(use_grad_mean)
        self._should_skip_update_fn = should_skip_update_fn or _never_skip
        self._accumulator_dtype = canonical_dtype("accumulator_dtype", accumulator_dtype)

    @property
    def inner_opt(self) -> GradientTransformation:
        return self._opt

    def _k_after(self, stored: jax.Array, gradient_step: jax.Array) -> jax.Array:
        """The window stored for the next update: the schedule at ``gradient_step``."""
        k = self._every_k_schedule
        if callable(k) and not isinstance(k, jax.Array):
            return jnp.asarray(k(gradient_step), dtype=hyper.float_dtype())
        return stored

    def _skip_test(self, updates, gradient_step, params):
        should_skip, skip_state = self._should_skip_update_fn(updates, gradient_step, params)
        should_skip = jnp.asarray(should_skip)
        if (should_skip.dtype, should_skip.shape) != (jnp.bool_, ()):
            raise ValueError(
                "should_skip_update_fn must return a boolean scalar array, but it returned an array of "
                f"dtype {should_skip.dtype} and shape {should_skip.shape}"
            )
        return should_skip, skip_state

    def init(self, params: Any) -> MultiStepsState:
        gradient_step = jnp.zeros([], jnp.int32)
        acc = jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), self._accumulator_dtype or jnp.result_type(p)), params)
        _, skip_state = self._skip_test(jax.tree.map(jnp.zeros_like, params), gradient_step, params)
        return MultiStepsState(
            mini_step=jnp.zeros([], jnp.int32),
            gradient_step=gradient_step,
            inner_opt_state=self._opt.init(params),
            acc_grads=acc,
            skip_state=skip_state,
            hyperparams={"every_k_schedule": hyper.initial(self._every_k_schedule)},
        )

    def update(
        self, updates: Any, state: MultiStepsState, params: Any = None, **extra_args: Any
    ) -> tuple[Any, MultiStepsState]:
        if not isinstance(state, MultiStepsState):
            raise TypeError(f"state must be a MultiStepsState (from this MultiSteps' init), got {type(state).__name__}")
        extra = accepted_extra_args(self._opt.update, extra_args)
        stored_k = state.hyperparams["every_k_schedule"]
        k = as_count(stored_k)
        should_skip, skip_state = self._skip_test(updates, state.gradient_step, params)
        acc = jax.tree.map(
            lambda g, a: accumulate(g, a, state.mini_step, self._use_grad_mean), updates, state.acc_grads
        )

        def step_inner():
            mean = jax.tree.map(lambda a, g: a.astype(g.dtype), acc, updates)
            return self._opt.update(mean, state.inner_opt_state, params, **extra)

        zeros = functools.partial(zeros_like_output, step_inner)

        def take(_):
            emit = emits(state.mini_step, k)
            out, inner = run_if(emit, step_inner, lambda: (zeros(), state.inner_opt_state), state.inner_opt_state)
            gradient_step = jnp.where(emit, hyper.increment(state.gradient_step), state.gradient_step)
            acc_grads = jax.tree.map(
                lambda a, old: jnp.where(emit, jnp.zeros_like(a), a).astype(old.dtype), acc, state.acc_grads
            )
            new = MultiStepsState(
                mini_step=hyper.increment(state.mini_step) % k,
                gradient_step=gradient_step,
                inner_opt_state=inner,
                acc_grads=acc_grads,
                skip_state=skip_state,
                hyperparams={"every_k_schedule": self._k_after(stored_k, gradient_step)},
            )
            return out, new

        def skip(_):
            return zeros(), state._replace(skip_state=skip_state)

        return cond(should_skip, skip, take)

    def has_updated(self, state: MultiStepsState) -> jax.Array:
        """True right after a micro-step that stepped the inner optimizer."""
        return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)

    def gradient_transformation(self) -> GradientTransformationExtraArgs:
        """This wrapper as a plain ``(init, update)`` pair."""
        return GradientTransformationExtraArgs(self.init, self.update)


install_reprs(TraceState, ApplyEvery, MultiStepsState)
