"""What the adapters share: bound config values, the train/test switch of a ``__call__``, the
checks that turn a misuse into an error naming the argument, its value and what is valid."""

from __future__ import annotations

import inspect
import numbers
import re
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

Bind = Mapping[str, str | tuple[str, ...]]
TrainFlag = str | tuple[str, ...] | None

AUTO = "auto"
"""``train_flag="auto"``: pass the train/test switch under the names :data:`KNOWN_FLAGS` lists."""

KNOWN_FLAGS: dict[str, bool] = {
    "train": True, "training": True, "is_training": True, "is_train": True,
    "deterministic": False, "use_running_average": False, "inference": False,
}
"""Call-argument names the adapters recognise: ``True`` means the argument is ``train``, ``False``
that it is ``not train``."""

_FLAG_LIKE = re.compile(r"train|eval|infer|determin|test|dropout|stochastic")


# --- the object an adapter was given -------------------------------------------------------------


def framework_of(obj: Any) -> str | None:
    """``"nnx"``, ``"linen"``, ``"equinox"`` for a module (or module class) of that framework."""
    cls = obj if isinstance(obj, type) else type(obj)
    for base in cls.__mro__:
        module = getattr(base, "__module__", "") or ""
        if module.startswith("flax.nnx"):
            return "nnx"
        if module.startswith("flax.linen"):
            return "linen"
        if module.startswith("equinox"):
            return "equinox"
    return None


_ADAPTER_OF = {"nnx": "from_nnx", "linen": "from_linen", "equinox": "from_equinox"}
_NAME_OF = {"nnx": "a Flax NNX module", "linen": "a Flax Linen module", "equinox": "an Equinox module"}


def wrong_framework(obj: Any, adapter: str, argument: str, valid: str) -> TypeError:
    """The error for an object of the wrong kind, naming the adapter that takes it if there is one."""
    kind = framework_of(obj)
    what = f"the class {obj.__name__}" if isinstance(obj, type) else short(obj)
    hint = ""
    if kind is not None and _ADAPTER_OF[kind] != adapter:
        label = obj.__name__ if isinstance(obj, type) else type(obj).__name__
        hint = f"; {label} is {_NAME_OF[kind]}: use gradchain.adapters.{_ADAPTER_OF[kind]}"
    elif kind is None and callable(obj) and not isinstance(obj, type):
        hint = "; a plain function is a model through gradchain.from_function(init, apply)"
    return TypeError(f"{adapter}: {argument} must be {valid}, got {what}{hint}")


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (an array shows its shape and dtype)."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"{type(value).__name__}(shape={tuple(value.shape)}, dtype={value.dtype})"
    if isinstance(value, (tuple, list)) and not hasattr(value, "_fields"):
        return f"{type(value).__name__} of {len(value)} ({', '.join(type(v).__name__ for v in value)})"
    if framework_of(value) is not None:
        return f"{type(value).__name__}(...)"  # module reprs run over many lines
    return _cut(repr(value).split("\n")[0], limit)


def kind(value: Any) -> str:
    """``an array of shape (3,)`` or the type's name: what a function returned, in words."""
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return f"an array of shape {tuple(value.shape)}"
    return short(value)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def call_factory(factory: Callable, arg: Any, name: str, adapter: str) -> Any:
    """``factory(arg)``, or ``factory(name=arg)`` when ``name`` is keyword-only; a factory that can
    take neither raises naming its signature."""
    signature = _factory_signature(factory)
    if signature is None or _binds(signature, (arg,), {}):
        return factory(arg)  # errors inside the factory are the user's own: not caught
    if _binds(signature, (), {name: arg}):
        return factory(**{name: arg})
    label = getattr(factory, "__name__", type(factory).__name__)
    target = "YourModule" if label == "<lambda>" else label
    raise TypeError(f"{adapter}: the factory must be callable as factory({name}) or factory({name}={name}) -> module, "
                    f"got {label}{_cut(str(signature), 100)}; wrap it: lambda {name}: {target}(..., {name}={name})")


