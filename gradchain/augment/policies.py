"""Learned and random augmentation policies: AutoAugment and RandAugment.

* AutoAugment (Cubuk, Zoph, Mané, Vasudevan & Le, "AutoAugment: Learning Augmentation Strategies
  from Data", CVPR 2019): a policy is a list of sub-policies, each two ``(op, probability,
  magnitude level)`` steps; for every image one sub-policy is drawn uniformly and each of its
  steps is applied with its probability.  The published ImageNet and CIFAR-10 policies are
  :data:`AUTOAUGMENT_POLICIES` (25 sub-policies each, levels 0..9).
* RandAugment (Cubuk, Zoph, Shlens & Le, "RandAugment: Practical automated data augmentation with
  a reduced search space", CVPR Workshops 2020): ``N`` ops drawn uniformly (with replacement) from
  14, each applied at one global magnitude ``M``.

Everything is jit-able and ``vmap``-able: the per-image op is chosen by ``lax.switch`` over a
fixed table, so one compiled program serves every sub-policy (under ``vmap`` the switch evaluates
all branches and selects; the geometric ops share a single warp whose matrix is picked by the
op index, so that costs one resampling per step, not five).

Magnitudes.  An op's strength is a fraction ``f ∈ [0, 1]`` of its maximum: ``f = level / 9`` for
AutoAugment (the paper's 10 evenly spaced values), ``f = M / max_magnitude`` for RandAugment
(``max_magnitude = 10`` as the paper's code; use 30 for torchvision's scale).  At ``f``:

* ShearX/Y: shear factor ``0.3·f``, random sign, about the centre;
* TranslateX/Y: ``0.45·f`` of the width/height (150 of 331 pixels in the paper), random sign;
* Rotate: ``30·f`` degrees, random sign;
* Color, Contrast, Brightness, Sharpness: enhance factor ``0.1 + 1.8·f`` (the paper's [0.1, 1.9]);
* Solarize: invert the pixels ``>= 256·(1 - f)`` (uint8 units), stronger with ``f``;
* Posterize: keep ``8 - round(4·f)`` bits (the paper's [4, 8]), stronger with ``f``;
* AutoContrast, Equalize, Invert, Identity: no magnitude.

(torchvision's AutoAugment differs for the enhance ops: its factor is ``1 ± 0.9·f`` with a
random sign, so level 0 is the identity there and nearly grey/flat here.  The ranges above are the
paper's, and its code's.)

Ops work on 1- or 3-channel images; fill for the geometric ops defaults to mid grey (128).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradchain.augment import _checks, geometric as _geo, photometric as _photo

__all__ = [
    "AUTOAUGMENT_POLICIES",
    "OPS",
    "RANDAUGMENT_OPS",
    "auto_augment",
    "auto_contrast",
    "adjust_sharpness",
    "equalize",
    "invert",
    "posterize",
    "rand_augment",
    "solarize",
]

# The op table: the index is what lax.switch selects.
OPS = (
    "Identity",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
    "AutoContrast",
    "Invert",
    "Equalize",
    "Solarize",
    "Posterize",
    "Contrast",
    "Color",
    "Brightness",
    "Sharpness",
)
_INDEX = {name: i for i, name in enumerate(OPS)}
_GEOMETRIC = ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")

# RandAugment's 14 transformations (the paper's list: AutoAugment's minus Invert, plus Identity).
RANDAUGMENT_OPS = tuple(op for op in OPS if op != "Invert")

# The published policies (Cubuk et al. 2019, appendix): (op, probability, level 0..9 or None).
AUTOAUGMENT_POLICIES: dict[str, tuple] = {
    "imagenet": (
        (("Posterize", 0.4, 8), ("Rotate", 0.6, 9)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
        (("Posterize", 0.6, 7), ("Posterize", 0.6, 6)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Equalize", 0.4, None), ("Rotate", 0.8, 8)),
        (("Solarize", 0.6, 3), ("Equalize", 0.6, None)),
        (("Posterize", 0.8, 5), ("Equalize", 1.0, None)),
        (("Rotate", 0.2, 3), ("Solarize", 0.6, 8)),
        (("Equalize", 0.6, None), ("Posterize", 0.4, 6)),
        (("Rotate", 0.8, 8), ("Color", 0.4, 0)),
        (("Rotate", 0.4, 9), ("Equalize", 0.6, None)),
        (("Equalize", 0.0, None), ("Equalize", 0.8, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Rotate", 0.8, 8), ("Color", 1.0, 2)),
        (("Color", 0.8, 8), ("Solarize", 0.8, 7)),
        (("Sharpness", 0.4, 7), ("Invert", 0.6, None)),
        (("ShearX", 0.6, 5), ("Equalize", 1.0, None)),
        (("Color", 0.4, 0), ("Equalize", 0.6, None)),
        (("Equalize", 0.4, None), ("Solarize", 0.2, 4)),
        (("Solarize", 0.6, 5), ("AutoContrast", 0.6, None)),
        (("Invert", 0.6, None), ("Equalize", 1.0, None)),
        (("Color", 0.6, 4), ("Contrast", 1.0, 8)),
        (("Equalize", 0.8, None), ("Equalize", 0.6, None)),
    ),
    "cifar10": (
        (("Invert", 0.1, None), ("Contrast", 0.2, 6)),
        (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
        (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
        (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.5, None), ("Equalize", 0.9, None)),
        (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
        (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
        (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
        (("Equalize", 0.6, None), ("Equalize", 0.5, None)),
        (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
        (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
        (("Equalize", 0.3, None), ("AutoContrast", 0.4, None)),
        (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
        (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
        (("Solarize", 0.5, 2), ("Invert", 0.0, None)),
        (("Equalize", 0.2, None), ("AutoContrast", 0.6, None)),
        (("Equalize", 0.2, None), ("Equalize", 0.6, None)),
        (("Color", 0.9, 9), ("Equalize", 0.6, None)),
        (("AutoContrast", 0.8, None), ("Solarize", 0.2, 8)),
        (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
        (("Solarize", 0.4, 5), ("AutoContrast", 0.9, None)),
        (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
        (("AutoContrast", 0.9, None), ("Solarize", 0.8, 3)),
        (("Equalize", 0.8, None), ("Invert", 0.1, None)),
        (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, None)),
    ),
}

_LEVELS = 9  # AutoAugment levels 0..9


# ---------------------------------------------------------------------------------------------
# Float kernels (x in [0, 1], HWC, 1 or 3 channels)


def _to_levels(x):
    """The 256 uint8 levels of a [0, 1] float image, as int32."""
    return jnp.clip(jnp.round(x * 255.0), 0, 255).astype(jnp.int32)


def _auto_contrast(x):
    lo = jnp.min(x, axis=(0, 1), keepdims=True)
    hi = jnp.max(x, axis=(0, 1), keepdims=True)
    span = hi - lo
    return jnp.where(span > 0, (x - lo) / jnp.where(span > 0, span, 1.0), x)


def _invert(x):
    return 1.0 - x


def _equalize(x):
    """Per-channel histogram equalisation on the 256 levels (PIL's ``ImageOps.equalize``).

    ``step = (N - count of the top occupied level) // 255``;
    ``lut[i] = (pixels below level i + step // 2) // step``; a channel with ``step = 0`` (a
    single level) is left as it is.
    """
    h, w, c = x.shape
    levels = _to_levels(x)
    offset = jnp.arange(c, dtype=jnp.int32) * 256
    hist = jnp.bincount((levels + offset).reshape(-1), length=256 * c).reshape(c, 256).T  # (256, C)
    n = h * w
    top = jnp.max(levels, axis=(0, 1))  # (C,)
    top_count = jnp.take_along_axis(hist, top[None, :], axis=0)[0]
    step = (n - top_count) // 255
    below = jnp.cumsum(hist, axis=0) - hist  # pixels strictly below each level
    safe = jnp.maximum(step, 1)
    lut = jnp.minimum((below + safe // 2) // safe, 255)  # (256, C)
    mapped = jnp.take_along_axis(lut, levels.reshape(-1, c), axis=0).reshape(h, w, c)
    out = jnp.where(step > 0, mapped, levels)
    return out.astype(x.dtype) / 255.0


def _solarize(x, threshold):
    return jnp.where(x >= threshold, 1.0 - x, x)


def _posterize(x, bits):
    shift = (8 - jnp.asarray(bits, jnp.int32))
    levels = _to_levels(x)
    kept = jnp.left_shift(jnp.right_shift(levels, shift), shift)
    return kept.astype(x.dtype) / 255.0


def _sharpness(x, factor):
    """PIL's SHARPEN: blend with the 3×3 smoothing ``[[1,1,1],[1,5,1],[1,1,1]] / 13``; the
    one-pixel border keeps the original (the filter needs all neighbours)."""
    h, w, _ = x.shape
    if h < 3 or w < 3:
        return x
    window = sum(
        x[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)
    )
    smooth = (window + 4.0 * x[1:-1, 1:-1]) / 13.0
    degenerate = x.at[1:-1, 1:-1].set(smooth)
    return _photo._blend(degenerate, x, factor)


# ---------------------------------------------------------------------------------------------
# Deterministic public ops (any dtype in, same dtype out)


def auto_contrast(image: jax.Array) -> jax.Array:
    """Stretch each channel so that its darkest pixel is 0 and its brightest is the maximum
    (PIL's ``ImageOps.autocontrast``); a constant channel is left unchanged."""
    image = _checks.image("auto_contrast", image, channels=_checks.GREY_OR_RGB)
    return _checks.in_float(image, kernel=_auto_contrast)


def invert(image: jax.Array) -> jax.Array:
    """``x' = max - x`` (255 - x for uint8, 1 - x for floats)."""
    image = _checks.image("invert", image, channels=_checks.GREY_OR_RGB)
    return _checks.in_float(image, kernel=_invert)


def equalize(image: jax.Array) -> jax.Array:
    """Histogram equalisation of each channel over its 256 levels (PIL's ``ImageOps.equalize``);
    float images are quantised to 256 levels first."""
    image = _checks.image("equalize", image, channels=_checks.GREY_OR_RGB)
    return _checks.in_float(image, kernel=_equalize)


def solarize(image: jax.Array, threshold: float | jax.Array) -> jax.Array:
    """Invert every pixel at or above ``threshold`` (in the image's units: 0..256 for uint8,
    0..1 for floats); above the maximum, nothing changes."""
    fn = "solarize"
    image = _checks.image(fn, image, channels=_checks.GREY_OR_RGB)
    top = 256.0 if image.dtype == jnp.uint8 else 1.0
    _checks.number(fn, "threshold", threshold, low=0.0, high=top)
    return _solarize_native(image, threshold)


@jax.jit
def _solarize_native(image, threshold):
    """Solarize in the image's own units (exact integer comparisons for uint8)."""
    top = 255 if image.dtype == jnp.uint8 else 1.0
    return jnp.where(image >= threshold, top - image, image)


def posterize(image: jax.Array, bits: int | jax.Array) -> jax.Array:
    """Keep the top ``bits`` (1..8) bits of each 8-bit level (float images are quantised to 256
    levels first)."""
    fn = "posterize"
    image = _checks.image(fn, image, channels=_checks.GREY_OR_RGB)
    _checks.number(fn, "bits", bits, low=1, high=8)
    return _checks.in_float(image, bits, kernel=_posterize)


def adjust_sharpness(image: jax.Array, factor: float | jax.Array) -> jax.Array:
    """PIL's ``ImageEnhance.Sharpness``: 0 smooths, 1 is the image, 2 sharpens."""
    fn = "adjust_sharpness"
    image = _checks.image(fn, image, channels=_checks.GREY_OR_RGB)
    _checks.number(fn, "factor", factor, low=0.0)
    return _checks.in_float(image, factor, kernel=_sharpness)


# ---------------------------------------------------------------------------------------------
# One policy step: a warp (identity unless the op is geometric), then a photometric switch.


def _step_matrix(op, f, sign, h: int, w: int):
    """The forward matrix of op ``op`` (an index into OPS) at strength ``f`` (identity if the op
    is not geometric)."""
    s = sign * f
    shear = 0.3 * s
    angle = jnp.deg2rad(30.0 * s)
    c, n = jnp.cos(angle), jnp.sin(angle)
    tx, ty = 0.45 * s * w, 0.45 * s * h
    eye = jnp.eye(3, dtype=f.dtype)
    mats = jnp.stack(
        [
            eye,
            eye.at[0, 1].set(shear),  # ShearX: x' = x + a y
            eye.at[1, 0].set(shear),  # ShearY
            eye.at[0, 2].set(tx),  # TranslateX
            eye.at[1, 2].set(ty),  # TranslateY
            jnp.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]], f.dtype)
            .at[0, 0].set(c).at[0, 1].set(n).at[1, 0].set(-n).at[1, 1].set(c),  # Rotate
        ]
    )
    geo = jnp.asarray([_INDEX[name] for name in _GEOMETRIC])
    slot = jnp.sum(jnp.where(op == geo, jnp.arange(1, len(_GEOMETRIC) + 1), 0))
    return mats[slot]


