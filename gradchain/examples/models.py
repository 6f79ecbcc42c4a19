"""A minimal multilayer perceptron and the softmax loss, in plain JAX (for demos and tests)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def mlp_init(key: jax.Array, sizes: Sequence[int], output_scale: float = 1.0) -> list[dict[str, jax.Array]]:
    """He-initialised layers ``sizes[0] -> ... -> sizes[-1]``: weights N(0, 2/fan_in), zero biases.

    ``output_scale`` multiplies the last layer's weights; a small value (0.01) starts the softmax
    near uniform, so the initial loss is ≈ log(C).
    """
    if len(sizes) < 2 or any(not isinstance(s, int) or s <= 0 for s in sizes):
        raise ValueError(f"sizes must be at least two positive ints, got {sizes!r}")
    keys = jax.random.split(key, len(sizes) - 1)
    layers = [
        {"w": jax.random.normal(k, (m, n)) * jnp.sqrt(2.0 / m), "b": jnp.zeros(n)}
        for k, m, n in zip(keys, sizes[:-1], sizes[1:])
    ]
    layers[-1]["w"] = layers[-1]["w"] * output_scale
    return layers


def mlp_apply(params: list[dict[str, jax.Array]], x: jax.Array) -> jax.Array:
    """Logits of the MLP: ReLU between layers, none after the last."""
    for layer in params[:-1]:
        x = jax.nn.relu(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy; log(C) for uniform logits over C classes."""
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean(jnp.argmax(logits, -1) == labels)


# --- models of the main job, in the training protocol (gradchain.Model) ------------------------


def mlp_model(sizes: Sequence[int], output_scale: float = 0.01):
    """The MLP as a :class:`gradchain.Model` with inverted dropout after each hidden layer, its
    rate read from ``config["dropout"]`` (0 when the config has none)."""
    from gradchain.protocol import from_function
    from gradchain.regularizers import dropout

    def apply(params, x, *, key, train, config):
        rate = config.get("dropout", 0.0)
        keys = jax.random.split(key, len(params)) if key is not None else [None] * len(params)
        for layer, k in zip(params[:-1], keys):
            x = dropout(k, jax.nn.relu(x @ layer["w"] + layer["b"]), rate, deterministic=not train)
        return x @ params[-1]["w"] + params[-1]["b"]

    return from_function(lambda key: mlp_init(key, sizes, output_scale), apply)


def _conv(x: jax.Array, w: jax.Array) -> jax.Array:
    return jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def digits_cnn(channels: tuple[int, int] = (16, 32), hidden: int = 64, num_classes: int = 10):
    """A small CNN for 8×8×1 images: two 3×3 convolutions with batch norm and ReLU, 2×2 max
    pooling, dropout (rate ``config["dropout"]``), a hidden dense layer, dropout, the logits."""
    from gradchain.protocol import from_function
    from gradchain.regularizers import batch_norm, batch_norm_init, dropout

    c1, c2 = channels

    def init(key):
        k = jax.random.split(key, 4)
        he = lambda key, shape, fan_in: jax.random.normal(key, shape) * jnp.sqrt(2.0 / fan_in)
        params = {
            "conv1": he(k[0], (3, 3, 1, c1), 9), "bn1": {"scale": jnp.ones(c1), "bias": jnp.zeros(c1)},
            "conv2": he(k[1], (3, 3, c1, c2), 9 * c1), "bn2": {"scale": jnp.ones(c2), "bias": jnp.zeros(c2)},
            "fc": {"w": he(k[2], (16 * c2, hidden), 16 * c2), "b": jnp.zeros(hidden)},
            "out": {"w": 0.01 * he(k[3], (hidden, num_classes), hidden), "b": jnp.zeros(num_classes)},
        }
        return params, {"bn1": batch_norm_init(c1), "bn2": batch_norm_init(c2)}

    def apply(params, state, x, *, key, train, config):
        rate = config.get("dropout", 0.0)
        k1, k2 = jax.random.split(key) if key is not None else (None, None)
        h, bn1 = batch_norm(_conv(x, params["conv1"]), state["bn1"], **params["bn1"], training=train)
        h, bn2 = batch_norm(_conv(jax.nn.relu(h), params["conv2"]), state["bn2"], **params["bn2"], training=train)
        h = jax.lax.reduce_window(jax.nn.relu(h), -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")
        h = dropout(k1, h.reshape(h.shape[0], -1), rate, deterministic=not train)
        h = dropout(k2, jax.nn.relu(h @ params["fc"]["w"] + params["fc"]["b"]), rate, deterministic=not train)
        return h @ params["out"]["w"] + params["out"]["b"], {"bn1": bn1, "bn2": bn2}

    return from_function(init, apply, stateful=True)


def digits_augment(key: jax.Array, images: jax.Array, labels: jax.Array, config) -> tuple[jax.Array, jax.Array]:
    """Augmentation for digits (no flips: they change digits): a random crop after 1 pixel of
    padding and a small affine jitter (±10°, ±10% scale), each image augmented with probability
    ``config["augment"]`` (the augmentation strength, searched like any hyperparameter)."""
    from gradchain import augment

    def one(k, image):
        crop_key, affine_key, coin = jax.random.split(k, 3)
        jittered = augment.random_affine(affine_key, augment.random_crop(crop_key, image, 8, padding=1),
                                         rotation=10.0, scale=(0.9, 1.1))
        return jnp.where(jax.random.uniform(coin) < config.get("augment", 0.0), jittered, image)

    keys = jax.random.split(key, images.shape[0])
    return jax.vmap(one)(keys, images), labels
