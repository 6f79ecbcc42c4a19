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

**Targets outside a loss's domain** (a label outside ``[0, C)``, a probability or a Bernoulli
target outside ``[0, 1]``, probability rows that do not sum to 1): :func:`check_targets` raises,
naming the first bad row, when the targets are concrete (a NumPy or JAX array, also inside
``kfac_curvature`` and an eager ``value_grad_and_statistics``).  Under ``jit``/``vmap`` the values
are unknown when the program is built, so the examples out of the domain are *poisoned* instead:
their outputs are multiplied by NaN before the loss (:func:`_poisoned`), which makes the loss
**and** its gradient NaN (``gc.apply_if_finite`` skips such a step).  Without it a label ``7`` of
3 classes gave a NaN loss with finite gradients and ``-1`` silently meant the last class.  Valid
examples are multiplied by exactly 1: their numbers are unchanged.  Row sums are checked only
when concrete (a tolerance under a trace would be a guess).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

__all__ = ["LOSS_KINDS", "check_loss_kind", "check_targets"]

LOSS_KINDS = ("softmax_cross_entropy", "sigmoid_cross_entropy", "squared_error")


def check_loss_kind(kind) -> str:
    """Return ``kind`` or raise a ``ValueError`` that lists the known kinds."""
    if kind not in LOSS_KINDS:
        raise ValueError(f"unknown loss kind {kind!r}: K-FAC knows {', '.join(map(repr, LOSS_KINDS))}")
    return kind


def _flat(z):
    return z.reshape(z.shape[0], -1)


def _is_labels(z: jax.Array, y: jax.Array) -> bool:
    """Integer class labels (one axis fewer than the logits) rather than probability targets."""
    return y.ndim == z.ndim - 1


def _in_domain(kind: str, z: jax.Array, y: jax.Array) -> jax.Array:
    """Where ``y`` is a target the loss is defined on, shaped like ``z`` (True for squared error)."""
    if kind == "softmax_cross_entropy" and _is_labels(z, y):
        ok = (y >= 0) & (y < z.shape[-1])
        return jnp.broadcast_to(ok[..., None], z.shape)
    if kind == "squared_error":
        return jnp.ones(z.shape, bool)
    ok = (y >= 0) & (y <= 1)
    if kind == "softmax_cross_entropy":  # a bad entry spoils its whole distribution
        ok = jnp.broadcast_to(jnp.all(ok, axis=-1, keepdims=True), z.shape)
    return ok


def _poisoned(kind: str, z: jax.Array, y: jax.Array) -> jax.Array:
    """``z`` with NaN (not z) wherever the target is outside the loss's domain: the loss and its
    gradient are then NaN there; elsewhere ``z · 1 = z`` exactly.  See the module docstring."""
    if kind == "squared_error":
        return z
    return z * jnp.where(_in_domain(kind, z, y), 1, jnp.nan).astype(z.dtype)


def per_example_loss(kind: str, z: jax.Array, y: jax.Array) -> jax.Array:
    """``ℓ(z_n, y_n)`` for every example (summed over the non-batch axes), shape ``(N,)``."""
    z = _poisoned(kind, z, y)
    if kind == "softmax_cross_entropy":
        logp = jax.nn.log_softmax(z, axis=-1)
        if not _is_labels(z, y):  # probability targets
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
    z = _poisoned(kind, z, y)
    if kind == "softmax_cross_entropy":
        p = jax.nn.softmax(z, axis=-1)
        onehot = y if not _is_labels(z, y) else jax.nn.one_hot(y, z.shape[-1], dtype=z.dtype)
        return p - onehot
    if kind == "sigmoid_cross_entropy":
        return jax.nn.sigmoid(z) - y
    if kind == "squared_error":
        return z - y
    raise AssertionError(kind)


# ---------------------------------------------------------------------------------------------
# Concrete targets: checked where they enter the loss.


def _where(index: tuple) -> str:
    return f"row {index[0]}" if len(index) == 1 else f"index {tuple(int(i) for i in index)}"


def _first_bad(bad: np.ndarray) -> tuple:
    return tuple(int(i) for i in np.argwhere(bad)[0])


def _check_labels(loss: str, z: jax.Array, y: jax.Array) -> None:
    classes = z.shape[-1]
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise TypeError(
            f"{loss}: labels must be integer class indices in [0, {classes}), got dtype {y.dtype} "
            f"(shape {y.shape}); for probability targets pass an array of the logits' shape {z.shape}"
        )
    if isinstance(y, Tracer):
        return
    labels = np.asarray(y)
    bad = (labels < 0) | (labels >= classes)
    if bad.any():
        index = _first_bad(bad)
        raise ValueError(
            f"{loss}: labels must be class indices in [0, {classes}) for logits of shape {z.shape}; "
            f"label {labels[index]} at {_where(index)} is not ({int(bad.sum())} of {labels.size} out of range)"
        )


def _sum_tolerance(dtype, classes: int) -> float:
    """Round-off of a sum of ``classes`` entries in [0, 1] (≤ (C − 1) ulp of the sum, plus the
    rounding of the entries), in the targets' dtype but never below float32's (a teacher's float32
    softmax carried into float64): ``4 · C · max(eps(dtype), eps(float32))``."""
    own = float(jnp.finfo(dtype).eps) if jnp.issubdtype(dtype, jnp.floating) else 0.0
    eps = max(own, float(jnp.finfo(jnp.float32).eps))
    return 4.0 * classes * eps


def _check_unit_interval(loss: str, y: jax.Array, what: str) -> np.ndarray | None:
    if isinstance(y, Tracer):
        return None
    values = np.asarray(y, np.float64)
    bad = ~((values >= 0) & (values <= 1))  # NaN is bad too
    if bad.any():
        index = _first_bad(bad)
        raise ValueError(
            f"{loss}: {what} must be in [0, 1]; {values[index]:g} at {_where(index)} is not "
            f"({int(bad.sum())} of {values.size} entries outside)"
        )
    return values


def check_targets(kind: str, z: jax.Array, y: jax.Array) -> None:
    """Raise for targets outside the loss's domain (dtype always; values when concrete).

    * softmax cross-entropy, integer labels (shape ``z.shape[:-1]``): integers in ``[0, C)``;
    * softmax cross-entropy, probability targets (shape of ``z``): entries in ``[0, 1]``, rows
      summing to 1 within :func:`_sum_tolerance` (the gradient ``p − y`` assumes it);
    * sigmoid cross-entropy: entries in ``[0, 1]``;
    * squared error: anything.
    """
    loss = f"kfac_loss({kind!r})"
    if kind == "squared_error":
        return
    if kind == "softmax_cross_entropy" and _is_labels(z, y):
        _check_labels(loss, z, y)
        return
    what = "probability targets" if kind == "softmax_cross_entropy" else "targets"
    values = _check_unit_interval(loss, y, what)
    if values is None or kind != "softmax_cross_entropy":
        return
    sums = values.sum(axis=-1)
    tol = _sum_tolerance(y.dtype, z.shape[-1])
    bad = np.abs(sums - 1) > tol
    if bad.any():
        index = _first_bad(bad)
        raise ValueError(
            f"{loss}: probability targets must sum to 1 over the last axis (within {tol:.2g}); "
            f"the distribution at {_where(index)} sums to {sums[index]:.6g}; "
            "for integer labels pass an array of shape logits.shape[:-1]"
        )


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
