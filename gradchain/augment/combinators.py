"""Combinators for per-image augmentations ``fn(key, image) -> image``, and batching.

A pipeline is built from per-image functions (fix their parameters with ``functools.partial``)
and stays a per-image function, so it composes again; :func:`batch` turns it into a batch
function that gives every image its own key (``jax.random.split``) and ``vmap``s — one draw per
image, one compiled program per batch shape::

    pipeline = compose(
        random_flip,
        partial(random_crop, size=32, padding=4),
        partial(color_jitter, brightness=0.4, contrast=0.4, saturation=0.4),
    )
    augment = jax.jit(batch(pipeline))
    images = augment(key, images)          # (N, 32, 32, 3) -> (N, 32, 32, 3)

Randomness comes only from the key: the same key gives the same batch, and the key for step
``i`` of a pipeline is ``split(key, n)[i]``, independent of what the other steps draw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradchain.augment import _checks

__all__ = ["apply_batch", "batch", "compose", "random_apply", "random_choice"]

Augmentation = Callable[..., jax.Array]


def compose(*fns: Augmentation) -> Augmentation:
    """Apply ``fns`` one after the other, each with its own key ``split(key, len(fns))[i]``."""
    for i, f in enumerate(fns):
        _checks.callable_fn("compose", f"fns[{i}]", f)

    def composed(key: jax.Array, image: jax.Array) -> jax.Array:
        key = _checks.key("compose", key)
        if not fns:
            return image
        for k, f in zip(jax.random.split(key, len(fns)), fns):
            image = f(k, image)
        return image

    composed.__doc__ = "compose(" + ", ".join(getattr(f, "__name__", repr(f)) for f in fns) + ")"
    return composed


def random_apply(fn: Augmentation, p: float | jax.Array = 0.5) -> Augmentation:
    """Apply ``fn`` with probability ``p``, else return the image unchanged.

    ``fn`` must keep the image's shape and dtype (both branches of one program).  Without
    ``vmap`` the branch not taken is skipped (``lax.cond``); under ``vmap`` both are computed
    and one is selected per image.
    """
    _checks.callable_fn("random_apply", "fn", fn)
    _checks.number("random_apply", "p", p, low=0.0, high=1.0)

    def applied(key: jax.Array, image: jax.Array) -> jax.Array:
        key = _checks.key("random_apply", key)
        k_coin, k_fn = jax.random.split(key)
        coin = jax.random.uniform(k_coin) < p
        return jax.lax.cond(coin, lambda x: fn(k_fn, x), lambda x: x, image)

    return applied


def random_choice(fns: Sequence[Augmentation], p: Sequence[float] | jax.Array | None = None) -> Augmentation:
    """Apply one of ``fns``, chosen with probabilities ``p`` (default uniform), via ``lax.switch``.

    All ``fns`` must return the same shape and dtype.
    """
    fn = "random_choice"
    if not isinstance(fns, Sequence) or isinstance(fns, str) or not fns:
        raise ValueError(f"{fn}: fns must be a non-empty sequence of augmentations, got {fns!r}")
    for i, f in enumerate(fns):
        _checks.callable_fn(fn, f"fns[{i}]", f)
    if p is None:
        logits = jnp.zeros(len(fns))
    else:
        probs = np.asarray(p, np.float64) if not _checks.is_traced(p) else None
        if probs is not None:
            if probs.shape != (len(fns),) or np.any(probs < 0) or not np.isclose(probs.sum(), 1.0):
                raise ValueError(
                    f"{fn}: p must hold {len(fns)} non-negative probabilities summing to 1, got {p!r}"
                )
        logits = jnp.log(jnp.asarray(p, jnp.result_type(float)))
    branches = [lambda k, x, f=f: f(k, x) for f in fns]

    def chosen(key: jax.Array, image: jax.Array) -> jax.Array:
        key = _checks.key(fn, key)
        k_pick, k_fn = jax.random.split(key)
        index = jax.random.categorical(k_pick, logits)
        return jax.lax.switch(index, branches, k_fn, image)

    return chosen


def batch(fn: Augmentation) -> Callable[..., jax.Array]:
    """Turn a per-image augmentation into a batch one, ``batched(key, images)`` (keyword parameters pass through).

    ``images`` is NHWC; image ``i`` is augmented with key ``split(key, N)[i]`` and the keyword
    ``params`` (shared by the batch) — ``vmap(lambda k, x: fn(k, x, **params))``.  Concrete
    inputs are checked first (shape, dtype, float values in [0, 1]).  Wrap in ``jax.jit`` for
    speed: the result is one compiled program per batch shape.
    """
    _checks.callable_fn("batch", "fn", fn)

    def batched(key: jax.Array, images: jax.Array, **params: Any) -> jax.Array:
        return apply_batch(fn, key, images, **params)

    batched.__doc__ = f"batch({getattr(fn, '__name__', repr(fn))})"
    return batched


def apply_batch(fn: Augmentation, key: jax.Array, images: jax.Array, **params: Any) -> jax.Array:
    """Apply the per-image augmentation ``fn`` to every image of the NHWC batch ``images``, each
    with its own key from ``jax.random.split(key, N)``; see :func:`batch`."""
    name = "apply_batch"
    _checks.callable_fn(name, "fn", fn)
    key = _checks.key(name, key)
    images = _checks.image(name, images, name="images", rank=4)
    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(lambda k, x: fn(k, x, **params))(keys, images)
