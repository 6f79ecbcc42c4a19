"""Geometric augmentations: flips, crops, scale augmentation, affine warps and lens distortion.

Every random augmentation is a pure per-image function ``fn(key, image, **params) -> image`` of one
HWC image; :func:`gradchain.augment.apply_batch` splits the key and ``vmap``s it over a batch, so
each image gets its own draw and the whole batch is one static-shape program.  Deterministic
building blocks (``flip_horizontal``, ``affine``, ``center_crop``, ``resize`` ...) take no key.

Coordinates.  Warps use pixel coordinates ``(x, y)`` = (column, row), ``y`` pointing down, with
the origin at the image centre ``((W - 1) / 2, (H - 1) / 2)``.  An affine ``matrix`` maps a point
of the *input* to where it lands in the *output* (the forward map: ``rotation_matrix(30)`` turns
the picture 30° counter-clockwise, as displayed); the warp samples the input at
``matrix⁻¹ · p`` for every output pixel ``p``, with bilinear interpolation.  Points that fall
outside the input take ``fill`` (in the image's units: 0..255 for uint8, 0..1 for floats).

Resampling of crops is separable: a crop window ``[y₀, y₀ + h) × [x₀, x₀ + w)`` (continuous, in
input pixels) is resampled to ``out_h × out_w`` at the pixel centres
``y = y₀ + (i + ½)·h / out_h - ½`` (the half-pixel convention of ``align_corners=False``), rows
first, then columns: two gathers of two taps each, so a 480×640 photo becomes a 224×224 crop
without touching the pixels outside the window.  Random window sizes keep the output shape
static, which is what makes the ResNet and Inception scale augmentations jit-able.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradchain.augment import _checks

__all__ = [
    "affine",
    "center_crop",
    "flip_horizontal",
    "flip_vertical",
    "lens_distortion",
    "random_affine",
    "random_crop",
    "random_flip",
    "random_lens_distortion",
    "random_resized_crop",
    "random_scale_crop",
    "resize",
    "rotation_matrix",
    "scale_matrix",
    "shear_matrix",
    "translation_matrix",
]

# Each public function checks its arguments in Python, then calls a jitted implementation: an
# eager call compiles one program per shape and static setting (instead of dispatching dozens of
# primitives one by one); inside a user's jit or vmap the inner jit is simply inlined.
_STATIC = ("size", "padding", "padding_mode", "attempts", "antialias")


def _jit(fn):
    """``jax.jit`` with the keyword-only arguments (shapes and modes) static."""
    names = fn.__code__.co_varnames[fn.__code__.co_argcount : fn.__code__.co_argcount + fn.__code__.co_kwonlyargcount]
    return jax.jit(fn, static_argnames=tuple(n for n in names if n in _STATIC))


# ---------------------------------------------------------------------------------------------
# Samplers (internal): float computation, native-dtype gathers.


def _bilinear(x: jax.Array, ys: jax.Array, xs: jax.Array, fill: Any) -> jax.Array:
    """Sample ``x`` (H, W, C) at ``(ys, xs)`` (same shape S) with bilinear interpolation.

    Each of the four taps that falls outside the image reads ``fill``.  Returns float, (*S, C),
    in the image's own units.  An integer coordinate reads its pixel exactly (weights 1 and 0).
    """
    h, w, c = x.shape
    dtype = _checks.compute_dtype(x.dtype)
    ys = ys.astype(dtype)
    xs = xs.astype(dtype)
    y0f, x0f = jnp.floor(ys), jnp.floor(xs)
    wy, wx = (ys - y0f)[..., None], (xs - x0f)[..., None]
    # keep the int conversion in range even for wild (or NaN) coordinates
    y0 = jnp.clip(jnp.nan_to_num(y0f, nan=-2.0), -2, h + 1).astype(jnp.int32)
    x0 = jnp.clip(jnp.nan_to_num(x0f, nan=-2.0), -2, w + 1).astype(jnp.int32)
    flat = x.reshape(h * w, c)
    fill = jnp.asarray(fill, dtype)

    def tap(yi, xi):
        inside = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w)
        idx = jnp.clip(yi, 0, h - 1) * w + jnp.clip(xi, 0, w - 1)
        value = jnp.take(flat, idx, axis=0, mode="clip").astype(dtype)
        return jnp.where(inside[..., None], value, fill)

    top = tap(y0, x0) * (1 - wx) + tap(y0, x0 + 1) * wx
    bottom = tap(y0 + 1, x0) * (1 - wx) + tap(y0 + 1, x0 + 1) * wx
    return top * (1 - wy) + bottom * wy


def _taps(coords: jax.Array, n: int):
    """Lower index, upper index and upper weight of 1-d linear interpolation, clamped to the edge."""
    coords = jnp.clip(coords, 0.0, n - 1.0)
    lo = jnp.floor(coords)
    weight = coords - lo
    lo = lo.astype(jnp.int32)
    return lo, jnp.minimum(lo + 1, n - 1), weight


def _crop_resize(x, y0, x0, h, w, out_h: int, out_w: int) -> jax.Array:
    """Resample the window ``[y0, y0+h) × [x0, x0+w)`` of ``x`` to ``(out_h, out_w)``, separably.

    Coordinates are clamped to the image (edge mode).  Returns float in the image's own units.
    """
    height, width, _ = x.shape
    dtype = _checks.compute_dtype(x.dtype)
    i = jnp.arange(out_h, dtype=dtype)
    j = jnp.arange(out_w, dtype=dtype)
    ys = y0 + (i + 0.5) * (h / out_h) - 0.5
    xs = x0 + (j + 0.5) * (w / out_w) - 0.5
    r0, r1, wr = _taps(ys, height)
    c0, c1, wc = _taps(xs, width)
    top = jnp.take(x, r0, axis=0).astype(dtype)
    bottom = jnp.take(x, r1, axis=0).astype(dtype)
    rows = top + wr[:, None, None] * (bottom - top)  # (out_h, W, C)
    # columns: gather whole contiguous rows of the transposed band (out_h·C values per index),
    # about 1.6x faster on CPU than gathering C values per output pixel
    band = jnp.swapaxes(rows, 0, 1)  # (W, out_h, C)
    left = jnp.take(band, c0, axis=0)
    right = jnp.take(band, c1, axis=0)
    return jnp.swapaxes(left + wc[:, None, None] * (right - left), 0, 1)


def _window(image, k_y, k_x, win_h, win_w, size, random=True):
    """Resample a ``win_h × win_w`` window to ``size``: at a uniformly random position inside the
    image (``random``, a traced bool or a Python one), else centred."""
    height, width = image.shape[0], image.shape[1]
    dtype = _checks.compute_dtype(image.dtype)
    u_y = jnp.where(random, jax.random.uniform(k_y, (), dtype), 0.5)
    u_x = jnp.where(random, jax.random.uniform(k_x, (), dtype), 0.5)
    out = _crop_resize(image, u_y * (height - win_h), u_x * (width - win_w), win_h, win_w, *size)
    return _checks.restore_units(out, image.dtype)


def _affine_coords(m: jax.Array, h: int, w: int, dtype):
    """Input coordinates ``(ys, xs)`` of every output pixel for the forward map ``m`` (2×3 or 3×3)."""
    m = jnp.asarray(m, dtype)
    a, b, tx = m[0, 0], m[0, 1], m[0, 2]
    c, d, ty = m[1, 0], m[1, 1], m[1, 2]
    det = a * d - b * c
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    u = jnp.arange(w, dtype=dtype)[None, :] - cx - tx  # output x relative to the centre, minus t
    v = jnp.arange(h, dtype=dtype)[:, None] - cy - ty
    xs = (d * u - b * v) / det + cx
    ys = (a * v - c * u) / det + cy
    return ys, xs


def _warp(x: jax.Array, m: jax.Array, fill: Any) -> jax.Array:
    """Affine warp in the image's units (float out)."""
    h, w, _ = x.shape
    ys, xs = _affine_coords(m, h, w, _checks.compute_dtype(x.dtype))
    return _bilinear(x, ys, xs, fill)


