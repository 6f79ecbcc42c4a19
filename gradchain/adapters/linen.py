"""Flax Linen modules as :class:`gradchain.Model` (see :mod:`gradchain.adapters` for the conventions)."""

from __future__ import annotations

import contextlib
import numbers
import re
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from gradchain.adapters._common import (
    AUTO,
    Bind,
    TrainFlag,
    call_parameters,
    check_bind,
    check_config,
    check_required,
    flag_values,
    short,
    structure_change,
    train_flags,
    wrong_framework,
)
from gradchain.protocol import Model, accepted_keywords

ADAPTER = "from_linen"


def from_linen(module: Any, example_input: Any, *, rng_names: tuple[str, ...] = ("dropout",), bind: Bind | None = None,
               train_flag: TrainFlag = AUTO) -> Model:
    """A Flax Linen module as a model.

    ``init(key)`` runs ``module.init`` on ``example_input`` (one example batch; its values do not
    matter) with the test-time flag; ``params`` is the ``"params"`` collection and ``state`` the
    other collections (``"batch_stats"``, your own ``self.variable("buffers", ...)``; not
    ``"intermediates"``), which the training path marks mutable.  The step's key reaches the module
    as ``rngs={name: ...}`` for each of ``rng_names``.  A ``__call__`` that names ``config``
    receives the step's hyperparameters (Linen modules are frozen dataclasses, so ``bind`` is not
    available: pass the value through ``config``).

    Args:
      module: an ``flax.linen.Module`` instance.
      example_input: an input batch of the right shape and dtype, for ``init`` (an array or a
        pytree of arrays, each with a batch axis).
      rng_names: the random-number collections the module draws from (``self.make_rng``).
      train_flag: the ``__call__`` argument that switches training on.  ``"auto"``: any of
        ``train``, ``training``, ``is_training``, ``is_train`` (set to ``train``),
        ``deterministic``, ``use_running_average``, ``inference`` (set to ``not train``); a
        ``__call__`` with none of them but another boolean argument raises instead of ignoring it.
        A name (``"is_train"``), ``"not name"`` for one that is True at test time, a tuple of
        them, or None (pass no switch).
    """
    import flax.linen as nn

    if not isinstance(module, nn.Module):
        raise _not_a_module(module)
    if not callable(module):
        raise TypeError(f"from_linen: {type(module).__name__} has no __call__, so it cannot be a model")
    if bind:
        check_bind(bind, ADAPTER)
        raise ValueError("from_linen: Linen modules are immutable, bind= cannot write into them; "
                         "give __call__ a `config` argument and read config[name] there")
    rng_names = _check_rng_names(rng_names)
    example_shape = _check_example_input(example_input)
    if isinstance(example_input, list) and all(isinstance(v, numbers.Number) for v in jax.tree.leaves(example_input)):
        example_input = np.asarray(example_input)  # rows of numbers (JAX deprecates lists as arrays)
    owner = type(module).__name__
    parameters = call_parameters(type(module).__call__)
    flags = train_flags(parameters, train_flag, owner, ADAPTER)
    wants_config = "config" in accepted_keywords(type(module).__call__, {"config": None})
    check_required(parameters, set(flags) | ({"config"} if wants_config else set()), 1, owner, ADAPTER)

    def kwargs(train, config) -> dict[str, Any]:
        out: dict[str, Any] = flag_values(flags, train)
        if wants_config:
            out["config"] = config
        return out

    def rngs(key):
        return {name: jax.random.fold_in(key, i) for i, name in enumerate(rng_names)}

    def explained(key, train, x):
        return _explained(rng_names, key, train, _shapes(x), example_shape, flags)

    def init(key):
        params_key, rng_key = jax.random.split(key)
        with explained(rng_key, False, example_input):
            variables = module.init({"params": params_key, **rngs(rng_key)}, example_input, **kwargs(False, _Anything()))
        variables = dict(variables)  # without "intermediates": Module.init leaves them out
        params = variables.pop("params", {})
        return params, variables

    def apply(params, state, x, *, key=None, train=False, config=None) -> tuple[Any, Any]:
        variables = {"params": params, **state}
        extra = kwargs(train, check_config(config, ADAPTER))
        if not train:
            with explained(key, train, x):
                return module.apply(variables, x, **extra), state
        mutable = list(state) if state else False
        rng = rngs(key) if key is not None else {}
        with explained(key, train, x):
            out = module.apply(variables, x, rngs=rng, mutable=mutable, **extra)
        if not mutable:
            return out, state
        y, new_state = out
        new_state = {**state, **new_state}
        change = structure_change(state, new_state)
        if change:
            raise ValueError(f"from_linen: the training call changed the structure of the state ({change}); "
                             "every variable must exist after init: create it in the init path too (init runs "
                             "the test-time path on example_input)")
        return y, new_state

    return Model(init, apply)


