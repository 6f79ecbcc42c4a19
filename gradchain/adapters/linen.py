"""Flax Linen modules as :class:`gradchain.Model` (see :mod:`gradchain.adapters` for the conventions)."""

from __future__ import annotations

from typing import Any

import jax

from gradchain.adapters._common import Bind, check_bind, train_keywords
from gradchain.protocol import Model, accepted_keywords


def from_linen(module: Any, example_input: Any, *, rng_names: tuple[str, ...] = ("dropout",), bind: Bind | None = None) -> Model:
    """A Flax Linen module as a model.

    ``init(key)`` runs ``module.init`` on ``example_input`` (one example batch; its values do not
    matter) with the test-time flag; ``params`` is the ``"params"`` collection and ``state`` the
    other collections (``"batch_stats"``), which the training path marks mutable.  The step's key
    reaches the module as ``rngs={name: ...}`` for each of ``rng_names``.  A ``__call__`` that
    names ``config`` receives the step's hyperparameters (Linen modules are frozen dataclasses, so
    ``bind`` is not available: pass the value through ``config``).

    Args:
      module: an ``flax.linen.Module``.
      example_input: an input batch of the right shape and dtype, for ``init``.
      rng_names: the random-number collections the module draws from (``self.make_rng``).
    """
    import flax.linen as nn

    if not isinstance(module, nn.Module):
        raise TypeError(f"from_linen: expected a flax.linen.Module, got {type(module).__name__}")
    if bind:
        check_bind(bind, "from_linen")
        raise ValueError("from_linen: Linen modules are immutable, bind= cannot write into them; "
                         "give __call__ a `config` argument and read config[name] there")
    if isinstance(rng_names, str) or not all(isinstance(n, str) for n in rng_names):
        raise TypeError(f"from_linen: rng_names must be a tuple of collection names, got {rng_names!r}")
    call = type(module).__call__
    wants_config = "config" in accepted_keywords(call, {"config": None})
    train_kw = {flag: train_keywords(call, flag) for flag in (True, False)}

    def kwargs(train, config) -> dict[str, Any]:
        out: dict[str, Any] = dict(train_kw[bool(train)])
        if wants_config:
            out["config"] = {} if config is None else config
        return out

    def rngs(key):
        return {name: jax.random.fold_in(key, i) for i, name in enumerate(rng_names)}

    def init(key):
        params_key, rng_key = jax.random.split(key)
        variables = module.init({"params": params_key, **rngs(rng_key)}, example_input, **kwargs(False, _Anything()))
        variables = dict(variables)
        params = variables.pop("params", {})
        return params, variables

    def apply(params, state, x, *, key=None, train=False, config=None) -> tuple[Any, Any]:
        variables = {"params": params, **state}
        extra = kwargs(train, config)
        if not train:
            return module.apply(variables, x, **extra), state
        mutable = list(state) if state else False
        rng = rngs(key) if key is not None else {}
        out = module.apply(variables, x, rngs=rng, mutable=mutable, **extra)
        if mutable:
            y, new_state = out
            return y, {**state, **new_state}
        return out, state

    return Model(init, apply)


class _Anything(dict):
    """The config ``init`` passes: any key reads as 0.0 (init only needs shapes)."""

    def __missing__(self, key):
        return 0.0
