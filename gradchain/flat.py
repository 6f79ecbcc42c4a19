"""Flat parameters: keep a model's parameters in a few contiguous buffers, across steps.

:func:`gradchain.multi_tensor` packs the *optimizer's* view of many small leaves, but the
parameters still live as separate arrays, so every step must gather the gradients into a buffer
and scatter the new parameters back out: one kernel per leaf, and on a 2000-leaf tree those
kernels, not the arithmetic, are the step.  Storing the parameters flat removes both ends::

    flat, layout = gc.flat.ravel(params)        # {"float32": 1-D buffer, ...}, kept across steps
    def loss(flat, batch):
        return model.apply(layout.unravel(flat), batch)
    grads = jax.grad(loss)(flat, batch)         # arrives flat: one concatenation in the backward
    updates, state = opt.update(grads, state, flat)
    flat = gc.apply_updates(flat, updates)      # one kernel per buffer

``layout.unravel`` slices each leaf out of its buffer; its derivative (a ``custom_vjp``)
concatenates the leaves' cotangents straight into a flat gradient, where plain slicing would
differentiate to one zero-padded full-size buffer per leaf, summed.  The optimizer then runs on a
handful of buffers whatever the number of leaves (the same idea as PyTorch's flat parameters and
Apex's multi-tensor apply).

One buffer holds the leaves of one dtype (nothing is promoted) and, optionally, one label:
``ravel(params, labels=...)`` puts leaves with different labels (say, ``"decay"`` and
``"no_decay"``) in different buffers, so that per-leaf options such as a weight-decay mask become
per-buffer ones (:meth:`FlatLayout.mask`).  Gradients are bit-for-bit the per-leaf ones; optimizer
steps agree within 1e-6 (XLA may vectorise a long buffer differently from short leaves, and
reductions over the tree, such as global-norm clipping, sum in another order).

A flat buffer is an ordinary array: it can be donated, ``vmap``-ped over (a population of
models, one row each) and sharded along its one axis over devices, which is the fully-sharded
(FSDP) layout: ``unravel`` then gathers each leaf where it is used.  Being a ``custom_vjp``, ``unravel``
supports reverse-mode differentiation only: ``jax.jvp``, ``jacfwd`` and ``hessian`` through it
raise an error; the second-order methods take the per-leaf tree.

Compile time against step time: each leaf is sliced out at its offset, and the layout is a
pytree whose leaves are those offsets.  Passed to the jitted step as an argument,
``step(flat, state, layout, batch)``, the offsets are runtime values: the leaves of one shape share
one compiled slicing kernel, so compile time grows with the number of distinct shapes.  Closed
over, the offsets are constants: each slice fuses into the op that reads it, which makes the step
faster, but XLA:CPU compiles one kernel per leaf (about 40 ms each).  BUILD_NOTES ("Performance")
has the figures for both.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["FlatLayout", "ravel"]


class _Slot(NamedTuple):
    """The static part of where one leaf lives: its buffer's key and its shape."""

    key: str
    shape: tuple[int, ...]


@jax.tree_util.register_pytree_node_class
class FlatLayout:
    """How a parameter tree maps onto its flat buffers (made by :func:`ravel`).

    A pytree whose leaves are the offsets (int32 scalars), so that passing it to a jitted
    function makes them runtime values (module docstring); the rest is static.

    Attributes:
      treedef: the structure of the parameter tree.
      slots: per leaf, its buffer key and shape.
      offsets: per leaf, where it starts in its buffer.
      sizes: ``{buffer key: number of elements}``.
      dtypes: ``{buffer key: dtype name}``.
    """

    def __init__(self, treedef, slots, offsets, sizes, dtypes):
        self.treedef = treedef
        self.slots: tuple[_Slot, ...] = tuple(slots)
        self.offsets: tuple[Any, ...] = tuple(offsets)
        self.sizes: dict[str, int] = dict(sizes)
        self.dtypes: dict[str, str] = dict(dtypes)

    def _static(self):
        return self.treedef, self.slots, tuple(self.sizes.items()), tuple(self.dtypes.items())

    def tree_flatten(self):
        return self.offsets, self._static()

    @classmethod
    def tree_unflatten(cls, static, offsets):
        treedef, slots, sizes, dtypes = static
        return cls(treedef, slots, offsets, dict(sizes), dict(dtypes))

    def __repr__(self) -> str:
        buffers = ", ".join(f"{key}: {size}" for key, size in self.sizes.items())
        return f"FlatLayout({len(self.slots)} leaves in {{{buffers}}})"

    def unravel(self, flat: dict[str, jax.Array]) -> Any:
        """The parameter tree, each leaf a slice of its buffer; differentiable, with flat
        gradients (one concatenation per buffer in the backward pass)."""
        if not isinstance(flat, dict) or set(flat) != set(self.sizes):
            got = sorted(flat) if isinstance(flat, dict) else type(flat).__name__
            raise ValueError(f"flat must be a dict with keys {sorted(self.sizes)}, got {got}")
        for key, size in self.sizes.items():
            shape = jnp.shape(flat[key])
            if shape != (size,):
                raise ValueError(f"flat[{key!r}] must have shape ({size},), got {shape}")
        return _unravel(self._static(), self.offsets, flat)

    def ravel(self, tree: Any) -> dict[str, jax.Array]:
        """Pack a tree with the parameters' structure (parameters, gradients) into flat buffers;
        each leaf is cast to its buffer's dtype."""
        return _ravel(self._static(), tree)

    def mask(self, mask: Any) -> dict[str, bool]:
        """Turn a per-leaf bool mask (e.g. ``gc.decay_mask(params)``) into a per-buffer one.

        Every leaf of a buffer must have the same flag: give :func:`ravel` ``labels`` that
        separate them (the mask itself will do).
        """
        flags = jax.tree.leaves(mask)
        if len(flags) != len(self.slots):
            raise ValueError(f"mask has {len(flags)} leaves, the layout {len(self.slots)}")
        per_buffer: dict[str, bool] = {}
        for flag, slot in zip(flags, self.slots):
            flag = bool(flag)
            if per_buffer.setdefault(slot.key, flag) != flag:
                raise ValueError(
                    f"buffer {slot.key!r} holds leaves both in and out of the mask; "
                    f"pass labels=mask to ravel so that they go to separate buffers"
                )
        return per_buffer


