"""Flax NNX modules as :class:`gradchain.Model` (see :mod:`gradchain.adapters` for the conventions)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradchain.adapters._common import (
    AUTO,
    Bind,
    TrainFlag,
    bound_value_of,
    bound_values,
    call_factory,
    call_parameters,
    check_bind,
    check_bind_target,
    check_config,
    check_required,
    dotted,
    flag_values,
    framework_of,
    resolve_path,
    short,
    structure_change,
    traced_bind_error,
    train_flags,
    wrong_framework,
)
from gradchain.protocol import Model, accepted_keywords

ADAPTER = "from_nnx"


def from_nnx(module_or_factory: Any, *, bind: Bind | None = None, train_flag: TrainFlag = AUTO) -> Model:
    """A Flax NNX module, or a factory ``rngs -> module``, as a model.

    With a factory, ``init(key)`` builds a fresh module from ``nnx.Rngs(key)``: every member of a
    population starts from its own initialisation.  With a module, ``init`` returns its current
    parameters whatever the key.  ``params`` is the ``nnx.Param`` state; ``state`` the rest
    (``nnx.BatchStat``, any other ``nnx.Variable``, counters), with the random streams
    (``nnx.RngState``) held aside and reseeded from the step's key before every training call, so
    the masks follow ``key`` (without a key the streams advance from call to call).

    Args:
      module_or_factory: an ``nnx.Module``, or a callable ``factory(rngs)`` / ``factory(rngs=...)``
        returning one (a module class whose ``__init__`` takes ``rngs``).
      bind: config keys written into module attributes before each call, e.g.
        ``{"dropout": "drop.rate"}``.  The attribute must hold a number, and the layer must accept a
        traced value: the layers of :mod:`gradchain.flax.nnx` do, ``flax.nnx.Dropout`` does not
        (it tests ``rate == 0`` in Python) and is refused.
      train_flag: the ``__call__`` argument that switches training on, besides ``model.train()`` /
        ``model.eval()`` (see :func:`gradchain.adapters.from_linen`; ``"auto"`` by default).
    """
    from flax import nnx

    bind = check_bind(bind, ADAPTER)
    factory, template = _template(module_or_factory)
    if not callable(template):
        raise TypeError(f"from_nnx: {type(template).__name__} has no __call__, so it cannot be a model")
    _check_bind_targets(template, bind)
    graphdef, _, _, _ = nnx.split(template, nnx.Param, nnx.RngState, ...)
    owner = type(template).__name__
    call = type(template).__call__
    parameters = call_parameters(call)
    flags = train_flags(parameters, train_flag, owner, ADAPTER)
    wants_config = "config" in accepted_keywords(call, {"config": None})
    check_required(parameters, set(flags) | ({"config"} if wants_config else set()), 1, owner, ADAPTER)

    def init(key):
        module = template if factory is None else call_factory(factory, nnx.Rngs(key), "rngs", ADAPTER)
        _, params, rng_state, rest = nnx.split(module, nnx.Param, nnx.RngState, ...)
        return params, (rng_state, rest)

    def apply(params, state, x, *, key=None, train=False, config=None):
        rng_state, rest = _check_state(state)
        config = check_config(config, ADAPTER)
        module: Any = nnx.merge(graphdef, params, rng_state, rest, copy=True)  # fresh Variables in this trace
        values = bound_values(bind, config, ADAPTER)
        restore = _write_bound(module, bind, values)
        try:
            if train:
                module.train()
                if key is not None:
                    _reseed(module, key)
            else:
                module.eval()
            kwargs: dict[str, Any] = flag_values(flags, train)
            if wants_config:
                kwargs["config"] = config
            y = _call(module, x, kwargs, bind, values)
        finally:
            for node, attr, old in reversed(restore):
                object.__setattr__(node, attr, old)
        _, new_params, new_rng_state, new_rest = nnx.split(module, nnx.Param, nnx.RngState, ...)
        _check_after_call(params, new_params, rest, new_rest)
        # with a key the streams are a function of it; without one they advance as NNX's do
        return y, (new_rng_state if train and key is None else rng_state, new_rest)

    return Model(init, apply)


def _template(module_or_factory: Any) -> tuple[Any, Any]:
    """``(factory or None, a module)``: the module itself, or the factory's module built abstractly."""
    from flax import nnx

    if isinstance(module_or_factory, nnx.Module):
        return None, module_or_factory
    kind = framework_of(module_or_factory)
    if not callable(module_or_factory) or kind in ("linen", "equinox"):
        raise wrong_framework(module_or_factory, ADAPTER, "module_or_factory",
                              "an nnx.Module or a factory rngs -> nnx.Module")
    factory = module_or_factory
    template = nnx.eval_shape(lambda: call_factory(factory, nnx.Rngs(0), "rngs", ADAPTER))
    if not isinstance(template, nnx.Module):
        raise wrong_framework(template, ADAPTER, "the factory's result", "an nnx.Module")
    return factory, template


