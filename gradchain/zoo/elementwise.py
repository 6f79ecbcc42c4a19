"""Optax's element-wise optimizers, with Optax's names, keyword arguments and defaults, each a
short chain of gradchain transforms (the pieces are in :mod:`gradchain.transforms.elementwise_pieces`).

Every optimizer here ends in ``scale_by_learning_rate`` (``x -= lr · direction``; Rprop and
Polyak's SGD carry their own step size), keeps every hyperparameter in its state (numbers, arrays
for a ``vmap`` population, or schedules; ``gc.get_hyperparams`` / ``gc.set_hyperparams``), and
names its buffers as Optax does (``gc.tree_get(state, "mu")``).  All are element-wise, so all but
``noisy_sgd`` are wrapped in :func:`gradchain.multi_tensor`: a tree with at least 32 small leaves
is packed into one buffer per dtype (a ``mask`` for the weight decay then runs per leaf, after the
packed step), a smaller tree runs leaf by leaf.  They work on ``gc.flat`` buffers as they are.

Equal to Optax 0.2.8 step for step (``tests/test_zoo_elementwise.py``: float64 to 1e-9 over 60
steps on both parity problems), except where a docstring says otherwise:

* ``adadelta(learning_rate=None)`` steps with learning rate 1 (Zeiler's rule); Optax's ``None``
  applies no scaling at all, so its step *ascends*.  With a number both agree.
* ``rprop`` has Optax's one-step-late output by default (``lagged=True``); ``lagged=False`` is
  the paper's (and torch's) Rprop.  Its ``learning_rate`` is the initial step size, read once.
* ``radam`` takes ρ∞ from the live β₂ (Optax: fixed at construction; the same numbers unless β₂
  is changed).
"""

from __future__ import annotations

from typing import Any

from gradchain import hyper
from gradchain.core import GradientTransformation, GradientTransformationExtraArgs, chain
from gradchain.multi_tensor import multi_tensor
from gradchain.optimizers import _front
from gradchain.transforms.decay import add_decayed_weights
from gradchain.transforms.elementwise_pieces import (
    add_noise,
    ema,
    negate,
    scale_by_adadelta,
    scale_by_adam_moments,
    scale_by_adamax,
    scale_by_adan,
    scale_by_amsgrad,
    scale_by_belief,
    scale_by_lion,
    scale_by_optimistic_gradient,
    scale_by_polyak,
    scale_by_radam,
    scale_by_rprop,
    scale_by_sign,
    scale_by_yogi,
)
from gradchain.transforms.scaling import scale, scale_by_learning_rate

__all__ = [
    "adabelief",
    "adadelta",
    "adamax",
    "adamaxw",
    "adan",
    "amsgrad",
    "lion",
    "nadamw",
    "noisy_sgd",
    "optimistic_adam_v2",
    "optimistic_gradient_descent",
    "polyak_sgd",
    "radam",
    "rprop",
    "sign_sgd",
    "signum",
    "yogi",
]


def _packed(name: str, *transforms: GradientTransformation, stateless: bool = False) -> GradientTransformationExtraArgs:
    return _front(multi_tensor(chain(*transforms)), name, stateless=stateless)


def _decoupled(
    name: str,
    direction: GradientTransformation,
    weight_decay: hyper.Hyperparameter,
    mask: Any,
    learning_rate: hyper.Hyperparameter,
) -> GradientTransformationExtraArgs:
    """``chain(direction, add_decayed_weights(weight_decay, mask), scale_by_learning_rate)``,
    packed; with a mask the decay and the learning rate run per leaf, after the packed step."""
    if mask is None:
        return _packed(name, direction, add_decayed_weights(weight_decay), scale_by_learning_rate(learning_rate))
    tx = chain(multi_tensor(direction), add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))
    return _front(tx, name, stateless=False)


