"""Test-time augmentation: the ResNet multi-scale, ten-crop protocol.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, §3.4 (after Krizhevsky et
al. 2012 and Simonyan & Zisserman 2015): resize the image so that its short side is each of
several scales ``{224, 256, 384, 480, 640}``, take ten ``224 × 224`` crops at each (the four
corners and the centre, and their horizontal flips), run the model on all of them and average the
class probabilities — the lecture's "testing: average a fixed set of crops", the deterministic
counterpart of random crops and scales in training.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import jax
import jax.numpy as jnp

from gradchain.augment import _checks, geometric as _geo

__all__ = ["RESNET_SCALES", "ten_crops", "tta_predict"]

RESNET_SCALES = (224, 256, 384, 480, 640)


def _corners(image: jax.Array, h: int, w: int) -> list[jax.Array]:
    height, width = image.shape[0], image.shape[1]
    top, left = (height - h) // 2, (width - w) // 2
    return [
        image[:h, :w],  # top left
        image[:h, width - w :],  # top right
        image[height - h :, :w],  # bottom left
        image[height - h :, width - w :],  # bottom right
        image[top : top + h, left : left + w],  # centre
    ]


def ten_crops(image: jax.Array, size: int | tuple[int, int], *, flips: bool = True) -> jax.Array:
    """The ten crops of the protocol, stacked ``(10, h, w, C)``.

    Order: top-left, top-right, bottom-left, bottom-right, centre (offset
    ``((H - h) // 2, (W - w) // 2)``), then the horizontal flips of those five in the same order.
    ``flips=False`` gives only the first five ``(5, h, w, C)``.  Pixels are copied exactly.
    """
    fn = "ten_crops"
    image = _checks.image(fn, image)
    h, w = _checks.size_pair(fn, "size", size)
    _checks.fits(fn, "size", (h, w), size, image)
    crops = jnp.stack(_corners(image, h, w))
    if flips:
        crops = jnp.concatenate([crops, crops[:, :, ::-1]])
    return crops


@partial(jax.jit, static_argnums=(1, 2, 3))
def _crops_at_scale(images, scale: int, crop: tuple[int, int], flips: bool):
    def one(image):
        return ten_crops(_geo.resize(image, scale), crop, flips=flips)

    crops = jax.vmap(one)(images)  # (N, k, h, w, C)
    return crops.reshape((-1,) + crops.shape[2:])


def tta_predict(
    model_fn: Callable[[jax.Array], jax.Array],
    images: jax.Array,
    scales: Sequence[int] = RESNET_SCALES,
    crop_size: int | tuple[int, int] = 224,
    *,
    flips: bool = True,
) -> jax.Array:
    """Average class probabilities over ``len(scales) × 10`` views of each image.

    For each scale ``s``: resize every image so its short side is ``s`` (antialiased linear),
    take :func:`ten_crops` of ``crop_size``, call ``model_fn`` on the ``(10·N, h, w, C)`` batch
    of crops (``model_fn`` maps an NHWC batch to logits ``(batch, classes)``; the crops keep the
    images' dtype), and take ``softmax``.  Returns the mean probability ``(N, classes)`` over
    all crops of all scales: ``p̄ = (1 / 10S) Σ_s Σ_k softmax(model(crop_{s,k}))``.

    Each scale is one compiled program for the crops (cached by shape); ``model_fn`` is called
    once per scale, so jit it yourself.
    """
    fn = "tta_predict"
    if not callable(model_fn):
        raise TypeError(f"{fn}: model_fn must map an NHWC batch to logits, got {model_fn!r}")
    images = _checks.image(fn, images, name="images", rank=4)
    h, w = _checks.size_pair(fn, "crop_size", crop_size)
    if isinstance(scales, (int, float)) or not isinstance(scales, Sequence) or not scales:
        raise ValueError(f"{fn}: scales must be a non-empty sequence of short-side sizes, got {scales!r}")
    for i, s in enumerate(scales):
        _checks.positive_int(fn, f"scales[{i}]", s)
        new_h, new_w = _geo._short_side_shape(images.shape[1], images.shape[2], s)
        if h > new_h or w > new_w:
            raise ValueError(
                f"{fn}: crop_size={crop_size!r} is larger than the images resized to short side "
                f"{s} ({new_h}×{new_w}); every scale in scales={tuple(scales)!r} must be >= the crop"
            )
    n = images.shape[0]
    views = 10 if flips else 5
    total = None
    for s in scales:
        crops = _crops_at_scale(images, int(s), (h, w), bool(flips))
        logits = jnp.asarray(model_fn(crops))
        if logits.ndim != 2 or logits.shape[0] != n * views:
            raise ValueError(
                f"{fn}: model_fn must return logits of shape (batch, classes) = ({n * views}, K) "
                f"for a batch of {n * views} crops, got shape {tuple(logits.shape)}"
            )
        probs = jax.nn.softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)), axis=-1)
        probs = probs.reshape(n, views, -1).mean(axis=1)
        total = probs if total is None else total + probs
    assert total is not None  # scales is non-empty (checked above)
    return total / len(scales)
