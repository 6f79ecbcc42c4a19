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
