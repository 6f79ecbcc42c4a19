"""The loss kinds K-FAC knows: their value, their Fisher, samples from their predictive model.

A loss is a sum over examples ``n`` of ``ℓ(z_n, y_n)`` where ``z_n`` are the network's outputs
(logits, or predictions for squared error).  The Fisher of the model's predictive distribution
with respect to ``z`` (Martens & Grosse 2015, §2–§5; for these losses equal to the generalised
Gauss-Newton matrix, Martens 2014) is, per example,

* softmax cross-entropy (categorical over the last axis): ``H = diag(p) − p pᵀ``, ``p = softmax(z)``;
* sigmoid cross-entropy (independent Bernoulli per output): ``H = diag(p (1 − p))``, ``p = σ(z)``;
* squared error ``½‖z − y‖²`` (a Gaussian of unit variance): ``H = I``.

K-FAC needs, for each example, output-side vectors ``g`` with ``E[g gᵀ] = H`` (or a sum of ``g gᵀ``
over columns equal to ``H``):

* ``exact_columns``: the columns of a square root ``B`` with ``B Bᵀ = H`` (exact Fisher);
* ``sample``: ``∇_z ℓ(z, ŷ)`` with ``ŷ`` drawn from the model (sampled Fisher, M&G §5);
* ``empirical``: ``∇_z ℓ(z, y)`` at the data's own targets (the empirical Fisher).

``hvp`` applies ``H`` to a tangent (used by the exact quadratic model of M&G §6.4 and §7).
Nothing here is divided by the batch size; a weight ``w`` multiplies the loss, so ``H`` scales
by ``w`` and every ``g`` by ``√w``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["LOSS_KINDS", "check_loss_kind"]

LOSS_KINDS = ("softmax_cross_entropy", "sigmoid_cross_entropy", "squared_error")


def check_loss_kind(kind) -> str:
    """Return ``kind`` or raise a ``ValueError`` that lists the known kinds."""
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss kind {kind!r}: K-FAC knows {', '.join(map(repr, LOSS_KINDS))}")
    return kind


def _flat(z):
    return z.reshape(z.shape[0], -1)


def per_example_loss(kind: str, z: jax.Array, y: jax.Array) -> jax.Array:
    """``ℓ(z_n, y_n)`` for every example (summed over the non-batch axes), shape ``(N,)``."""
    if kind == "softmax_cross_entropy":
        logp = jax.nn.log_softmax(z, axis=-1)
        if y.ndim == z.ndim:  # probability targets
            per = -jnp.sum(y * logp, axis=-1)
        else:  # integer labels
            per = -jnp.take_along_axis(logp, y[..., None].astype(jnp.int32), axis=-1)[..., 0]
        return per.reshape(per.shape[0], -1).sum(-1)
    if kind == "sigmoid_cross_entropy":
        per = jnp.maximum(z, 0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))
        return _flat(per).sum(-1)
    if kind == "squared_error":
        return 0.5 * _flat((z - y) ** 2).sum(-1)
    raise AssertionError(kind)


def gradient(kind: str, z: jax.Array, y: jax.Array) -> jax.Array:
    """``∇_z ℓ(z_n, y_n)`` per example (not divided by the batch size); shape of ``z``."""
    if kind == "softmax_cross_entropy":
        p = jax.nn.softmax(z, axis=-1)
        onehot = y if y.ndim == z.ndim else jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype)
        return p - onehot
    if kind == "sigmoid_cross_entropy":
        return jax.nn.sigmoid(z) - y
    if kind == "squared_error":
        return z - y
    raise AssertionError(kind)


def sample(kind: str, key: jax.Array, z: jax.Array) -> jax.Array:
    """``∇_z ℓ(z, ŷ)`` with ``ŷ`` drawn from the model's predictive distribution at ``z``."""
    if kind == "softmax_cross_entropy":
        y = jax.random.categorical(key, z, axis=-1)
        return gradient(kind, z, y)
    if kind == "sigmoid_cross_entropy":
        p = jax.nn.sigmoid(z)
        y = jax.random.bernoulli(key, p).astype(z.dtype)
        return p - y
    if kind == "squared_error":
        return -jax.random.normal(key, z.shape, z.dtype)  # z − (z + ε)
    raise AssertionError(kind)


def exact_columns(kind: str, z: jax.Array) -> jax.Array:
    """The columns of ``B`` with ``B Bᵀ = H`` per example: shape ``(K, *z.shape)``, ``K`` outputs."""
    n, k = z.shape[0], int(jnp.size(z) // z.shape[0])
    if kind == "softmax_cross_entropy":
        if z.ndim != 2:
            raise ValueError(f"the exact Fisher of softmax_cross_entropy needs logits of shape (N, C), got {z.shape}")
        p = jax.nn.softmax(z, axis=-1)
        sq = jnp.sqrt(p)
        eye = jnp.eye(k, dtype=z.dtype)
        # B = diag(√p) − p √pᵀ; column j: √p_j (e_j − p)
        return jnp.transpose(sq[:, None, :] * (eye[None] - p[:, :, None]), (2, 0, 1))
    if kind == "sigmoid_cross_entropy":
        d = _flat(jnp.sqrt(jax.nn.sigmoid(z) * jax.nn.sigmoid(-z)))
    elif kind == "squared_error":
        d = jnp.ones((n, k), z.dtype)
    else:
        raise AssertionError(kind)
    eye = jnp.eye(k, dtype=z.dtype)
    return (eye[:, None, :] * d[None]).reshape((k,) + z.shape)


def hvp(kind: str, z: jax.Array, u: jax.Array) -> jax.Array:
    """``H u`` per example, ``H`` the Hessian of ``ℓ`` with respect to ``z`` (= the Fisher here)."""
    if kind == "softmax_cross_entropy":
        p = jax.nn.softmax(z, axis=-1)
        return p * u - p * jnp.sum(p * u, axis=-1, keepdims=True)
    if kind == "sigmoid_cross_entropy":
        return jax.nn.sigmoid(z) * jax.nn.sigmoid(-z) * u
    if kind == "squared_error":
        return u
    raise AssertionError(kind)


class LossRecord(NamedTuple):
    """One registered loss of a forward pass: its kind, outputs ``z``, targets and weight."""

    kind: str
    outputs: jax.Array
    targets: jax.Array
    weight: float
