"""Splitting the parameter tree between transformations, and naming the links of a chain.

All of it is :func:`gradchain.masked` (``gradchain/transforms/wrappers.py``), which runs a
transformation on the selected leaves only:

* ``set_to_zero()``: ``u <- 0``;
* ``freeze(mask) = masked(set_to_zero(), mask)``;
* ``partition(transforms, labels) =`` one ``masked(transforms[g], labels == g)`` per label ``g``
  (``multi_transform`` is its older name, as in Optax);
* ``named_chain((name, tx), ...)``: :func:`gradchain.chain` with the states in a dict by name.
"""

from __future__ import annotations

import collections
from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradchain.combinators._pieces import install_reprs
from gradchain.core import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    accepted_extra_args,
    is_placeholder,
)
from gradchain.transforms._base import check_bool, check_transformation
from gradchain.transforms.wrappers import MaskedState, _select, full_mask, masked

__all__ = [
    "MultiTransformState",
    "PartitionState",
    "freeze",
    "multi_transform",
    "named_chain",
    "partition",
    "set_to_zero",
]


def set_to_zero() -> GradientTransformation:
    """``u <- 0``: applied, the updates leave the parameters where they are (Optax's name).

    With :func:`partition` or :func:`gradchain.masked` it freezes part of the tree; inside the
    jit-compiled step the gradient of a frozen leaf is then dead code and is not computed.

    Returns:
      A transformation with state ``EmptyState()``.
    """

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        del params
        return jax.tree.map(jnp.zeros_like, updates), state

    return GradientTransformation(init, update)


def _check_static_mask(name: str, mask: Any) -> None:
    """A mask given as a tree (not a function) must have bool leaves, known at construction."""
    if callable(mask):
        return
    for path, leaf in jax.tree_util.tree_leaves_with_path(mask):
        ok = isinstance(leaf, bool) or (
            hasattr(leaf, "dtype") and jnp.shape(leaf) == () and jnp.result_type(leaf) == jnp.bool_
        )
        if not ok:
            where = jax.tree_util.keystr(path) or name
            raise TypeError(
                f"{name} leaves must be bools (or a function params -> bool tree), got {leaf!r} of type "
                f"{type(leaf).__name__} at {where}"
            )


def _masked(
    inner: GradientTransformation, mask: Any, *, mask_compatible_extra_args: bool = False
) -> GradientTransformationExtraArgs:
    """:func:`gradchain.masked`, plus two things Optax's ``masked`` does: under
    ``tree_map_params``' stand-in tree the inner ``init`` sees the stand-in (so that a tree mask
    does not have to match it), and with ``mask_compatible_extra_args`` the extra ``update``
    arguments with the structure of the updates are masked too."""
    base = masked(inner, mask)

    def init(params):
        if is_placeholder(params):
            return MaskedState(inner.init(params))
        return base.init(params)

    def update(updates, state, params=None, **extra_args):
        if mask_compatible_extra_args and extra_args:
            m = full_mask(mask, updates if params is None else params)
            structure = jax.tree.structure(updates)
            extra_args = {
                k: _select(v, m) if jax.tree.structure(v) == structure else v for k, v in extra_args.items()
            }
        return base.update(updates, state, params, **extra_args)

    return GradientTransformationExtraArgs(init, update)


def freeze(mask: Any) -> GradientTransformation:
    """Zero the updates of the leaves where ``mask`` is ``True`` (hold them constant):
    ``masked(set_to_zero(), mask)``, as ``optax.freeze``.

    Args:
      mask: a bool (freeze everything or nothing), a tree of bools with the structure of the
        parameters or a prefix of it (``True`` freezes that leaf or sub-tree), or a function
        ``params -> such tree``.  It must be static (known when the step is traced).

    Returns:
      A transformation with state ``MaskedState(inner_state=EmptyState())``.

    Raises:
      TypeError: a mask leaf that is not a bool.
    """
    _check_static_mask("mask", mask)
    return _masked(set_to_zero(), mask)


