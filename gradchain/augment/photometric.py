"""Photometric augmentations: brightness, contrast, saturation and hue jitter; PCA colour noise.

All arithmetic is in float ``[0, 1]`` units (uint8 images are divided by 255 and rounded back),
and every step clips to ``[0, 1]``, so the output is always a valid image of the input dtype.
The blends follow PIL's ``ImageEnhance`` and torchvision's ``ColorJitter``:

* brightness ``f``: ``x' = f·x`` (blend with black);
* contrast ``f``: ``x' = m + f·(x - m)``, ``m`` the mean of the image's grey levels;
* saturation ``f``: ``x' = g + f·(x - g)``, ``g`` the pixel's grey level;
* hue ``δ``: rotate the HSV hue by ``δ`` turns (``δ ∈ [-½, ½]``), keeping value and saturation;

with grey ``g = 0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601 luma, as PIL's ``convert("L")``).
PCA colour augmentation is Krizhevsky, Sutskever & Hinton, "ImageNet Classification with Deep
Convolutional Neural Networks", NeurIPS 2012, §4.1.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradchain.augment import _checks

__all__ = [
    "adjust_brightness",
    "adjust_contrast",
    "adjust_hue",
    "adjust_saturation",
    "color_jitter",
    "pca_color",
    "pca_components",
    "rgb_to_grey",
]

LUMA = (0.299, 0.587, 0.114)


# ---------------------------------------------------------------------------------------------
# Float kernels on *planar* pixels ``p`` of shape (C, H·W), values in [0, 1].
#
# XLA on CPU vectorises poorly along a minor axis of length 3 (HWC), so the colour kernels work on
# the transposed, planar layout: one contiguous row per channel.  ``color_jitter`` transposes
# once, runs every step planar and transposes back; measured 3-5x faster than the same formulas
# on HWC (benchmarks/augment.py).


def _planar(x: jax.Array) -> jax.Array:
    return x.reshape(-1, x.shape[-1]).T


def _unplanar(p: jax.Array, shape) -> jax.Array:
    if p.dtype == jnp.uint8:
        # interleave the planes with a stack, not a transpose: fused into the uint8 conversion,
        # the transpose compiles to a scalar loop on CPU (5x slower for color_jitter on uint8,
        # measured); for floats the transpose is the faster of the two
        return jnp.stack(list(p), axis=-1).reshape(shape)
    return p.T.reshape(shape)


def _grey_p(p: jax.Array) -> jax.Array:
    """Grey level (1, P) of planar pixels with 1 or 3 channels."""
    if p.shape[0] == 1:
        return p
    return (LUMA[0] * p[0] + LUMA[1] * p[1] + LUMA[2] * p[2])[None]


def _blend(base, x, factor):
    return jnp.clip(base + factor * (x - base), 0.0, 1.0)


def _brightness(x, factor):
    """Elementwise, so the same on planar and HWC pixels."""
    return jnp.clip(x * factor, 0.0, 1.0)


def _contrast_p(p, factor):
    # the mean grey level as LUMA · (per-channel means): one reduction over p
    means = jnp.mean(p, axis=1)
    mean = means[0] if p.shape[0] == 1 else LUMA[0] * means[0] + LUMA[1] * means[1] + LUMA[2] * means[2]
    return _blend(mean, p, factor)


def _saturation_p(p, factor):
    if p.shape[0] == 1:
        return p
    return _blend(_grey_p(p), p, factor)


def _hue_p(p, delta):
    """Shift the HSV hue by ``delta`` turns without leaving RGB.

    ``v = max(R, G, B)``, chroma ``c = v - min``; the hue in sixths of a turn is the usual
    sector formula ``h ∈ [-1, 5)``.  The shifted colour is
    ``channel_n = v - c·clip(min(k, 4 - k), 0, 1)`` with ``k = (n + 6h') mod 6`` and
    ``n = 5, 3, 1`` for R, G, B (the closed form of HSV → RGB), so value and saturation are
    unchanged and the result stays in ``[min, max]``.
    """
    if p.shape[0] == 1:
        return p
    r, g, b = p[0], p[1], p[2]
    v = jnp.maximum(jnp.maximum(r, g), b)
    c = v - jnp.minimum(jnp.minimum(r, g), b)
    inv = jnp.where(c > 0, 1.0 / jnp.where(c > 0, c, 1.0), 0.0)
    h = jnp.where(v == r, (g - b) * inv, jnp.where(v == g, (b - r) * inv + 2.0, (r - g) * inv + 4.0))
    h = h + 6.0 * delta
    h = h - 6.0 * jnp.floor(h * (1.0 / 6.0))  # in [0, 6)
    out = []
    for n in (5.0, 3.0, 1.0):
        k = n + h
        k = jnp.where(k >= 6.0, k - 6.0, k)
        out.append(v - c * jnp.clip(jnp.minimum(k, 4.0 - k), 0.0, 1.0))
    return jnp.stack(out)


# HWC wrappers (used by the AutoAugment ops and the deterministic adjustments)


def _on_planes(kernel, x, *args):
    return _unplanar(kernel(_planar(x), *args), x.shape)


def _grey(x: jax.Array) -> jax.Array:
    """Grey level (H, W, 1) of an HWC float image with 1 or 3 channels."""
    return _unplanar(_grey_p(_planar(x)), x.shape[:-1] + (1,))


_contrast = partial(_on_planes, _contrast_p)
_saturation = partial(_on_planes, _saturation_p)
_hue = partial(_on_planes, _hue_p)


# ---------------------------------------------------------------------------------------------
# Deterministic adjustments


def rgb_to_grey(image: jax.Array) -> jax.Array:
    """Grey levels ``0.299 R + 0.587 G + 0.114 B`` as a 1-channel image of the same dtype."""
    image = _checks.image("rgb_to_grey", image, channels=_checks.RGB)
    return _checks.in_float(image, kernel=_grey)


def adjust_brightness(image: jax.Array, factor: float | jax.Array) -> jax.Array:
    """``x' = clip(factor·x)``: 0 gives black, 1 the image, 2 twice as bright."""
    fn = "adjust_brightness"
    image = _checks.image(fn, image, channels=_checks.GREY_OR_RGB)
    _checks.number(fn, "factor", factor, low=0.0)
    return _checks.in_float(image, factor, kernel=_brightness)


def adjust_contrast(image: jax.Array, factor: float | jax.Array) -> jax.Array:
    """``x' = clip(m + factor·(x - m))``, ``m`` the image's mean grey level: 0 gives flat grey."""
    fn = "adjust_contrast"
    image = _checks.image(fn, image, channels=_checks.GREY_OR_RGB)
    _checks.number(fn, "factor", factor, low=0.0)
    return _checks.in_float(image, factor, kernel=_contrast)


def adjust_saturation(image: jax.Array, factor: float | jax.Array) -> jax.Array:
    """``x' = clip(g + factor·(x - g))``, ``g`` each pixel's grey level: 0 gives greyscale."""
    fn = "adjust_saturation"
    image = _checks.image(fn, image, channels=_checks.RGB)
    _checks.number(fn, "factor", factor, low=0.0)
    return _checks.in_float(image, factor, kernel=_saturation)


def adjust_hue(image: jax.Array, delta: float | jax.Array) -> jax.Array:
    """Rotate the HSV hue by ``delta`` turns, ``delta ∈ [-0.5, 0.5]`` (0.5 is the opposite hue)."""
    fn = "adjust_hue"
    image = _checks.image(fn, image, channels=_checks.RGB)
    _checks.number(fn, "delta", delta, low=-0.5, high=0.5)
    return _checks.in_float(image, delta, kernel=_hue)


# ---------------------------------------------------------------------------------------------
# Random colour jitter


def _factor_range(fn: str, name: str, value: Any) -> tuple[Any, Any]:
    """``a`` means ``[max(0, 1 - a), 1 + a]``; a pair is an explicit range of factors."""
    if isinstance(value, (tuple, list)):
        return _checks.interval(fn, name, value, low=0.0)
    _checks.number(fn, name, value, low=0.0)
    if _checks.is_traced(value) or not isinstance(value, (int, float)):
        return jnp.maximum(0.0, 1.0 - jnp.asarray(value)), 1.0 + jnp.asarray(value)
    return max(0.0, 1.0 - value), 1.0 + value


def _is_constant(bounds: tuple[Any, Any], identity: float) -> bool:
    """True when both ends of a concrete range are the op's identity (then it is left out)."""
    return all(not _checks.is_traced(v) and np.ndim(v) == 0 and float(v) == identity for v in bounds)


def color_jitter(
    key: jax.Array,
    image: jax.Array,
    brightness: float | tuple[float, float] = 0.4,
    contrast: float | tuple[float, float] = 0.4,
    saturation: float | tuple[float, float] = 0.4,
    hue: float | tuple[float, float] = 0.0,
) -> jax.Array:
    """Random brightness, contrast, saturation and hue, in that order (the lecture's "color jitter").

    Factors ``f ~ U[max(0, 1 - a), 1 + a]`` for ``a`` = ``brightness``, ``contrast``,
    ``saturation`` (or give a range ``(lo, hi)``); hue shift ``δ ~ U[-hue, hue]`` turns,
    ``hue ≤ 0.5``.  The ranges are torchvision's ``ColorJitter``; its order is random, here it is
    fixed.  A jitter of 0 (a range that is exactly the identity) is skipped at trace time.
    Saturation and hue need RGB images.

    Amounts may be traced arrays (a ``vmap`` over jitter strengths).
    """
    fn = "color_jitter"
    key = _checks.key(fn, key)
    b = _factor_range(fn, "brightness", brightness)
    c = _factor_range(fn, "contrast", contrast)
    s = _factor_range(fn, "saturation", saturation)
    h = _checks.symmetric(fn, "hue", hue, bound=0.5)
    active = tuple(not _is_constant(r, one) for r, one in ((b, 1.0), (c, 1.0), (s, 1.0), (h, 0.0)))
    channels = _checks.RGB if active[2] or active[3] else _checks.GREY_OR_RGB
    image = _checks.image(fn, image, channels=channels)
    return _color_jitter(key, image, b, c, s, h, active=active)


@partial(jax.jit, static_argnames=("active",))
def _color_jitter(key, image, b, c, s, h, *, active):
    # transpose to planar in the storage dtype (1 byte a value for uint8), then convert
    p = _checks.as_float(_planar(image))
    kb, kc, ks, kh = jax.random.split(key, 4)
    dtype = p.dtype
    if active[0]:
        p = _brightness(p, jax.random.uniform(kb, (), dtype, *b))
    if active[1]:
        p = _contrast_p(p, jax.random.uniform(kc, (), dtype, *c))
    if active[2]:
        p = _saturation_p(p, jax.random.uniform(ks, (), dtype, *s))
    if active[3]:
        p = _hue_p(p, jax.random.uniform(kh, (), dtype, *h))
    return _unplanar(_checks.restore(p, image.dtype), image.shape)


# ---------------------------------------------------------------------------------------------
# PCA colour augmentation


def pca_components(images: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Principal components of the RGB pixels of a training set: ``(eigvals, eigvecs)``.

    ``Σ = cov([R, G, B])`` over every pixel of ``images`` (NHWC or one HWC image, uint8 or
    float, in ``[0, 1]`` units), ``Σ = V diag(λ) Vᵀ``; ``eigvals`` are ``λ`` (the variances along
    the components, largest first, shape ``(3,)``) and ``eigvecs`` the columns of ``V``
    (``(3, 3)``, ``eigvecs[:, i]`` is component ``i``, sign chosen so its largest entry is
    positive).  The centred two-pass estimate, in float32 (float64 under ``jax_enable_x64``).
    For a large data set pass a random subset of images: the 3×3 covariance converges fast.
    """
    fn = "pca_components"
    rank = 4 if getattr(images, "ndim", None) == 4 else 3
    images = _checks.image(fn, images, name="images", rank=rank, channels=_checks.RGB)
    return _pca_components(images)


@jax.jit
def _pca_components(images):
    pixels = _checks.as_float(images).reshape(-1, 3).astype(jnp.result_type(float))
    centred = pixels - jnp.mean(pixels, axis=0)
    cov = centred.T @ centred / max(pixels.shape[0] - 1, 1)
    vals, vecs = jnp.linalg.eigh(cov)
    vals, vecs = jnp.maximum(vals[::-1], 0.0), vecs[:, ::-1]
    biggest = jnp.take_along_axis(vecs, jnp.argmax(jnp.abs(vecs), axis=0)[None, :], axis=0)
    vecs = vecs * jnp.sign(jnp.where(biggest == 0, 1.0, biggest))
    return vals, vecs


def pca_color(
    key: jax.Array,
    image: jax.Array,
    eigvals: jax.Array,
    eigvecs: jax.Array,
    std: float | jax.Array = 0.1,
) -> jax.Array:
    """PCA colour augmentation (AlexNet, Krizhevsky et al. 2012): add one colour offset to every pixel.

    ``offset = V · (α ⊙ √λ)``, ``α ~ N(0, std²)`` per component, from :func:`pca_components`'s
    ``(λ, V) = (eigvals, eigvecs)``.  So the offset is a draw from ``N(0, std²·Σ)``: along each
    principal colour direction its spread is ``std`` times the data's own spread there
    (``√λ``, the paper's "eigenvalue" in the common implementations, e.g. ImageNet's
    ``√λ ≈ (0.2175, 0.0188, 0.0045)`` for [0, 1] pixels).  The offset is added to every pixel,
    then clipped to the valid range.
    """
    fn = "pca_color"
    key = _checks.key(fn, key)
    image = _checks.image(fn, image, channels=_checks.RGB)
    eigvals, eigvecs = jnp.asarray(eigvals), jnp.asarray(eigvecs)
    if eigvals.shape != (3,):
        raise ValueError(f"{fn}: eigvals must have shape (3,) (one per RGB component), got {tuple(eigvals.shape)}")
    if eigvecs.shape != (3, 3):
        raise ValueError(f"{fn}: eigvecs must have shape (3, 3) (components as columns), got {tuple(eigvecs.shape)}")
    if not _checks.is_traced(eigvals) and np.any(np.asarray(eigvals) < 0):
        raise ValueError(f"{fn}: eigvals must be >= 0 (variances), got {np.asarray(eigvals).tolist()}")
    _checks.number(fn, "std", std, low=0.0)
    return _pca_color(key, image, eigvals, eigvecs, std)


@jax.jit
def _pca_color(key, image, eigvals, eigvecs, std):
    x = _checks.as_float(image)
    alpha = std * jax.random.normal(key, (3,), x.dtype)
    offset = eigvecs.astype(x.dtype) @ (alpha * jnp.sqrt(jnp.maximum(eigvals.astype(x.dtype), 0.0)))
    return _checks.restore(jnp.clip(x + offset, 0.0, 1.0), image.dtype)
