"""Gradient accumulation: k micro-batches, one optimizer step (the spirit of ``optax.MultiSteps``).

Goyal et al., "Accurate, Large Minibatch SGD" (2017), scale the learning rate with the batch
size; accumulation takes the batch size past what fits in memory.  With ``every = k``, micro-steps
1..k-1 add their gradient to a running sum and return zero updates; micro-step k hands the mean
``(g_1 + ... + g_k) / k`` to the inner transformation and returns its updates.  For a loss that
is a mean over the batch, k micro-batches of B give exactly the step of one batch of kB.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradchain.core import GradientTransformationExtraArgs, accepted_extra_args

__all__ = ["AccumulateState", "accumulate_gradients"]


class AccumulateState(NamedTuple):
    inner: Any  # the inner transformation's state, advanced once every `every` micro-steps
    grad_sum: Any  # sum of the gradients since the last step (float32 or the leaf's wider dtype)
    micro_step: jax.Array  # int32: micro-batches accumulated so far in this step
    every: jax.Array  # int32: micro-batches per optimizer step


def accumulate_gradients(inner: Any, every: int | jax.Array) -> GradientTransformationExtraArgs:
    """Apply ``inner`` once every ``every`` micro-batches, to their mean gradient.

    Args:
      inner: the transformation to apply (an optimizer: ``gc.adam(...)``, an Optax one, ...).
      every: micro-batches per step, an int >= 1 or an array (traced: a population over the
        batch-size multiplier is one program; rounded to the nearest integer).

    Returns:
      A transformation whose updates are zero on accumulating micro-steps; extra keyword
      arguments reach ``inner`` on the step that applies it.
    """
    if not (callable(getattr(inner, "init", None)) and callable(getattr(inner, "update", None))):
        raise TypeError(f"accumulate_gradients: inner must be a gradient transformation, got {inner!r}")
    if isinstance(every, bool) or (isinstance(every, (int, float)) and (every < 1 or every != int(every))):
        raise ValueError(f"accumulate_gradients: every must be an int >= 1 (micro-batches per step), got {every!r}")

    def init(params):
        wide = lambda p: jnp.zeros(jnp.shape(p), jnp.promote_types(jnp.result_type(p), jnp.float32))
        count = jnp.round(jnp.asarray(every)).astype(jnp.int32)
        return AccumulateState(inner.init(params), jax.tree.map(wide, params), jnp.zeros([], jnp.int32), count)

    def update(updates, state, params=None, **extra_args):
        micro = state.micro_step + 1
        total = jax.tree.map(lambda s, g: s + g.astype(s.dtype), state.grad_sum, updates)
        extra = accepted_extra_args(inner.update, extra_args)

        def apply(_):
            mean = jax.tree.map(lambda t, g: (t / state.every).astype(g.dtype), total, updates)
            out, inner_state = inner.update(mean, state.inner, params, **extra)
            return out, inner_state, jax.tree.map(jnp.zeros_like, total), jnp.zeros([], jnp.int32)

        def wait(_):
            return jax.tree.map(jnp.zeros_like, updates), state.inner, total, micro

        out, inner_state, grad_sum, micro = jax.lax.cond(micro >= state.every, apply, wait, None)
        return out, AccumulateState(inner_state, grad_sum, micro, state.every)

    return GradientTransformationExtraArgs(init, update)