class PartitionState(NamedTuple):
    """``inner_states[label]``: ``MaskedState(inner_state)`` of that label's transformation
    (which holds only the leaves of that label)."""

    inner_states: Mapping[Hashable, Any]


MultiTransformState = PartitionState


def _label_set(labels: Any) -> set:
    try:
        return set(jax.tree.leaves(labels))
    except TypeError as err:
        raise TypeError(f"param_labels leaves must be hashable labels (strings, ints), got an unhashable leaf: {err}") from err


def _check_labels(labels: Any, transforms: Mapping) -> None:
    unknown = _label_set(labels) - set(transforms)
    if unknown:
        raise ValueError(
            f"param_labels has labels with no transformation: {', '.join(sorted(map(repr, unknown)))}; "
            f"transforms has {', '.join(sorted(map(repr, transforms)))}"
        )


def _check_label_structure(labels: Any, tree: Any) -> None:
    try:
        jax.tree.map(lambda label, sub: None, labels, tree)
    except (ValueError, TypeError) as err:
        raise ValueError(
            "param_labels must have the structure of the parameters (or a prefix of it: one label for a "
            f"whole sub-tree):\n  param_labels: {jax.tree.structure(labels)}\n  params: {jax.tree.structure(tree)}"
        ) from err


def partition(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Any,
    *,
    mask_compatible_extra_args: bool = False,
) -> GradientTransformationExtraArgs:
    """Apply a different transformation to each part of the tree (``optax.partition``).

    Each leaf carries a label; ``transforms[label]`` runs on the leaves of that label only:
    ``masked(transforms[g], labels == g)`` for every label ``g``, applied one after the other
    (the masks are disjoint, so the order does not matter).  Freeze a part with
    ``transforms["frozen"] = gc.set_to_zero()``.

    Args:
      transforms: ``{label: transformation}`` (gradchain's or Optax's).
      param_labels: a tree of labels with the structure of the parameters (or a prefix of it), or
        a function ``params -> such tree`` (called on the updates in ``update``, as Optax).
      mask_compatible_extra_args: also mask the extra ``update`` arguments that have the
        structure of the updates (per-parameter tags), so each transformation sees its part.

    Returns:
      A :class:`~gradchain.GradientTransformationExtraArgs` with state
      ``PartitionState(inner_states={label: MaskedState(inner_state)})``; every inner
      hyperparameter is reachable by ``gc.get_hyperparams`` / ``gc.set_hyperparams`` (give two
      labels' optimizers distinct names, or set both at once).

    Raises:
      TypeError: ``transforms`` is not a mapping of transformations.
      ValueError: ``param_labels`` uses a label ``transforms`` lacks (at construction for a tree
        of labels, at ``init`` for a function), or does not match the parameters' structure
        (at ``init``).

    Example:
      >>> import jax.numpy as jnp, gradchain as gc
      >>> params = {"w": jnp.ones((2, 2)), "b": jnp.ones(2)}
      >>> tx = gc.partition({"adam": gc.adam(0.1), "frozen": gc.set_to_zero()}, {"w": "adam", "b": "frozen"})
      >>> updates, _ = tx.update(params, tx.init(params), params)
      >>> updates["b"]
      Array([0., 0.], dtype=float32)
    """
    if not isinstance(transforms, Mapping):
        raise TypeError(f"transforms must be a mapping {{label: transformation}}, got {type(transforms).__name__}")
    for label, tx in transforms.items():
        check_transformation(f"transforms[{label!r}]", tx)
    check_bool("mask_compatible_extra_args", mask_compatible_extra_args)
    if not callable(param_labels):
        _check_labels(param_labels, transforms)

    def labels_of(tree):
        labels = param_labels(tree) if callable(param_labels) else param_labels
        if callable(param_labels):
            _check_labels(labels, transforms)
        _check_label_structure(labels, tree)
        return labels

    def group_txs(labels):
        return {
            group: _masked(
                tx,
                jax.tree.map(lambda label, group=group: label == group, labels),
                mask_compatible_extra_args=mask_compatible_extra_args,
            )
            for group, tx in transforms.items()
        }

    def init(params):
        if is_placeholder(params):  # tree_map_params: the stand-in goes through unmasked
            return PartitionState({group: MaskedState(tx.init(params)) for group, tx in transforms.items()})
        return PartitionState({group: tx.init(params) for group, tx in group_txs(labels_of(params)).items()})

    def update(updates, state, params=None, **extra_args):
        if not isinstance(state, PartitionState) or set(state.inner_states) != set(transforms):
            raise ValueError(
                f"state does not belong to this partition of labels {', '.join(sorted(map(repr, transforms)))}: "
                f"got {type(state).__name__}"
            )
        new_states = {}
        for group, tx in group_txs(labels_of(updates)).items():
            updates, new_states[group] = tx.update(updates, state.inner_states[group], params, **extra_args)
        return updates, PartitionState(new_states)

    return GradientTransformationExtraArgs(init, update)


