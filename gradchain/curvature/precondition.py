"""K-FAC as a gradient transformation: precondition the updates by the damped block inverse.

    curv = gc.kfac_curvature(loss_fn, params, x, y)
    tx = gc.chain(gc.kfac_precondition(curv, damping=1e-3),
                  gc.scale_by_momentum(0.9), gc.scale_by_learning_rate(0.1))
    state = tx.init(params)

    value, grads, stats = curv.value_grad_and_statistics(params, x, y, key=key)
    updates, state = tx.update(grads, state, params, kfac_statistics=stats)
    params = gc.apply_updates(params, updates)

The statistics reach ``update`` as the extra keyword argument ``kfac_statistics`` (forwarded by
:func:`gradchain.chain`).  Per update, with ``k`` the update index:

    w_k = ε w_{k-1} + 1,   F_k = F_{k-1} + (F_batch − F_{k-1}) / w_k,   w_0 = 0

i.e. the exponentially weighted *mean* ``F_k = Σ_i ε^{k-i} F_i / Σ_i ε^{k-i}`` of the batch
estimates (M&G 2015 §5 use ε = 0.95), with the bias corrected as in Adam: the first update's
factors are the batch estimate, and early estimates are not shrunk towards zero.  Every ``refresh_every`` updates
(``k ≡ 0``) the block inverses are recomputed from ``F_k``: with ``inverse="pi"`` the inverses of
the π-damped factors ``A + πγI``, ``G + γ/πI`` at the damping of that update (M&G §6.3); with
``inverse="eigh"`` the eigendecompositions, applied with the damping of each update (exact
``(s A⊗G + λI)⁻¹``).  The output is ``Δ = (F̂ + λI)⁻¹ u`` block by block (:mod:`.blocks`), with
the same sign as the incoming ``u``; parameters no tag claimed pass through unchanged.

``damping`` (λ > 0) and ``ema_decay`` (in [0, 1)) are hyperparameters like any other (a number,
an array — traced under ``vmap``, so a population of dampings is one program — or a schedule of
the update index), stored in ``state.hyperparams``.

Schedules for ``damping`` and ``ema_decay`` are checked at construction on a grid of steps
(:data:`gradchain.hyper.PROBE_STEPS`: 0–16, then powers of two to 2²⁴), not only at step 0.
Between grid points, and for values set later (``gc.set_hyperparams``, a traced population), an
update whose damping is not a finite ``λ > 0`` or whose decay is not in ``[0, 1)`` returns **NaN
updates** (every leaf): never a silently finite step from a negative damping (which with
``inverse="eigh"`` gave finite but meaningless numbers).

Non-finite numbers follow the library's policy: the arithmetic is plain, so a NaN or Inf in the
statistics or the updates gives NaN/Inf factors and updates; nothing is silently replaced.  Guard
the step with :func:`gradchain.apply_if_finite` (it forwards ``kfac_statistics``) if batches can
be bad: a skipped step leaves the factors as they were.

Parameters in float16 or bfloat16: the factors and inverses are kept in float32
(:func:`.blocks.compute_dtype`), the updates come out in the parameters' dtype.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.core import GradientTransformationExtraArgs
from gradchain.curvature import blocks as _blocks
from gradchain.curvature.statistics import KFACCurvature, KFACStatistics

__all__ = ["INVERSE_KINDS", "KFACPreconditionState", "kfac_precondition"]

INVERSE_KINDS = ("pi", "eigh")


class KFACPreconditionState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict  # {"damping": λ, "ema_decay": ε}: the values the next update uses
    factors: tuple  # per block: the moving averages ({"A", "G"} or diagonals)
    factor_weight: jax.Array  # w_k = Σ_i ε^{k-i}, the normaliser of the moving average
    inverses: tuple  # per block: cached inverses ("pi") or eigendecompositions ("eigh")


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def factor_dtype(params):
    """The dtype of the factors: the first floating parameter's, at least float32."""
    for leaf in jax.tree.leaves(params):
        if jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating):
            return _blocks.compute_dtype(jnp.asarray(leaf).dtype)
    return hyper.float_dtype()