def _factory_signature(factory: Callable) -> inspect.Signature | None:
    """The signature a call sees; for a class its ``__init__`` without ``self`` (NNX's metaclass
    hides it behind ``(*args, **kwargs)``)."""
    try:
        if isinstance(factory, type) and factory.__init__ is not object.__init__:
            signature = inspect.signature(factory.__init__)
            return signature.replace(parameters=list(signature.parameters.values())[1:])
        return inspect.signature(factory)
    except (TypeError, ValueError):
        return None


def _binds(signature: inspect.Signature, args: tuple, kwargs: dict) -> bool:
    try:
        signature.bind(*args, **kwargs)
    except TypeError:
        return False
    return True


# --- config and bind ------------------------------------------------------------------------------


def check_config(config: Any, adapter: str) -> Mapping[str, Any]:
    """``config`` as a mapping (``{}`` for None)."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise TypeError(f"{adapter}: apply(config=...) must be a dict of hyperparameters (name -> number) or None, "
                        f"got config={short(config)}")
    return config


def check_bind(bind: Bind | None, adapter: str) -> dict[str, tuple[str, ...]]:
    """``{"dropout": "drop.rate"}`` or ``{"dropout": ("a.rate", "b.rate")}`` -> tuples of paths."""
    if bind is None:
        return {}
    if not isinstance(bind, Mapping):
        raise TypeError(f"{adapter}: bind must be a dict config key -> attribute path such as "
                        f"{{'dropout': 'drop.rate'}}, got bind={bind!r}")
    out = {}
    for name, paths in bind.items():
        paths = (paths,) if isinstance(paths, str) else tuple(paths) if isinstance(paths, (tuple, list)) else None
        if not paths or not all(isinstance(p, str) and p and "" not in p.split(".") for p in paths):
            raise ValueError(f"{adapter}: bind[{name!r}] must be a dotted attribute path ('drop.rate') or a tuple "
                             f"of them, got {bind[name]!r}")
        out[name] = paths
    return out


def resolve_path(root: Any, path: str, adapter: str) -> tuple[Any, str]:
    """The object holding the last attribute of ``path`` and that attribute's name."""
    *parents, last = path.split(".")
    node: Any = root
    for i, part in enumerate(parents + [last]):
        where = ".".join(parents[:i]) or "the model"
        if part.isdigit():
            try:
                child = node[int(part)]
            except (IndexError, KeyError, TypeError):
                size = f" (it has {len(node)} items)" if hasattr(node, "__len__") else ""
                raise ValueError(f"{adapter}: bind path {path!r}: {where} has no item [{part}]{size}") from None
        else:
            child = getattr(node, part, _missing)
            if child is _missing:
                raise ValueError(f"{adapter}: bind path {path!r}: {where} ({type(node).__name__}) has no attribute "
                                 f"{part!r}{_attributes_hint(node)}")
        if i < len(parents):
            node = child
    return node, last


def _attributes_hint(node: Any) -> str:
    names = [n for n in getattr(node, "__dict__", {}) if not n.startswith("_")]
    return f"; it has {sorted(names)}" if names else ""


def bound_value_of(node: Any, attr: str) -> Any:
    return node[int(attr)] if attr.isdigit() else getattr(node, attr)


def check_bind_target(value: Any, name: str, path: str, adapter: str) -> None:
    """A bound attribute must hold a number: bind writes one scalar hyperparameter there."""
    if is_scalar(value):
        return
    raise TypeError(f"{adapter}: bind[{name!r}] = {path!r} points at {short(value)}, not a "
                    "number: bind writes the config's scalar hyperparameter into a numeric attribute such as a "
                    "dropout layer's rate ('drop.rate')")


