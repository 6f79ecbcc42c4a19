"""Argument checks and dtype plumbing shared by the augmentations.

Every error names the function, the argument, the value and what would be valid.  Shapes and
dtypes are static, so they are checked at trace time, inside ``jit`` and ``vmap`` too.  Pixel
values are checked only when they are concrete (an eager call, or ``apply_batch`` outside
``jit``): a traced image cannot be inspected, and the check would cost a device-to-host copy in
every step.

Dtypes: an image is ``uint8`` in ``[0, 255]`` or floating in ``[0, 1]``.  Computation happens in
``float32`` (``float64`` for a float64 image); ``restore`` rounds and clips back to ``uint8``, or
casts back to the input float dtype.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from functools import partial
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np

from gradchain.regularizers._checks import is_traced, number  # shared argument checks

RGB = (3,)
GREY_OR_RGB = (1, 3)
ANY_CHANNELS = (1, 3, 4)
_LAYOUT = {3: "one HWC image: (height, width, channels)", 4: "an NHWC batch: (batch, height, width, channels)"}


def image(
    fn: str,
    x: Any,
    *,
    name: str = "image",
    rank: int = 3,
    channels: tuple[int, ...] = ANY_CHANNELS,
) -> jax.Array:
    """Check an image (rank 3, HWC) or a batch (rank 4, NHWC) and return it as a JAX array.

    dtype must be uint8 or floating; the channel count one of ``channels``; a concrete float image
    must lie in [0, 1] (NaN is rejected too).
    """
    if not isinstance(x, (jax.Array, np.ndarray)):
        if isinstance(x, (list, tuple, numbers.Number)):
            x = np.asarray(x)
        else:
            raise TypeError(
                f"{fn}: {name} must be an array ({_LAYOUT[rank]}), got {type(x).__name__}"
            )
    if x.ndim != rank:
        hint = ""
        if rank == 3 and x.ndim == 4:
            hint = "; for a batch use gradchain.augment.apply_batch(fn, key, images)"
        elif rank == 4 and x.ndim == 3:
            hint = "; for one image add a batch axis: images[None]"
        elif x.ndim == rank - 1:
            hint = "; a greyscale image needs a channel axis: image[..., None]"
        raise ValueError(f"{fn}: {name} must have rank {rank} ({_LAYOUT[rank]}), got shape {tuple(x.shape)}{hint}")
    c = x.shape[-1]
    if c not in channels:
        allowed = " or ".join(str(k) for k in channels)
        hint = " (channels go last: NHWC/HWC, not CHW)" if x.shape[-3] in channels else ""
        raise ValueError(
            f"{fn}: {name} must have {allowed} channels (the last axis), got {c} in shape "
            f"{tuple(x.shape)}{hint}"
        )
    if x.shape[-3] < 1 or x.shape[-2] < 1:
        raise ValueError(f"{fn}: {name} must be at least 1×1 pixels, got shape {tuple(x.shape)}")
    dtype = np.dtype(x.dtype)
    if dtype != np.uint8 and not np.issubdtype(dtype, np.floating) and dtype != jnp.bfloat16:
        raise TypeError(
            f"{fn}: {name} must be uint8 in [0, 255] or floating in [0, 1], got dtype {dtype}; "
            f"convert it first, e.g. {name}.astype(jnp.uint8) or {name}.astype(jnp.float32) / 255"
        )
    if not is_traced(x) and dtype != np.uint8 and x.size:
        values = np.asarray(x, np.float32)
        lo, hi = float(np.min(values)), float(np.max(values))
        if not (lo >= 0.0 and hi <= 1.0):  # also catches NaN
            hint = "; if it holds 0..255 values, divide by 255 first" if hi > 1.0 and hi <= 255.0 else ""
            raise ValueError(
                f"{fn}: a float {name} must have values in [0, 1], got values in [{lo:g}, {hi:g}]{hint}"
            )
    return jnp.asarray(x)


def key(fn: str, key: Any) -> jax.Array:
    """A PRNG key: ``jax.random.key(...)`` (typed) or ``jax.random.PRNGKey(...)`` (uint32 pair)."""
    if is_traced(key):
        return key
    if isinstance(key, (jax.Array, np.ndarray)):
        dtype = key.dtype
        typed = jnp.issubdtype(dtype, jax.dtypes.prng_key)
        if (typed and key.ndim == 0) or (dtype == jnp.uint32 and key.shape == (2,)):
            return cast(jax.Array, key)  # a NumPy uint32 pair is accepted as it is
        raise TypeError(
            f"{fn}: key must be one JAX PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)), "
            f"got an array of dtype {dtype} and shape {tuple(key.shape)}"
        )
    raise TypeError(
        f"{fn}: key must be a JAX PRNG key (jax.random.key(0) or jax.random.PRNGKey(0)), "
        f"got {key!r} of type {type(key).__name__}"
    )


def interval(
    fn: str, name: str, value: Any, *, low: float | None = None, high: float | None = None,
    low_open: bool = False,
) -> tuple[Any, Any]:
    """A range ``(lo, hi)`` with ``lo <= hi`` inside ``[low, high]``."""
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{fn}: {name} must be a pair (low, high), got {value!r}")
    lo, hi = value
    number(fn, f"{name}[0]", lo, low=low, high=high, low_open=low_open)
    number(fn, f"{name}[1]", hi, low=low, high=high, low_open=low_open)
    if not (is_traced(lo) or is_traced(hi)) and np.any(np.asarray(lo) > np.asarray(hi)):
        raise ValueError(f"{fn}: {name} must have low <= high, got {value!r}")
    return lo, hi


def symmetric(fn: str, name: str, value: Any, *, bound: float | None = None) -> tuple[Any, Any]:
    """A jitter amount: a number ``a`` in ``[0, bound]`` meaning ``[-a, a]``, or an explicit
    range inside ``[-bound, bound]``."""
    if isinstance(value, (tuple, list)):
        return interval(fn, name, value, low=None if bound is None else -bound, high=bound)
    number(fn, name, value, low=0.0, high=bound)
    return -value, value


def positive_int(fn: str, name: str, value: Any, *, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{fn}: {name} must be an int >= {minimum}, got {value!r} of type {type(value).__name__}"
        )
    if value < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def size_pair(fn: str, name: str, value: Any, *, minimum: int = 1) -> tuple[int, int]:
    """An int or a pair of ints ``(height, width)``, each >= ``minimum``."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or any(
        isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or v < minimum
        for v in pair
    ):
        raise ValueError(
            f"{fn}: {name} must be an int >= {minimum} or a pair (height, width) of such ints, "
            f"got {value!r}"
        )
    return int(pair[0]), int(pair[1])