def factor_shapes(curvature: KFACCurvature) -> tuple:
    """Per block, ``{role: shape}`` of the factors the curvature's statistics carry."""
    out = []
    for b in curvature.blocks:
        if b.kind == _blocks.KRONECKER:
            out.append({"A": (b.a_dim, b.a_dim), "G": (b.g_dim, b.g_dim)})
        else:
            out.append({role: tuple(shape) for role, shape in b.layer.shapes})
    return tuple(out)


def zero_factors(curvature: KFACCurvature, dtype) -> tuple:
    """The factors of a fresh state: zeros of :func:`factor_shapes` (``w_0 = 0`` weighs them 0)."""
    return tuple({role: jnp.zeros(shape, dtype) for role, shape in f.items()} for f in factor_shapes(curvature))


def average_factors(factors: tuple, weight: jax.Array, batch: tuple, decay: jax.Array):
    """One step of the bias-corrected moving average: ``(F_k, w_k)``; see the module docstring."""
    weight = decay.astype(weight.dtype) * weight + 1
    new = jax.tree.map(lambda old, b: old + (b.astype(old.dtype) - old) / weight.astype(old.dtype), factors, batch)
    return new, weight


def compute_inverses(curvature: KFACCurvature, factors: tuple, damping: jax.Array, inverse: str) -> tuple:
    """Every block's damped inverses (``"pi"``) or eigendecompositions (``"eigh"``, one block
    after the other: see :func:`.blocks.after`)."""
    if inverse == "pi":
        return tuple(_blocks.pi_inverses(b, f, damping) for b, f in zip(curvature.blocks, factors))
    out = []
    for b, f in zip(curvature.blocks, factors):
        if out:
            out[-1], f = _blocks.after(out[-1], f)
        out.append(_blocks.eigendecompositions(b, f))
    return tuple(out)


def apply_blocks(curvature: KFACCurvature, inverses: tuple, updates, damping: jax.Array, inverse: str):
    """``(F̂ + λI)⁻¹ u`` block by block; untagged leaves unchanged."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(updates)
    paths = tuple(jax.tree_util.keystr(p) for p, _ in flat)
    if paths != curvature.param_paths:
        raise ValueError(
            "the updates do not have the parameters' structure the curvature was built for:\n"
            f"  updates: {list(paths)}\n  params:  {list(curvature.param_paths)}"
        )
    leaves = {path: leaf for path, (_, leaf) in zip(paths, flat)}
    for b, inv in zip(curvature.blocks, inverses):
        parts = {role: leaves[path] for role, path in b.roles}
        if inverse == "pi":
            new = _blocks.apply_pi(b, inv, parts)
        else:
            new = _blocks.apply_eigh(b, inv, parts, damping)
        for role, path in b.roles:
            leaves[path] = new[role]
    return jax.tree.unflatten(treedef, [leaves[p] for p in paths])


def check_statistics(curvature: KFACCurvature, stats) -> KFACStatistics:
    """Raise unless ``stats`` are this curvature's: a ``KFACStatistics`` with its blocks' shapes."""
    if stats is None:
        raise TypeError(
            "kfac_precondition's update needs kfac_statistics=<the KFACStatistics of this batch>, from "
            "value, grads, stats = curv.value_grad_and_statistics(params, *batch); got none (through "
            "gc.chain or gc.apply_if_finite, pass it to their update: it is forwarded)"
        )
    if not isinstance(stats, KFACStatistics):
        raise TypeError(
            "kfac_statistics must be the KFACStatistics from curvature.value_grad_and_statistics, "
            f"got {type(stats).__name__}"
        )
    if len(stats.factors) != len(curvature.blocks):
        raise ValueError(f"kfac_statistics has {len(stats.factors)} blocks, the curvature {len(curvature.blocks)}")
    for b, want, got in zip(curvature.blocks, factor_shapes(curvature), stats.factors):
        shapes = {role: tuple(jnp.shape(f)) for role, f in dict(got).items()}
        if shapes != want:
            raise ValueError(
                f"kfac_statistics block {b.name!r} has factors {shapes}, this curvature's has {want}: "
                "the statistics come from another curvature (another model or another tagging)"
            )
    return stats


def usable(damping: jax.Array, decay: jax.Array) -> jax.Array:
    """True where this update's damping is a finite ``λ > 0`` and its decay an ``ε ∈ [0, 1)``."""
    return jnp.isfinite(damping) & (damping > 0) & (decay >= 0) & (decay < 1)


