"""Data-side regularizers: cutout, mixup and CutMix.

* Cutout (DeVries & Taylor, arXiv:1708.04552, 2017): zero a ``size × size`` square at a uniformly
  random centre, clipped at the borders.
* mixup (Zhang et al., ICLR 2018): ``x̃ = λ x_i + (1 - λ) x_j``, ``ỹ = λ y_i + (1 - λ) y_j``,
  ``λ ~ Beta(α, α)``, ``j`` a random permutation of the batch.
* CutMix (Yun et al., ICCV 2019): paste a box of ``x_j`` into ``x_i``; the labels are mixed by the
  area actually pasted, after clipping at the borders.

Training only: at test time the images are used as they are (``deterministic=True`` returns them
unchanged, no key needed; mixup and CutMix still return one-hot float labels so that both paths
have the same output types).  Labels are either int class ids (with ``num_classes``) or one-hot /
soft labels of shape ``(N, C)``.  One ``λ`` and one permutation per call (per batch), as in the
papers' code; cutout draws one centre per image.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from gradchain.regularizers import _checks

__all__ = ["cutout", "mixup", "cutmix"]


def _log_gamma_pair(key: jax.Array, alpha: Any) -> jax.Array:
    """The logs of two independent ``Gamma(alpha, 1)`` draws (float32, shape ``(2,)``).

    Marsaglia & Tsang, "A simple method for generating gamma variables", ACM TOMS 2000: for
    ``a >= 1``, ``d = a - 1/3``, ``c = 1/√(9d)``, ``x ~ N(0, 1)``, ``v = (1 + c x)³``; accept ``d v``
    when ``log U < x²/2 + d - d v + d log v`` (over 95 % of draws are accepted).  For ``a < 1``,
    ``G(a) = G(a + 1) · U^(1/a)``, done in log space so that tiny draws (``α = 0.1``) do not
    underflow.  A two-lane ``while_loop`` drawing from ``fold_in(key, i)``: several times quicker to
    compile than ``jax.random.beta``, which matters in every jitted training step that uses mixup.
    """
    alpha = jnp.asarray(alpha, jnp.float32)
    boost = alpha < 1
    a = jnp.where(boost, alpha + 1, alpha)
    d = a - 1.0 / 3.0
    c = jax.lax.rsqrt(9.0 * d)
    tiny = jnp.finfo(jnp.float32).tiny

    def body(state):
        i, done, value = state
        u = jax.random.uniform(jax.random.fold_in(key, i), (3, 2), jnp.float32, minval=tiny)
        x = jnp.sqrt(-2.0 * jnp.log(u[0])) * jnp.cos(2.0 * jnp.pi * u[1])  # N(0, 1), Box-Muller
        v = (1.0 + c * x) ** 3
        log_v = jnp.log(jnp.where(v > 0, v, 1.0))
        accept = (v > 0) & (jnp.log(u[2]) < 0.5 * x * x + d - d * v + d * log_v)
        return i + 1, done | accept, jnp.where(done, value, jnp.log(d) + log_v)

    init = (jnp.ones((), jnp.uint32), jnp.zeros((2,), bool), jnp.zeros((2,), jnp.float32))
    _, _, log_g = jax.lax.while_loop(lambda s: ~jnp.all(s[1]), body, init)
    u = jax.random.uniform(jax.random.fold_in(key, 0), (2,), jnp.float32, minval=tiny)
    return log_g + jnp.where(boost, jnp.log(u) / alpha, 0.0)


def _symmetric_beta(key: jax.Array, alpha: Any) -> jax.Array:
    """``λ ~ Beta(α, α)`` as ``G₁ / (G₁ + G₂)`` with ``G_i ~ Gamma(α)``: ``sigmoid(log G₁ - log G₂)``."""
    log_g = jax.lax.stop_gradient(_log_gamma_pair(key, alpha))
    return jax.nn.sigmoid(log_g[0] - log_g[1])


def _window(center: jax.Array, size: int, n: int) -> jax.Array:
    """Boolean (n,) mask of ``[center - size // 2, center - size // 2 + size)`` clipped to [0, n)."""
    start = center - size // 2
    i = jnp.arange(n)
    return (i >= start) & (i < start + size)


def cutout(
    key: jax.Array | None,
    images: jax.Array,
    size: int | tuple[int, int],
    *,
    deterministic: bool = False,
    fill: float = 0.0,
) -> jax.Array:
    """Cutout (DeVries & Taylor 2017): set a ``size × size`` square of each image to ``fill`` (0).

    The centre ``(c_y, c_x)`` is uniform over all pixels, so the square may hang over the border
    and be clipped (the paper's choice: some images keep more than others); rows
    ``[c_y - size // 2, c_y - size // 2 + size)``, likewise columns.  Every channel is cut.

    Args:
      key: PRNG key (one centre per image); ``None`` when ``deterministic``.
      images: ``(N, H, W, C)``, or one image ``(H, W, C)``.
      size: side of the square (or ``(height, width)``), at most the image size.
      deterministic: test path, the images unchanged.
      fill: the value written into the square.
    """
    fn = "cutout"
    images = jnp.asarray(images)
    _checks.rank(fn, "images", images, (3, 4), "NHWC images, or one HWC image")
    deterministic = _checks.flag(fn, "deterministic", deterministic)
    sh, sw = _checks.int_pair(fn, "size", size)
    h, w = images.shape[-3], images.shape[-2]
    if sh > h or sw > w:
        raise ValueError(f"{fn}: size={size!r} is larger than the images ({h}×{w} pixels)")
    if deterministic:
        return images
    return _cutout(_checks.key(fn, key), images, sh, sw, fill)


@partial(jax.jit, static_argnums=(2, 3))
def _cutout(key, images, sh, sw, fill):
    h, w = images.shape[-3], images.shape[-2]
    batch = images.shape[:-3]
    ky, kx = jax.random.split(key)
    cy = jax.random.randint(ky, batch, 0, h)
    cx = jax.random.randint(kx, batch, 0, w)

    def one(image, cy, cx):
        hole = _window(cy, sh, h)[:, None] & _window(cx, sw, w)[None, :]
        return jnp.where(hole[:, :, None], jnp.asarray(fill, image.dtype), image)

    if images.ndim == 3:
        return one(images, cy, cx)
    return jax.vmap(one)(images, cy, cx)


def _labels_as_probs(fn: str, images: jax.Array, labels: Any, num_classes: int | None, dtype) -> jax.Array:
    labels = jnp.asarray(labels)
    if images.ndim == 0:
        raise ValueError(f"{fn}: images must have a batch axis 0, got a scalar")
    if labels.ndim == 0 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{fn}: images and labels must have the same batch size (axis 0), got images of "
            f"shape {tuple(images.shape)} and labels of shape {tuple(labels.shape)}"
        )
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if labels.ndim != 1:
            raise ValueError(
                f"{fn}: int labels must be class ids of shape (N,), got shape {tuple(labels.shape)}"
            )
        if num_classes is None:
            raise ValueError(f"{fn}: int labels (class ids) need num_classes=, got num_classes=None")
        _checks.positive_int(fn, "num_classes", num_classes)
        return jax.nn.one_hot(labels, num_classes, dtype=dtype)
    if not jnp.issubdtype(labels.dtype, jnp.floating) or labels.ndim != 2:
        raise ValueError(
            f"{fn}: labels must be int class ids (N,) or float one-hot/soft labels (N, C), got "
            f"dtype {labels.dtype} and shape {tuple(labels.shape)}"
        )
    if num_classes is not None and labels.shape[1] != num_classes:
        raise ValueError(
            f"{fn}: labels have {labels.shape[1]} classes but num_classes={num_classes!r}"
        )
    return labels