# ---------------------------------------------------------------------------------------------
# Flips


def flip_horizontal(image: jax.Array) -> jax.Array:
    """Mirror an HWC image left-right: ``out[:, j] = image[:, W - 1 - j]``."""
    image = _checks.image("flip_horizontal", image)
    return image[:, ::-1]


def flip_vertical(image: jax.Array) -> jax.Array:
    """Mirror an HWC image top-bottom: ``out[i] = image[H - 1 - i]``."""
    image = _checks.image("flip_vertical", image)
    return image[::-1]


def random_flip(key: jax.Array, image: jax.Array, p: float | jax.Array = 0.5) -> jax.Array:
    """Horizontal flip with probability ``p`` (the lecture's first augmentation).

    ``out = flip_horizontal(image)`` if ``u < p`` else ``image``, ``u ~ U[0, 1)`` from ``key``.
    """
    fn = "random_flip"
    key = _checks.key(fn, key)
    image = _checks.image(fn, image)
    _checks.number(fn, "p", p, low=0.0, high=1.0)
    return _random_flip(key, image, p)


@jax.jit
def _random_flip(key, image, p):
    flip = jax.random.uniform(key) < p
    cols = jnp.arange(image.shape[1])
    # a gather of whole pixels: under vmap, several times faster on CPU than a select between
    # the image and its reverse when the image comes out of another op (measured)
    return jnp.take(image, jnp.where(flip, image.shape[1] - 1 - cols, cols), axis=1)


