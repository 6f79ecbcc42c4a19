"""Stochastic depth (Huang et al., "Deep Networks with Stochastic Depth", ECCV 2016).

A residual block computes ``x + f(x)``.  In training, the residual branch ``f(x)`` survives with
probability ``p`` (else the block is the identity); at test every block is used.  Wrap the
branch, not the sum::

    x = x + stochastic_depth(key, f(x), survival_prob)

Convention: **inverted** by default, like inverted dropout: training ``b · f(x) / p`` with
``b ~ Bernoulli(p)``, test ``f(x)``.  Huang et al.'s original form (``inverted=False``) trains with
``b · f(x)`` and multiplies the branch by ``p`` at test.  Both make the test output the training
expectation; the inverted one keeps the test-time network the plain ResNet (no per-block
rescaling to remember, the same network for any ``p``) and is what torchvision's
``stochastic_depth`` and timm's ``DropPath`` do.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from gradchain.regularizers import _checks
from gradchain.regularizers.dropout import _masked

__all__ = ["stochastic_depth", "linear_decay_survival"]


def stochastic_depth(
    key: jax.Array | None,
    residual: jax.Array,
    survival_prob: float | jax.Array,
    mode: str = "row",
    *,
    deterministic: bool = False,
    inverted: bool = True,
) -> jax.Array:
    """Keep the residual branch with probability ``survival_prob`` (Huang et al. 2016).

    Training: ``b · residual / p`` (inverted) or ``b · residual`` (``inverted=False``), with
    ``b ~ Bernoulli(p)``; test (``deterministic=True``, no key needed): ``residual`` (inverted)
    or ``p · residual``.

    Args:
      key: a PRNG key, or ``None`` when ``deterministic``.
      residual: the output of the residual branch ``f(x)``.
      survival_prob: ``p`` in ``(0, 1]``; may be traced (e.g. from :func:`linear_decay_survival`
        inside a ``lax.scan`` over blocks).
      mode: ``"row"``: one draw per example (axis 0 of ``residual``), as in torchvision;
        ``"batch"``: one draw for the whole batch, as in Huang et al.'s implementation.  Under
        ``jax.vmap`` over examples, use ``"batch"`` inside the vmapped function (one draw per
        example with split keys).
      deterministic: the test-time path.
      inverted: see the module docstring.
    """
    fn = "stochastic_depth"
    residual = _checks.floating(fn, "residual", residual)
    _checks.number(fn, "survival_prob", survival_prob, low=0.0, high=1.0, low_open=True)
    deterministic = _checks.flag(fn, "deterministic", deterministic)
    inverted = _checks.flag(fn, "inverted", inverted)
    if mode not in ("row", "batch"):
        raise ValueError(f"{fn}: mode must be 'row' or 'batch', got {mode!r}")
    if mode == "row" and residual.ndim == 0:
        raise ValueError(f"{fn}: mode='row' needs a batch axis 0 on residual, got a scalar; use mode='batch'")
    p = _checks.as_dtype(survival_prob, residual.dtype)
    if deterministic:
        return residual if inverted else residual * p
    key = _checks.key(fn, key)
    shape = (residual.shape[0],) + (1,) * (residual.ndim - 1) if mode == "row" else ()
    return _masked(key, residual, _checks.probability_array(survival_prob), shape, inverted)


def linear_decay_survival(num_layers: int, final_prob: float = 0.5) -> jax.Array:
    """Survival probabilities ``p_l = 1 - (l / L) · (1 - p_L)`` for blocks ``l = 1..L``.

    Huang et al.'s "linear decay rule": the input is always kept (``p_0 = 1``), early blocks
    (low-level features that later ones depend on) almost always survive, the last survives
    with probability ``p_L = final_prob`` (0.5 in the paper).  Returns an array of shape
    ``(num_layers,)``; the expected depth is ``Σ p_l ≈ (3L - 1) / 4`` for ``p_L = 0.5``.

    Args:
      num_layers: ``L``, a positive int.
      final_prob: ``p_L`` in (0, 1].

    Returns:
      An array of shape ``(num_layers,)``.
    """
    fn = "linear_decay_survival"
    num_layers = _checks.positive_int(fn, "num_layers", num_layers)
    _checks.number(fn, "final_prob", final_prob, low=0.0, high=1.0, low_open=True)
    l = jnp.arange(1, num_layers + 1, dtype=jnp.result_type(float))
    return 1.0 - l / num_layers * (1.0 - jnp.asarray(final_prob, l.dtype))