def adabelief(
    learning_rate: hyper.Hyperparameter,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-16,
    eps_root: hyper.Hyperparameter = 1e-16,
    *,
    nesterov: bool = False,
) -> GradientTransformationExtraArgs:
    """AdaBelief (Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in
    Observed Gradients", NeurIPS 2020)::

        m = EMA_b1(m, g);   s = EMA_b2(s, (g - m)²) + eps_root;   x -= lr · m̂ / (√ŝ + eps)

    Chain: ``scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov)``,
    ``scale_by_learning_rate(learning_rate)``.  Packs (multi_tensor).

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the belief (prediction-error) moment, in [0, 1).
      eps: ≥ 0, outside the square root.
      eps_root: ≥ 0, added to the stored second moment at every step.
      nesterov: Nesterov's look-ahead first moment.

    Returns:
      A gradient transformation (state buffers ``mu``, ``nu``).
    """
    return _packed(
        "adabelief",
        scale_by_belief(b1, b2, eps, eps_root, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


def adadelta(
    learning_rate: hyper.Hyperparameter | None = None,
    rho: hyper.Hyperparameter = 0.9,
    eps: hyper.Hyperparameter = 1e-6,
    weight_decay: hyper.Hyperparameter = 0.0,
    weight_decay_mask: Any = None,
) -> GradientTransformationExtraArgs:
    """AdaDelta (Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012)::

        E[g²] = EMA_ρ(E[g²], g²);   Δ = √(E[Δx²] + eps)/√(E[g²] + eps) · g;   E[Δx²] = EMA_ρ(E[Δx²], Δ²)
        x -= lr · Δ

    Chain: ``add_decayed_weights(weight_decay, weight_decay_mask)`` (coupled: *before* the
    statistics, as Optax), ``scale_by_adadelta(rho, eps)``, ``scale_by_learning_rate``.  Packs
    (multi_tensor); with a mask the decay runs per leaf, before the packed part.

    **Differs from Optax at the default.**  ``learning_rate=None`` means 1, Zeiler's descent step;
    ``optax.adadelta()`` with ``None`` applies no scaling at all, so its update is ``+Δ`` and the
    loss *increases*.  Any number gives Optax's numbers.

    Args:
      learning_rate: ≥ 0 (a number, an array or a schedule), or ``None`` for 1.
      rho: decay of both averages, in [0, 1).
      eps: > 0, inside both square roots.
      weight_decay: ≥ 0, the coupled L2 coefficient (``g + weight_decay · x``).
      weight_decay_mask: which leaves decay: a bool pytree or ``params -> bool pytree``.

    Returns:
      A gradient transformation (state buffers ``e_g``, ``e_x``); needs ``params`` in
      ``update``.
    """
    rate = 1.0 if learning_rate is None else learning_rate
    if weight_decay_mask is None:
        return _packed(
            "adadelta", add_decayed_weights(weight_decay), scale_by_adadelta(rho, eps), scale_by_learning_rate(rate)
        )
    tx = chain(
        add_decayed_weights(weight_decay, weight_decay_mask),
        multi_tensor(scale_by_adadelta(rho, eps)),
        scale_by_learning_rate(rate),
    )
    return _front(tx, "adadelta", stateless=False)


def adamax(
    learning_rate: hyper.Hyperparameter,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-8,
) -> GradientTransformationExtraArgs:
    """AdaMax, Adam with the infinity norm (Kingma & Ba, ICLR 2015, section 7.1)::

        m = EMA_b1(m, g);   u = max(|g| + eps, b2 · u);   x -= lr · m̂ / u

    Chain: ``scale_by_adamax(b1, b2, eps)``, ``scale_by_learning_rate``.  Packs (multi_tensor).

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the infinity norm, in [0, 1).
      eps: ≥ 0, added to ``|g|`` inside the maximum (as Optax).

    Returns:
      A gradient transformation (state buffers ``mu``, ``nu``).
    """
    return _packed("adamax", scale_by_adamax(b1, b2, eps), scale_by_learning_rate(learning_rate))


def adamaxw(
    learning_rate: hyper.Hyperparameter,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-8,
    weight_decay: hyper.Hyperparameter = 1e-4,
    mask: Any = None,
) -> GradientTransformationExtraArgs:
    """AdaMax with decoupled weight decay (Loshchilov & Hutter, ICLR 2019)::

        x -= lr · (m̂ / u + weight_decay · x)

    Chain: ``scale_by_adamax(b1, b2, eps)``, ``add_decayed_weights(weight_decay, mask)``,
    ``scale_by_learning_rate``.  Packs (multi_tensor); with a mask the decay runs per leaf.

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the infinity norm, in [0, 1).
      eps: ≥ 0, added to ``|g|``.
      weight_decay: ≥ 0, multiplied by the learning rate (as Optax and torch).
      mask: which leaves decay: a bool pytree or ``params -> bool pytree``.

    Returns:
      A gradient transformation; needs ``params`` in ``update``.
    """
    return _decoupled("adamaxw", scale_by_adamax(b1, b2, eps), weight_decay, mask, learning_rate)


def adan(
    learning_rate: hyper.Hyperparameter,
    b1: hyper.Hyperparameter = 0.98,
    b2: hyper.Hyperparameter = 0.92,
    b3: hyper.Hyperparameter = 0.99,
    eps: hyper.Hyperparameter = 1e-8,
    eps_root: hyper.Hyperparameter = 1e-8,
    weight_decay: hyper.Hyperparameter = 0.0,
    mask: Any = None,
) -> GradientTransformationExtraArgs:
    """Adan (Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing Deep
    Models", 2022; Optax's form)::

        d = g - g_prev;   m = EMA_b1(m, g);   v = EMA_b2(v, d);   n = EMA_b3(n, (g + (1-b2) d)²)
        x -= lr · ((m̂ + (1-b2) v̂) / (√(n̂ + eps_root) + eps) + weight_decay · x)

    Chain: ``scale_by_adan(b1, b2, b3, eps, eps_root)``, ``add_decayed_weights(weight_decay,
    mask)``, ``scale_by_learning_rate``.  Packs (multi_tensor); with a mask the decay runs per leaf.

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      b1: decay of the gradient average, in [0, 1).
      b2: decay of the gradient-difference average, in [0, 1).
      b3: decay of the second moment, in [0, 1).
      eps: ≥ 0, outside the square root.
      eps_root: ≥ 0, inside the square root.
      weight_decay: ≥ 0, decoupled, multiplied by the learning rate.
      mask: which leaves decay.

    Returns:
      A gradient transformation (state buffers ``m``, ``v``, ``n``, ``g``); needs ``params``.
    """
    return _decoupled("adan", scale_by_adan(b1, b2, b3, eps, eps_root), weight_decay, mask, learning_rate)


def amsgrad(
    learning_rate: hyper.Hyperparameter,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-8,
    eps_root: hyper.Hyperparameter = 0.0,
    mu_dtype: Any = None,
    bias_correction_mu: bool = True,
    bias_correction_nu: bool = True,
) -> GradientTransformationExtraArgs:
    """AMSGrad (Reddi et al., "On the Convergence of Adam and Beyond", ICLR 2018)::

        v_max = max(v_max, v̂);   x -= lr · m̂ / (√(v_max + eps_root) + eps)

    Chain: ``scale_by_amsgrad(b1, b2, eps, eps_root, mu_dtype, bias_correction_mu,
    bias_correction_nu)``, ``scale_by_learning_rate``.  Packs (multi_tensor).

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: ≥ 0, outside the square root.
      eps_root: ≥ 0, inside the square root.
      mu_dtype: storage dtype of ``mu``.
      bias_correction_mu: divide ``m`` by ``1 - b1^t``.
      bias_correction_nu: divide ``v`` by ``1 - b2^t`` (before the maximum).

    Returns:
      A gradient transformation (state buffers ``mu``, ``nu``, ``nu_max``).
    """
    return _packed(
        "amsgrad",
        scale_by_amsgrad(b1, b2, eps, eps_root, mu_dtype, bias_correction_mu, bias_correction_nu),
        scale_by_learning_rate(learning_rate),
    )


def lion(
    learning_rate: hyper.Hyperparameter,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.99,
    mu_dtype: Any = None,
    weight_decay: hyper.Hyperparameter = 1e-3,
    mask: Any = None,
) -> GradientTransformationExtraArgs:
    """Lion (Chen et al., "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023)::

        x -= lr · (sign(b1 m + (1-b1) g) + weight_decay · x);   m = EMA_b2(m, g)

    Chain: ``scale_by_lion(b1, b2, mu_dtype)``, ``add_decayed_weights(weight_decay, mask)``,
    ``scale_by_learning_rate``.  Packs (multi_tensor); with a mask the decay runs per leaf.

    Args:
      learning_rate: ≥ 0 (Lion's steps have unit size per element: 3-10× smaller than Adam's).
      b1: interpolation weight of the momentum inside the sign, in [0, 1].
      b2: decay of the momentum, in [0, 1).
      mu_dtype: storage dtype of ``mu``.
      weight_decay: ≥ 0, decoupled, multiplied by the learning rate.
      mask: which leaves decay.

    Returns:
      A gradient transformation (state buffer ``mu``); needs ``params``.
    """
    return _decoupled("lion", scale_by_lion(b1, b2, mu_dtype), weight_decay, mask, learning_rate)


def nadamw(
    learning_rate: hyper.Hyperparameter,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-8,
    eps_root: hyper.Hyperparameter = 0.0,
    mu_dtype: Any = None,
    weight_decay: hyper.Hyperparameter = 1e-4,
    mask: Any = None,
    *,
    nesterov: bool = True,
) -> GradientTransformationExtraArgs:
    """NAdamW: AdamW with Nesterov's first moment (Dozat 2016; Loshchilov & Hutter, ICLR 2019),
    Optax's ``partial(adamw, nesterov=True)``::

        m̂ = b1·m/(1 - b1^(t+1)) + (1-b1)·g/(1 - b1^t)
        x -= lr · (m̂ / (√(v̂ + eps_root) + eps) + weight_decay · x)

    Chain: ``scale_by_adam_moments(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov)``,
    ``add_decayed_weights(weight_decay, mask)``, ``scale_by_learning_rate``.  Packs
    (multi_tensor); with a mask the decay runs per leaf.

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: ≥ 0, outside the square root (Optax's 1e-8).
      eps_root: ≥ 0, inside the square root.
      mu_dtype: storage dtype of ``mu``.
      weight_decay: ≥ 0, decoupled, multiplied by the learning rate.
      mask: which leaves decay.
      nesterov: ``False`` gives AdamW (Optax's eps and state).

    Returns:
      A gradient transformation (state buffers ``mu``, ``nu``); needs ``params``.
    """
    direction = scale_by_adam_moments(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov)
    return _decoupled("nadamw", direction, weight_decay, mask, learning_rate)


def noisy_sgd(
    learning_rate: hyper.Hyperparameter,
    eta: hyper.Hyperparameter = 0.01,
    gamma: hyper.Hyperparameter = 0.55,
    key: Any = None,
    *,
    seed: int | None = None,
) -> GradientTransformationExtraArgs:
    """SGD with annealed Gaussian gradient noise (Neelakantan et al., "Adding Gradient Noise
    Improves Learning for Very Deep Networks", 2015)::

        x -= lr · (g + N(0, eta / t^gamma))

    Chain: ``add_noise(eta, gamma, key, seed=seed)``, ``scale_by_learning_rate``.  **Runs per
    leaf** (not packed): Optax draws one key per leaf, so the noise of a packed buffer would be
    other numbers (of the same distribution); per leaf it is Optax's for the same key on any tree.

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      eta: ≥ 0, the noise variance at the first step.
      gamma: ≥ 0, the decay exponent of the variance.
      key: a JAX key (``jax.random.key(0)``) or an int seed; ``None`` warns and uses 0, as Optax.
      seed: Optax's deprecated name for an int key (warns).

    Returns:
      A gradient transformation (state ``rng_key``: split at every update).
    """
    return _front(
        chain(add_noise(eta, gamma, key, seed=seed), scale_by_learning_rate(learning_rate)), "noisy_sgd", stateless=False
    )


def optimistic_gradient_descent(
    learning_rate: hyper.Hyperparameter,
    alpha: hyper.Hyperparameter = 1.0,
    beta: hyper.Hyperparameter = 1.0,
) -> GradientTransformationExtraArgs:
    """Optimistic gradient descent (Mokhtari, Ozdaglar & Pattathil, AISTATS 2020; for min-max
    games)::

        x -= lr · ((alpha + beta) · g_t - beta · g_{t-1})      (g_{-1} := g_0)

    Chain: ``scale_by_optimistic_gradient(alpha, beta)``, ``scale_by_learning_rate``.  Packs
    (multi_tensor).

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      alpha: ≥ 0, the weight of the current gradient.
      beta: ≥ 0, the optimism (weight of ``g_t - g_{t-1}``).

    Returns:
      A gradient transformation (state buffer ``previous_gradient``).
    """
    return _packed(
        "optimistic_gradient_descent",
        scale_by_optimistic_gradient(alpha, beta),
        scale_by_learning_rate(learning_rate),
    )


def optimistic_adam_v2(
    learning_rate: hyper.Hyperparameter,
    *,
    alpha: hyper.Hyperparameter = 1.0,
    beta: hyper.Hyperparameter = 1.0,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-08,
    eps_root: hyper.Hyperparameter = 0.0,
    mu_dtype: Any = None,
    nesterov: bool = True,
) -> GradientTransformationExtraArgs:
    """Optimistic Adam, Optax's second form: the optimistic step taken on Adam's direction
    (Daskalakis et al., "Training GANs with Optimism", ICLR 2018)::

        a_t = m̂ / (√(v̂ + eps_root) + eps)   (NAdam's m̂ by default)
        x -= lr · ((alpha + beta) · a_t - beta · a_{t-1})

    Chain: ``scale_by_adam_moments(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov)``,
    ``scale_by_optimistic_gradient(alpha, beta)``, ``scale_by_learning_rate``.  Packs
    (multi_tensor).

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      alpha: ≥ 0, the weight of the current direction.
      beta: ≥ 0, the optimism.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: ≥ 0, outside the square root.
      eps_root: ≥ 0, inside the square root.
      mu_dtype: storage dtype of ``mu``.
      nesterov: Nesterov's look-ahead first moment (Optax's default ``True``).

    Returns:
      A gradient transformation (state buffers ``mu``, ``nu``, ``previous_gradient``).
    """
    return _packed(
        "optimistic_adam_v2",
        scale_by_adam_moments(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov),
        scale_by_optimistic_gradient(alpha, beta),
        scale_by_learning_rate(learning_rate),
    )


def polyak_sgd(
    max_learning_rate: hyper.Hyperparameter = 1.0,
    scaling: hyper.Hyperparameter = 1.0,
    f_min: hyper.Hyperparameter = 0.0,
    eps: hyper.Hyperparameter = 0.0,
    variant: str = "sps",
) -> GradientTransformationExtraArgs:
    """SGD with Polyak's step size (Polyak 1987; Loizou et al., "Stochastic Polyak Step-size for
    SGD", AISTATS 2021)::

        u = scaling · g;   x -= min((f(x) - f_min) / (‖u‖² + eps), max_learning_rate) · u

    Needs the loss: ``update(grads, state, params, value=loss)``.  Chain:
    ``scale(scaling, name="scaling")``, ``negate()``, ``scale_by_polyak(f_min,
    max_learning_rate, eps, variant)`` (Optax's ``sgd(scaling)`` then ``scale_by_polyak``; the
    norm is of the scaled step, as there).  Packs (multi_tensor; ``‖u‖²`` then sums per buffer,
    in another order than per leaf).

    Args:
      max_learning_rate: ≥ 0, the cap on the step size.
      scaling: ≥ 0, a factor on the gradient before the step size (a number, array or schedule).
      f_min: a lower bound on the loss (0 for a model that can fit the data exactly).
      eps: ≥ 0, added to ``‖u‖²``.
      variant: ``"sps"`` or ``"sps+"`` (the gap clipped at 0).

    Returns:
      A gradient transformation whose ``update`` needs ``value=``.
    """
    hyper.check("scaling", scaling, low=0.0)
    return _packed(
        "polyak_sgd",
        scale(scaling, name="scaling"),
        negate(),
        scale_by_polyak(f_min, max_learning_rate, eps, variant),
        stateless=True,
    )


def radam(
    learning_rate: hyper.Hyperparameter,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-8,
    eps_root: hyper.Hyperparameter = 0.0,
    threshold: hyper.Hyperparameter = 5.0,
    *,
    nesterov: bool = False,
) -> GradientTransformationExtraArgs:
    """Rectified Adam (Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond",
    ICLR 2020): momentum SGD while ``ρ_t < threshold``, then Adam rectified by ``r_t``::

        x -= lr · r_t · m̂ / (√(v̂ + eps_root) + eps)     (ρ_t ≥ threshold)
        x -= lr · m̂                                     (otherwise)

    Chain: ``scale_by_radam(b1, b2, eps, eps_root, threshold, nesterov=nesterov)``,
    ``scale_by_learning_rate``.  Packs (multi_tensor).  ρ∞ = 2/(1-b2) - 1 is computed from the
    live b2 (Optax: from b2 at construction).

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: ≥ 0, outside the square root.
      eps_root: ≥ 0, inside the square root.
      threshold: ≥ 4, the ρ_t from which the rectified step is used.
      nesterov: Nesterov's look-ahead first moment.

    Returns:
      A gradient transformation (state buffers ``mu``, ``nu``).
    """
    return _packed(
        "radam",
        scale_by_radam(b1, b2, eps, eps_root, threshold, nesterov=nesterov),
        scale_by_learning_rate(learning_rate),
    )


def rprop(
    learning_rate: hyper.Hyperparameter,
    eta_minus: hyper.Hyperparameter = 0.5,
    eta_plus: hyper.Hyperparameter = 1.2,
    min_step_size: hyper.Hyperparameter = 1e-6,
    max_step_size: hyper.Hyperparameter = 50.0,
    *,
    lagged: bool = True,
) -> GradientTransformationExtraArgs:
    """Rprop (Riedmiller & Braun, "A Direct Adaptive Method for Faster Backpropagation
    Learning: The RPROP Algorithm", ICNN 1993; Igel & Hüsken's "Rprop-" without weight
    backtracking): per-element step sizes, grown by ``eta_plus`` while the gradient keeps its
    sign and shrunk by ``eta_minus`` when it flips (the step after a flip is skipped)::

        x -= η · sign(g)

    Chain: ``scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size,
    lagged=lagged)``, ``negate()`` (Optax's ``scale(-1.0)``).  Packs (multi_tensor).

    **Optax's lag.**  ``optax.rprop`` (0.2.8) applies at every update the step computed at the
    previous one (its first update is zero; optax PR #1725); ``lagged=True`` (default) matches
    it, ``lagged=False`` is the paper's and ``torch.optim.Rprop``'s step.

    Args:
      learning_rate: ≥ 0, the initial step size (read at the first update; the step sizes then
        adapt by themselves).
      eta_minus: the shrink factor, in (0, 1].
      eta_plus: the growth factor, ≥ 1.
      min_step_size: ≥ 0.
      max_step_size: ≥ min_step_size.
      lagged: Optax's one-step-late output (gradchain's extension; keyword only).

    Returns:
      A gradient transformation (state buffers ``step_sizes``, ``prev_updates``).
    """
    return _packed(
        "rprop",
        scale_by_rprop(learning_rate, eta_minus, eta_plus, min_step_size, max_step_size, lagged=lagged),
        negate(),
    )


def sign_sgd(learning_rate: hyper.Hyperparameter) -> GradientTransformationExtraArgs:
    """signSGD (Bernstein et al., "signSGD: Compressed Optimisation for Non-Convex Problems",
    ICML 2018)::

        x -= lr · sign(g)

    Chain: ``scale_by_sign()``, ``scale_by_learning_rate``.  Packs (multi_tensor).

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.

    Returns:
      A gradient transformation (its state holds only the learning rate).
    """
    return _packed("sign_sgd", scale_by_sign(), scale_by_learning_rate(learning_rate), stateless=True)


def signum(
    learning_rate: hyper.Hyperparameter,
    beta: hyper.Hyperparameter = 0.9,
    accumulator_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """Signum, signSGD with momentum (Bernstein et al., ICML 2018)::

        m = EMA_beta(m, g);   x -= lr · sign(m)

    Chain: ``ema(beta, debias=False, accumulator_dtype, name="beta")``, ``scale_by_sign()``,
    ``scale_by_learning_rate``.  Packs (multi_tensor).

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      beta: decay of the momentum, in [0, 1).
      accumulator_dtype: storage dtype of the momentum.

    Returns:
      A gradient transformation (state buffer ``ema``).
    """
    return _packed(
        "signum",
        ema(beta, debias=False, accumulator_dtype=accumulator_dtype, name="beta"),
        scale_by_sign(),
        scale_by_learning_rate(learning_rate),
    )


def yogi(
    learning_rate: hyper.Hyperparameter,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-3,
) -> GradientTransformationExtraArgs:
    """Yogi (Zaheer et al., "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018)::

        v -= (1 - b2) · sign(v - g²) · g²;   x -= lr · m̂ / (√v̂ + eps)

    Both moments start at 1e-6 (Optax's ``initial_accumulator_value``).  Chain:
    ``scale_by_yogi(b1, b2, eps)``, ``scale_by_learning_rate``.  Packs (multi_tensor).  The state
    also holds the piece's ``eps_root`` (0).

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: the second moment's rate, in [0, 1).
      eps: ≥ 0, outside the square root.

    Returns:
      A gradient transformation (state buffers ``mu``, ``nu``).
    """
    return _packed("yogi", scale_by_yogi(b1, b2, eps), scale_by_learning_rate(learning_rate))