def _photometric_branches():
    """lax.switch branches ``(x, f) -> x`` for OPS in order (geometric ops: identity here)."""
    keep = lambda x, f: x
    enhance = lambda f: 0.1 + 1.8 * f
    table = {
        "Identity": keep,
        "AutoContrast": lambda x, f: _auto_contrast(x),
        "Invert": lambda x, f: _invert(x),
        "Equalize": lambda x, f: _equalize(x),
        "Solarize": lambda x, f: _solarize(x, (1.0 - f) * (256.0 / 255.0)),
        "Posterize": lambda x, f: _posterize(x, 8 - jnp.round(4.0 * f).astype(jnp.int32)),
        "Contrast": lambda x, f: _photo._contrast(x, enhance(f)),
        "Color": lambda x, f: _photo._saturation(x, enhance(f)),
        "Brightness": lambda x, f: _photo._brightness(x, enhance(f)),
        "Sharpness": lambda x, f: _sharpness(x, enhance(f)),
    }
    return [table.get(name, keep) for name in OPS]


def _apply_op(x, op, f, sign, fill, has_geometric: bool = True):
    """Apply OPS[op] (traced index) at strength ``f`` to the float image ``x``."""
    h, w, _ = x.shape
    if has_geometric:
        m = _step_matrix(op, f, sign, h, w)
        x = jnp.clip(_geo._warp(x, m, fill), 0.0, 1.0)
    return jax.lax.switch(op, _photometric_branches(), x, f)


