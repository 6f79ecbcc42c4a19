"""Equinox modules as :class:`gradchain.Model` (see :mod:`gradchain.adapters` for the conventions)."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradchain.adapters._common import (
    AUTO,
    Bind,
    TrainFlag,
    bound_values,
    call_factory,
    call_parameters,
    check_bind,
    check_bind_target,
    check_config,
    check_required,
    flag_values,
    framework_of,
    kind,
    resolve_path,
    short,
    traced_bind_error,
    train_flags,
    wrong_framework,
)
from gradchain.protocol import Model, accepted_keywords

ADAPTER = "from_equinox"
KNOWN_FLAGS = {"train": True, "training": True, "is_training": True, "is_train": True, "inference": False}
"""Equinox's switch is ``inference`` (``eqx.nn.Dropout(x, inference=...)``); ``deterministic`` is
its deprecated spelling, so it is not set unless named by ``train_flag``."""

Frozen = Callable[[Any], Any] | str | Sequence[str] | None


class EquinoxState(NamedTuple):
    """The ``state`` of an Equinox model that has arrays it does not train."""

    state: Any  # the eqx.nn.State of a stateful model, () otherwise
    buffers: Any  # the module with only its untrained arrays (None elsewhere): frozen=, integer arrays


def from_equinox(model_or_factory: Any, state: Any = None, *, per_example: bool = True, bind: Bind | None = None,
                 axis_name: str = "batch", frozen: Frozen = None, train_flag: TrainFlag = AUTO) -> Model:
    """An Equinox module (or a factory ``key -> module`` / ``key -> (module, state)``) as a model.

    ``params`` are the module's floating-point arrays (``eqx.is_inexact_array``) except those
    named by ``frozen`` or ``bind``; everything else that is not an array — activation functions,
    Python numbers, flags — stays static, so an unfiltered model works as it is.  ``state`` is the
    ``eqx.nn.State`` (``eqx.nn.make_with_state``; ``()`` for a stateless model), threaded through
    the call as Equinox does: ``model(x, state, key=...) -> (y, state)``.  A model with arrays
    that are not trained (``frozen``, integer or boolean arrays) gets the state
    :class:`EquinoxState` ``(state, buffers)`` instead: they are carried, never differentiated,
    never weight-decayed.  The test-time path is ``eqx.nn.inference_mode(model)``.

    Args:
      model_or_factory: an ``eqx.Module``, or ``factory(key)`` / ``factory(key=...)`` returning a
        module or ``(module, state)`` (then every population member gets its own initialisation).
      state: the ``eqx.nn.State`` of a stateful module given as an instance (a factory returns it).
      per_example: Equinox models are usually written for one example and ``vmap``-ped; with
        ``True`` the adapter vmaps the call over the batch (with ``axis_name`` for batch norm)
        and gives each example its own key.  ``False``: the model takes the whole batch.
      bind: config keys written into module fields before each call, e.g. ``{"dropout": "drop.p"}``.
      axis_name: the name of the vmapped batch axis (``eqx.nn.BatchNorm(axis_name=...)``).
      frozen: the arrays not to train: ``lambda m: m.buffer`` or ``lambda m: (m.a, m.fc.weight)``
        (the ``where`` of ``eqx.tree_at``), a dotted path ``"fc.weight"`` or a tuple of them; a
        selected submodule freezes all its arrays.  A buffer used under ``jax.lax.stop_gradient``
        belongs here.
      train_flag: the ``__call__`` argument that switches training on, besides
        ``inference_mode`` (``"auto"``: ``train``, ``training``, ``is_training``, ``is_train``,
        ``inference``; see :func:`gradchain.adapters.from_linen`).
    """
    import equinox as eqx

    bind = check_bind(bind, ADAPTER)
    _check_options(per_example)
    factory, template, template_state = _template(model_or_factory, state)
    stateful = template_state is not None
    owner = type(template).__name__
    if not callable(template):
        raise TypeError(f"from_equinox: {owner} has no __call__, so it cannot be a model")
    call = type(template).__call__
    parameters = call_parameters(call)
    flags = train_flags(parameters, train_flag, owner, ADAPTER, known=KNOWN_FLAGS)
    wants_key = "key" in accepted_keywords(call, {"key": None})
    wants_config = "config" in accepted_keywords(call, {"config": None})
    passed = set(flags) | ({"key"} if wants_key else set()) | ({"config"} if wants_config else set())
    _check_state_argument(parameters, stateful, owner)
    check_required(parameters, passed, 2 if stateful else 1, owner, ADAPTER)
    _check_bind_targets(template, bind)
    trainable = _trainable_spec(template, frozen, bind)
    _, static = eqx.partition(template, _is_array_like)
    has_buffers = any(_is_array_like(leaf) and not trained for leaf, trained in
                      zip(jax.tree.leaves(template), jax.tree.leaves(trainable)))

    def init(key):
        if factory is None:
            module, module_state = model_or_factory, state
        else:
            module, module_state = _split_built(call_factory(factory, key, "key", ADAPTER))
        params, rest = eqx.partition(module, trainable)
        model_state = module_state if stateful else ()
        if not has_buffers:
            return params, model_state
        return params, EquinoxState(model_state, eqx.filter(rest, eqx.is_array))

    def apply(params, model_state, x, *, key=None, train=False, config=None):
        buffers = None
        if has_buffers:
            model_state, buffers = _check_buffers(model_state)
        module = eqx.combine(params, static) if buffers is None else eqx.combine(params, buffers, static)
        config = check_config(config, ADAPTER)
        values = bound_values(bind, config, ADAPTER)
        for name, value in values.items():
            for path in bind[name]:
                module = eqx.tree_at(_getter(path), module, value)
        module = eqx.nn.inference_mode(module, value=not train)
        extra = dict(flag_values(flags, train), **({"config": config} if wants_config else {}))
        train_key = key if (train and wants_key) else None

        def call(xi, ki, s):
            kw = dict(extra, key=ki) if wants_key else extra
            if not stateful:
                return module(xi, **kw), s
            out = module(xi, s, **kw)
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(f"from_equinox: a model with state must return (y, state) as Equinox's stateful "
                                f"layers do, but {owner}.__call__ returned {kind(out)}")
            return out

        y, new_state = _run(call, x, train_key, model_state, per_example, axis_name, bind, values)
        return y, (EquinoxState(new_state, buffers) if has_buffers else new_state)

    return Model(init, apply)


def _check_options(per_example: Any) -> None:
    if not isinstance(per_example, (bool, np.bool_)):  # "no" would be truthy: vmapped
        raise TypeError(f"from_equinox: per_example must be True (vmap the model over the batch) or False (the model "
                        f"takes whole batches), got per_example={per_example!r}")


def _template(model_or_factory: Any, state: Any) -> tuple[Any, Any, Any]:
    """``(factory or None, module, state)``; a factory's module and state are built abstractly."""
    import equinox as eqx

    if isinstance(model_or_factory, eqx.Module):
        return None, model_or_factory, state
    if not callable(model_or_factory) or framework_of(model_or_factory) in ("nnx", "linen"):
        raise wrong_framework(model_or_factory, ADAPTER, "model_or_factory",
                              "an eqx.Module or a factory key -> module / (module, state)")
    if state is not None:
        raise ValueError(f"from_equinox: state= is for a module given as an instance; a factory returns its own "
                         f"state (key -> (module, state)), got state={short(state)} with a factory")
    factory = model_or_factory
    built = eqx.filter_eval_shape(lambda key: call_factory(factory, key, "key", ADAPTER), jax.random.PRNGKey(0))
    module, module_state = _split_built(built)
    return factory, module, module_state


