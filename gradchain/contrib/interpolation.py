"""Schedule-free learning: momentum replaced by interpolation and averaging of iterates.

Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less Scheduled", NeurIPS 2024
(https://arxiv.org/abs/2405.15682).  Three sequences: ``z`` (the base optimizer's iterates),
``x`` (their weighted average, where to *evaluate*) and ``y`` (where the gradient is taken, the
parameters the training loop holds)::

    y_t = (1 - b1) z_t + b1 x_t
    z_{t+1} = z_t + base_update(∇f(y_t))
    x_{t+1} = (1 - c_{t+1}) x_t + c_{t+1} z_{t+1},     c_{t+1} = w_t / Σ_{k≤t} w_k,   w_t = max_{k≤t} lr_k ^ weight_lr_power

Only ``z`` is stored: ``x`` is recovered from ``y`` and ``z`` (``x = (y - (1-b1) z) / b1``).
:func:`schedule_free_eval_params` returns ``x``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.contrib._base import copy_tree, is_named_tuple, lowest_dtype
from gradchain.core import accepted_extra_args
from gradchain.multi_tensor import MultiTensorState, Packed, _pack, _unpack
from gradchain.transforms._base import cast_like, check_transformation, transformation

__all__ = ["ScheduleFreeState", "schedule_free", "schedule_free_eval_params"]


class ScheduleFreeState(NamedTuple):
    """Optax's ``ScheduleFreeState(b1, weight_sum, step_count, max_lr, base_optimizer_state, z)``;
    ``b1`` (with ``learning_rate`` and ``weight_lr_power``) is in ``hyperparams`` here."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    weight_sum: jax.Array
    step_count: jax.Array
    max_lr: jax.Array
    base_optimizer_state: Any
    z: Any


def schedule_free(
    base_optimizer: Any,
    learning_rate: hyper.Hyperparameter,
    b1: hyper.Hyperparameter = 0.9,
    weight_lr_power: hyper.Hyperparameter = 2.0,
    state_dtype: Any = None,
) -> Any:
    """Make ``base_optimizer`` schedule-free (see the module docstring; Defazio et al. 2024).

    The base optimizer should have no momentum of its own (``gc.sgd(lr)``; Adam with ``b1=0``,
    as :func:`gradchain.contrib.schedule_free_adamw` builds it).  Its updates move ``z``; the
    returned updates move the parameters ``y``.  Evaluate at
    :func:`schedule_free_eval_params` ``(state, params)``.

    ``learning_rate`` is the rate whose running maximum weights the average: the base
    optimizer's, for a gradchain base the same hyperparameter name, so that
    ``gc.set_hyperparams(state, learning_rate=...)`` sets both.  A base with a ``b1`` of its own
    (``gc.adam(b1=0.0)``) shares that name with this wrapper's ``b1`` too: set the two by name
    only when they should be equal.  A schedule is read at ``step_count`` (the update's index + 1),
    as Optax reads it.

    Args:
      base_optimizer: a gradient transformation (gradchain's or Optax's; extra ``update``
        arguments reach it).
      learning_rate: ≥ 0: a number, an array or a schedule (with warm-up, without decay).
      b1: in (0, 1], the interpolation between ``z`` and ``x``.
      weight_lr_power: ≥ 0, the power of the learning rate in the averaging weights.
      state_dtype: storage dtype of ``z`` (default: the parameters').

    Returns:
      A :class:`~gradchain.GradientTransformationExtraArgs` that needs ``params``; state
      ``ScheduleFreeState(count, hyperparams, weight_sum, step_count, max_lr,
      base_optimizer_state, z)``.  Element-wise: it packs when the base optimizer does (the
      named ones are wrapped in :func:`gradchain.multi_tensor`).
    """
    check_transformation("base_optimizer", base_optimizer)
    hyper.check("learning_rate", learning_rate, low=0.0)
    hyper.check("b1", b1, low=0.0, high=1.0, low_open=True)
    hyper.check("weight_lr_power", weight_lr_power, low=0.0)
    schedule = learning_rate if callable(learning_rate) and not hasattr(learning_rate, "shape") else None

    def init_fields(params):
        dtype = lowest_dtype(params)
        return {
            "weight_sum": jnp.zeros([], dtype),
            "step_count": jnp.ones([], jnp.int32),
            "max_lr": jnp.zeros([], dtype),
            "base_optimizer_state": base_optimizer.init(params),
            "z": copy_tree(params, state_dtype),
        }

    def step(grads, fields, params, count, lr, b1, weight_lr_power, **extra_args):
        if params is None:
            raise ValueError("schedule_free needs the current parameters: update(updates, state, params)")
        dtype = fields["max_lr"].dtype
        if schedule is not None:
            lr = schedule(fields["step_count"])
        max_lr = jnp.maximum(fields["max_lr"], jnp.asarray(lr).astype(dtype))
        weight = max_lr ** weight_lr_power.astype(dtype)
        total = fields["weight_sum"] + weight
        ck = jnp.where(
            jnp.logical_or(jnp.isnan(weight), jnp.isnan(total)),
            jnp.full(weight.shape, jnp.nan, weight.dtype),
            jnp.nan_to_num(weight / total, nan=0.0, posinf=jnp.inf),
        )
        base_updates, base_state = base_optimizer.update(
            grads, fields["base_optimizer_state"], params, **accepted_extra_args(base_optimizer.update, extra_args)
        )
        z_old = fields["z"]
        z = jax.tree.map(lambda zi, ui: jnp.asarray(zi + ui).astype(jnp.asarray(zi).dtype), z_old, base_updates)
        b = lambda leaf: cast_like(b1, leaf)
        prev_x = jax.tree.map(lambda yi, zi: (yi - (1.0 - b(zi)) * zi) / b(zi), params, z_old)
        x = jax.tree.map(lambda xi, zi: (1.0 - ck) * xi + ck * zi, prev_x, z)
        new_params = jax.tree.map(lambda xi, zi: b(zi) * xi + (1.0 - b(zi)) * zi, x, z)
        updates = jax.tree.map(lambda n, p: n - p, new_params, params)
        return updates, {
            "weight_sum": total,
            "step_count": hyper.increment(fields["step_count"]),
            "max_lr": max_lr,
            "base_optimizer_state": base_state,
            "z": z,
        }

    hypers = {"learning_rate": learning_rate, "b1": b1, "weight_lr_power": weight_lr_power}
    return transformation(ScheduleFreeState, step, hypers, init_fields, shaped=("z",), extra_args=True)


