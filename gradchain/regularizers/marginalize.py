"""Test time for the lecture's common pattern: average out the training noise.

Training adds noise ``z`` to the network, ``y = f(x, z)``; the prediction we want is
``f(x) = E_z[f(x, z)]``.  Many regularizers have a cheap closed-form or approximate test path
(inverted dropout: the plain network).  When they do not (fractional max pooling's random
regions, Monte-Carlo dropout, test-time augmentation), estimate the expectation by Monte Carlo:

    f(x) ≈ (1/S) Σ_s f(x, z_s),     z_s from the keys split(key, S)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradchain.regularizers import _checks

__all__ = ["marginalize"]


def marginalize(
    fn: Callable[[jax.Array, Any], Any],
    key: jax.Array,
    x: Any,
    num_samples: int,
    *,
    batch_size: int | None = None,
) -> Any:
    """``(1/S) Σ_s fn(key_s, x)`` over ``S = num_samples`` keys from ``jax.random.split(key, S)``.

    ``fn(key, x)`` is any stochastic function (a model in training mode, a regularizer) and may
    return a pytree; the mean is taken leaf by leaf (in at least float32).

    ``batch_size=None`` evaluates all samples at once with ``jax.vmap`` (fastest, memory
    ``S ×`` one output and its intermediates).  ``batch_size=B`` evaluates ``B`` at a time
    (``vmap``) inside a ``jax.lax.scan`` that keeps only a running sum, so memory is that of
    ``B`` evaluations; ``batch_size=1`` is a plain loop.  The keys, hence the result up to
    rounding, do not depend on ``batch_size``.  Works under ``jit``.

    Args:
      fn: ``fn(key, x) -> pytree``.
      key: a PRNG key.
      x: the input, passed to every sample.
      num_samples: ``S``, a positive int.
      batch_size: ``None`` (all at once) or a positive int dividing the work.

    Returns:
      The mean of the ``S`` outputs, leaf by leaf.
    """
    name = "marginalize"
    if not callable(fn):
        raise TypeError(f"{name}: fn must be a callable fn(key, x), got {fn!r}")
    num_samples = _checks.positive_int(name, "num_samples", num_samples)
    key = _checks.key(name, key)
    keys = jax.random.split(key, num_samples)

    def run(ks):
        out = jax.vmap(lambda k: fn(k, x))(ks)
        return jax.tree.map(lambda o: jnp.sum(o.astype(jnp.promote_types(o.dtype, jnp.float32)), 0), out)

    if batch_size is None or batch_size >= num_samples:
        total = run(keys)
    else:
        batch_size = _checks.positive_int(name, "batch_size", batch_size)
        full, rest = divmod(num_samples, batch_size)
        chunks = keys[: full * batch_size].reshape((full, batch_size) + keys.shape[1:])
        shapes = jax.eval_shape(run, chunks[0])
        zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        total, _ = jax.lax.scan(
            lambda acc, ks: (jax.tree.map(jnp.add, acc, run(ks)), None), zero, chunks
        )
        if rest:
            total = jax.tree.map(jnp.add, total, run(keys[full * batch_size :]))
    return jax.tree.map(lambda t: t / num_samples, total)