def multi_transform(
    transforms: Mapping[Hashable, GradientTransformation],
    param_labels: Any,
    *,
    mask_compatible_extra_args: bool = False,
) -> GradientTransformationExtraArgs:
    """The older name of :func:`partition` (Optax keeps it for backward compatibility)."""
    return partition(transforms, param_labels, mask_compatible_extra_args=mask_compatible_extra_args)


def named_chain(*args: tuple[str, GradientTransformation]) -> GradientTransformationExtraArgs:
    """:func:`gradchain.chain` with a name per link: ``state[name]`` is that link's state
    (``optax.named_chain``).

    Args:
      *args: ``(name, transformation)`` pairs, applied left to right; names are unique strings.

    Returns:
      A :class:`~gradchain.GradientTransformationExtraArgs` whose state is an ``OrderedDict``
      ``{name: state}`` in chain order; extra ``update`` arguments reach the links that accept
      them.

    Raises:
      TypeError: an argument that is not a ``(str, transformation)`` pair.
      ValueError: a name used twice.

    Example:
      >>> import jax.numpy as jnp, gradchain as gc
      >>> tx = gc.named_chain(("clip", gc.clip(1.0)), ("sgd", gc.sgd(0.1)))
      >>> list(tx.init(jnp.zeros(2)))
      ['clip', 'sgd']
    """
    for i, pair in enumerate(args):
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)):
            shown = repr(pair) if isinstance(pair, (tuple, str)) and len(repr(pair)) < 80 else f"a {type(pair).__name__}"
            raise TypeError(f"named_chain arguments must be (name, transformation) pairs with a str name; argument {i} is {shown}")
        check_transformation(f"the transformation named {pair[0]!r}", pair[1])
    names = [name for name, _ in args]
    if len(names) != len(set(names)):
        duplicated = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"named_chain names must be unique, got {names} ({duplicated} more than once)")

    def init(params):
        return collections.OrderedDict((name, tx.init(params)) for name, tx in args)

    def update(updates, state, params=None, **extra_args):
        if not isinstance(state, Mapping) or set(state) != set(names):
            raise ValueError(f"state does not belong to this named_chain of {names}: got {type(state).__name__}")
        # Optax's OrderedDict; a plain dict stays one (``gc.set_hyperparams`` rebuilds mappings as
        # dicts), so that a loop carrying the state keeps one pytree type
        new_state = collections.OrderedDict() if isinstance(state, collections.OrderedDict) else {}
        for name, tx in args:
            updates, new_state[name] = tx.update(
                updates, state[name], params, **accepted_extra_args(tx.update, extra_args)
            )
        return updates, new_state

    return GradientTransformationExtraArgs(init, update)


install_reprs(PartitionState)