def _split_built(built: Any) -> tuple[Any, Any]:
    import equinox as eqx

    if isinstance(built, eqx.Module):
        return built, None
    if isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], eqx.Module):
        return built
    raise wrong_framework(built, ADAPTER, "the factory's result", "an eqx.Module or a pair (module, state)")


def _check_state_argument(parameters, stateful: bool, owner: str) -> None:
    """With ``state``, ``__call__`` takes it as its second positional argument."""
    if not stateful or parameters is None:
        return
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 2 and not any(p.kind is p.VAR_POSITIONAL for p in parameters):
        raise TypeError(f"from_equinox: a state was given, but {owner}.__call__({', '.join(p.name for p in parameters)}) "
                        "takes no state argument; pass state only for a model called as model(x, state) -> (y, state)")


def _check_bind_targets(template: Any, bind: dict[str, tuple[str, ...]]) -> None:
    """Every bound path exists, holds a number and is a pytree leaf (not a static field)."""
    import equinox as eqx

    for name, paths in bind.items():
        for path in paths:
            resolve_path(template, path, ADAPTER)
            value = _getter(path)(template)
            check_bind_target(value, name, path, ADAPTER)
            try:
                eqx.tree_at(_getter(path), template, 0.0)
            except (TypeError, ValueError):
                raise TypeError(f"from_equinox: bind[{name!r}] = {path!r} is a static field "
                                "(eqx.field(static=True)), which cannot hold the traced value bind writes; "
                                "make it a normal field") from None