# ---------------------------------------------------------------------------------------------
# Crops


def center_crop(image: jax.Array, size: int | tuple[int, int]) -> jax.Array:
    """The central ``size`` crop: rows ``[(H - h) // 2, (H - h) // 2 + h)``, likewise columns."""
    fn = "center_crop"
    image = _checks.image(fn, image)
    h, w = _checks.size_pair(fn, "size", size)
    _checks.fits(fn, "size", (h, w), size, image)
    top, left = (image.shape[0] - h) // 2, (image.shape[1] - w) // 2
    return image[top : top + h, left : left + w]


def random_crop(
    key: jax.Array,
    image: jax.Array,
    size: int | tuple[int, int],
    padding: int = 0,
    padding_mode: str = "constant",
    fill: float = 0,
) -> jax.Array:
    """Pad by ``padding`` pixels on every side, then take a uniformly random ``size`` crop.

    The CIFAR recipe (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016):
    ``padding=4, size=32``.  The offset ``(top, left)`` is uniform over the
    ``(H + 2p - h + 1) × (W + 2p - w + 1)`` integer positions, so the crop always lies inside
    the padded image and the pixels are copied exactly.

    Args:
      key: PRNG key.
      image: HWC image.
      size: crop ``(height, width)`` or one int, at most the padded image.
      padding: pixels added on each side before cropping.
      padding_mode: ``"constant"`` (with ``fill``), ``"edge"`` or ``"reflect"``.
      fill: padding value in the image's units.
    """
    fn = "random_crop"
    key = _checks.key(fn, key)
    image = _checks.image(fn, image)
    h, w = _checks.size_pair(fn, "size", size)
    padding = _checks.positive_int(fn, "padding", padding, minimum=0)
    if padding_mode not in ("constant", "edge", "reflect"):
        raise ValueError(
            f"{fn}: padding_mode must be 'constant', 'edge' or 'reflect', got {padding_mode!r}"
        )
    _checks.fill(fn, fill, image)
    height, width = image.shape[0] + 2 * padding, image.shape[1] + 2 * padding
    if h > height or w > width:
        raise ValueError(
            f"{fn}: size={size!r} is larger than the padded image ({height}×{width} pixels = "
            f"{image.shape[0]}×{image.shape[1]} plus padding={padding} on each side)"
        )
    if padding_mode == "reflect" and padding >= min(image.shape[0], image.shape[1]):
        raise ValueError(
            f"{fn}: padding={padding} must be smaller than the image ({image.shape[0]}×"
            f"{image.shape[1]}) for padding_mode='reflect'"
        )
    return _random_crop(key, image, fill, size=(h, w), padding=padding, padding_mode=padding_mode)


