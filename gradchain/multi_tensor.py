"""Multi-tensor updates: run a transformation on a few contiguous buffers instead of many leaves.

A model with thousands of small parameters (biases, norm scales, small kernels) costs an
element-wise optimizer one compiled kernel per leaf per statistic.  On a CPU each kernel launch
costs microseconds and each *distinct* kernel costs milliseconds of XLA compile time, so both the
step and the compile grow with the number of leaves, not with the number of parameters.

:func:`multi_tensor` wraps any transformation (gradchain's or Optax's).  At ``init`` it groups
the small leaves by dtype into one flat buffer per dtype and keeps the inner state in that packed
layout, across steps.  At each update it concatenates the incoming leaves of a group (one kernel),
runs the inner transformation on the packed tree (a handful of kernels however many leaves there
are) and hands each leaf its slice of the result.  Large leaves are left as they are: copying
them into a buffer would cost a pass over memory and buys nothing.

The slices are taken at offsets stored in the state, as arrays, rather than at constants: all
leaves of one shape then share one compiled kernel, which is what keeps the compile time of a
2000-leaf tree near that of a 1-leaf tree.

Per-element math is unchanged (the same operations on the same numbers), so element-wise chains
are bit-for-bit the unpacked ones; reductions over the whole tree (``clip_by_global_norm``) sum in
another order (within 1e-6 relative).  Transformations that look at individual leaves (``masked``
with a per-leaf mask, ``decay_mask``) cannot run on packed buffers and raise an error saying so:
put them outside the wrapper.

Sharded leaves.  A leaf split over several devices (fully sharded training, a leaf of a global
array spread over processes) is never packed: concatenating it would gather it onto every device.
``init`` decides from what it sees: a concrete array's ``.sharding``, or, under ``jit``, the
tracer's type ``jax.typeof(x).sharding``, which names the mesh axes a leaf is split over when the
mesh's axes are ``Explicit`` (``jax.make_mesh``'s default in recent JAX releases, or
``axis_types=(jax.sharding.AxisType.Explicit,)``).  On a mesh of ``Auto`` axes a tracer does not
say how XLA will split it; such a leaf is packed (correct, but gathered) unless ``sharded=`` says
otherwise, so with ``Auto`` meshes call ``init`` eagerly on the placed parameters or pass
``sharded``.  Replicated and single-device leaves are packed as usual.  Inside ``shard_map`` the
values are each device's own blocks, so packing them is local.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradchain.core import GradientTransformation, GradientTransformationExtraArgs, accepted_extra_args, is_placeholder

# Defaults of the automatic choice (see ``multi_tensor``).  Below ~32 leaves the per-leaf kernels
# cost little; above 64K elements a leaf's own kernel is already long enough to amortise its launch.
MAX_LEAF_SIZE = 1 << 16
MIN_LEAVES = 32


class Packed(NamedTuple):
    """The packed view of a tree that the inner transformation sees.

    ``groups`` maps a dtype name to one flat buffer holding every packed leaf of that dtype, in
    leaf order; ``loose`` holds the leaves that were not packed, in leaf order.
    """

    groups: dict[str, jax.Array]
    loose: tuple[Any, ...]


class MultiTensorState(NamedTuple):
    """``slots`` has one entry per parameter leaf: ``None`` for a loose leaf, or
    ``{dtype name: offset}`` for a packed one (the offset an int32 array).  ``slots`` is ``None``
    when the tree was too small to be worth packing; the inner state then has the plain layout."""

    inner: Any
    slots: Any  # tuple[Any, ...] | None; ANY_SLOTS in the state made for tree_map_params


def _is_packable(leaf: Any, max_leaf_size: int, sharded: bool | None = None) -> bool:
    if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, float, int)):
        return False  # not an array (an Equinox activation function, a placeholder): stays loose
    if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating) or jnp.size(leaf) > max_leaf_size:
        return False
    if sharded is None:
        sharded = spans_devices(leaf)
    return not sharded  # unknown (None: a tracer on a mesh of Auto axes) packs, as before


def spans_devices(leaf: Any) -> bool | None:
    """Whether ``leaf`` is split over several devices: True, False (one device, or a whole copy on
    each), or None when that is not known (a tracer on a mesh of ``Auto`` axes, whose placement
    XLA chooses later).

    A concrete array answers from ``.sharding``; a tracer from ``jax.typeof(leaf).sharding``: its
    spec names the ``Explicit`` mesh axes the leaf is split over (``Manual`` axes, inside
    ``shard_map``, hold each device's own block and do not count).
    """
    if not isinstance(leaf, jax.Array):
        return False  # host values (NumPy, Python numbers)
    try:
        sharding = leaf.sharding  # a concrete array
    except Exception:  # a tracer: "use jax.typeof(x)"
        sharding = None
    else:
        return not (len(sharding.device_set) == 1 or sharding.is_fully_replicated)
    typeof = getattr(jax, "typeof", None)
    try:
        sharding = typeof(leaf).sharding if typeof is not None else None
    except Exception:
        return None
    mesh, spec = getattr(sharding, "mesh", None), getattr(sharding, "spec", None)
    if mesh is None or spec is None or getattr(mesh, "empty", True):
        return None  # no mesh in the type (a single-device or GSPMD placement): not recorded
    kinds = {name: str(kind).rsplit(".", 1)[-1] for name, kind in zip(mesh.axis_names, getattr(mesh, "axis_types", ()))}
    used = [a for entry in spec if entry is not None and isinstance(entry, (str, tuple))
            for a in ((entry,) if isinstance(entry, str) else entry)]
    if any(kinds.get(a) == "Explicit" and mesh.shape[a] > 1 for a in used):
        return True
    if any(kinds.get(a) == "Auto" and mesh.shape[a] > 1 for a in mesh.axis_names):
        return None  # an Auto axis: the spec does not record how XLA will split the leaf
    return False


def _marks(sharded: Any, params: Any, n: int) -> list[bool]:
    flags = jax.tree.leaves(sharded(params) if callable(sharded) else sharded)
    if len(flags) != n:
        raise ValueError(f"sharded has {len(flags)} leaves but the parameters have {n}: give one bool per leaf")
    for flag in flags:
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"sharded must hold Python bools (one per parameter leaf), got {flag!r}")
    return [bool(f) for f in flags]


def _layout(leaves: list[Any], slots: tuple[Any, ...]) -> dict[str, list[int]]:
    """``{dtype name: indices of its packed leaves}``, in first-appearance order."""
    groups: dict[str, list[int]] = {}
    for i, slot in enumerate(slots):
        if slot is not None:
            (name,) = slot
            groups.setdefault(name, []).append(i)
    return groups


def _pack(leaves: list[Any], slots: tuple[Any, ...]) -> Packed:
    groups = {
        name: jnp.concatenate([jnp.ravel(leaves[i]) for i in members])
        for name, members in _layout(leaves, slots).items()
    }
    loose = tuple(leaf for leaf, slot in zip(leaves, slots) if slot is None)
    return Packed(groups, loose)


def _unpack(packed: Packed, slots: tuple[Any, ...], like: list[Any]) -> list[Any]:
    loose = iter(packed.loose)
    out = []
    for slot, leaf in zip(slots, like):
        if slot is None:
            out.append(next(loose))
            continue
        ((name, offset),) = slot.items()
        flat = jax.lax.dynamic_slice(packed.groups[name], (offset,), (math.prod(jnp.shape(leaf)),))
        out.append(flat.reshape(jnp.shape(leaf)))
    return out


class _AnySlots:
    """The slots of the state ``init`` makes for ``tree_map_params``' stand-in for the parameters:
    a leaf, so that it matches the real state's slots whatever they are (they are kept)."""

    def __repr__(self) -> str:
        return "ANY_SLOTS"


ANY_SLOTS = _AnySlots()


def multi_tensor(
    inner: GradientTransformation,
    *,
    max_leaf_size: int = MAX_LEAF_SIZE,
    min_leaves: int = MIN_LEAVES,
    sharded: Any = None,
) -> GradientTransformation:
    """Run ``inner`` on packed buffers when the tree has many small leaves (see module docstring).

    Args:
      inner: any gradient transformation whose math is element-wise or over the whole tree.
      max_leaf_size: leaves with at most this many elements are packed; larger ones stay loose.
      min_leaves: pack only when at least this many leaves are packable; smaller trees pass
        through unchanged (the state then holds ``inner``'s plain state).  ``min_leaves=1``
        always packs; ``max_leaf_size=0`` never does.
      sharded: which leaves are split over several devices and so stay loose: a bool pytree
        with the parameters' structure, or a function ``params -> bools``.  Default: each leaf's
        own sharding (module docstring); give it for ``init`` under ``jit`` on a mesh of
        ``Auto`` axes, where a tracer does not tell.

    Returns:
      A :class:`~gradchain.GradientTransformationExtraArgs` (extra ``update`` arguments reach
      ``inner``) with state ``MultiTensorState(inner, slots)``.
    """
    if not (callable(getattr(inner, "init", None)) and callable(getattr(inner, "update", None))):
        raise TypeError(f"inner must be a gradient transformation, got {inner!r}")
    for name, value, low in (("max_leaf_size", max_leaf_size, 0), ("min_leaves", min_leaves, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an int >= {low}, got {value!r}")

    def init(params):
        if is_placeholder(params):  # tree_map_params: whatever the real state's slots are
            return MultiTensorState(inner.init(params), ANY_SLOTS)
        leaves = jax.tree.leaves(params)
        marks = [None] * len(leaves) if sharded is None else _marks(sharded, params, len(leaves))
        packable = [_is_packable(leaf, max_leaf_size, mark) for leaf, mark in zip(leaves, marks)]
        if sum(packable) < min_leaves:
            return MultiTensorState(inner.init(params), None)
        offsets: dict[str, int] = {}
        slots = []
        for leaf, pack in zip(leaves, packable):
            if not pack:
                slots.append(None)
                continue
            name = jnp.dtype(jnp.result_type(leaf)).name
            slots.append({name: jnp.asarray(offsets.get(name, 0), jnp.int32)})
            offsets[name] = offsets.get(name, 0) + math.prod(jnp.shape(leaf))
        slots = tuple(slots)
        return MultiTensorState(inner.init(_pack(leaves, slots)), slots)

    def update(updates, state, params=None, **extra_args):
        extra = accepted_extra_args(inner.update, extra_args)
        if not isinstance(state, MultiTensorState):
            raise TypeError(
                f"state must be a MultiTensorState (from this transformation's init), "
                f"got {type(state).__name__}"
            )
        if state.slots is None:
            new_updates, inner_state = inner.update(updates, state.inner, params, **extra)
            return new_updates, MultiTensorState(inner_state, None)
        leaves, treedef = jax.tree.flatten(updates)
        if len(leaves) != len(state.slots):
            raise ValueError(
                f"updates have {len(leaves)} leaves but the state was initialised with "
                f"{len(state.slots)}: pass the updates of the same parameters"
            )
        packed_params = None if params is None else _pack(jax.tree.leaves(params), state.slots)
        packed, inner_state = inner.update(
            _pack(leaves, state.slots), state.inner, packed_params, **extra
        )
        new_updates = jax.tree.unflatten(treedef, _unpack(packed, state.slots, leaves))
        return new_updates, MultiTensorState(inner_state, state.slots)

    return GradientTransformationExtraArgs(init, update)