def _run_steps(x, ops, fs, signs, fill, has_geometric: bool):
    """Apply the steps ``(ops[i], fs[i], signs[i])`` in order: one ``lax.scan``, so the step
    (a warp and a switch over the ops) is compiled once however many steps there are."""
    if ops.shape[0] == 1:
        return _apply_op(x, ops[0], fs[0], signs[0], fill, has_geometric)

    def body(x, step):
        op, f, sign = step
        return _apply_op(x, op, f, sign, fill, has_geometric), None

    x, _ = jax.lax.scan(body, x, (ops, fs, signs))
    return x


def _fill01(fn: str, fill: Any, image: jax.Array):
    if fill is None:
        return 128.0 / 255.0
    _checks.fill(fn, fill, image)
    return fill / 255.0 if image.dtype == jnp.uint8 else fill


# ---------------------------------------------------------------------------------------------
# Policies


def _policy_table(fn: str, policy: Any):
    if isinstance(policy, str):
        if policy.lower() not in AUTOAUGMENT_POLICIES:
            known = " or ".join(repr(name) for name in sorted(AUTOAUGMENT_POLICIES))
            raise ValueError(
                f"{fn}: policy={policy!r} is not a known policy name; use {known}, or pass your "
                "own sequence of sub-policies, each a sequence of (op, probability, level) steps"
            )
        policy = AUTOAUGMENT_POLICIES[policy.lower()]
    if not isinstance(policy, Sequence) or not policy:
        raise ValueError(f"{fn}: policy must be a name or a non-empty sequence of sub-policies, got {policy!r}")
    steps = {len(sub) if isinstance(sub, Sequence) else -1 for sub in policy}
    if len(steps) != 1 or min(steps) < 1:
        raise ValueError(f"{fn}: every sub-policy must be a sequence of the same number (>= 1) of steps, got {policy!r}")
    ops, probs, levels = [], [], []
    for i, sub in enumerate(policy):
        row_o, row_p, row_l = [], [], []
        for step in sub:
            if not isinstance(step, Sequence) or len(step) != 3:
                raise ValueError(f"{fn}: sub-policy {i} has step {step!r}; a step is (op, probability, level)")
            name, prob, level = step
            if name not in _INDEX:
                raise ValueError(f"{fn}: sub-policy {i} has unknown op {name!r}; known ops: {list(OPS)}")
            _checks.number(fn, f"probability of {name!r} in sub-policy {i}", prob, low=0.0, high=1.0)
            level = 0 if level is None else level
            _checks.number(fn, f"level of {name!r} in sub-policy {i}", level, low=0, high=_LEVELS)
            row_o.append(_INDEX[name])
            row_p.append(float(prob))
            row_l.append(float(level) / _LEVELS)
        ops.append(row_o)
        probs.append(row_p)
        levels.append(row_l)
    geometric = any(OPS[o] in _GEOMETRIC for row in ops for o in row)
    return np.asarray(ops, np.int32), np.asarray(probs, np.float32), np.asarray(levels, np.float32), geometric