def fits(fn: str, name: str, size: tuple[int, int], value: Any, x: jax.Array, what: str = "image") -> None:
    h, w = x.shape[-3], x.shape[-2]
    if size[0] > h or size[1] > w:
        raise ValueError(
            f"{fn}: {name}={value!r} is larger than the {what} ({h}×{w} pixels, height×width); "
            f"it must be at most {h}×{w}"
        )


def fill(fn: str, value: Any, x: jax.Array, name: str = "fill") -> Any:
    """A fill value in the image's own units: [0, 255] for uint8, [0, 1] for floats."""
    high = 255.0 if x.dtype == jnp.uint8 else 1.0
    return number(fn, name, value, low=0.0, high=high)


def callable_fn(fn: str, name: str, value: Any) -> Callable:
    if not callable(value):
        raise TypeError(
            f"{fn}: {name} must be a per-image augmentation fn(key, image) -> image, "
            f"got {value!r} of type {type(value).__name__}"
        )
    return value


# ---------------------------------------------------------------------------------------------
# dtype plumbing


def compute_dtype(dtype) -> jnp.dtype:
    """float32 for uint8 and low-precision floats; float64 for float64 images."""
    return jnp.promote_types(dtype, jnp.float32) if jnp.issubdtype(dtype, jnp.floating) else jnp.dtype(jnp.float32)


def as_float(x: jax.Array) -> jax.Array:
    """The image in [0, 1] floating units (uint8 divided by 255)."""
    if x.dtype == jnp.uint8:
        return x.astype(jnp.float32) * jnp.float32(1.0 / 255.0)
    return x.astype(compute_dtype(x.dtype))


def restore(y: jax.Array, dtype) -> jax.Array:
    """Back from [0, 1] float units to ``dtype`` (uint8: scaled, rounded and clipped)."""
    if dtype == jnp.uint8:
        return jnp.clip(jnp.round(y * 255.0), 0, 255).astype(jnp.uint8)
    return y.astype(dtype)


@partial(jax.jit, static_argnames=("kernel",))
def in_float(image: jax.Array, *args: Any, kernel: Callable) -> jax.Array:
    """``kernel(x, *args)`` on the image in [0, 1] float units, back in the image's dtype: the
    one compiled program behind every deterministic colour op (cached per kernel and shape)."""
    return restore(kernel(as_float(image), *args), image.dtype)


def restore_units(y: jax.Array, dtype) -> jax.Array:
    """Back from float in the image's own units (geometric ops) to ``dtype``."""
    if dtype == jnp.uint8:
        return jnp.clip(jnp.round(y), 0, 255).astype(jnp.uint8)
    return y.astype(dtype)
