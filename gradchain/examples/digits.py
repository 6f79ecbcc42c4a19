"""Small real data that ships with a package: no downloads.

``digits`` is the UCI optical digits test set (1,797 images of 8×8 pixels, 10 classes), the
copy scikit-learn bundles; gradchain ships the same file (``gradchain/_data/digits.csv.gz``,
attribution in ``gradchain/_data/README.md``), so it needs no scikit-learn.
"""

from __future__ import annotations

import gzip
import importlib.resources

import jax
import jax.numpy as jnp
import numpy as np

from gradchain.protocol import Split


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The digits as ``(x, y)``: float64 pixel counts ``(1797, 64)`` and int labels ``(1797,)``,
    exactly ``sklearn.datasets.load_digits(return_X_y=True)``."""
    resource = importlib.resources.files("gradchain") / "_data" / "digits.csv.gz"
    with resource.open("rb") as raw, gzip.open(raw, "rt") as text:
        table = np.loadtxt(text, delimiter=",")
    return table[:, :-1], table[:, -1].astype(int)


def _split_order(n: int, key: jax.Array | None, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation row indices, drawn from ``key`` (default ``PRNGKey(0)``)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    key = jax.random.PRNGKey(0) if key is None else key
    order = np.asarray(jax.random.permutation(key, n))
    n_val = round(val_fraction * n)
    return order[n_val:], order[:n_val]


def digits(key: jax.Array | None = None, val_fraction: float = 0.2) -> Split:
    """scikit-learn's digits as float32 features standardised on the training split.

    The split is drawn from ``key`` (default ``PRNGKey(0)``), so it is reproducible and free of
    Python-side randomness.  Features: 64 pixel intensities; labels: int32 in 0..9.
    """
    x, y = load_digits_arrays()
    train, val = _split_order(len(x), key, val_fraction)
    mean, std = x[train].mean(0), x[train].std(0) + 1e-6
    standardise = lambda a: jnp.asarray((a - mean) / std, jnp.float32)
    return Split(
        standardise(x[train]), jnp.asarray(y[train], jnp.int32), standardise(x[val]), jnp.asarray(y[val], jnp.int32)
    )


def digits_images(key: jax.Array | None = None, val_fraction: float = 0.2) -> Split:
    """The digits as 8×8×1 images in [0, 1] (pixel / 16), for convolutional models and augmentation.

    Same split as :func:`digits` for the same ``key``; labels int32 in 0..9.
    """
    x, y = load_digits_arrays()
    train, val = _split_order(len(x), key, val_fraction)
    images = jnp.asarray(x.reshape(-1, 8, 8, 1) / 16.0, jnp.float32)
    labels = jnp.asarray(y, jnp.int32)
    return Split(images[train], labels[train], images[val], labels[val])