def _label_dtype(images: jax.Array):
    return images.dtype if jnp.issubdtype(images.dtype, jnp.floating) else jnp.result_type(float)


def mixup(
    key: jax.Array | None,
    images: jax.Array,
    labels: jax.Array,
    alpha: float | jax.Array,
    *,
    num_classes: int | None = None,
    deterministic: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """mixup (Zhang et al. 2018): train on convex combinations of pairs of examples.

    ``λ ~ Beta(α, α)``, ``π`` a random permutation of the batch;
    ``x̃ = λ x + (1 - λ) x[π]``, ``ỹ = λ y + (1 - λ) y[π]`` with the *same* ``λ``, so each row of
    ``ỹ`` still sums to one.  Small ``α`` (0.1–0.4 in the paper) keeps most mixes close to one
    of the two examples; ``α = 1`` draws ``λ`` uniformly.

    Args:
      key: PRNG key; ``None`` when ``deterministic``.
      images: floating array ``(N, ...)`` (images or feature vectors).
      labels: int class ids ``(N,)`` with ``num_classes``, or one-hot/soft labels ``(N, C)``.
      alpha: ``α > 0``; may be traced (``vmap`` over ``α``).
      deterministic: test path: images unchanged, labels as one-hot floats.

    Returns ``(mixed_images, mixed_labels)``, labels as floats ``(N, C)``.  Use a loss that
    takes soft labels (``-Σ ỹ log softmax(logits)``).
    """
    fn = "mixup"
    images = _checks.floating(fn, "images", images)
    _checks.number(fn, "alpha", alpha, low=0.0, low_open=True)
    deterministic = _checks.flag(fn, "deterministic", deterministic)
    probs = _labels_as_probs(fn, images, labels, num_classes, _label_dtype(images))
    if deterministic:
        return images, probs
    return _mixup(_checks.key(fn, key), images, probs, alpha)


@jax.jit
def _mixup(key, images, probs, alpha):
    k_lam, k_perm = jax.random.split(key)
    lam = _symmetric_beta(k_lam, alpha)
    perm = jax.random.permutation(k_perm, images.shape[0])
    lam_x = lam.astype(images.dtype)
    lam_y = lam.astype(probs.dtype)
    mixed_images = lam_x * images + (1 - lam_x) * images[perm]
    mixed_labels = lam_y * probs + (1 - lam_y) * probs[perm]
    return mixed_images, mixed_labels


def cutmix(
    key: jax.Array | None,
    images: jax.Array,
    labels: jax.Array,
    alpha: float | jax.Array = 1.0,
    *,
    num_classes: int | None = None,
    deterministic: bool = False,
) -> tuple[jax.Array, jax.Array]:
    """CutMix (Yun et al. 2019): paste a random box from a permuted batch, mix labels by area.

    ``λ ~ Beta(α, α)``; a box of ``⌊H √(1-λ)⌋ × ⌊W √(1-λ)⌋`` pixels at a uniformly random centre
    (clipped at the borders, rows ``[c_y - h_box // 2, c_y - h_box // 2 + h_box)``) is copied
    from ``x[π]`` into ``x``.  The label weight is the area actually kept,
    ``λ' = 1 - |box ∩ image| / (H W)``: ``ỹ = λ' y + (1 - λ') y[π]``.

    Args:
      key: PRNG key; ``None`` when ``deterministic``.
      images: ``(N, H, W, C)`` or ``(N, H, W)``.
      labels: int class ids ``(N,)`` with ``num_classes``, or one-hot/soft labels ``(N, C)``.
      alpha: ``α > 0`` (1 in the paper: ``λ`` uniform).
      deterministic: test path: images unchanged, labels as one-hot floats.

    One box and one ``λ`` per call, as in the paper's code.  Returns ``(images, labels)``.
    """
    fn = "cutmix"
    images = _checks.floating(fn, "images", images)
    _checks.rank(fn, "images", images, (3, 4), "NHWC or NHW images")
    _checks.number(fn, "alpha", alpha, low=0.0, low_open=True)
    deterministic = _checks.flag(fn, "deterministic", deterministic)
    probs = _labels_as_probs(fn, images, labels, num_classes, _label_dtype(images))
    if deterministic:
        return images, probs
    return _cutmix(_checks.key(fn, key), images, probs, alpha)


@jax.jit
def _cutmix(key, images, probs, alpha):
    k_lam, k_perm, k_y, k_x = jax.random.split(key, 4)
    h, w = images.shape[1], images.shape[2]
    lam = _symmetric_beta(k_lam, alpha)
    cut = jnp.sqrt(1.0 - lam)
    box_h = jnp.floor(h * cut).astype(jnp.int32)
    box_w = jnp.floor(w * cut).astype(jnp.int32)
    cy = jax.random.randint(k_y, (), 0, h)
    cx = jax.random.randint(k_x, (), 0, w)
    rows = jnp.arange(h)
    cols = jnp.arange(w)
    top, left = cy - box_h // 2, cx - box_w // 2
    in_rows = (rows >= top) & (rows < top + box_h)
    in_cols = (cols >= left) & (cols < left + box_w)
    box = in_rows[:, None] & in_cols[None, :]  # (H, W)
    area = jnp.sum(in_rows).astype(jnp.float32) * jnp.sum(in_cols).astype(jnp.float32)
    perm = jax.random.permutation(k_perm, images.shape[0])
    box_b = box.reshape((1, h, w) + (1,) * (images.ndim - 3))
    mixed_images = jnp.where(box_b, images[perm], images)
    kept = (1.0 - area / (h * w)).astype(probs.dtype)
    mixed_labels = kept * probs + (1 - kept) * probs[perm]
    return mixed_images, mixed_labels