@_jit
def _random_crop(key, image, fill, *, size, padding, padding_mode):
    h, w = size
    height, width = image.shape[0] + 2 * padding, image.shape[1] + 2 * padding
    ky, kx = jax.random.split(key)
    top = jax.random.randint(ky, (), 0, height - h + 1)
    left = jax.random.randint(kx, (), 0, width - w + 1)
    if padding:
        pad = ((padding, padding), (padding, padding), (0, 0))
        if padding_mode == "constant":
            image = jnp.pad(image, pad, constant_values=jnp.asarray(fill, image.dtype))
        else:
            image = jnp.pad(image, pad, mode=padding_mode)
    # under vmap: one gather of the window from the (small) padded copy, measured faster on CPU
    # than gathering rows and columns of the unpadded image and masking the border
    return jax.lax.dynamic_slice(image, (top, left, 0), (h, w, image.shape[2]))


def random_scale_crop(
    key: jax.Array,
    image: jax.Array,
    size: int | tuple[int, int] = 224,
    short_side: tuple[float, float] = (256, 480),
) -> jax.Array:
    """The ResNet scale augmentation: resize so the short side is ``L ~ U[256, 480]``, then take
    a random ``224 × 224`` crop.

    He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, §3.4 (after Simonyan &
    Zisserman 2015).  Done as one zoom warp so that the output shape is static: with
    ``z = L / min(H, W)`` the crop is the input window of ``h/z × w/z`` pixels at a uniformly
    random position, resampled bilinearly to ``size`` — the same pixels as a bilinear resize of
    the whole photo followed by the crop, without resizing the whole photo.  No antialiasing
    (torchvision's resize antialiases by default).  ``L`` is continuous
    (the paper draws an integer; the difference is below one pixel of scale).

    Args:
      key: PRNG key.
      image: HWC image of any size (smaller than ``size`` is upsampled).
      size: output ``(height, width)`` or one int.
      short_side: range ``(L_min, L_max)`` of the resized short side, ``L_min >= max(size)`` so
        that the crop fits in the resized image.
    """
    fn = "random_scale_crop"
    key = _checks.key(fn, key)
    image = _checks.image(fn, image)
    out_h, out_w = _checks.size_pair(fn, "size", size)
    lo, hi = _checks.interval(fn, "short_side", short_side, low=0.0, low_open=True)
    if not _checks.is_traced(lo) and float(np.min(lo)) < max(out_h, out_w):
        raise ValueError(
            f"{fn}: short_side={short_side!r} must start at or above the crop size "
            f"{max(out_h, out_w)} (size={size!r}): a crop larger than the resized image does not fit"
        )
    return _random_scale_crop(key, image, lo, hi, size=(out_h, out_w))


@_jit
def _random_scale_crop(key, image, lo, hi, *, size):
    out_h, out_w = size
    height, width = image.shape[0], image.shape[1]
    dtype = _checks.compute_dtype(image.dtype)
    k_scale, k_y, k_x = jax.random.split(key, 3)
    short = jax.random.uniform(k_scale, (), dtype, lo, hi)
    zoom = short / min(height, width)
    win_h = jnp.minimum(out_h / zoom, height)
    win_w = jnp.minimum(out_w / zoom, width)
    return _window(image, k_y, k_x, win_h, win_w, size)