def poison_unless(ok: jax.Array, updates):
    """``updates`` where ``ok``, NaN in every leaf where not (the module's non-finite policy)."""
    return jax.tree.map(lambda u: jnp.where(ok, u, jnp.nan).astype(u.dtype), updates)


def kfac_precondition(
    curvature: KFACCurvature,
    damping: hyper.Hyperparameter = 1e-3,
    ema_decay: hyper.Hyperparameter = 0.95,
    refresh_every: int = 1,
    inverse: str = "pi",
) -> GradientTransformationExtraArgs:
    """Precondition updates by K-FAC's damped block-diagonal inverse; see the module docstring.

    Args:
      curvature: from :func:`gradchain.kfac_curvature`: the blocks and their layout.
      damping: λ > 0, the Tikhonov damping of ``F̂ + λI`` (number, array or schedule).
      ema_decay: ε in [0, 1), the decay of the factors' moving average (0: the batch estimate only).
      refresh_every: T ≥ 1: recompute the inverses (or eigendecompositions) every T updates.
      inverse: ``"pi"`` (factored Tikhonov damping with π) or ``"eigh"`` (exact damped inverse).
        On CPU ``"pi"`` is the fast one: its inverses stay off threaded LAPACK (:mod:`.linalg`),
        while ``eigh`` calls LAPACK's ``syevd`` on whole factors.

    ``update(updates, state, params=None, *, kfac_statistics)`` — the statistics of this step.

    Raises:
      ValueError: a damping ≤ 0 or an ema_decay outside [0, 1) (for a schedule: at a step of
        :data:`gradchain.hyper.PROBE_STEPS`), refresh_every < 1, an unknown inverse.
      TypeError: a curvature not from :func:`gradchain.kfac_curvature`.
    """
    if not isinstance(curvature, KFACCurvature):
        raise TypeError(f"curvature must come from gc.kfac_curvature(...), got {type(curvature).__name__}")
    hyper.check("damping", damping, low=0.0, low_open=True, steps=hyper.PROBE_STEPS)
    hyper.check("ema_decay", ema_decay, low=0.0, high=1.0, high_open=True, steps=hyper.PROBE_STEPS)
    check_positive_int("refresh_every", refresh_every)
    if inverse not in INVERSE_KINDS:
        raise ValueError(f"inverse must be one of {', '.join(map(repr, INVERSE_KINDS))}, got {inverse!r}")
    hypers = {"damping": damping, "ema_decay": ema_decay}

    def init(params):
        dtype = factor_dtype(params)
        factors = zero_factors(curvature, dtype)
        lam = hyper.initial(damping)
        return KFACPreconditionState(
            count=jnp.zeros([], jnp.int32),
            hyperparams={name: hyper.initial(value) for name, value in hypers.items()},
            factors=factors,
            factor_weight=jnp.zeros([], dtype),
            inverses=jax.tree.map(
                lambda s: jnp.zeros(s.shape, s.dtype),
                jax.eval_shape(lambda f: compute_inverses(curvature, f, lam, inverse), factors),
            ),
        )

    def update(updates, state, params=None, *, kfac_statistics=None):
        del params
        if not isinstance(state, KFACPreconditionState):
            raise TypeError(f"state must be a KFACPreconditionState from kfac_precondition's init, got {type(state).__name__}")
        kfac_statistics = check_statistics(curvature, kfac_statistics)
        lam = state.hyperparams["damping"]
        factors, weight = average_factors(
            state.factors, state.factor_weight, kfac_statistics.factors, state.hyperparams["ema_decay"]
        )
        if refresh_every == 1:
            inverses = compute_inverses(curvature, factors, lam, inverse)
        else:
            inverses = jax.lax.cond(
                state.count % refresh_every == 0,
                lambda: compute_inverses(curvature, factors, lam, inverse),
                lambda: state.inverses,
            )
        out = apply_blocks(curvature, inverses, updates, lam, inverse)
        out = poison_unless(usable(lam, state.hyperparams["ema_decay"]), out)
        next_hypers = {
            name: hyper.next_value(value, state.hyperparams[name], state.count) for name, value in hypers.items()
        }
        return out, KFACPreconditionState(hyper.increment(state.count), next_hypers, factors, weight, inverses)

    return GradientTransformationExtraArgs(init, update)  # pyright: ignore[reportArgumentType] - takes kfac_statistics= only
