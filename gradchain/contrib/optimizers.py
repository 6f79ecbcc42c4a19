"""Optax's contrib optimizers, each a short chain of gradchain transforms.

Names, keyword arguments and defaults are ``optax.contrib``'s (0.2.8); every numeric
hyperparameter lives in the state (``gc.get_hyperparams`` / ``gc.set_hyperparams``; a number, a
JAX array — ``vmap`` a population over it — or a schedule).  The element-wise ones and those whose
only coupling is a whole-tree sum or norm are wrapped in :func:`gradchain.multi_tensor` (packed
when a tree has many small leaves, as ``gc.adam``); the ones that need each leaf's shape (Muon) or
the real parameter tree (Sophia's Hessian estimate) run per leaf.  Unless a docstring says
otherwise, each equals Optax's step for step (float64, 1e-9 relative over 60 steps:
tests/test_contrib.py).

=========================  ==========================================================  ========
optimizer                  chain                                                       packs
=========================  ==========================================================  ========
``adopt``                  scale_by_adopt → scale_by_learning_rate                     yes
``ademamix``               scale_by_ademamix → add_decayed_weights → scale_by_lr       yes
``madgrad``                add_decayed_weights → scale_by_madgrad                      yes
``cocob``                  add_decayed_weights → scale(+lr) → scale_by_cocob           yes
``dog``                    [add_decayed_weights] → scale_by_dog → scale_by_lr          yes
``dowg``                   [add_decayed_weights] → scale_by_dowg → scale_by_lr         yes
``prodigy``                scale_by_prodigy                                            yes
``dadapt_adamw``           scale_by_dadapt_adamw                                       yes
``schedule_free_sgd``      schedule_free(chain([add_decayed_weights], scale_by_lr))    yes
``schedule_free_adamw``    schedule_free(chain(scale_by_rms, add_decayed_weights,      yes
                           scale_by_lr))
``sophia``                 scale_by_sophia → add_decayed_weights → scale_by_lr         per leaf
``muon``                   masked(scale_by_muon → scale_by_shape → decay → lr) ∥       per leaf
                           masked(scale_by_adam → decay → lr)
``sam``                    a wrapper of two optimizers                                 theirs
=========================  ==========================================================  ========

A ``mask=`` for the weight decay cannot run on packed buffers: with one, the decay runs per leaf
after the packed part (as ``gc.adamw(mask=...)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.contrib import scaling
from gradchain.contrib.adaptive import (
    hutchinson_estimator_diag_hessian,
    scale_by_ademamix,
    scale_by_adopt,
    scale_by_cocob,
    scale_by_madgrad,
    scale_by_sophia,
)
from gradchain.contrib.distance import scale_by_dadapt_adamw, scale_by_dog, scale_by_dowg, scale_by_prodigy
from gradchain.contrib.interpolation import schedule_free, schedule_free_eval_params
from gradchain.contrib.newton_schulz import (
    DEFAULT_NS_COEFFS,
    MuonDimensionNumbers,
    is_dimension_numbers,
    orthogonalize_via_newton_schulz,
    scale_by_muon,
    scale_by_shape,
)
from gradchain.contrib.sharpness import normalize, sam
from gradchain.core import GradientTransformation, GradientTransformationExtraArgs, chain
from gradchain.multi_tensor import multi_tensor
from gradchain.optimizers import _front
from gradchain.transforms._base import check_int
from gradchain.transforms.decay import add_decayed_weights
from gradchain.transforms.elementwise_pieces import scale_by_adam_moments
from gradchain.transforms.naming import renamed
from gradchain.transforms.scaling import scale_by_learning_rate
from gradchain.transforms.wrappers import masked

__all__ = [
    "ademamix",
    "adopt",
    "cocob",
    "dadapt_adamw",
    "dog",
    "dowg",
    "madgrad",
    "muon",
    "prodigy",
    "sam",
    "schedule_free_adamw",
    "schedule_free_sgd",
    "schedule_free_eval_params",
    "sophia",
    # the pieces, under Optax's names
    "MuonDimensionNumbers",
    "hutchinson_estimator_diag_hessian",
    "normalize",
    "orthogonalize_via_newton_schulz",
    "scale_by_ademamix",
    "scale_by_adopt",
    "scale_by_cocob",
    "scale_by_madgrad",
    "scale_by_muon",
    "scale_by_shape",
    "scale_by_sophia",
    "schedule_free",
]


def _with_decay(core: list[GradientTransformation], decay: GradientTransformation | None, masked_decay: bool,
                *, decay_first: bool, name: str) -> GradientTransformationExtraArgs:
    """``chain(decay, *core)`` or ``chain(*core[:1], decay, *core[1:])`` in ``multi_tensor``; a
    masked decay (per leaf) outside it."""
    if decay is None:
        return _front(multi_tensor(chain(*core)), name, stateless=False)
    if not masked_decay:
        parts = [decay, *core] if decay_first else [core[0], decay, *core[1:]]
        return _front(multi_tensor(chain(*parts)), name, stateless=False)
    if decay_first:
        return _front(chain(decay, multi_tensor(chain(*core))), name, stateless=False)
    return _front(chain(multi_tensor(core[0]), decay, *core[1:]), name, stateless=False)


def adopt(
    learning_rate: hyper.Hyperparameter,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.9999,
    eps: hyper.Hyperparameter = 1e-6,
    mu_dtype: Any = None,
    *,
    nesterov: bool = False,
    use_clipping: bool = True,
    clip_value_fn: hyper.Hyperparameter = lambda x: x**0.25,
) -> GradientTransformationExtraArgs:
    """ADOPT (Taniguchi et al., NeurIPS 2024, https://arxiv.org/abs/2411.02853): Adam with the
    gradient normalised by the *previous* second moment, before the momentum::

        chain(scale_by_adopt(b1, b2, eps, ...), scale_by_learning_rate(learning_rate))

    Packs (element-wise).  The first update only fills ``nu`` (its step is zero).

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      b1: in [0, 1).
      b2: in [0, 1).
      eps: > 0, the floor of ``√nu``.
      mu_dtype: storage dtype of ``mu``.
      nesterov: Nesterov's look-ahead.
      use_clipping: clip the normalised gradient to ``±clip_value_fn(t)``.
      clip_value_fn: a schedule of the step (default ``t^¼``), stored as ``clip_value``.

    Returns:
      A gradient transformation; state fields ``mu``, ``nu`` as Optax's.
    """
    scaled = scale_by_adopt(
        b1, b2, eps, mu_dtype, nesterov=nesterov, use_clipping=use_clipping, clip_value_fn=clip_value_fn
    )
    return _front(multi_tensor(chain(scaled, scale_by_learning_rate(learning_rate))), "adopt", stateless=False)


def ademamix(
    learning_rate: hyper.Hyperparameter,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    b3: hyper.Hyperparameter = 0.9999,
    alpha: hyper.Hyperparameter = 5.0,
    eps: hyper.Hyperparameter = 1e-8,
    eps_root: hyper.Hyperparameter = 0.0,
    mu_dtype: Any = None,
    weight_decay: hyper.Hyperparameter = 0.0,
    mask: Any = None,
) -> GradientTransformationExtraArgs:
    """AdEMAMix (Pagliardini, Ablin & Grangier 2024, https://arxiv.org/abs/2409.03137): AdamW
    with a mixture of a fast and a slow momentum::

        chain(scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root),
              add_decayed_weights(weight_decay, mask), scale_by_learning_rate(learning_rate))

    Packs (element-wise; a ``mask`` puts the decay outside the packing).

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      b1: in [0, 1), the fast EMA.
      b2: in [0, 1), the second moment.
      b3: in [0, 1), the slow EMA (a schedule for its warm-up).
      alpha: ≥ 0, the slow EMA's weight (a schedule for its warm-up).
      eps: > 0, outside the square root.
      eps_root: ≥ 0, inside it.
      mu_dtype: storage dtype of the averages.
      weight_decay: ≥ 0, decoupled (multiplied by the learning rate).
      mask: which leaves decay (a bool tree or a function of the params).

    Returns:
      A gradient transformation; state fields ``count_m2``, ``m1``, ``m2``, ``nu`` as Optax's.
    """
    scaled = scale_by_ademamix(b1, b2, b3, alpha, eps, eps_root, mu_dtype)
    return _with_decay([scaled, scale_by_learning_rate(learning_rate)], add_decayed_weights(weight_decay, mask),
                       mask is not None, decay_first=False, name="ademamix")


def madgrad(
    learning_rate: hyper.Hyperparameter,
    momentum: hyper.Hyperparameter = 0.9,
    weight_decay: hyper.Hyperparameter = 0.0,
    eps: hyper.Hyperparameter = 1e-6,
) -> GradientTransformationExtraArgs:
    """MADGRAD (Defazio & Jelassi 2021, https://arxiv.org/abs/2101.11075): momentumised dual
    averaging with a cube-root normaliser::

        chain(add_decayed_weights(weight_decay), scale_by_madgrad(learning_rate, momentum, eps))

    The decay is coupled (an L2 gradient, before the statistics, as Optax's).  Packs.

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      momentum: in [0, 1).
      weight_decay: ≥ 0.
      eps: > 0.

    Returns:
      A gradient transformation; state fields ``grad_sum_sq``, ``s``, ``x0`` as Optax's.
    """
    steps = scale_by_madgrad(learning_rate, momentum, eps)
    return _front(multi_tensor(chain(add_decayed_weights(weight_decay), steps)), "madgrad", stateless=False)


def cocob(
    learning_rate: hyper.Hyperparameter = 1.0,
    alpha: hyper.Hyperparameter = 100.0,
    eps: hyper.Hyperparameter = 1e-8,
    weight_decay: hyper.Hyperparameter = 0.0,
    mask: Any = None,
) -> GradientTransformationExtraArgs:
    """COCOB-Backprop (Orabona & Tommasi, NeurIPS 2017, https://arxiv.org/abs/1705.07795):
    learning-rate-free coin betting per element::

        chain(add_decayed_weights(weight_decay, mask),
              scale_by_learning_rate(learning_rate, flip_sign=False), scale_by_cocob(alpha, eps))

    ``learning_rate`` scales the gradients *into* the bet (1 for the method as published).
    Packs (a ``mask`` puts the decay outside the packing).

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      alpha: > 0.
      eps: > 0.
      weight_decay: ≥ 0 (coupled: added to the gradient).
      mask: which leaves decay.

    Returns:
      A gradient transformation; state fields ``init_particles``, ``cumulative_gradients``,
      ``scale``, ``subgradients``, ``reward`` as Optax's.
    """
    core = [scale_by_learning_rate(learning_rate, flip_sign=False), scale_by_cocob(alpha, eps)]
    return _with_decay(core, add_decayed_weights(weight_decay, mask), mask is not None, decay_first=True, name="cocob")


def dog(
    learning_rate: hyper.Hyperparameter = 1.0,
    init_step: tuple[str, Any] = ("heuristic", 1e-6),
    eps: hyper.Hyperparameter = 1e-8,
    weight_decay: hyper.Hyperparameter | None = None,
    mask: Any = None,
) -> GradientTransformationExtraArgs:
    """DoG, distance over gradients (Ivgi, Hinder & Carmon, ICML 2023,
    https://arxiv.org/abs/2302.12022)::

        chain([add_decayed_weights(weight_decay, mask)], scale_by_dog(init_step, eps),
              scale_by_learning_rate(learning_rate))

    Packs (the distance and the gradient norms are over the whole tree).  ``init`` must see the
    real parameters (the start ``x₀``; the ``"heuristic"`` step uses ``‖x₀‖``).

    Args:
      learning_rate: ≥ 0, a multiplier of DoG's step size (1: the method as published).
      init_step: ``("heuristic", α)`` (``r_ε = α(1 + ‖x₀‖)``), ``("distance", r_ε)`` or
        ``("learning_rate", η₀)``; the value is the hyperparameter ``init_step``.
      eps: > 0.
      weight_decay: ``None`` (none) or ≥ 0, coupled (added to the gradient).
      mask: which leaves decay.

    Returns:
      A gradient transformation; state fields ``is_init_step``, ``init_params``, ``max_dist``,
      ``sum_sq_norm_grads`` as Optax's.
    """
    core = [scale_by_dog(init_step, eps), scale_by_learning_rate(learning_rate)]
    decay = None if weight_decay is None else add_decayed_weights(weight_decay, mask)
    return _with_decay(core, decay, mask is not None, decay_first=True, name="dog")


def dowg(
    learning_rate: hyper.Hyperparameter = 1.0,
    init_estim_sq_dist: hyper.Hyperparameter | None = None,
    eps: hyper.Hyperparameter = 1e-4,
    weight_decay: hyper.Hyperparameter | None = None,
    mask: Any = None,
) -> GradientTransformationExtraArgs:
    """DoWG, distance over weighted gradients (Khaled, Mishchenko & Jin, NeurIPS 2023,
    https://arxiv.org/abs/2305.16284)::

        chain([add_decayed_weights(weight_decay, mask)], scale_by_dowg(init_estim_sq_dist, eps),
              scale_by_learning_rate(learning_rate))

    Packs (whole-tree distances and norms).

    Args:
      learning_rate: ≥ 0, a multiplier of DoWG's step size.
      init_estim_sq_dist: > 0, the start of the squared-distance estimate (``None``: ``eps``).
      eps: > 0.
      weight_decay: ``None`` or ≥ 0, coupled.
      mask: which leaves decay.

    Returns:
      A gradient transformation; state fields ``init_params``, ``weighted_sq_norm_grads``,
      ``estim_sq_dist`` as Optax's.
    """
    core = [scale_by_dowg(init_estim_sq_dist, eps), scale_by_learning_rate(learning_rate)]
    decay = None if weight_decay is None else add_decayed_weights(weight_decay, mask)
    return _with_decay(core, decay, mask is not None, decay_first=True, name="dowg")


def prodigy(
    learning_rate: hyper.Hyperparameter = 1.0,
    betas: tuple[Any, Any] = (0.9, 0.999),
    beta3: hyper.Hyperparameter | None = None,
    eps: hyper.Hyperparameter = 1e-8,
    estim_lr0: hyper.Hyperparameter = 1e-6,
    estim_lr_coef: hyper.Hyperparameter = 1.0,
    weight_decay: hyper.Hyperparameter = 0.0,
    safeguard_warmup: bool = False,
) -> GradientTransformationExtraArgs:
    """Prodigy (Mishchenko & Defazio, ICML 2024, https://arxiv.org/abs/2306.06101):
    learning-rate-free AdamW whose rate estimates the distance to the solution::

        scale_by_prodigy(learning_rate, betas, beta3, eps, estim_lr0, estim_lr_coef, weight_decay)

    One piece: the learning rate enters the distance estimate, so it cannot be a separate
    scaling at the end.  Packs (the estimate's sums are over the whole tree).

    Args:
      learning_rate: ≥ 0, a multiplier (a schedule from 1 down to 0, with warm-up, is advised).
      betas: ``(β₁, β₂)`` in [0, 1) (hyperparameters ``beta1``, ``beta2``).
      beta3: in [0, 1) or ``None`` (``√β₂``).
      eps: > 0.
      estim_lr0: > 0, the first (under-)estimate of the rate.
      estim_lr_coef: > 0.
      weight_decay: ≥ 0, decoupled.
      safeguard_warmup: keep the learning rate out of the estimate's denominator.

    Returns:
      A gradient transformation; state fields ``exp_avg``, ``exp_avg_sq``, ``grad_sum``,
      ``params0``, ``estim_lr``, ``numerator_weighted`` as Optax's.
    """
    step = scale_by_prodigy(learning_rate, betas, beta3, eps, estim_lr0, estim_lr_coef, weight_decay, safeguard_warmup)
    return _front(multi_tensor(step), "prodigy", stateless=False)


def dadapt_adamw(
    learning_rate: hyper.Hyperparameter = 1.0,
    betas: tuple[Any, Any] = (0.9, 0.999),
    eps: hyper.Hyperparameter = 1e-8,
    estim_lr0: hyper.Hyperparameter = 1e-6,
    weight_decay: hyper.Hyperparameter = 0.0,
) -> GradientTransformationExtraArgs:
    """D-Adapted AdamW (Defazio & Mishchenko, ICML 2023, https://arxiv.org/abs/2301.07733)::

        scale_by_dadapt_adamw(learning_rate, betas, eps, estim_lr0, weight_decay)

    One piece, as :func:`prodigy`.  Packs.

    Args:
      learning_rate: ≥ 0, a multiplier of the estimated rate.
      betas: ``(β₁, β₂)`` in [0, 1) (hyperparameters ``beta1``, ``beta2``).
      eps: > 0.
      estim_lr0: > 0, the first estimate.
      weight_decay: ≥ 0, decoupled.

    Returns:
      A gradient transformation; state fields ``exp_avg``, ``exp_avg_sq``, ``grad_sum``,
      ``estim_lr``, ``numerator_weighted`` as Optax's.
    """
    step = scale_by_dadapt_adamw(learning_rate, betas, eps, estim_lr0, weight_decay)
    return _front(multi_tensor(step), "dadapt_adamw", stateless=False)


def _warmup(learning_rate: hyper.Hyperparameter, warmup_steps: int | None) -> hyper.Hyperparameter:
    """Optax's ``warmup_constant_schedule(0, learning_rate, warmup_steps)``, the same arithmetic:
    ``(0 - lr)·(1 - min(t, W)/W) + lr`` for ``t < W``, then ``lr``."""
    hyper.check("learning_rate", learning_rate, low=0.0)
    if warmup_steps is None:
        return learning_rate
    steps = check_int("warmup_steps", warmup_steps, 0)
    if steps == 0:
        return learning_rate
    peak_at = learning_rate if callable(learning_rate) else (lambda step: learning_rate)

    def schedule(step):
        peak = peak_at(step)
        frac = 1 - jnp.clip(step, 0, steps) / steps
        return jnp.where(step < steps, (0 - peak) * frac**1 + peak, peak)

    return schedule


def schedule_free_sgd(
    learning_rate: hyper.Hyperparameter = 1.0,
    warmup_steps: int | None = None,
    b1: hyper.Hyperparameter = 0.9,
    weight_decay: hyper.Hyperparameter | None = None,
    weight_lr_power: hyper.Hyperparameter = 2.0,
    state_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """Schedule-free SGD (Defazio et al., NeurIPS 2024, https://arxiv.org/abs/2405.15682)::

        schedule_free(chain([add_decayed_weights(weight_decay)], scale_by_learning_rate(lr)),
                      lr, b1, weight_lr_power)

    ``lr`` is ``learning_rate`` behind a linear warm-up of ``warmup_steps`` (Optax's
    ``warmup_constant_schedule``).  Packs (element-wise); evaluate at
    :func:`schedule_free_eval_params`.

    Args:
      learning_rate: ≥ 0 (a number, an array or a schedule).
      warmup_steps: ``None`` or an int ≥ 0, the length of the warm-up from 0.
      b1: in (0, 1].
      weight_decay: ``None`` or ≥ 0, coupled (added to the gradient).
      weight_lr_power: ≥ 0.
      state_dtype: storage dtype of ``z``.

    Returns:
      A gradient transformation; state fields ``weight_sum``, ``step_count``, ``max_lr``,
      ``base_optimizer_state``, ``z`` as Optax's (``b1`` a hyperparameter).
    """
    lr = _warmup(learning_rate, warmup_steps)
    decay = [] if weight_decay is None else [add_decayed_weights(weight_decay)]
    base = chain(*decay, scale_by_learning_rate(lr))
    tx = schedule_free(base, lr, b1=b1, weight_lr_power=weight_lr_power, state_dtype=state_dtype)
    return _front(multi_tensor(tx), "schedule_free_sgd", stateless=False)


def schedule_free_adamw(
    learning_rate: hyper.Hyperparameter = 0.0025,
    warmup_steps: int | None = None,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-8,
    weight_decay: hyper.Hyperparameter = 0.0,
    weight_lr_power: hyper.Hyperparameter = 2.0,
    state_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """Schedule-free AdamW (Defazio et al., NeurIPS 2024, https://arxiv.org/abs/2405.15682):
    the interpolation and averaging replace Adam's first moment::

        schedule_free(chain(scale_by_rms(b2, eps), add_decayed_weights(weight_decay),
                            scale_by_learning_rate(lr)), lr, b1, weight_lr_power)

    ``scale_by_rms`` is bias-corrected with ``eps`` outside the square root (Adam with
    ``b1 = 0``).  Packs; evaluate at :func:`schedule_free_eval_params`.

    Args:
      learning_rate: ≥ 0 (a number, an array or a schedule).
      warmup_steps: ``None`` or an int ≥ 0.
      b1: in (0, 1].
      b2: in [0, 1).
      eps: > 0.
      weight_decay: ≥ 0, decoupled (multiplied by the learning rate).
      weight_lr_power: ≥ 0.
      state_dtype: storage dtype of ``z``.

    Returns:
      A gradient transformation; state fields as :func:`schedule_free_sgd`'s, ``nu`` in the
      base optimizer's state.
    """
    lr = _warmup(learning_rate, warmup_steps)
    base = chain(scaling.scale_by_rms(b2, eps), add_decayed_weights(weight_decay), scale_by_learning_rate(lr))
    tx = schedule_free(base, lr, b1=b1, weight_lr_power=weight_lr_power, state_dtype=state_dtype)
    return _front(multi_tensor(tx), "schedule_free_adamw", stateless=False)


def sophia(
    learning_rate: hyper.Hyperparameter,
    b1: hyper.Hyperparameter = 0.965,
    b2: hyper.Hyperparameter = 0.99,
    eps: hyper.Hyperparameter = 1e-8,
    weight_decay: hyper.Hyperparameter = 1e-4,
    weight_decay_mask: Any = None,
    gamma: hyper.Hyperparameter = 0.01,
    clip_threshold: hyper.Hyperparameter | None = 1.0,
    update_interval: hyper.Hyperparameter = 10,
    hessian_diagonal_fn: Any = hutchinson_estimator_diag_hessian(),  # Optax's default (pure, shareable)
    mu_dtype: Any = None,
    verbose: bool = False,
    print_win_rate_every_n_steps: int = 0,
) -> GradientTransformationExtraArgs:
    """Sophia (Liu et al., ICLR 2024, https://arxiv.org/abs/2305.14342): momentum over a
    clipped diagonal-Newton scaling, the Hessian diagonal refreshed every ``update_interval``
    steps::

        chain(scale_by_sophia(b1, b2, eps, gamma, clip_threshold, update_interval,
                              hessian_diagonal_fn),
              add_decayed_weights(weight_decay, weight_decay_mask),
              scale_by_learning_rate(learning_rate))

    Call ``update(grads, state, params, obj_fn=lambda p: loss(p, batch))``: the extra keyword
    arguments reach ``hessian_diagonal_fn`` (the default Hutchinson estimator differentiates
    ``obj_fn`` twice at ``params``).  Runs per leaf (the estimator needs the real parameter tree,
    not packed buffers).

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      b1: in [0, 1).
      b2: in [0, 1) (per refresh: effectively ``1 - (1-b2)/update_interval`` per step).
      eps: > 0.
      weight_decay: ≥ 0, decoupled.
      weight_decay_mask: which leaves decay.
      gamma: > 0.
      clip_threshold: > 0 or ``None``.
      update_interval: a whole number ≥ 1.
      hessian_diagonal_fn: the estimator (gradchain's or Optax's transformation).
      mu_dtype: storage dtype of ``mu``.
      verbose: print the share of unclipped elements.
      print_win_rate_every_n_steps: how often (an int ≥ 1 with ``verbose``).

    Returns:
      A gradient transformation; state fields ``mu``, ``nu``, ``hessian_fn_state`` as Optax's.
    """
    scaled = scale_by_sophia(
        b1, b2, eps, gamma, clip_threshold, update_interval, hessian_diagonal_fn, mu_dtype, verbose,
        print_win_rate_every_n_steps,
    )
    tx = chain(scaled, add_decayed_weights(weight_decay, weight_decay_mask), scale_by_learning_rate(learning_rate))
    return _front(tx, "sophia", stateless=False)


def _muon_mask(spec: Any) -> Callable[[Any], Any]:
    """``params -> bool tree``: which leaves Muon orthogonalises (the 2-d ones by default; those
    with dimension numbers, not ``None``, when given)."""

    def mask(params):
        if spec is None:
            return jax.tree.map(lambda x: jnp.ndim(x) == 2, params)
        resolved = spec(params) if callable(spec) and not is_dimension_numbers(spec) else spec
        is_leaf = lambda x: x is None or is_dimension_numbers(x)
        return jax.tree.map(lambda d, sub: jax.tree.map(lambda _: d is not None, sub), resolved, params, is_leaf=is_leaf)

    return mask


def muon(
    learning_rate: hyper.Hyperparameter,
    ns_coeffs: Any = DEFAULT_NS_COEFFS,
    ns_steps: int = 5,
    beta: hyper.Hyperparameter = 0.95,
    eps: hyper.Hyperparameter = 1e-8,
    weight_decay: hyper.Hyperparameter = 0.0,
    weight_decay_mask: Any = None,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    adam_b1: hyper.Hyperparameter = 0.9,
    adam_b2: hyper.Hyperparameter = 0.999,
    adam_eps_root: hyper.Hyperparameter = 0.0,
    adam_weight_decay: hyper.Hyperparameter = 0.0,
    adam_learning_rate: hyper.Hyperparameter | None = None,
    muon_weight_dimension_numbers: Any = None,
    consistent_rms: hyper.Hyperparameter | None = None,
) -> GradientTransformationExtraArgs:
    """Muon, momentum orthogonalised by Newton–Schulz (Jordan et al. 2024,
    https://kellerjordan.github.io/posts/muon/; Bernstein & Newhouse 2024,
    https://arxiv.org/abs/2409.20325; Liu et al. 2025, https://arxiv.org/abs/2502.16982), on the
    matrices; (N)AdamW on every other leaf::

        chain(masked(chain(scale_by_muon(ns_coeffs, ns_steps, beta, eps, ...),
                           scale_by_shape(consistent_rms),
                           add_decayed_weights(weight_decay, weight_decay_mask),
                           scale_by_learning_rate(learning_rate)),           the 2-d leaves),
              masked(chain(scale_by_adam(adam_b1, adam_b2, eps, adam_eps_root, nesterov),
                           add_decayed_weights(adam_weight_decay),
                           scale_by_learning_rate(adam_learning_rate)),       the others))

    Runs per leaf (orthogonalisation needs each leaf's shape; nothing is packed); a tree of many
    leaves is fine.  ``muon_weight_dimension_numbers`` picks other leaves (a tree of
    :class:`MuonDimensionNumbers`, ``None`` for AdamW's leaves, or a function of the params):
    a 3-d kernel is then orthogonalised as a batch of matrices.

    Hyperparameters: ``learning_rate``, ``ns_coeffs``, ``beta``, ``eps`` (both branches, as in
    Optax), ``weight_decay``, ``adam_b1``, ``adam_b2``, ``adam_eps_root``, ``adam_weight_decay``,
    ``adam_learning_rate`` (when given; else AdamW's rate *is* ``learning_rate``) and
    ``consistent_rms`` (when given).  ``ns_steps`` is structural (the loop is unrolled).

    Args:
      learning_rate: ≥ 0: a number, an array or a schedule.
      ns_coeffs: ``(c₀, c₁, c₂)``, ``(n, 3)`` rows, or ``"standard"`` / ``"dion"``.
      ns_steps: an int ≥ 1.
      beta: in [0, 1), Muon's momentum.
      eps: > 0.
      weight_decay: ≥ 0, Muon's decoupled decay.
      weight_decay_mask: which Muon leaves decay.
      mu_dtype: storage dtype of the momenta.
      nesterov: Nesterov's momentum (both branches).
      adaptive: scale by the dual norm ``⟨m̂, NS(m̂)⟩``.
      preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or ``"schatten"``.
      adam_b1: in [0, 1).
      adam_b2: in [0, 1).
      adam_eps_root: ≥ 0.
      adam_weight_decay: ≥ 0.
      adam_learning_rate: ≥ 0 or ``None``.
      muon_weight_dimension_numbers: which leaves and axes Muon orthogonalises.
      consistent_rms: ``None`` (width scaling ``√max(1, fan_out/fan_in)``) or > 0.

    Returns:
      A gradient transformation.  Its state holds ``MuonState(count, hyperparams, mu)`` (2-d
      leaves) and ``ScaleByAdamMomentsState(count, hyperparams, mu, nu)`` (the others), so ``mu``
      names two fields (as in Optax's state): read them by path.
    """
    hyper.check("learning_rate", learning_rate, low=0.0)
    for name, value in (("adam_b1", adam_b1), ("adam_b2", adam_b2)):
        hyper.check(name, value, low=0.0, high=1.0, high_open=True)
    hyper.check("adam_eps_root", adam_eps_root, low=0.0)
    lr_name = "learning_rate" if adam_learning_rate is None else "adam_learning_rate"
    adam_lr = learning_rate if adam_learning_rate is None else adam_learning_rate
    spec = muon_weight_dimension_numbers
    in_muon = _muon_mask(spec)
    muon_branch = chain(
        scale_by_muon(
            ns_coeffs, ns_steps, beta, eps, mu_dtype, nesterov=nesterov, adaptive=adaptive,
            preconditioning=preconditioning, weight_dimension_numbers=spec,
        ),
        scale_by_shape(spec, consistent_rms),
        add_decayed_weights(weight_decay, weight_decay_mask),
        scale_by_learning_rate(learning_rate),
    )
    adam_branch = chain(
        renamed(
            scale_by_adam_moments(adam_b1, adam_b2, eps, adam_eps_root, mu_dtype, nesterov=nesterov),
            b1="adam_b1", b2="adam_b2", eps_root="adam_eps_root",
        ),
        add_decayed_weights(adam_weight_decay, name="adam_weight_decay"),
        scale_by_learning_rate(adam_lr, name=lr_name),
    )
    in_adam = lambda params: jax.tree.map(lambda m: not m, in_muon(params))
    return _front(chain(masked(muon_branch, in_muon), masked(adam_branch, in_adam)), "muon", stateless=False)
