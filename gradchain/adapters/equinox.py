"""Equinox modules as :class:`gradchain.Model` (see :mod:`gradchain.adapters` for the conventions)."""

from __future__ import annotations

from typing import Any

import jax

from gradchain.adapters._common import Bind, bound_values, check_bind, resolve_path
from gradchain.protocol import Model, accepted_keywords


def from_equinox(model_or_factory: Any, state: Any = None, *, per_example: bool = True, bind: Bind | None = None,
                 axis_name: str = "batch") -> Model:
    """An Equinox module (or a factory ``key -> module`` / ``key -> (module, state)``) as a model.

    ``params`` are the module's inexact arrays (``eqx.is_inexact_array``); everything else —
    activation functions, integer fields, flags — stays static, so an unfiltered model works as
    it is.  ``state`` is an ``eqx.nn.State`` (``eqx.nn.make_with_state``), threaded through the
    call as Equinox does: ``model(x, state, key=...) -> (y, state)``.  The test-time path is
    ``eqx.nn.inference_mode(model)``.

    Args:
      model_or_factory: an ``eqx.Module``, or ``key -> module`` / ``key -> (module, state)``
        (then every population member gets its own initialisation).
      state: the ``eqx.nn.State`` of a stateful module given as an instance.
      per_example: Equinox models are usually written for one example and ``vmap``-ped; with
        ``True`` the adapter vmaps the call over the batch (with ``axis_name`` for batch norm)
        and gives each example its own key.  ``False``: the model takes the whole batch.
      bind: config keys written into module fields before each call, e.g. ``{"dropout": "drop.p"}``.
    """
    import equinox as eqx

    bind = check_bind(bind, "from_equinox")
    if isinstance(model_or_factory, eqx.Module):
        factory = None
        template, template_state = model_or_factory, state
    elif callable(model_or_factory):
        factory = model_or_factory
        built = eqx.filter_eval_shape(factory, jax.random.PRNGKey(0))
        template, template_state = built if isinstance(built, tuple) else (built, None)
    else:
        raise TypeError(f"from_equinox: expected an eqx.Module or a factory key -> module, got {model_or_factory!r}")
    if not isinstance(template, eqx.Module):
        raise TypeError(f"from_equinox: the factory must return an eqx.Module, got {type(template).__name__}")
    for paths in bind.values():
        for path in paths:
            resolve_path(template, path, "from_equinox")
    _, static = eqx.partition(template, eqx.is_inexact_array)
    stateful = template_state is not None
    wants_key = "key" in accepted_keywords(type(template).__call__, {"key": None})
    wants_config = "config" in accepted_keywords(type(template).__call__, {"config": None})

    def init(key):
        if factory is None:
            module, module_state = model_or_factory, state
        else:
            built = factory(key)
            module, module_state = built if isinstance(built, tuple) else (built, None)
        params, _ = eqx.partition(module, eqx.is_inexact_array)
        return params, (module_state if stateful else ())

    def apply(params, model_state, x, *, key=None, train=False, config=None):
        module = eqx.combine(params, static)
        config = {} if config is None else config
        for name, value in bound_values(bind, config, "from_equinox").items():
            for path in bind[name]:
                module = eqx.tree_at(_getter(path), module, value)
        module = eqx.nn.inference_mode(module, value=not train)
        extra = {"config": config} if wants_config else {}
        train_key = key if (train and wants_key) else None

        def call(xi, ki, s):
            kw = dict(extra, key=ki) if wants_key else extra
            return module(xi, s, **kw) if stateful else (module(xi, **kw), s)

        if not per_example:
            return call(x, train_key, model_state)
        n = jax.tree.leaves(x)[0].shape[0]
        keys = None if train_key is None else jax.random.split(train_key, n)
        return jax.vmap(call, in_axes=(0, None if keys is None else 0, None), out_axes=(0, None),
                        axis_name=axis_name)(x, keys, model_state)

    return Model(init, apply)


def _getter(path: str):
    def get(module):
        node = module
        for part in path.split("."):
            node = node[int(part)] if part.isdigit() else getattr(node, part)
        return node

    return get