def _trainable_spec(template: Any, frozen: Frozen, bind: dict[str, tuple[str, ...]]) -> Any:
    """The module with a bool per leaf: True for the floating-point arrays that are trained."""
    import equinox as eqx

    spec = jax.tree.map(_is_float_like, template)
    wheres = [(f"frozen={short(frozen)}", where) for where in _frozen_getters(template, frozen)]
    wheres += [(f"bind[{name!r}]", _getter(path)) for name, paths in bind.items() for path in paths]
    for label, where in wheres:
        try:
            spec = eqx.tree_at(where, spec, replace_fn=lambda node: jax.tree.map(lambda _: False, node))
        except Exception as err:  # the user's selector: a typo'd field, a None leaf, ...
            raise ValueError(f"from_equinox: {label} does not select leaves of {type(template).__name__}: "
                             f"{type(err).__name__}: {err}") from err
    return spec


def _frozen_getters(template: Any, frozen: Frozen) -> list[Callable[[Any], Any]]:
    if frozen is None:
        return []
    if callable(frozen):
        return [frozen]
    paths = (frozen,) if isinstance(frozen, str) else frozen
    if not isinstance(paths, (tuple, list)) or not paths or not all(isinstance(p, str) and p for p in paths):
        raise TypeError(f"from_equinox: frozen must be a function module -> leaves (lambda m: m.buffer), a dotted "
                        f"path ('fc.weight') or a tuple of paths, got frozen={frozen!r}")
    for path in paths:
        resolve_path(template, path, ADAPTER)
    return [_getter(path) for path in paths]


def _check_buffers(model_state: Any) -> tuple[Any, Any]:
    if not isinstance(model_state, tuple) or len(model_state) != 2:
        raise TypeError(f"from_equinox: this model's state is the EquinoxState(state, buffers) init returned, "
                        f"got {short(model_state)}")
    return model_state[0], model_state[1]


def _run(call, x, train_key, model_state, per_example: bool, axis_name: str, bind, values):
    """The call on the whole batch, or vmapped over it with one key per example."""
    try:
        if not per_example:
            return call(x, train_key, model_state)
        n = jax.tree.leaves(x)[0].shape[0]
        keys = None if train_key is None else jax.random.split(train_key, n)
        return jax.vmap(call, in_axes=(0, None if keys is None else 0, None), out_axes=(0, None),
                        axis_name=axis_name)(x, keys, model_state)
    except NameError as err:
        match = re.search(r"unbound axis name: ([^\s.]+)", str(err))
        if not match:
            raise
        how = (f"the adapter vmaps the examples as axis_name={axis_name!r}" if per_example else
               "per_example=False: the adapter does not vmap the batch")
        raise ValueError(f"from_equinox: the model reduces over the axis {match.group(1)!r} (eqx.nn.BatchNorm"
                         f"(axis_name=...)), which is not bound: {how}; pass per_example=True, "
                         f"axis_name={match.group(1)!r}") from err
    except (jax.errors.TracerBoolConversionError, jax.errors.ConcretizationTypeError) as err:
        explained = traced_bind_error(err, bind, values, ADAPTER)
        if explained is None:
            raise
        raise explained from err


def _is_array_like(leaf: Any) -> bool:
    """An array, or its shape struct in a module built by ``eqx.filter_eval_shape``."""
    import equinox as eqx

    return eqx.is_array(leaf) or isinstance(leaf, jax.ShapeDtypeStruct)


def _is_float_like(leaf: Any) -> bool:
    return _is_array_like(leaf) and jnp.issubdtype(leaf.dtype, jnp.inexact)


def _getter(path: str):
    def get(module):
        node = module
        for part in path.split("."):
            node = node[int(part)] if part.isdigit() else getattr(node, part)
        return node

    return get
