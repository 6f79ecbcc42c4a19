"""Wrappers that change *where* and *whether* an inner transformation applies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from gradchain.core import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    accepted_extra_args,
    check_same_structure,
)
from gradchain.multi_tensor import Packed

Mask = Any  # a pytree of Python bools (or a prefix of the parameter tree), or params -> such tree


class MaskedNode(NamedTuple):
    """Placeholder for a leaf outside the mask: an empty pytree node the inner transform skips."""


class MaskedState(NamedTuple):
    inner_state: Any


def decay_mask(params: Any) -> Any:
    """``True`` for weight matrices and kernels (``ndim >= 2``), ``False`` for biases and norm
    scales (``ndim <= 1``): the usual rule for which leaves get weight decay.

    Args:
      params: a pytree of arrays.

    Returns:
      A pytree of Python bools with the structure of ``params``.
    """
    return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def full_mask(mask: Mask | Callable[[Any], Mask], tree: Any) -> Any:
    """Resolve ``mask`` (a bool pytree, a prefix of ``tree``, or ``tree -> mask``) to one Python
    bool per leaf of ``tree``, with clear errors for non-bool leaves or a wrong structure."""
    if isinstance(tree, Packed):
        raise ValueError(
            "masked(...) got packed buffers: a per-leaf mask cannot run inside multi_tensor "
            "(it would see one flat buffer per dtype, not your leaves). Put the masked "
            "transformation outside multi_tensor, or pass multi_tensor(..., max_leaf_size=0)."
        )
    m = jax.tree.map(_as_bool, mask(tree) if callable(mask) else mask)
    try:
        return jax.tree.map(lambda flag, sub: jax.tree.map(lambda _: flag, sub), m, tree)
    except ValueError as err:
        raise ValueError(
            f"mask must have the structure of the parameters (or a prefix of it):\n"
            f"  mask: {jax.tree.structure(m)}\n  params: {jax.tree.structure(tree)}"
        ) from err


def _as_bool(flag: Any) -> bool:
    """A mask leaf as a Python bool: ``True``/``False``, ``np.bool_`` or a concrete boolean
    scalar array (``jnp.bool_(True)``, ``jnp.array(False)``)."""
    if isinstance(flag, bool):
        return flag
    if isinstance(flag, (np.bool_, np.ndarray, jax.Array)) and jnp.shape(flag) == () and (
        jnp.result_type(flag) == jnp.bool_
    ):
        if isinstance(flag, Tracer):
            raise TypeError(
                "mask leaves must be concrete (known when the step is traced): got a traced "
                "boolean; build the mask from the parameters' structure, outside jit"
            )
        return bool(flag)
    raise TypeError(
        f"mask leaves must be Python bools (or np.bool_ / boolean scalar arrays: which leaves "
        f"the transformation applies to), got {flag!r} of type {type(flag).__name__}"
    )


def _select(tree: Any, mask: Any) -> Any:
    return jax.tree.map(lambda flag, x: x if flag else MaskedNode(), mask, tree)


def masked(inner: GradientTransformation, mask: Mask | Callable[[Any], Mask]) -> GradientTransformation:
    """Apply ``inner`` only to the leaves where ``mask`` is ``True``; pass the others through.

    Args:
      inner: the transformation to apply (gradchain's or Optax's).
      mask: a pytree of bools (Python, ``np.bool_`` or boolean scalar arrays) with the
        structure of the parameters (or a prefix of it: one bool for a whole sub-tree), or a
        function ``params -> mask`` such as :func:`decay_mask`.

    Returns:
      A :class:`~gradchain.GradientTransformationExtraArgs` (extra ``update`` arguments reach
      ``inner``) with state ``MaskedState(inner_state)``; the inner state only holds the
      selected leaves.
    """

    def init(params):
        return MaskedState(inner.init(_select(params, full_mask(mask, params))))

    def update(updates, state, params=None, **extra_args):
        m = full_mask(mask, updates if params is None else params)
        check_same_structure(updates, m, name="updates", reference_name="the mask")
        selected_params = None if params is None else _select(params, m)
        new, inner_state = inner.update(
            _select(updates, m),
            state.inner_state,
            selected_params,
            **accepted_extra_args(inner.update, extra_args),
        )
        merged = jax.tree.map(lambda flag, u, n: n if flag else u, m, updates, new)
        return merged, MaskedState(inner_state)

    return GradientTransformationExtraArgs(init, update)


class ApplyIfFiniteState(NamedTuple):
    consecutive_nonfinite: jax.Array  # int32: non-finite steps in a row, 0 after a good step
    total_nonfinite: jax.Array  # int32: all skipped or non-finite steps so far
    last_finite: jax.Array  # bool: whether the last step was finite
    inner_state: Any


def _all_finite(tree: Any) -> jax.Array:
    """True when every floating leaf of ``tree`` is finite (integer leaves always are): one traceable scalar."""
    flags = [jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree) if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.array(True)


def apply_if_finite(
    inner: GradientTransformation, max_consecutive_errors: int | None = None
) -> GradientTransformation:
    """Skip a step whose gradient (or ``inner``'s output) holds a NaN or an infinity.

    A skipped step returns zero updates and keeps ``inner``'s state exactly as it was, so one bad
    batch loses nothing.  The state counts skips in a row and in total.  With
    ``max_consecutive_errors=N``, after N skips in a row the guard gives up: the next non-finite
    step is applied, so the failure shows in the parameters instead of training silently stalling.

    Args:
      inner: the transformation to guard.
      max_consecutive_errors: ``None`` (never give up) or an int ≥ 0.

    Returns:
      A :class:`~gradchain.GradientTransformationExtraArgs` with state
      ``ApplyIfFiniteState(consecutive_nonfinite, total_nonfinite, last_finite, inner_state)``
      (Optax's fields are ``notfinite_count``, ``last_finite``, ``total_notfinite``).
    """
    if max_consecutive_errors is not None and (
        not isinstance(max_consecutive_errors, int)
        or isinstance(max_consecutive_errors, bool)
        or max_consecutive_errors < 0
    ):
        raise ValueError(
            f"max_consecutive_errors must be None or an int >= 0, got {max_consecutive_errors!r}"
        )

    def init(params):
        zero = jnp.zeros([], jnp.int32)
        return ApplyIfFiniteState(zero, zero, jnp.array(True), inner.init(params))

    def update(updates, state, params=None, **extra_args):
        new, inner_state = inner.update(
            updates, state.inner_state, params, **accepted_extra_args(inner.update, extra_args)
        )
        finite = _all_finite(updates) & _all_finite(new)
        apply = finite
        if max_consecutive_errors is not None:
            apply = apply | (state.consecutive_nonfinite >= max_consecutive_errors)
        new = jax.tree.map(lambda u: jnp.where(apply, u, jnp.zeros_like(u)), new)
        inner_state = jax.tree.map(
            lambda n, o: jnp.where(apply, n, o), inner_state, state.inner_state
        )
        bad = (~finite).astype(jnp.int32)
        return new, ApplyIfFiniteState(
            consecutive_nonfinite=jnp.where(finite, 0, state.consecutive_nonfinite + 1),
            total_nonfinite=state.total_nonfinite + bad,
            last_finite=finite,
            inner_state=inner_state,
        )

    return GradientTransformationExtraArgs(init, update)