def is_scalar(value: Any) -> bool:
    """A Python number (not a bool) or an array / shape struct of shape ``()``."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Number):
        return True
    shape = getattr(value, "shape", None)
    return shape is not None and tuple(shape) == () and hasattr(value, "dtype")


def bound_values(bind: dict[str, tuple[str, ...]], config: Mapping[str, Any], adapter: str) -> dict[str, Any]:
    """``config[name]`` for each bound name: present and a scalar, or a clear error."""
    missing = [name for name in bind if name not in config]
    if missing:
        raise KeyError(f"{adapter}: bind reads config keys {missing} that the config does not have "
                       f"(it has {sorted(config)})")
    out = {}
    for name in bind:
        value = config[name]
        if jnp.ndim(value) != 0:
            raise ValueError(f"{adapter}: bind writes config[{name!r}] into {list(bind[name])}, so it must be one "
                             f"number per run, got shape {jnp.shape(value)}")
        out[name] = value
    return out


def is_traced(value: Any) -> bool:
    from jax.core import Tracer

    return isinstance(value, Tracer)


def traced_bind_error(err: Exception, bind: dict[str, tuple[str, ...]], values: Mapping[str, Any],
                      adapter: str) -> Exception | None:
    """The error to raise when a layer tested a traced bound value in Python; None if no bound value
    was traced (the error is then the model's own)."""
    traced = [f"{name!r} -> {list(bind[name])}" for name, v in values.items() if is_traced(v)]
    if not traced:
        return None
    return TypeError(f"{adapter}: bind writes a traced value (one program for every rate of a population) into "
                     f"{', '.join(traced)}, and a layer there tests it in Python ({type(err).__name__}); use a layer "
                     "that takes a traced rate (gradchain.flax.nnx.Dropout, equinox.nn.Dropout) or pass the value "
                     "through a `config` argument of __call__")


# --- the train/test switch and the arguments of __call__ ------------------------------------------


def call_parameters(call: Callable) -> list[inspect.Parameter] | None:
    """The parameters of an unbound ``__call__`` without ``self``; None when it has no signature."""
    try:
        parameters = list(inspect.signature(call).parameters.values())
    except (TypeError, ValueError):
        return None
    return parameters[1:]


def takes_var_keyword(parameters: list[inspect.Parameter]) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in parameters)