def random_resized_crop(
    key: jax.Array,
    image: jax.Array,
    size: int | tuple[int, int] = 224,
    area: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    attempts: int = 10,
) -> jax.Array:
    """Inception-style random-resized crop: a window of random area and aspect ratio, resized.

    Szegedy et al., "Going Deeper with Convolutions", CVPR 2015 (§6): the window covers a fraction
    ``s ~ U[area]`` of the image area with aspect ratio ``r = w / h``, ``log r ~ U[log ratio]``:
    ``w = √(s·H·W·r)``, ``h = √(s·H·W / r)``.  Of ``attempts`` candidates drawn at once, the first
    that fits inside the image is used, at a uniformly random position; if none fits, the largest
    central window with an aspect ratio inside ``ratio`` (torchvision's fallback).  The window is
    resampled bilinearly (no antialiasing) to ``size``.
    """
    fn = "random_resized_crop"
    key = _checks.key(fn, key)
    image = _checks.image(fn, image)
    out_h, out_w = _checks.size_pair(fn, "size", size)
    a_lo, a_hi = _checks.interval(fn, "area", area, low=0.0, high=1.0, low_open=True)
    r_lo, r_hi = _checks.interval(fn, "ratio", ratio, low=0.0, low_open=True)
    attempts = _checks.positive_int(fn, "attempts", attempts)
    return _random_resized_crop(key, image, (a_lo, a_hi), (r_lo, r_hi), size=(out_h, out_w), attempts=attempts)


@_jit
def _random_resized_crop(key, image, area, ratio, *, size, attempts):
    (a_lo, a_hi), (r_lo, r_hi) = area, ratio
    height, width = image.shape[0], image.shape[1]
    dtype = _checks.compute_dtype(image.dtype)
    k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
    frac = jax.random.uniform(k_area, (attempts,), dtype, a_lo, a_hi)
    log_r = jax.random.uniform(k_ratio, (attempts,), dtype, jnp.log(jnp.asarray(r_lo, dtype)), jnp.log(jnp.asarray(r_hi, dtype)))
    r = jnp.exp(log_r)
    total = float(height * width)
    ws = jnp.sqrt(frac * total * r)
    hs = jnp.sqrt(frac * total / r)
    ok = (ws <= width) & (hs <= height)
    first = jnp.argmax(ok)
    # fallback: the whole image, narrowed to the nearest allowed aspect ratio
    aspect = width / height
    fb_w = jnp.where(aspect > r_hi, height * jnp.asarray(r_hi, dtype), float(width))
    fb_h = jnp.where(aspect < r_lo, width / jnp.asarray(r_lo, dtype), float(height))
    win_w = jnp.minimum(jnp.where(ok[first], ws[first], fb_w), width)
    win_h = jnp.minimum(jnp.where(ok[first], hs[first], fb_h), height)
    return _window(image, k_y, k_x, win_h, win_w, size, random=ok[first])


def _short_side_shape(height: int, width: int, short: int) -> tuple[int, int]:
    """``(height, width)`` scaled so that the short side is ``short``, aspect kept, long side
    rounded (at least 1)."""
    scale = short / min(height, width)
    if height <= width:
        return short, max(1, round(width * scale))
    return max(1, round(height * scale)), short


def resize(image: jax.Array, size: int | tuple[int, int], *, antialias: bool = True) -> jax.Array:
    """Resize an HWC image: ``size`` an int sets the **short side** (aspect kept, long side
    rounded), a pair ``(height, width)`` sets both.

    Linear interpolation (``jax.image.resize``), antialiased when shrinking by default: this is
    the deterministic resize of the test-time protocol.  dtype kept (uint8 rounded and clipped).
    """
    fn = "resize"
    image = _checks.image(fn, image)
    height, width = image.shape[0], image.shape[1]
    if isinstance(size, (tuple, list)):
        out_h, out_w = _checks.size_pair(fn, "size", size)
    else:
        out_h, out_w = _short_side_shape(height, width, _checks.positive_int(fn, "size", size))
    if (out_h, out_w) == (height, width):
        return image
    return _resize(image, size=(out_h, out_w), antialias=bool(antialias))


