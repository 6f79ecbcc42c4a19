"""Flax NNX modules as :class:`gradchain.Model` (see :mod:`gradchain.adapters` for the conventions)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from gradchain.adapters._common import Bind, bound_values, check_bind, resolve_path, train_keywords
from gradchain.protocol import Model, accepted_keywords


def from_nnx(module_or_factory: Any, *, bind: Bind | None = None) -> Model:
    """A Flax NNX module, or a factory ``rngs -> module``, as a model.

    With a factory, ``init(key)`` builds a fresh module from ``nnx.Rngs(key)``: every member of a
    population starts from its own initialisation.  With a module, ``init`` returns its current
    parameters whatever the key.  ``params`` is the ``nnx.Param`` state; ``state`` the rest
    (``nnx.BatchStat``, counters), with the random streams (``nnx.RngState``) held aside and
    reseeded from the step's key before every training call, so the masks follow ``key``.

    Args:
      module_or_factory: an ``nnx.Module`` or a callable ``rngs -> nnx.Module``.
      bind: config keys written into module attributes before each call, e.g.
        ``{"dropout": "drop.rate"}`` (the layer must accept a traced value: the layers of
        :mod:`gradchain.flax.nnx` do).
    """
    from flax import nnx

    bind = check_bind(bind, "from_nnx")
    if isinstance(module_or_factory, nnx.Module):
        template = module_or_factory
        factory = None
    elif callable(module_or_factory):
        factory = module_or_factory
        template = nnx.eval_shape(lambda: factory(nnx.Rngs(0)))
    else:
        raise TypeError(f"from_nnx: expected an nnx.Module or a factory rngs -> module, got {module_or_factory!r}")
    if not isinstance(template, nnx.Module):
        raise TypeError(f"from_nnx: the factory must return an nnx.Module, got {type(template).__name__}")
    for paths in bind.values():
        for path in paths:
            resolve_path(template, path, "from_nnx")
    graphdef, _, _, _ = nnx.split(template, nnx.Param, nnx.RngState, ...)
    call = type(template).__call__
    wants_config = "config" in accepted_keywords(call, {"config": None})
    train_kw = {flag: train_keywords(call, flag) for flag in (True, False)}

    def init(key):
        module = template if factory is None else factory(nnx.Rngs(key))
        _, params, rng_state, rest = nnx.split(module, nnx.Param, nnx.RngState, ...)
        return params, (rng_state, rest)

    def apply(params, state, x, *, key=None, train=False, config=None):
        rng_state, rest = state
        module = nnx.merge(graphdef, params, rng_state, rest, copy=True)  # fresh Variables in this trace
        config = {} if config is None else config
        restore = []
        for name, value in bound_values(bind, config, "from_nnx").items():
            for path in bind[name]:
                node, attr = resolve_path(module, path, "from_nnx")
                restore.append((node, attr, getattr(node, attr)))
                # a hyperparameter is a static attribute of the module: set it for this call only
                # (bypassing NNX's data/static check) and put the old value back before splitting
                object.__setattr__(node, attr, value)
        if train:
            module.train()
            if key is not None:
                _reseed(module, key)
        else:
            module.eval()
        kwargs: dict[str, Any] = dict(train_kw[bool(train)])
        if wants_config:
            kwargs["config"] = config
        y = module(x, **kwargs)
        for node, attr, old in restore:
            object.__setattr__(node, attr, old)
        _, _, _, new_rest = nnx.split(module, nnx.Param, nnx.RngState, ...)
        return y, (rng_state, new_rest)

    return Model(init, apply)


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