def _find(state: Any) -> tuple[Any, MultiTensorState | None]:
    """The schedule-free state node (gradchain's or Optax's: fields ``b1``/``hyperparams`` and
    ``z``) and the packing around it, outermost first."""

    def walk(node, packing):
        if is_named_tuple(node):
            if "z" in node._fields and ("b1" in node._fields or "b1" in getattr(node, "hyperparams", {})):
                return node, packing
            if isinstance(node, MultiTensorState) and node.slots is not None:
                packing = node
            children = [getattr(node, f) for f in node._fields]
        elif isinstance(node, (tuple, list)):
            children = list(node)
        elif isinstance(node, dict):
            children = list(node.values())
        else:
            return None
        for child in children:
            found = walk(child, packing)
            if found is not None:
                return found
        return None

    found = walk(state, None)
    if found is None:
        raise ValueError(
            "schedule_free_eval_params needs the state of a schedule-free optimizer "
            "(gc.contrib.schedule_free_sgd / schedule_free_adamw / schedule_free, or Optax's)"
        )
    return found


def schedule_free_eval_params(state: Any, params: Any) -> Any:
    """The parameters to evaluate a schedule-free optimizer at: ``x = (y - (1 - b1) z) / b1``.

    Args:
      state: the optimizer's state (gradchain's, packed or not, or Optax's ``ScheduleFreeState``).
      params: the training parameters ``y``.

    Returns:
      A tree like ``params``.
    """
    node, packing = _find(state)
    b1 = node.hyperparams["b1"] if "hyperparams" in node._fields else node.b1
    evaluate = lambda y, z: jnp.asarray((y - (1.0 - b1) * z) / b1).astype(jnp.asarray(y).dtype)
    if packing is None:
        return jax.tree.map(evaluate, params, node.z)
    slots = packing.slots
    assert slots is not None  # _find records only packing that holds slots
    leaves, treedef = jax.tree.flatten(params)
    packed = _pack(leaves, slots)
    x = Packed(
        {name: evaluate(packed.groups[name], node.z.groups[name]) for name in packed.groups},
        tuple(jax.tree.map(evaluate, packed.loose, node.z.loose)),
    )
    return jax.tree.unflatten(treedef, _unpack(x, slots, leaves))
