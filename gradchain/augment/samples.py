"""Real photos for tests and pictures, with no download: scikit-learn's bundled sample images."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["sample_images"]


def sample_images(short_side: int | None = None) -> jax.Array:
    """scikit-learn's two bundled photos (``china.jpg``, ``flower.jpg``) as a uint8 NHWC batch.

    Full size ``(2, 427, 640, 3)``; with ``short_side`` both are resized (antialiased linear)
    so that the short side is ``short_side`` pixels, e.g. ``sample_images(64)`` is
    ``(2, 64, 96, 3)``.  Needs scikit-learn and pillow (``pip install 'gradchain[samples]'``).
    """
    from gradchain._optional import missing

    message = missing("sklearn", "PIL", extra="samples", purpose="sample_images")
    if message is not None:
        raise ModuleNotFoundError(message)
    from sklearn.datasets import load_sample_images

    images = jnp.asarray(np.stack(load_sample_images().images), jnp.uint8)
    if short_side is None:
        return images
    from gradchain.augment.geometric import resize

    if isinstance(short_side, bool) or not isinstance(short_side, int) or short_side < 1:
        raise ValueError(f"sample_images: short_side must be an int >= 1 or None, got {short_side!r}")
    return jnp.stack([resize(image, short_side) for image in images])