@_jit
def _resize(image, *, size, antialias):
    out_h, out_w = size
    x = image.astype(_checks.compute_dtype(image.dtype))
    out = jax.image.resize(x, (out_h, out_w, image.shape[2]), "linear", antialias=antialias)
    return _checks.restore_units(out, image.dtype)


# ---------------------------------------------------------------------------------------------
# Affine warps


def _forward(a, b, tx, c, d, ty) -> jax.Array:
    """The 3×3 matrix ``[[a, b, tx], [c, d, ty], [0, 0, 1]]``: from Python numbers a constant
    (computed in double precision, then the default float dtype), else stacked from arrays."""
    entries = (a, b, tx, c, d, ty)
    dtype = jnp.result_type(float)
    if all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in entries):
        return jnp.asarray([[a, b, tx], [c, d, ty], [0.0, 0.0, 1.0]], dtype)
    a, b, tx, c, d, ty = jnp.broadcast_arrays(*(jnp.asarray(v, dtype) for v in entries))
    zero, one = jnp.zeros_like(a), jnp.ones_like(a)
    return jnp.stack([jnp.stack([a, b, tx]), jnp.stack([c, d, ty]), jnp.stack([zero, zero, one])])


def rotation_matrix(degrees: float | jax.Array) -> jax.Array:
    """3×3 forward map rotating by ``degrees`` **counter-clockwise** (as displayed, y down).

    ``[[cos θ, sin θ, 0], [-sin θ, cos θ, 0], [0, 0, 1]]``.  For a Python number the sine and
    cosine are computed in double precision and exact multiples of 90° give exact 0/±1, so
    ``affine(image, rotation_matrix(90))`` equals ``jnp.rot90(image)`` for a square image.
    """
    if isinstance(degrees, numbers.Real) and not isinstance(degrees, bool):
        if float(degrees) % 90 == 0:
            c, s = [(1, 0), (0, 1), (-1, 0), (0, -1)][int(float(degrees) // 90) % 4]
        else:
            c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    else:
        t = jnp.deg2rad(jnp.asarray(degrees, jnp.result_type(float)))
        c, s = jnp.cos(t), jnp.sin(t)
    return _forward(c, s, 0.0, -s, c, 0.0)


def translation_matrix(tx: float | jax.Array, ty: float | jax.Array) -> jax.Array:
    """3×3 forward map moving the picture ``tx`` pixels right and ``ty`` pixels down."""
    return _forward(1.0, 0.0, tx, 0.0, 1.0, ty)


def scale_matrix(sx: float | jax.Array, sy: float | jax.Array | None = None) -> jax.Array:
    """3×3 forward map zooming by ``sx`` horizontally and ``sy`` (default ``sx``) vertically
    about the image centre; ``sx != sy`` stretches."""
    return _forward(sx, 0.0, 0.0, 0.0, sx if sy is None else sy, 0.0)


def shear_matrix(x: float | jax.Array = 0.0, y: float | jax.Array = 0.0) -> jax.Array:
    """3×3 forward map shearing about the centre: ``x' = x + a·y``, ``y' = b·x + y`` with shear
    factors ``a = x``, ``b = y`` (a factor is ``tan`` of the shear angle)."""
    return _forward(1.0, x, 0.0, y, 1.0, 0.0)


def _check_matrix(fn: str, matrix: Any) -> jax.Array:
    m = jnp.asarray(matrix)
    if m.shape not in ((2, 3), (3, 3)):
        raise ValueError(f"{fn}: matrix must have shape (2, 3) or (3, 3), got {tuple(m.shape)}")
    if not jnp.issubdtype(m.dtype, jnp.floating) and not jnp.issubdtype(m.dtype, jnp.integer):
        raise TypeError(f"{fn}: matrix must be real, got dtype {m.dtype}")
    if not _checks.is_traced(m):
        host = np.asarray(m, np.float64)
        if not np.all(np.isfinite(host)) or abs(np.linalg.det(host[:2, :2])) < 1e-12:
            raise ValueError(
                f"{fn}: matrix must be finite and invertible (its 2×2 part has a non-zero "
                f"determinant), got {host.tolist()}"
            )
    return m


def affine(image: jax.Array, matrix: jax.Array, *, fill: float = 0) -> jax.Array:
    """Warp an HWC image by the affine forward map ``matrix`` (2×3 or 3×3), bilinear resampling.

    Output pixel ``p`` (centred coordinates, see the module docstring) takes the input at
    ``A⁻¹ (p - t)`` where ``matrix = [A | t]``; input points outside the image read ``fill``.
    Translation, rotation, stretching and shearing are all one such warp: compose them by
    matrix product (``translation_matrix(5, 0) @ rotation_matrix(10)``).  The identity returns
    the image exactly (uint8) or to rounding (floats); the shape is kept.
    """
    fn = "affine"
    image = _checks.image(fn, image)
    m = _check_matrix(fn, matrix)
    _checks.fill(fn, fill, image)
    return _affine(image, m, fill)


@jax.jit
def _affine(image, m, fill):
    return _checks.restore_units(_warp(image, m, fill), image.dtype)


def _uniform(key, value, dtype):
    lo, hi = value
    return jax.random.uniform(key, (), dtype, lo, hi)


def random_affine(
    key: jax.Array,
    image: jax.Array,
    rotation: float | tuple[float, float] = 0.0,
    translation: float | tuple[float, float] = 0.0,
    scale: tuple[float, float] = (1.0, 1.0),
    stretch: tuple[float, float] = (1.0, 1.0),
    shear: float | tuple[float, float] = 0.0,
    fill: float = 0,
) -> jax.Array:
    """Random translation, rotation, zoom, stretching and shearing as **one** affine warp.

    ``matrix = T(tx, ty) · R(θ) · Sh(tan φx, tan φy) · S(s·√a, s/√a)`` about the image centre,
    with ``θ ~ U[-rotation, rotation]`` degrees, ``tx ~ U[-t_x, t_x]·W`` and ``ty ~ U[-t_y,
    t_y]·H`` (``translation`` a fraction, or a pair ``(t_x, t_y)``), ``s ~ U[scale]``,
    ``log a ~ U[log stretch]`` (the aspect change of the stretch), ``φx, φy ~ U[-shear, shear]``
    degrees (or a pair of maxima ``(φx, φy)``).  One bilinear resampling for the lot, so the
    transformations do not blur each other.  The default changes nothing.
    """
    fn = "random_affine"
    key = _checks.key(fn, key)
    image = _checks.image(fn, image)
    rot = _checks.symmetric(fn, "rotation", rotation)
    translation = _x_and_y(fn, "translation", translation, "a fraction", high=None)
    scale = _checks.interval(fn, "scale", scale, low=0.0, low_open=True)
    stretch = _checks.interval(fn, "stretch", stretch, low=0.0, low_open=True)
    shear = _x_and_y(fn, "shear", shear, "an angle in degrees", high=89.0)
    _checks.fill(fn, fill, image)
    return _random_affine(key, image, rot, translation, scale, stretch, shear, fill)


def _x_and_y(fn: str, name: str, value: Any, what: str, high: float | None) -> tuple[Any, Any]:
    """One maximum for both axes, or a pair ``(x, y)`` of maxima, each in ``[0, high]``."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2:
        raise ValueError(f"{fn}: {name} must be {what} or a pair (x, y) of them, got {value!r}")
    return tuple(_checks.number(fn, name, v, low=0.0, high=high) for v in pair)


@jax.jit
def _random_affine(key, image, rot, translation, scale, stretch, shear, fill):
    (t_x, t_y), (s_lo, s_hi), (a_lo, a_hi), (sh_x, sh_y) = translation, scale, stretch, shear
    h, w = image.shape[0], image.shape[1]
    dtype = jnp.result_type(float)
    k = jax.random.split(key, 6)
    theta = _uniform(k[0], rot, dtype)
    tx = _uniform(k[1], (-t_x, t_x), dtype) * w
    ty = _uniform(k[2], (-t_y, t_y), dtype) * h
    s = _uniform(k[3], (s_lo, s_hi), dtype)
    log_a = _uniform(k[4], (jnp.log(jnp.asarray(a_lo, dtype)), jnp.log(jnp.asarray(a_hi, dtype))), dtype)
    phi = jax.random.uniform(k[5], (2,), dtype, -1.0, 1.0) * jnp.asarray([sh_x, sh_y], dtype)
    root_a = jnp.exp(0.5 * log_a)
    shear_xy = jnp.tan(jnp.deg2rad(phi))
    m = (
        translation_matrix(tx, ty)
        @ rotation_matrix(theta)
        @ shear_matrix(shear_xy[0], shear_xy[1])
        @ scale_matrix(s * root_a, s / root_a)
    )
    return _checks.restore_units(_warp(image, m, fill), image.dtype)


# ---------------------------------------------------------------------------------------------
# Lens distortion


def _lens(x: jax.Array, k1, k2, fill) -> jax.Array:
    h, w, _ = x.shape
    dtype = _checks.compute_dtype(x.dtype)
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    radius = math.hypot(cy, cx) or 1.0  # the corners are at r = 1
    u = (jnp.arange(w, dtype=dtype)[None, :] - cx) / radius
    v = (jnp.arange(h, dtype=dtype)[:, None] - cy) / radius
    r2 = u * u + v * v
    factor = 1.0 + k1 * r2 + k2 * r2 * r2
    return _bilinear(x, v * factor * radius + cy, u * factor * radius + cx, fill)


def lens_distortion(
    image: jax.Array, k1: float | jax.Array, k2: float | jax.Array = 0.0, *, fill: float = 0
) -> jax.Array:
    """Radial lens distortion (the Brown–Conrady radial model, Brown 1966, "Decentering
    distortion of lenses"): output pixel at radius ``r`` reads the input at
    ``r · (1 + k1 r² + k2 r⁴)``.

    ``r`` is measured from the image centre in units of the half-diagonal (corners at ``r = 1``).
    ``k1 > 0`` gives **barrel** distortion (straight lines bow outwards, the picture shrinks
    towards the corners, which read ``fill``); ``k1 < 0`` gives **pincushion**.  ``k1 = k2 = 0``
    is the identity.
    """
    fn = "lens_distortion"
    image = _checks.image(fn, image)
    _checks.number(fn, "k1", k1, low=-1.0, high=1.0)
    _checks.number(fn, "k2", k2, low=-1.0, high=1.0)
    _checks.fill(fn, fill, image)
    return _lens_distortion(image, k1, k2, fill)


@jax.jit
def _lens_distortion(image, k1, k2, fill):
    return _checks.restore_units(_lens(image, k1, k2, fill), image.dtype)


def random_lens_distortion(
    key: jax.Array,
    image: jax.Array,
    k1: float | tuple[float, float] = 0.2,
    k2: float | tuple[float, float] = 0.0,
    fill: float = 0,
) -> jax.Array:
    """:func:`lens_distortion` with ``k1 ~ U[-k1, k1]`` and ``k2 ~ U[-k2, k2]`` (or explicit
    ranges): barrel and pincushion alike."""
    fn = "random_lens_distortion"
    key = _checks.key(fn, key)
    image = _checks.image(fn, image)
    r1 = _checks.symmetric(fn, "k1", k1, bound=1.0)
    r2 = _checks.symmetric(fn, "k2", k2, bound=1.0)
    _checks.fill(fn, fill, image)
    return _random_lens_distortion(key, image, r1, r2, fill)


@jax.jit
def _random_lens_distortion(key, image, r1, r2, fill):
    dtype = _checks.compute_dtype(image.dtype)
    ka, kb = jax.random.split(key)
    return _checks.restore_units(
        _lens(image, _uniform(ka, r1, dtype), _uniform(kb, r2, dtype), fill), image.dtype
    )
