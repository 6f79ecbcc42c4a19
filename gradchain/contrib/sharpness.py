"""Sharpness-aware minimisation: an outer optimizer stepping with the gradient taken at an
adversarially perturbed point.

Foret, Kleiner, Mobahi & Neyshabur, "Sharpness-Aware Minimization for Efficiently Improving
Generalization", ICLR 2021 (https://arxiv.org/abs/2010.01412)::

    ε = ρ ∇f(x) / ‖∇f(x)‖                 (the adversarial optimizer: normalize(), then sgd(ρ), ascending)
    x <- x - lr ∇f(x + ε)                 (the outer optimizer, from the unperturbed x)

:func:`sam` takes the two optimizers, as ``optax.contrib.sam``: in the default (transparent)
mode every ``sync_period``-th call is an outer step and the others are adversarial steps, so the
training loop computes the perturbed gradient itself (its parameters *are* the perturbed point
between syncs); with ``opaque_mode=True`` each call runs the adversarial steps inside and needs
``grad_fn=`` (``update(g, state, params, grad_fn=lambda p, i: grad(loss)(p))``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradchain.contrib._base import is_named_tuple, tree_norm
from gradchain.core import EmptyState, GradientTransformation, GradientTransformationExtraArgs, apply_updates
from gradchain.transforms._base import check_bool, check_int, check_transformation

__all__ = ["SAMState", "normalize", "sam"]

NormalizeState = EmptyState


def normalize() -> GradientTransformation:
    """``g <- g / ‖g‖₂``, the norm over the whole tree (SAM's adversarial direction).

    Returns:
      A stateless transformation (state ``EmptyState()``).
    """

    def init(params):
        del params
        return NormalizeState()

    def update(updates, state, params=None):
        del params
        norm = tree_norm(updates)
        return jax.tree.map(lambda g: g / norm.astype(g.dtype), updates), state

    return GradientTransformation(init, update)


class SAMState(NamedTuple):
    """Optax's ``SAMState``: adversarial steps since the last outer step, the two optimizers'
    states, and the outer parameters (``None`` in opaque mode)."""

    steps_since_sync: jax.Array
    opt_state: Any
    adv_state: Any
    cache: Any


def _where(condition, if_true, if_false):
    return jax.tree.map(lambda t, f: jnp.where(condition, t, f), if_true, if_false)


def _keep_hyperparams(fresh: Any, current: Any) -> Any:
    """``fresh`` with every ``hyperparams`` dict taken from ``current`` (same structure): a reset
    restarts counts and buffers but keeps the values ``gc.set_hyperparams`` set."""
    if is_named_tuple(fresh):
        changes = {f: _keep_hyperparams(getattr(fresh, f), getattr(current, f)) for f in fresh._fields}
        if "hyperparams" in fresh._fields and isinstance(fresh.hyperparams, dict):
            changes["hyperparams"] = current.hyperparams
        return type(fresh)(**changes)
    if isinstance(fresh, (tuple, list)):
        return type(fresh)(_keep_hyperparams(a, b) for a, b in zip(fresh, current))
    if isinstance(fresh, dict):
        return {k: _keep_hyperparams(v, current[k]) for k, v in fresh.items()}
    return fresh


def sam(
    optimizer: Any,
    adv_optimizer: Any,
    sync_period: int = 2,
    reset_state: bool = True,
    opaque_mode: bool = False,
    batch_axis_name: str | None = None,
) -> GradientTransformationExtraArgs:
    """SAM (Foret et al., ICLR 2021): see the module docstring.

    ``sam(gc.sgd(lr), gc.chain(gc.contrib.normalize(), gc.sgd(rho)))`` is the paper's drop-in
    version.  The two optimizers' hyperparameters are live as usual (``gc.set_hyperparams``
    reaches both).  With ``reset_state`` the adversarial optimizer's counts and buffers restart
    at every sync (as in Optax) but its hyperparameters keep their current values (a value set
    with ``gc.set_hyperparams`` survives).  A *schedule* there does not restart as Optax's does:
    the first step after a reset uses the value the schedule had reached, and the next ones its
    values from step 1 on (the state holds values, not schedules); give the adversarial
    optimizer constant hyperparameters, or ``reset_state=False``, to match Optax exactly.
    No packing of its own: it runs its optimizers as they are (packed or not).

    Args:
      optimizer: the outer optimizer.
      adv_optimizer: the adversarial optimizer (its updates are negated: it ascends).
      sync_period: an int ≥ 1: one outer step every ``sync_period`` calls (a Python int: it is
        the length of a loop in opaque mode).
      reset_state: re-initialise the adversarial optimizer after every outer step.
      opaque_mode: run the ``sync_period - 1`` adversarial steps inside each call (needs
        ``grad_fn``); the training loop then never sees the perturbed parameters (needed with
        batch-norm statistics).
      batch_axis_name: in opaque mode under ``pmap``, ``pmean`` the adversarial gradients over
        this axis.

    Returns:
      A :class:`~gradchain.GradientTransformationExtraArgs` with state ``SAMState(
      steps_since_sync, opt_state, adv_state, cache)``; ``update(g, state, params, *,
      grad_fn=None)``.
    """
    check_transformation("optimizer", optimizer)
    check_transformation("adv_optimizer", adv_optimizer)
    check_int("sync_period", sync_period, 1)
    check_bool("reset_state", reset_state)
    check_bool("opaque_mode", opaque_mode)
    if batch_axis_name is not None and not isinstance(batch_axis_name, str):
        raise TypeError(f"batch_axis_name must be None or a str, got {batch_axis_name!r}")

    def init(params):
        return SAMState(
            steps_since_sync=jnp.zeros([], jnp.int32),
            opt_state=optimizer.init(params),
            adv_state=adv_optimizer.init(params),
            cache=None if opaque_mode else params,
        )

    def restart(adv_state, params):
        return _keep_hyperparams(adv_optimizer.init(params), adv_state)

    def transparent_update(updates, state, params=None, *, grad_fn: Callable | None = None):
        del grad_fn
        if params is None:
            raise ValueError("sam needs the current parameters: update(updates, state, params)")
        first_step = state.steps_since_sync == 0
        last_step = state.steps_since_sync == sync_period - 1
        adv_updates, adv_state = adv_optimizer.update(updates, state.adv_state, params)
        adv_updates = jax.tree.map(lambda x: -x, adv_updates)
        opt_updates, opt_state = optimizer.update(updates, state.opt_state, state.cache)
        opt_updates = jax.tree.map(lambda c, p, u: c - p + u, state.cache, params, opt_updates)
        cache = _where(first_step, params, state.cache)
        new_updates = _where(last_step, opt_updates, adv_updates)
        if reset_state:
            adv_state = _where(last_step, restart(adv_state, params), adv_state)
        else:
            adv_state = _where(last_step, state.adv_state, adv_state)
        opt_state = _where(last_step, opt_state, state.opt_state)
        return new_updates, SAMState(
            steps_since_sync=(state.steps_since_sync + 1) % sync_period,
            opt_state=opt_state,
            adv_state=adv_state,
            cache=cache,
        )

    def opaque_update(updates, state, params=None, *, grad_fn: Callable | None = None):
        if grad_fn is None:
            raise ValueError(
                "sam(opaque_mode=True) needs grad_fn: update(updates, state, params, "
                "grad_fn=lambda params, i: jax.grad(loss)(params, batch))"
            )
        if params is None:
            raise ValueError("sam needs the current parameters: update(updates, state, params, grad_fn=...)")
        adv_params, adv_updates, adv_state = params, updates, state.adv_state
        for i in range(sync_period - 1):
            adv_updates, adv_state = adv_optimizer.update(adv_updates, adv_state, adv_params)
            adv_updates = jax.tree.map(lambda x: -x, adv_updates)
            adv_params = apply_updates(adv_params, adv_updates)
            adv_updates = grad_fn(adv_params, i)
            if batch_axis_name is not None:
                adv_updates = jax.lax.pmean(adv_updates, axis_name=batch_axis_name)
        if reset_state:
            adv_state = restart(adv_state, params)
        new_updates, opt_state = optimizer.update(adv_updates, state.opt_state, params)
        return new_updates, SAMState(
            steps_since_sync=jnp.zeros([], jnp.int32), opt_state=opt_state, adv_state=adv_state, cache=None
        )

    return GradientTransformationExtraArgs(init, opaque_update if opaque_mode else transparent_update)
