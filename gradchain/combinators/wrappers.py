"""Wrappers and guards with Optax's names: look-ahead, conditional application, NaN and sign
guards, and DP-SGD's per-example clipping.

* ``lookahead(fast, k, α)`` = ``fast`` on the fast weights, then :func:`lookahead_sync`, the
  interpolation ``slow <- slow + α (fast - slow)`` every k steps (Zhang et al. 2019);
* ``conditionally_mask`` / ``conditionally_transform``: the inner transformation on the steps a
  predicate of the step count selects (zeros / the updates unchanged on the others);
* ``zero_nans()``, ``keep_params_nonnegative()``: element-wise guards;
* ``per_example_global_norm_clip(grads, c)``: clip each example's gradient to norm ``c`` and
  sum (Abadi et al. 2016), from :func:`gradchain.global_norm`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.combinators._pieces import (
    as_count,
    check_count,
    check_nonnegative,
    check_predicate,
    install_reprs,
    run_if,
)
from gradchain.core import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    accepted_extra_args,
)
from gradchain.transforms._base import cast_like, check_bool, check_transformation, require_params, transformation
from gradchain.transforms.clipping import global_norm

__all__ = [
    "ConditionallyMaskState",
    "ConditionallyTransformState",
    "LookaheadParams",
    "LookaheadState",
    "LookaheadSyncState",
    "NonNegativeParamsState",
    "ZeroNansState",
    "conditionally_mask",
    "conditionally_transform",
    "keep_params_nonnegative",
    "lookahead",
    "lookahead_sync",
    "per_example_global_norm_clip",
    "zero_nans",
]


# ---------------------------------------------------------------------------------------------
# Lookahead.


class LookaheadParams(NamedTuple):
    """The fast and slow weights of :func:`lookahead` (Optax's ``LookaheadParams``).

    Take gradients at ``fast``; evaluate and deploy ``slow`` (Zhang et al. 2019).  Optax's own
    ``optax.LookaheadParams`` works with gradchain's ``lookahead`` too (the updates come back in
    the class of the parameters).
    """

    fast: Any
    slow: Any

    @classmethod
    def init_synced(cls, params: Any) -> LookaheadParams:
        """Fast and slow weights both at ``params``."""
        return cls(slow=params, fast=params)


class LookaheadSyncState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict  # {"sync_period": k, "slow_step_size": α}


class LookaheadState(NamedTuple):
    """Optax's ``LookaheadState`` fields, plus ``sync`` (the state of :func:`lookahead_sync`:
    its count and the hyperparameters ``sync_period`` and ``slow_step_size``)."""

    fast_state: Any
    steps_since_sync: jax.Array  # int32: fast steps since the last synchronisation
    sync: LookaheadSyncState


def _syncs(count: jax.Array, sync_period: jax.Array) -> jax.Array:
    """Whether the update with index ``count`` is the last fast step of its period."""
    k = as_count(sync_period)
    return count % k == k - 1


def _check_lookahead_params(params: Any, where: str) -> Any:
    """``params`` when it is a (fast, slow) pair, else a ``ValueError`` saying what is needed."""
    if params is None or not (hasattr(params, "fast") and hasattr(params, "slow")):
        raise ValueError(
            f"{where} needs params=LookaheadParams(fast, slow) (gc.LookaheadParams.init_synced(params) to "
            f"start), got {type(params).__name__}"
        )
    return params


def _pair_like(params: Any, fast: Any, slow: Any) -> Any:
    """A pair of the class of ``params`` (gradchain's or Optax's ``LookaheadParams``)."""
    replace = getattr(params, "_replace", None)
    return replace(fast=fast, slow=slow) if callable(replace) else LookaheadParams(fast=fast, slow=slow)


def lookahead_sync(sync_period: hyper.Hyperparameter, slow_step_size: hyper.Hyperparameter) -> GradientTransformation:
    """Lookahead's synchronisation (Zhang et al., "Lookahead Optimizer: k steps forward, 1 step
    back", NeurIPS 2019): the updates of a pair ``(fast, slow)`` given the fast weights' updates.

    With ``u`` the fast update and ``d = fast + u - slow`` (the fast weights after this step,
    from the slow ones), on the last step of each period of ``k = sync_period`` steps::

        slow <- slow + α·d                     (the interpolation between the two sequences)
        fast <- slow + α·d                     (restart from the new slow weights)

    and ``fast <- fast + u``, ``slow`` unchanged on the other steps.  As updates:
    ``slow: α·d``, ``fast: u - (1 - α)·d`` at a synchronisation, ``(u, 0)`` otherwise.

    Args:
      sync_period: k, an int >= 1 (live: an integral array or a schedule work).
      slow_step_size: α in [0, 1] (1: the slow weights follow the fast ones).

    Returns:
      A transformation whose ``update(u, state, params)`` takes ``params`` =
      :class:`LookaheadParams` and returns updates of that class; state
      ``LookaheadSyncState(count, hyperparams)``.
    """
    check_count("sync_period", sync_period)
    hyper.check("slow_step_size", slow_step_size, low=0.0, high=1.0)

    def step(updates, buffers, params, count, sync_period, slow_step_size):
        params = _check_lookahead_params(params, "lookahead_sync")
        sync = _syncs(count, sync_period)
        diff = jax.tree.map(lambda f, u, s: f + u - s, params.fast, updates, params.slow)
        slow = jax.tree.map(lambda d: jnp.where(sync, cast_like(slow_step_size, d) * d, jnp.zeros_like(d)), diff)
        fast = jax.tree.map(lambda u, d: jnp.where(sync, u - (1 - cast_like(slow_step_size, d)) * d, u), updates, diff)
        return _pair_like(params, fast, slow), buffers

    return transformation(
        LookaheadSyncState, step, {"sync_period": sync_period, "slow_step_size": slow_step_size}
    )


def _is_named_tuple(node: Any) -> bool:
    return isinstance(node, tuple) and hasattr(node, "_fields")


def _fresh_keeping_hyperparams(fresh: Any, current: Any) -> Any:
    """``fresh`` (a new ``init``) with the ``hyperparams`` dicts of ``current``: a reset that keeps
    the values set by ``gc.set_hyperparams``."""
    if _is_named_tuple(fresh):
        changes = {
            f: getattr(current, f)
            if f == "hyperparams" and isinstance(getattr(fresh, f), dict)
            else _fresh_keeping_hyperparams(getattr(fresh, f), getattr(current, f))
            for f in fresh._fields
        }
        return type(fresh)(**changes)
    if isinstance(fresh, (tuple, list)):
        return type(fresh)(_fresh_keeping_hyperparams(a, b) for a, b in zip(fresh, current))
    if isinstance(fresh, dict):
        return type(fresh)((k, _fresh_keeping_hyperparams(v, current[k])) for k, v in fresh.items())
    return fresh


def lookahead(
    fast_optimizer: GradientTransformation,
    sync_period: hyper.Hyperparameter,
    slow_step_size: hyper.Hyperparameter,
    reset_state: bool = False,
) -> GradientTransformation:
    """Lookahead (Zhang et al., NeurIPS 2019): ``k`` steps of ``fast_optimizer`` forward, then
    the slow weights move ``slow_step_size`` of the way to the fast ones and the fast weights
    restart there (``optax.lookahead``): ``fast_optimizer`` on ``params.fast``, then
    :func:`lookahead_sync`.

    Train on :class:`LookaheadParams`: ``params = gc.LookaheadParams.init_synced(p)``, gradients
    at ``params.fast``, ``params = gc.apply_updates(params, updates)``; apply the updates as they
    come (changing them desynchronises the pair).

    Args:
      fast_optimizer: the inner optimizer (gradchain's or Optax's).
      sync_period: k >= 1 fast steps per synchronisation (live: ``gc.set_hyperparams``).
      slow_step_size: α in [0, 1] (live; an array or a schedule work).
      reset_state: restart ``fast_optimizer``'s state (``init`` at the fast weights) after each
        synchronisation, as Optax; the values of its hyperparameters are kept (so
        ``gc.set_hyperparams`` survives the reset), its counts and buffers restart.  A schedule
        inside does not restart as Optax's: the first step after a sync uses the value it had
        reached, the next ones its values from step 1 on.

    Returns:
      A transformation with state ``LookaheadState(fast_state, steps_since_sync, sync)``.
      ``init`` takes :class:`LookaheadParams` (or, as Optax, the fast weights alone).

    Example:
      >>> import jax, jax.numpy as jnp, gradchain as gc
      >>> tx = gc.lookahead(gc.sgd(1e-2), sync_period=5, slow_step_size=0.5)
      >>> params = gc.LookaheadParams.init_synced(jnp.ones(2))
      >>> state = tx.init(params)
      >>> grads = jax.grad(lambda p: jnp.sum(p**2))(params.fast)
      >>> updates, state = tx.update(grads, state, params)
      >>> gc.apply_updates(params, updates).slow  # moves at the 5th step
      Array([1., 1.], dtype=float32)
    """
    check_transformation("fast_optimizer", fast_optimizer)
    check_bool("reset_state", reset_state)
    sync = lookahead_sync(sync_period, slow_step_size)

    def init(params):
        fast = params.fast if hasattr(params, "fast") and hasattr(params, "slow") else params
        sync_state = sync.init(fast)
        return LookaheadState(fast_optimizer.init(fast), jnp.zeros([], jnp.int32), sync_state)

    def update(updates, state, params=None):
        params = _check_lookahead_params(params, "lookahead")
        if not isinstance(state, LookaheadState):
            raise TypeError(f"state must be a LookaheadState (from lookahead's init), got {type(state).__name__}")
        fast_updates, fast_state = fast_optimizer.update(updates, state.fast_state, params.fast)
        k = state.sync.hyperparams["sync_period"]
        syncs = _syncs(state.sync.count, k)
        out, sync_state = sync.update(fast_updates, state.sync, params)
        if reset_state:
            fresh = _fresh_keeping_hyperparams(fast_optimizer.init(params.fast), fast_state)
            fast_state = jax.tree.map(lambda new, old: jnp.where(syncs, new, old), fresh, fast_state)
        steps_since_sync = hyper.increment(state.sync.count) % as_count(k)
        return out, LookaheadState(fast_state, steps_since_sync, sync_state)

    return GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------------
# Conditional application.


class ConditionallyTransformState(NamedTuple):
    inner_state: Any
    step: jax.Array  # int32: updates so far


class ConditionallyMaskState(NamedTuple):
    step: jax.Array  # int32: updates so far
    inner_state: Any


def _conditionally(inner, should_transform_fn, forward_extra_args, zero_otherwise: bool, name: str):
    check_transformation("inner", inner)
    if not callable(should_transform_fn):
        raise TypeError(f"should_transform_fn must be a function step -> bool, got {should_transform_fn!r}")
    check_bool("forward_extra_args", forward_extra_args)
    state_type = ConditionallyMaskState if zero_otherwise else ConditionallyTransformState

    def init(params):
        return state_type(step=jnp.zeros([], jnp.int32), inner_state=inner.init(params))

    def update(updates, state, params=None, **extra_args):
        if not isinstance(state, state_type):
            raise TypeError(f"state must be a {state_type.__name__} (from {name}'s init), got {type(state).__name__}")
        pred = should_transform_fn(state.step, **(extra_args if forward_extra_args else {}))
        pred = check_predicate(pred, "should_transform_fn")
        extra = accepted_extra_args(inner.update, extra_args)
        apply = lambda: inner.update(updates, state.inner_state, params, **extra)
        skipped = jax.tree.map(jnp.zeros_like, updates) if zero_otherwise else updates
        out, inner_state = run_if(pred, apply, lambda: (skipped, state.inner_state), state.inner_state)
        return out, state_type(step=hyper.increment(state.step), inner_state=inner_state)

    return GradientTransformationExtraArgs(init, update)


def conditionally_transform(
    inner: GradientTransformation,
    should_transform_fn: Callable[..., Any],
    forward_extra_args: bool = False,
) -> GradientTransformationExtraArgs:
    """Run ``inner`` on the steps where ``should_transform_fn(step)`` is true; on the others pass
    the updates through unchanged and keep ``inner``'s state (``optax.conditionally_transform``).

    Args:
      inner: the transformation.
      should_transform_fn: ``step -> bool scalar`` (``step``: int32, updates so far); with
        ``forward_extra_args`` it also gets the extra ``update`` arguments as keywords.
      forward_extra_args: pass the extra arguments to ``should_transform_fn``.

    Returns:
      A :class:`~gradchain.GradientTransformationExtraArgs` with state
      ``ConditionallyTransformState(inner_state, step)``; ``inner`` runs only when selected.
    """
    return _conditionally(inner, should_transform_fn, forward_extra_args, False, "conditionally_transform")


def conditionally_mask(
    inner: GradientTransformation,
    should_transform_fn: Callable[..., Any],
    forward_extra_args: bool = False,
) -> GradientTransformationExtraArgs:
    """Run ``inner`` on the steps where ``should_transform_fn(step)`` is true; on the others
    return zero updates and keep ``inner``'s state (``optax.conditionally_mask``).

    Args:
      inner: the transformation.
      should_transform_fn: ``step -> bool scalar`` (``step``: int32, updates so far).
      forward_extra_args: pass the extra ``update`` arguments to ``should_transform_fn``.

    Returns:
      A :class:`~gradchain.GradientTransformationExtraArgs` with state
      ``ConditionallyMaskState(step, inner_state)``.
    """
    return _conditionally(inner, should_transform_fn, forward_extra_args, True, "conditionally_mask")


# ---------------------------------------------------------------------------------------------
# Element-wise guards.


class ZeroNansState(NamedTuple):
    found_nan: Any  # a tree like the parameters: one bool per leaf, NaN seen at the last update


def zero_nans() -> GradientTransformation:
    """Replace NaNs by 0 and record, per leaf, whether the last update had one
    (``optax.zero_nans``).

    Returns:
      A transformation with state ``ZeroNansState(found_nan)``.
    """

    def init(params):
        return ZeroNansState(found_nan=jax.tree.map(lambda p: jnp.array(False), params))

    def update(updates, state, params=None):
        del params, state
        found = jax.tree.map(lambda u: jnp.any(jnp.isnan(u)), updates)
        return jax.tree.map(lambda u: jnp.where(jnp.isnan(u), jnp.zeros_like(u), u), updates), ZeroNansState(found)

    return GradientTransformation(init, update)


NonNegativeParamsState = EmptyState


def keep_params_nonnegative() -> GradientTransformation:
    """The projection onto ``w >= 0``: ``u <- -w`` where ``w + u < 0``
    (``optax.keep_params_nonnegative``).  Put it last in the chain; a parameter that is already
    negative is moved to 0.

    Returns:
      A transformation with state ``EmptyState()`` that needs ``params`` in ``update``.
    """

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        require_params(params, "keep_params_nonnegative")
        is_none = lambda x: x is None
        out = jax.tree.map(
            lambda w, u: None if w is None else jnp.where((w + u) < 0.0, -w, u), params, updates, is_leaf=is_none
        )
        return out, state

    return GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------------
# DP-SGD.


def per_example_global_norm_clip(grads: Any, l2_norm_clip: Any) -> tuple[Any, jax.Array]:
    """Clip each example's gradient to global norm ``l2_norm_clip`` and sum them (DP-SGD's
    clipping; Abadi et al., "Deep Learning with Differential Privacy", CCS 2016)::

        g_i <- g_i · min(1, c / ‖g_i‖)    (1 when ‖g_i‖ = 0);    out = Σ_i g_i

    ``‖g_i‖`` is :func:`gradchain.global_norm` of example i's slice of every leaf.

    Args:
      grads: a tree whose every leaf has the batch on axis 0 (``jax.vmap(jax.grad(loss))``).
      l2_norm_clip: c >= 0 (``inf``: no clipping); an array works (traced under ``vmap``).

    Returns:
      ``(sum of the clipped per-example gradients, number of examples clipped)``.

    Raises:
      ValueError: a leaf without the common batch axis, or a negative / NaN ``l2_norm_clip``.

    Example:
      >>> import jax.numpy as jnp, gradchain as gc
      >>> grads = [jnp.array([[0.0, 0, 0], [0, 3, 4], [4, 0, 3], [3, 4, 0]])]
      >>> gc.per_example_global_norm_clip(grads, 1.25)
      ([Array([1.75, 1.75, 1.75], dtype=float32)], Array(3, dtype=int32))
    """
    leaves = jax.tree.leaves(grads)
    if not leaves or any(jnp.ndim(g) < 1 or jnp.shape(g)[0] != jnp.shape(leaves[0])[0] for g in leaves):
        shapes = [tuple(jnp.shape(g)) for g in leaves]
        raise ValueError(
            "per_example_global_norm_clip expects every leaf of grads to have the batch on axis 0 (one "
            f"gradient per example, e.g. jax.vmap(jax.grad(loss))), got leaves of shapes {shapes}"
        )
    check_nonnegative("l2_norm_clip", l2_norm_clip)
    norms = jax.vmap(global_norm)(grads)
    multipliers = jnp.nan_to_num(jnp.minimum(l2_norm_clip / norms, 1.0), nan=1.0)
    num_clipped = jnp.sum(multipliers < 1.0)
    clipped = jax.tree.map(lambda g: jnp.tensordot(multipliers.astype(g.dtype), g, axes=1), grads)
    return clipped, num_clipped


install_reprs(LookaheadSyncState, LookaheadState, ConditionallyTransformState, ConditionallyMaskState, ZeroNansState)