def _not_a_module(module: Any) -> TypeError:
    import flax.linen as nn

    if isinstance(module, type) and issubclass(module, nn.Module):
        return TypeError(f"from_linen: module must be a flax.linen.Module instance, got the class {module.__name__}; "
                         f"pass an instance: from_linen({module.__name__}(...), example_input)")
    return wrong_framework(module, ADAPTER, "module", "a flax.linen.Module instance")


def _check_rng_names(rng_names: Any) -> tuple[str, ...]:
    if isinstance(rng_names, str) or not isinstance(rng_names, (tuple, list)) \
            or not all(isinstance(n, str) and n for n in rng_names):
        raise TypeError(f"from_linen: rng_names must be a tuple of collection names such as ('dropout',), "
                        f"got rng_names={rng_names!r}")
    return tuple(rng_names)


def _check_example_input(example_input: Any) -> Any:
    """The shapes of ``example_input``: arrays with a batch axis, or a clear error."""
    leaves = jax.tree.leaves(example_input)
    if not leaves:
        raise ValueError(f"from_linen: example_input must be an input batch (an array or a pytree of arrays), "
                         f"got example_input={short(example_input)}")
    for leaf in leaves:
        if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")) and not isinstance(leaf, numbers.Number):
            raise TypeError(f"from_linen: example_input must hold arrays (jnp / np), got a {type(leaf).__name__} "
                            f"leaf {short(leaf)}; pass e.g. x_train[:2]")
    if len(leaves) == 1 and np.ndim(leaves[0]) == 0 and leaves[0] is example_input:
        raise ValueError(f"from_linen: example_input must be a batch (a leading batch axis), got a scalar "
                         f"{short(example_input)}; pass e.g. x_train[:2]")
    return _shapes(example_input)


def _shapes(tree: Any) -> Any:
    """The shape of an input (an array or rows of numbers), or the list of its arrays' shapes."""
    leaves = jax.tree.leaves(tree)
    if hasattr(tree, "shape") or all(isinstance(v, numbers.Number) for v in leaves):
        return np.shape(tree)
    return [np.shape(leaf) for leaf in leaves]


@contextlib.contextmanager
def _explained(rng_names, key, train, x_shape, example_shape, flags) -> Iterator[None]:
    """Flax's errors about the adapter's own arguments, re-raised naming the argument."""
    import flax.errors as fe

    try:
        yield
    except fe.InvalidRngError as err:
        raise _rng_error(err, rng_names, key, train) from err
    except fe.ScopeParamShapeError as err:
        raise ValueError(f"from_linen: apply got x of shape {x_shape}, but the parameters were made for example_input "
                         f"of shape {example_shape} ({str(err).split(' (https')[0]}); pass from_linen an example_input "
                         "shaped like the batches (the batch size may differ)") from err
    except ValueError as err:
        match = re.search(r'Parameter "(\w+)" was passed to the constructor and at call time', str(err))
        if not match or match.group(1) not in flags:
            raise
        name = match.group(1)
        raise ValueError(f"from_linen: {name}= is set in the module's constructor, and the adapter passes {name}= at "
                         "every call (the train/test switch); construct the module with that field None so the "
                         "adapter sets the mode, or pass train_flag=None to keep the constructor's fixed value") from err


def _rng_error(err: Exception, rng_names: tuple[str, ...], key, train) -> Exception:
    match = re.search(r'needs PRNG for "([^"]+)"', str(err))
    name = match.group(1) if match else "?"
    if name in rng_names and key is None:
        return ValueError(f"from_linen: the module draws from the rng collection {name!r} (self.make_rng) in "
                          f"apply(train={train}), but got key=None; pass key= (gradchain.supervised passes one per step)")
    return ValueError(f"from_linen: the module draws from the rng collection {name!r} (self.make_rng({name!r})), "
                      f"which is not in rng_names={rng_names!r}; pass rng_names={rng_names + (name,)!r}")


class _Anything(dict):
    """The config ``init`` passes: any key reads as 0.0 (init only needs shapes)."""

    def __missing__(self, key):
        return 0.0