def _positional(parameters: list[inspect.Parameter]) -> list[inspect.Parameter]:
    return [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def looks_like_flag(p: inspect.Parameter) -> bool:
    """Annotated ``bool`` / ``bool | None``, a bool default, or a train/test-sounding name without a
    default or defaulting to None (``dropout_rate=0.1`` is a number, not a switch)."""
    annotation = p.annotation if isinstance(p.annotation, str) else repr(p.annotation)
    if p.annotation is bool or re.search(r"\bbool\b", annotation) or isinstance(p.default, bool):
        return True
    return (p.default is p.empty or p.default is None) and bool(_FLAG_LIKE.search(p.name.lower()))


def parse_train_flag(train_flag: Any, adapter: str) -> dict[str, bool] | str | None:
    """``"auto"`` -> ``"auto"``; None -> None; ``"is_train"`` / ``"not eval_mode"`` / a tuple of them ->
    ``{name: polarity}`` (``True``: the argument is ``train``; ``False``: ``not train``)."""
    if train_flag is None or (isinstance(train_flag, str) and train_flag == AUTO):
        return train_flag
    names = (train_flag,) if isinstance(train_flag, str) else train_flag
    if not isinstance(names, tuple) or not names or not all(isinstance(n, str) for n in names):
        raise TypeError(f"{adapter}: train_flag must be 'auto', None, an argument name of __call__ ('is_train', or "
                        f"'not eval_mode' for one that is True at test time) or a tuple of them, got {train_flag!r}")
    out = {}
    for spec in names:
        negated = spec.startswith("not ")
        name = spec[4:].strip() if negated else spec.strip()
        if not name.isidentifier():
            raise ValueError(f"{adapter}: train_flag={train_flag!r}: {spec!r} is not an argument name "
                             "(write 'is_train', or 'not eval_mode' for a switch that is True at test time)")
        out[name] = not negated
    return out


def train_flags(parameters: list[inspect.Parameter] | None, train_flag: Any, owner: str, adapter: str,
                known: Mapping[str, bool] = KNOWN_FLAGS) -> dict[str, bool]:
    """The train/test arguments to pass, ``name -> polarity``, or an error for a switch that would
    be silently ignored.

    ``train_flag="auto"`` takes the names of ``known`` that ``__call__`` has; when it has none of
    them but has another flag-like argument (``bool``-typed, a bool default, a name with
    train/eval/test/...), the adapter cannot tell whether it is the switch and raises.
    """
    spec = parse_train_flag(train_flag, adapter)
    if spec is None or parameters is None:
        return {}
    names = {p.name: p for p in parameters}
    if isinstance(spec, dict):
        unknown = [n for n in spec if n not in names]
        if unknown and not takes_var_keyword(parameters):
            raise ValueError(f"{adapter}: train_flag={train_flag!r}: {owner}.__call__ has no argument {unknown[0]!r} "
                             f"(its arguments: {', '.join(names) or 'none'})")
        return spec
    chosen = {n: polarity for n, polarity in known.items() if n in names}
    if chosen:
        return chosen
    inputs = {p.name for p in _positional(parameters)[:1]}
    suspects = [p for p in parameters if p.name not in inputs and p.name not in ("key", "config", "rngs", "state")
                and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and looks_like_flag(p)]
    if suspects:
        p = suspects[0]
        shown = p.name if p.default is p.empty else f"{p.name}={p.default!r}"
        raise ValueError(
            f"{adapter}: {owner}.__call__ has the argument {shown}, which looks like a train/test switch but is not "
            f"one of the names the adapter sets ({', '.join(known)}), so it would never change between training "
            f"and test. Pass train_flag={p.name!r} (True while training), train_flag='not {p.name}' (True at test "
            "time), or train_flag=None if it is not a train/test switch")
    return {}


def check_required(parameters: list[inspect.Parameter] | None, passed: set[str], n_positional: int, owner: str,
                   adapter: str) -> None:
    """Every argument of ``__call__`` without a default is one the adapter passes."""
    if parameters is None:
        return
    positional = _positional(parameters)
    given = {p.name for p in positional[:n_positional]} | passed
    for p in parameters:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is not p.empty or p.name in given:
            continue
        if p.name == "state":
            hint = ("pass the state of eqx.nn.make_with_state: from_equinox(model, state), or a factory "
                    "key -> (model, state)")
        elif looks_like_flag(p):
            hint = f"if it is the train/test switch, pass train_flag={p.name!r} (or train_flag='not {p.name}')"
        else:
            hint = "the model gets one input: pack several into one pytree (x = (images, mask)) or give it a default"
        raise TypeError(f"{adapter}: {owner}.__call__ requires the argument {p.name!r}, which the adapter never "
                        f"passes (it passes {', '.join(sorted(given)) or 'the input'}); {hint}")


def flag_values(flags: Mapping[str, bool], train: bool) -> dict[str, bool]:
    """The keyword arguments of one call: ``train`` or ``not train`` per flag."""
    return {name: bool(train) if polarity else not train for name, polarity in flags.items()}


def structure_change(before: Any, after: Any) -> str | None:
    """A description of how ``after``'s tree differs from ``before``'s, or None if they match."""
    if jax.tree.structure(before) == jax.tree.structure(after):
        return None
    paths = lambda tree: {dotted(k) for k, _ in jax.tree_util.tree_flatten_with_path(tree)[0]}
    old, new = paths(before), paths(after)
    added, removed = sorted(new - old), sorted(old - new)
    parts = [f"added {added[:5]}" if added else "", f"removed {removed[:5]}" if removed else ""]
    return "; ".join(p for p in parts if p) or f"{jax.tree.structure(before)} became {jax.tree.structure(after)}"


def dotted(keypath: tuple) -> str:
    """``fc.bias`` for the key path ``['fc']['bias'].value`` (a bind-style attribute path)."""
    parts = []
    for key in keypath:
        for field in ("key", "name", "idx"):
            if hasattr(key, field):
                parts.append(str(getattr(key, field)))
                break
        else:
            parts.append(str(key))
    if parts and parts[-1] == "value":  # an nnx.Variable's payload
        parts.pop()
    return ".".join(parts) or "the root"


class _Missing:
    pass


_missing = _Missing()