def auto_augment(
    key: jax.Array, image: jax.Array, policy: str | Sequence = "imagenet", fill: float | None = None
) -> jax.Array:
    """AutoAugment (Cubuk et al., CVPR 2019): one random sub-policy of ``policy`` per image.

    ``policy`` is ``"imagenet"``, ``"cifar10"`` (the published policies,
    :data:`AUTOAUGMENT_POLICIES`) or your own sequence of sub-policies, each a sequence of
    ``(op, probability, level)`` with ``op`` in :data:`OPS` and ``level`` in 0..9 (``None`` for
    ops without magnitude).  ``fill``: the value of pixels uncovered by the geometric ops, in
    the image's units (default mid grey, 128 for uint8).  See the module docstring for the
    magnitude of each op.
    """
    fn = "auto_augment"
    key = _checks.key(fn, key)
    image = _checks.image(fn, image, channels=_checks.GREY_OR_RGB)
    ops, probs, levels, geometric = _policy_table(fn, policy)
    fill = _fill01(fn, fill, image)
    return _auto_augment(key, image, ops, probs, levels, fill, geometric=geometric)


@partial(jax.jit, static_argnames=("geometric",))
def _auto_augment(key, image, ops, probs, levels, fill, *, geometric):
    x = _checks.as_float(image)
    k_sub, k_apply, k_sign = jax.random.split(key, 3)
    j = jax.random.randint(k_sub, (), 0, ops.shape[0])
    n_steps = ops.shape[1]
    apply = jax.random.uniform(k_apply, (n_steps,)) < jnp.asarray(probs)[j]
    signs = jnp.where(jax.random.bernoulli(k_sign, 0.5, (n_steps,)), 1.0, -1.0).astype(x.dtype)
    op = jnp.where(apply, jnp.asarray(ops)[j], _INDEX["Identity"])
    f = jnp.asarray(levels, x.dtype)[j]
    return _checks.restore(_run_steps(x, op, f, signs, fill, geometric), image.dtype)


