"""What the adapters share: writing bound config values into a model, the train-flag keywords."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Bind = Mapping[str, str | tuple[str, ...]]


def check_bind(bind: Bind | None, adapter: str) -> dict[str, tuple[str, ...]]:
    """``{"dropout": "drop.rate"}`` or ``{"dropout": ("a.rate", "b.rate")}`` -> tuples of paths."""
    if bind is None:
        return {}
    if not isinstance(bind, Mapping):
        raise TypeError(f"{adapter}: bind must be a dict config key -> attribute path, got {bind!r}")
    out = {}
    for name, paths in bind.items():
        paths = (paths,) if isinstance(paths, str) else tuple(paths)
        if not paths or not all(isinstance(p, str) and p for p in paths):
            raise ValueError(f"{adapter}: bind[{name!r}] must be a dotted attribute path or a tuple of them, got {bind[name]!r}")
        out[name] = paths
    return out


def resolve_path(root: Any, path: str, adapter: str) -> tuple[Any, str]:
    """The object holding the last attribute of ``path`` and that attribute's name."""
    *parents, last = path.split(".")
    node: Any = root
    for i, part in enumerate(parents):
        node = node[int(part)] if part.isdigit() else getattr(node, part, _missing)
        if node is _missing:
            raise ValueError(f"{adapter}: bind path {path!r}: the model has no attribute {'.'.join(parents[: i + 1])!r}")
    if not last.isdigit() and not hasattr(node, last):
        raise ValueError(f"{adapter}: bind path {path!r}: {'.'.join(parents) or 'the model'} has no attribute {last!r}")
    return node, last


def bound_values(bind: dict[str, tuple[str, ...]], config: Mapping[str, Any], adapter: str) -> dict[str, Any]:
    missing = [name for name in bind if name not in config]
    if missing:
        raise KeyError(f"{adapter}: bind reads config keys {missing} that the config does not have "
                       f"(it has {sorted(config)})")
    return {name: config[name] for name in bind}


def train_keywords(call: Callable, train: bool) -> dict[str, bool]:
    """``train=`` / ``training=`` / ``deterministic=`` / ``use_running_average=`` as the call names them."""
    import inspect

    try:
        names = set(inspect.signature(call).parameters)
    except (TypeError, ValueError):
        return {}
    flags = {"train": train, "training": train, "is_training": train,
             "deterministic": not train, "use_running_average": not train}
    return {k: v for k, v in flags.items() if k in names}


class _Missing:
    pass


_missing = _Missing()
