"""Dropout (Srivastava et al., JMLR 2014) and DropConnect (Wan et al., ICML 2013).

``rate`` is the probability of *dropping* (Flax's and torch's convention); ``p_keep = 1 - rate``
(the lecture's ``p``).  A mask ``m ~ Bernoulli(p_keep)`` is drawn from the key alone.

=========================  ======================  ========================
convention                 training                test (``deterministic``)
=========================  ======================  ========================
inverted (default)         ``m · x / p_keep``      ``x``
vanilla (``inverted=False``) ``m · x``             ``p_keep · x``
=========================  ======================  ========================

Both make the test-time output equal to the training expectation ``E_m[f(x, m)]`` for one
layer; inverted dropout does the scaling at training time so that prediction is the plain
network (the lecture's "more common" form).

Masks are bit-for-bit those of ``flax.nnx.Dropout`` / ``flax.linen.Dropout`` for the same key
and settings (``jax.random.bernoulli(key, 1 - rate, shape)``, shared along ``broadcast_dims``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.regularizers import _checks

__all__ = ["dropout", "dropconnect"]


def _drop(
    fn: str,
    name: str,
    key: jax.Array | None,
    x: Any,
    rate: Any,
    deterministic: bool,
    inverted: bool,
    broadcast_dims: Sequence[int],
) -> jax.Array:
    x = _checks.floating(fn, name, x)
    _checks.number(fn, "rate", rate, low=0.0, high=1.0, high_open=True, meaning="probability of dropping")
    deterministic = _checks.flag(fn, "deterministic", deterministic)
    inverted = _checks.flag(fn, "inverted", inverted)
    dims = _checks.axes(fn, "broadcast_dims", broadcast_dims, x.ndim) if x.ndim else ()
    if x.ndim == 0 and tuple(broadcast_dims):
        raise ValueError(f"{fn}: broadcast_dims must be empty for a scalar {name}, got {broadcast_dims!r}")
    keep = 1.0 - rate if isinstance(rate, (int, float)) else 1.0 - _checks.probability_array(rate)
    if deterministic:
        return x if inverted else x * _checks.as_dtype(keep, x.dtype)
    if hyper.is_zero(rate):  # nothing to draw: no key needed either
        return x
    key = _checks.key(fn, key)
    mask_shape = tuple(1 if i in dims else n for i, n in enumerate(x.shape))
    # A Python rate is exact here (1 - rate in double, then one rounding), as in Flax.
    return _masked(key, x, _checks.probability_array(keep), mask_shape, inverted)


def _masked(key, x, keep, mask_shape, inverted):
    """``m ⊙ x [/ keep]`` with ``m ~ Bernoulli(keep)`` of ``mask_shape``, broadcast to ``x``.

    The same operations as ``flax.nnx.Dropout`` (a select of ``x / keep``, not a multiplication
    by ``1 / keep``), so that the outputs are bit-for-bit equal, eager or under ``jit``.
    """
    mask = jnp.broadcast_to(jax.random.bernoulli(key, keep, mask_shape), x.shape)
    kept = x / keep.astype(x.dtype) if inverted else x
    return jnp.where(mask, kept, jnp.zeros_like(x))


def dropout(
    key: jax.Array | None,
    x: jax.Array,
    rate: float | jax.Array,
    *,
    deterministic: bool = False,
    inverted: bool = True,
    broadcast_dims: Sequence[int] = (),
) -> jax.Array:
    """Randomly set activations to zero with probability ``rate`` (Srivastava et al. 2014).

    Training, inverted (default): ``y = m ⊙ x / (1 - rate)``, ``m ~ Bernoulli(1 - rate)``;
    test: ``y = x``.  Vanilla (``inverted=False``): training ``y = m ⊙ x``; test
    ``y = (1 - rate) · x``.  Either way ``E_m[y_train] = y_test``.

    Args:
      key: a PRNG key, the only source of randomness; may be ``None`` when ``deterministic``.
      x: a floating-point array of any shape.
      rate: probability of dropping, in ``[0, 1)``; a Python number or a (traced) array, so
        ``jax.vmap(lambda r: dropout(key, x, r))(rates)`` runs several rates in one program.
      deterministic: the test-time path (no mask, no key needed).
      inverted: inverted (scale in training) or vanilla (scale at test) dropout.
      broadcast_dims: axes along which one mask value is shared, e.g. ``(1, 2)`` on NHWC
        activations drops whole channels (spatial dropout, Tompson et al. 2015).

    Same key, same mask as ``flax.nnx.Dropout(rate, broadcast_dims=...)(x, rngs=key)``.
    """
    return _drop("dropout", "x", key, x, rate, deterministic, inverted, broadcast_dims)


def dropconnect(
    key: jax.Array | None,
    weights: jax.Array,
    rate: float | jax.Array,
    *,
    deterministic: bool = False,
    inverted: bool = True,
) -> jax.Array:
    """Drop *connections*: zero each weight with probability ``rate`` (Wan et al., ICML 2013).

    Training, inverted (default): ``W' = M ⊙ W / (1 - rate)``, ``M ~ Bernoulli(1 - rate)`` of
    the shape of ``W``; test: ``W' = W`` (use all connections).  Vanilla (``inverted=False``):
    training ``W' = M ⊙ W``, test ``W' = (1 - rate) · W``.  For a linear layer
    ``E_M[x @ W'_train] = x @ W'_test``.  (Wan et al. use a Gaussian moment-matching rule at
    test time; the lecture's, and this function's, test path is the mean-field one above.)

    One call draws one mask for the whole batch; for a mask per example (the paper's setting),
    ``jax.vmap`` the layer over examples with split keys.  Use it as
    ``x @ dropconnect(key, w, rate) + b``.

    Args:
      key: a PRNG key (``None`` allowed when ``deterministic``).
      weights: the weight array.
      rate: the drop probability in [0, 1).
      deterministic: the test-time path (no key needed).
      inverted: scale at training time (default) instead of at test time.

    Returns:
      The weights to use, of the shape and dtype of ``weights``.
    """
    return _drop("dropconnect", "weights", key, weights, rate, deterministic, inverted, ())