def _ravel(static, tree: Any) -> dict[str, jax.Array]:
    treedef, slots, sizes, dtypes = static
    leaves, tree_treedef = jax.tree.flatten(tree)
    if tree_treedef != treedef:
        raise ValueError(
            f"tree must have the structure of the parameters the layout was made from; "
            f"got {tree_treedef}, expected {treedef}"
        )
    pieces: dict[str, list[jax.Array]] = {key: [] for key, _ in sizes}
    for leaf, (key, shape) in zip(leaves, slots):
        if jnp.shape(leaf) != shape:
            raise ValueError(f"a leaf of shape {jnp.shape(leaf)} is where the layout has shape {shape}")
        pieces[key].append(jnp.ravel(leaf))
    return {key: jnp.concatenate(pieces[key]).astype(dtype) for key, dtype in dtypes}


@partial(jax.custom_vjp, nondiff_argnums=(0,))
def _unravel(static, offsets, flat):
    treedef, slots, _, _ = static
    leaves = [
        jax.lax.dynamic_slice_in_dim(flat[key], offset, math.prod(shape)).reshape(shape)
        for (key, shape), offset in zip(slots, offsets)
    ]
    return jax.tree.unflatten(treedef, leaves)


def _unravel_fwd(static, offsets, flat):
    return _unravel(static, offsets, flat), offsets


def _unravel_bwd(static, offsets, cotangent):
    # Slices differentiate to zero-padded full buffers, one per leaf; concatenating the leaves'
    # cotangents gives the same flat gradient in one pass.
    zero_offsets = tuple(np.zeros(jnp.shape(o), jax.dtypes.float0) for o in offsets)
    return zero_offsets, _ravel(static, cotangent)


_unravel.defvjp(_unravel_fwd, _unravel_bwd)


def ravel(params: Any, labels: Any = None) -> tuple[dict[str, jax.Array], FlatLayout]:
    """Pack ``params`` into flat buffers, one per (label, dtype); return them and the layout.

    Args:
      params: a pytree of floating-point arrays.
      labels: optional pytree with the structure of ``params`` (or a prefix of it), giving each
        leaf a label (str or bool); leaves with different labels go to different buffers, keyed
        ``"<label>.<dtype>"`` instead of ``"<dtype>"``.

    Returns:
      ``(flat, layout)``: ``flat`` maps buffer keys to 1-D arrays; ``layout.unravel(flat)`` gives
      the tree back (differentiably, with flat gradients) and ``layout.ravel(tree)`` packs another
      tree of the same structure.
    """
    leaves, treedef = jax.tree.flatten(params)
    if not leaves:
        raise ValueError("params must hold at least one array, got an empty tree")
    if labels is None:
        leaf_labels = [None] * len(leaves)
    else:
        try:
            leaf_labels = jax.tree.leaves(jax.tree.broadcast(labels, params))
        except ValueError as error:
            raise ValueError(f"labels must have the structure of params (or a prefix of it): {error}") from None
        for label in leaf_labels:
            if not isinstance(label, (str, bool, np.bool_)):
                raise TypeError(f"labels must be str or bool, got {label!r}")
    slots, offsets, sizes, dtypes = [], [], {}, {}
    for leaf, label in zip(leaves, leaf_labels):
        dtype = jnp.dtype(jnp.result_type(leaf))
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(f"params must be floating point, got a leaf of dtype {dtype}")
        key = dtype.name if label is None else f"{label}.{dtype.name}"
        dtypes[key] = dtype.name
        slots.append(_Slot(key, tuple(jnp.shape(leaf))))
        offsets.append(np.int32(sizes.get(key, 0)))
        sizes[key] = sizes.get(key, 0) + math.prod(jnp.shape(leaf))
    if max(sizes.values()) >= 2**31:
        raise ValueError(f"a flat buffer would hold {max(sizes.values())} elements, more than int32 offsets reach")
    layout = FlatLayout(treedef, slots, offsets, sizes, dtypes)
    return layout.ravel(params), layout