def _check_bind_targets(template: Any, bind: dict[str, tuple[str, ...]]) -> None:
    """Every bound path exists, holds a number and sits in a layer that can take a traced value."""
    from flax import nnx

    for name, paths in bind.items():
        for path in paths:
            node, attr = resolve_path(template, path, ADAPTER)
            if isinstance(node, nnx.Dropout) and attr == "rate":
                raise TypeError(
                    f"from_nnx: bind[{name!r}] = {path!r} is the rate of a flax.nnx.Dropout, which tests the rate in "
                    "Python (`if rate == 0.0`) and so cannot take the traced value bind writes; build that layer "
                    "as gradchain.flax.nnx.Dropout(rate, rngs=rngs) instead (the same masks for the same rngs, "
                    "and a traced rate)")
            check_bind_target(bound_value_of(node, attr), name, path, ADAPTER)


def _check_state(state: Any) -> tuple[Any, Any]:
    if not (isinstance(state, tuple) and len(state) == 2):
        raise TypeError(f"from_nnx: apply's state must be the (rng_state, rest) pair init returned, got {short(state)}")
    return state


def _write_bound(module: Any, bind: dict[str, tuple[str, ...]], values: dict[str, Any]) -> list[tuple[Any, str, Any]]:
    """Set each bound attribute for this call; the old values, to put back before splitting."""
    restore = []
    for name, value in values.items():
        for path in bind[name]:
            node, attr = resolve_path(module, path, ADAPTER)
            restore.append((node, attr, getattr(node, attr)))
            # a hyperparameter is a static attribute of the module: set it for this call only
            # (bypassing NNX's data/static check)
            object.__setattr__(node, attr, value)
    return restore


def _call(module: Any, x: Any, kwargs: dict[str, Any], bind, values) -> Any:
    try:
        return module(x, **kwargs)
    except (jax.errors.TracerBoolConversionError, jax.errors.ConcretizationTypeError) as err:
        explained = traced_bind_error(err, bind, values, ADAPTER)
        if explained is None:
            raise
        raise explained from err


def _check_after_call(params: Any, new_params: Any, rest: Any, new_rest: Any) -> None:
    """The call wrote no parameter and kept the state's structure (a carry of the training loop)."""
    change = structure_change(params, new_params)
    if change is None:
        written = [dotted(path) for (path, old), new in
                   zip(jax.tree_util.tree_flatten_with_path(params)[0], jax.tree.leaves(new_params)) if old is not new]
        if written:
            raise ValueError(f"from_nnx: the call wrote the nnx.Param {written[0]!r}: a forward pass must not change "
                             "parameters (the optimizer owns them, and the write would be lost); keep what the "
                             "forward pass updates in an nnx.BatchStat or another nnx.Variable (it goes to state)")
    else:
        raise ValueError(f"from_nnx: the call changed the parameters' structure ({change}); create every nnx.Param "
                         "in __init__")
    change = structure_change(rest, new_rest)
    if change:
        raise ValueError(f"from_nnx: the call changed the structure of the state ({change}); create every "
                         "nnx.Variable in __init__ (the state is a carry of the training loop: one structure)")


def _reseed(module: Any, key: jax.Array) -> None:
    """Give every random stream of ``module`` its own key, ``fold_in(key, i)`` for the i-th stream
    in graph order, and restart its counter: two dropout layers never share a mask."""
    from flax import nnx

    streams = [node for _, node in nnx.iter_graph(module) if isinstance(node, nnx.RngStream)]
    for i, stream in enumerate(streams):
        new = jax.random.fold_in(key, i)
        old = stream.key.get_value()
        if jnp.issubdtype(old.dtype, jax.dtypes.prng_key) and not jnp.issubdtype(new.dtype, jax.dtypes.prng_key):
            new = jax.random.wrap_key_data(new)
        stream.key.set_value(new)
        stream.count.set_value(jnp.zeros_like(stream.count.get_value()))