def rand_augment(
    key: jax.Array,
    image: jax.Array,
    num_ops: int = 2,
    magnitude: float | jax.Array = 9,
    max_magnitude: float = 10,
    fill: float | None = None,
) -> jax.Array:
    """RandAugment (Cubuk et al. 2020): ``num_ops`` ops drawn uniformly from
    :data:`RANDAUGMENT_OPS` (with replacement), each at strength ``magnitude / max_magnitude``.

    The paper's two hyperparameters are ``N = num_ops`` (static) and ``M = magnitude`` (may be
    a traced array, so a sweep over ``M`` is one ``vmap``).  Signed ops get a random sign.
    """
    fn = "rand_augment"
    key = _checks.key(fn, key)
    image = _checks.image(fn, image, channels=_checks.GREY_OR_RGB)
    num_ops = _checks.positive_int(fn, "num_ops", num_ops, minimum=0)
    _checks.number(fn, "max_magnitude", max_magnitude, low=0.0, low_open=True)
    _checks.number(fn, "magnitude", magnitude, low=0.0, high=max_magnitude)
    fill = _fill01(fn, fill, image)
    if num_ops == 0:
        return image
    return _rand_augment(key, image, magnitude, max_magnitude, fill, num_ops=num_ops)


@partial(jax.jit, static_argnames=("num_ops",))
def _rand_augment(key, image, magnitude, max_magnitude, fill, *, num_ops):
    x = _checks.as_float(image)
    f = jnp.asarray(magnitude, x.dtype) / jnp.asarray(max_magnitude, x.dtype)
    allowed = jnp.asarray([_INDEX[name] for name in RANDAUGMENT_OPS], jnp.int32)
    k_op, k_sign = jax.random.split(key)
    choice = jax.random.randint(k_op, (num_ops,), 0, len(RANDAUGMENT_OPS))
    signs = jnp.where(jax.random.bernoulli(k_sign, 0.5, (num_ops,)), 1.0, -1.0).astype(x.dtype)
    f = jnp.broadcast_to(f, (num_ops,))
    return _checks.restore(_run_steps(x, allowed[choice], f, signs, fill, True), image.dtype)
