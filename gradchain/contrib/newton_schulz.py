"""Muon's pieces: Newton–Schulz orthogonalisation of a momentum, and the shape-derived scaling.

Muon (Jordan et al. 2024, "Muon: an optimizer for hidden layers in neural networks",
https://kellerjordan.github.io/posts/muon/) replaces each weight matrix's momentum ``M`` by an
approximation of its orthogonal polar factor ``U Vᵀ`` (``M = U Σ Vᵀ``), computed with a few
steps of the quintic Newton–Schulz iteration

    X₀ = M / (‖M‖_F + eps),    X_{k+1} = c₀ X_k + (c₁ A_k + c₂ A_k²) X_k,    A_k = X_k X_kᵀ,

on the short side of the matrix (``X`` is transposed when it has more rows than columns).  The
default coefficients (3.4445, -4.7750, 2.0315) maximise the slope at zero: the iteration does not
converge to ``U Vᵀ`` but to ``U S' Vᵀ`` with ``S'ᵢᵢ ≈ U(0.5, 1.5)``, which trains as well
(Bernstein & Newhouse 2024, "Old Optimizer, New Norm", https://arxiv.org/abs/2409.20325).
Other preconditionings of ``X₀``: the spectral norm; AOL rescaling (Boissin et al. 2025,
https://arxiv.org/abs/2512.04632); the Schatten-4 norm (Grishina et al. 2025,
https://arxiv.org/abs/2506.10935).

These run per leaf (they need each leaf's shape), never on packed buffers.  A leaf of more than
two axes is orthogonalised as a batch of matrices given its :class:`MuonDimensionNumbers`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.core import Tracer

from gradchain import hyper
from gradchain.contrib._base import zeros_like
from gradchain.core import GradientTransformation
from gradchain.transforms._base import cast_like, check_bool, check_choice, check_int, transformation

__all__ = [
    "MuonDimensionNumbers",
    "MuonState",
    "orthogonalize_via_newton_schulz",
    "scale_by_muon",
    "scale_by_shape",
]

PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")
DEFAULT_NS_COEFFS = (3.4445, -4.7750, 2.0315)
DION_NS_COEFFS = (
    (4.0848, -6.8946, 2.9270),
    (3.9505, -6.3029, 2.6377),
    (3.7418, -5.5913, 2.3037),
    (2.8769, -3.1427, 1.2046),
    (2.8366, -3.0525, 1.2012),
)
NS_COEFFS_PRESETS = {"standard": DEFAULT_NS_COEFFS, "dion": DION_NS_COEFFS}


class MuonDimensionNumbers(NamedTuple):
    """Which axes of a weight are the matrix Muon orthogonalises (``x W = y``): the
    ``reduction_axis`` (fan-in) and the ``output_axis`` (fan-out); every other axis is a batch
    axis (each slice orthogonalised on its own).  Optax's class of this name is accepted too."""

    reduction_axis: Sequence[int] | int = 0
    output_axis: Sequence[int] | int = 1


def is_dimension_numbers(x: Any) -> bool:
    """A :class:`MuonDimensionNumbers`, gradchain's or Optax's."""
    return isinstance(x, tuple) and hasattr(x, "reduction_axis") and hasattr(x, "output_axis")


def _axes(x: jax.Array, dims: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
    as_tuple = lambda a: (a,) if isinstance(a, int) else tuple(a)
    reduction = tuple(ax % x.ndim for ax in as_tuple(dims.reduction_axis))
    output = tuple(ax % x.ndim for ax in as_tuple(dims.output_axis))
    return reduction, output


def _reshapes(x: jax.Array, dims: Any) -> tuple[Callable, Callable]:
    """``(to (batch, fan_in, fan_out), back)`` for one leaf."""
    if x.ndim < 2:
        raise ValueError(f"Muon orthogonalises leaves of rank >= 2, got shape {x.shape}")
    reduction, output = _axes(x, dims)
    if set(reduction) & set(output):
        raise ValueError(
            f"reduction and output axes must be disjoint, got {reduction} and {output} "
            f"({dims}, shape {x.shape})"
        )
    batch = tuple(sorted(set(range(x.ndim)) - set(reduction) - set(output)))
    transpose = batch + reduction + output
    inverse = tuple(sorted(range(x.ndim), key=lambda i: transpose[i]))
    sizes = lambda axes: tuple(x.shape[ax] for ax in axes)
    flat = (math.prod(sizes(batch)), math.prod(sizes(reduction)), math.prod(sizes(output)))
    unflat = sizes(batch) + sizes(reduction) + sizes(output)
    return (lambda y: y.transpose(transpose).reshape(flat)), (lambda y: y.reshape(unflat).transpose(inverse))


def _fans(x: jax.Array, dims: Any) -> tuple[int, int]:
    reduction, output = _axes(x, dims)
    return math.prod(x.shape[ax] for ax in reduction), math.prod(x.shape[ax] for ax in output)


def _ns_step(x, c):
    """``f(X) = c₀ X + (c₁ A + c₂ A²) X``, ``A = X Xᴴ``."""
    a = x @ x.T.conj()
    b = c[1] * a + c[2] * a @ a
    return c[0] * x + b @ x


def _aol_first_step(x, c, eps=1e-8):
    """The first step with "almost orthogonal layer" rescaling: rows of X scaled by
    ``1/√(Σⱼ |A_ij|)`` (Boissin et al. 2025)."""
    a = x @ x.T.conj()
    s = jnp.expand_dims(jax.lax.rsqrt(jnp.clip(jnp.abs(a).sum(axis=-1), min=eps)), -1)
    x, a = x * s, a * s * s.transpose(-1, -2)
    b = c[1] * a + c[2] * a @ a
    return c[0] * x + b @ x


def _schatten_first_step(x, c, eps=1e-8):
    """The first step with X scaled by ``‖X Xᵀ‖_F^(-1/2)`` (the Schatten-4 norm; Grishina et al. 2025)."""
    a = x @ x.T
    s = jnp.expand_dims(jax.lax.rsqrt(jnp.clip(jnp.linalg.norm(a, ord="fro", axis=(-2, -1)), min=eps)), (0, -1))
    x, a = x * s, a * s**2
    b = c[1] * a + c[2] * a @ a
    return c[0] * x + b @ x


def _iterate(preconditioning: str) -> Callable:
    first = {"aol": _aol_first_step, "schatten": _schatten_first_step}.get(preconditioning)
    if first is None:
        return lambda i, x, c: _ns_step(x, c)
    return lambda i, x, c: jax.lax.cond(i == 0, lambda y: first(y, c), lambda y: _ns_step(y, c), x)


def orthogonalize_via_newton_schulz(
    x: jax.Array,
    ns_coeffs: jax.Array,
    ns_steps: int = 5,
    preconditioning: str = "frobenius",
    eps: Any = 1e-8,
    dimension_numbers: Any = None,
) -> jax.Array:
    """Approximate the orthogonal polar factor of ``x`` by Newton–Schulz (see the module docstring).

    Args:
      x: a matrix, or a higher-rank array with ``dimension_numbers``.
      ns_coeffs: ``(c₀, c₁, c₂)`` (shape ``(3,)``, used ``ns_steps`` times) or one row per step
        (shape ``(n, 3)``; ``ns_steps`` is then ignored).
      ns_steps: the number of iterations.
      preconditioning: the scaling of ``X₀``: ``"frobenius"``, ``"spectral"``, ``"aol"`` or
        ``"schatten"``.
      eps: added to the norm ``X₀`` is divided by.
      dimension_numbers: a :class:`MuonDimensionNumbers` (needed when ``x`` is not 2-d).

    Returns:
      An array of ``x``'s shape and dtype.
    """
    if x.ndim != 2 and not is_dimension_numbers(dimension_numbers):
        raise ValueError(
            f"orthogonalize_via_newton_schulz needs a matrix or MuonDimensionNumbers: got shape "
            f"{x.shape} and dimension_numbers={dimension_numbers!r}"
        )
    if x.ndim == 2:
        dimension_numbers = MuonDimensionNumbers(0, 1)
    ns_coeffs = jnp.asarray(ns_coeffs)
    if ns_coeffs.ndim > 2 or ns_coeffs.shape[-1] != 3:
        raise ValueError(f"ns_coeffs must have shape (3,) or (n, 3), got {ns_coeffs.shape}")
    check_choice("preconditioning", preconditioning, PRECONDITIONINGS)
    step = _iterate(preconditioning)

    def orthogonalize(m):
        transposed = m.shape[0] > m.shape[1]
        if transposed:
            m = m.T
        if preconditioning == "frobenius":
            m /= jnp.linalg.norm(m, ord="fro") + eps
        elif preconditioning == "spectral":
            m /= jnp.linalg.norm(m, ord=2) + eps
        c = ns_coeffs.astype(m.dtype)
        if c.ndim == 1:
            m = jax.lax.fori_loop(0, ns_steps, lambda i, y: step(i, y, c), m, unroll=True)
        else:
            body = lambda carry, row: ((carry[0] + 1, step(carry[0], carry[1], row)), None)
            (_, m), _ = jax.lax.scan(body, (jnp.asarray(0, jnp.int32), m), c)
        return m.T if transposed else m

    to_matrices, back = _reshapes(x, dimension_numbers)
    return back(jax.vmap(orthogonalize)(to_matrices(x)))


def leaf_dimension_numbers(spec: Any, tree: Any) -> list[Any]:
    """One :class:`MuonDimensionNumbers` (or ``None``) per leaf of ``tree``, in leaf order.

    ``spec``: ``None`` (every leaf a matrix: ``MuonDimensionNumbers(0, 1)``), a tree of
    dimension numbers / ``None`` with the structure of ``tree`` (or a prefix of it), or a
    function ``tree -> such a tree``."""
    leaves = jax.tree.leaves(tree)
    if spec is None:
        return [MuonDimensionNumbers() for _ in leaves]
    resolved = spec(tree) if callable(spec) and not is_dimension_numbers(spec) else spec
    per_leaf: list[Any] = []
    is_leaf = lambda x: x is None or is_dimension_numbers(x)
    try:
        jax.tree.map(lambda d, sub: per_leaf.extend([d] * len(jax.tree.leaves(sub))), resolved, tree, is_leaf=is_leaf)
    except ValueError as err:
        raise ValueError(
            "weight_dimension_numbers must have the structure of the parameters (or a prefix of it): "
            f"{jax.tree.structure(resolved, is_leaf=is_leaf)} vs {jax.tree.structure(tree)}"
        ) from err
    return per_leaf


class MuonState(NamedTuple):
    """Optax's ``MuonState(count, mu, ns_coeffs)``; ``ns_coeffs`` is a hyperparameter here."""

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    mu: Any


def check_ns_coeffs(ns_coeffs: Any, ns_steps: int) -> Any:
    """Validate Newton–Schulz coefficients (a preset name, ``(3,)`` or ``(n, 3)`` with
    ``n <= ns_steps``) and return them as a hyperparameter (rows beyond ``ns_steps`` dropped)."""
    if isinstance(ns_coeffs, str):
        check_choice("ns_coeffs", ns_coeffs, NS_COEFFS_PRESETS)
        ns_coeffs = NS_COEFFS_PRESETS[ns_coeffs]
    if isinstance(ns_coeffs, (tuple, list)):
        try:
            ns_coeffs = np.asarray(ns_coeffs, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"ns_coeffs must be numbers of shape (3,) or (n, 3), got {ns_coeffs!r}") from err
    probe = hyper.unwrap(ns_coeffs(0) if callable(ns_coeffs) and not hasattr(ns_coeffs, "shape") else ns_coeffs)
    shape = jnp.shape(probe)
    if len(shape) not in (1, 2) or shape[-1] != 3:
        raise ValueError(f"ns_coeffs must have shape (3,) or (n, 3), got shape {shape}: {ns_coeffs!r}")
    if len(shape) == 2:
        if shape[0] > ns_steps:
            raise ValueError(
                f"ns_coeffs has {shape[0]} rows, more than ns_steps={ns_steps}: give at most ns_steps rows"
            )
        if not callable(ns_coeffs):
            ns_coeffs = ns_coeffs[-ns_steps:]
    if not isinstance(probe, Tracer):
        hyper.check("ns_coeffs", ns_coeffs)
    return ns_coeffs


def scale_by_muon(
    ns_coeffs: Any = DEFAULT_NS_COEFFS,
    ns_steps: int = 5,
    beta: hyper.Hyperparameter = 0.95,
    eps: hyper.Hyperparameter = 1e-8,
    mu_dtype: Any = None,
    *,
    nesterov: bool = True,
    adaptive: bool = False,
    preconditioning: str = "frobenius",
    weight_dimension_numbers: Any = None,
) -> GradientTransformation:
    """Muon's direction: the orthogonalised (bias-corrected, optionally Nesterov) momentum::

        m <- β m + (1-β) g
        m̂ = β·m/(1-β^(t+1)) + (1-β)·g/(1-β^t)        (nesterov; else m̂ = m/(1-β^t))
        u = NS(m̂)                                    (orthogonalize_via_newton_schulz)
        adaptive:  u <- ⟨m̂, u⟩ · u                    (Bernstein & Newhouse 2024)

    Runs per leaf: every leaf it sees is orthogonalised, so put it behind a mask (as
    :func:`gradchain.contrib.muon` does) when the tree holds vectors.

    Args:
      ns_coeffs: ``(c₀, c₁, c₂)``, ``(n, 3)`` rows (``n <= ns_steps``) or a preset name
        (``"standard"``, ``"dion"``); a hyperparameter (``get_hyperparams`` lists it).
      ns_steps: the number of Newton–Schulz iterations (a Python int: the loop is unrolled).
      beta: β in [0, 1), the momentum's decay.
      eps: > 0, added to the norm before the iteration.
      mu_dtype: storage dtype of ``mu``.
      nesterov: Nesterov's look-ahead momentum.
      adaptive: scale by the dual norm ``⟨m̂, u⟩``.
      preconditioning: ``"frobenius"``, ``"spectral"``, ``"aol"`` or ``"schatten"``.
      weight_dimension_numbers: ``None`` (every leaf a matrix), a tree of
        :class:`MuonDimensionNumbers` or a function of the updates returning one.

    Returns:
      A transformation with state ``MuonState(count, hyperparams, mu)``.
    """
    ns_steps = check_int("ns_steps", ns_steps, 1)
    ns_coeffs = check_ns_coeffs(ns_coeffs, ns_steps)
    hyper.check("beta", beta, low=0.0, high=1.0, high_open=True)
    hyper.check("eps", eps, low=0.0, low_open=True)
    check_bool("nesterov", nesterov)
    check_bool("adaptive", adaptive)
    check_choice("preconditioning", preconditioning, PRECONDITIONINGS)

    def init_fields(params):
        return {"mu": zeros_like(params, mu_dtype)}

    def step(updates, fields, params, count, ns_coeffs, beta, eps):
        mu = jax.tree.map(lambda g, m: (1 - beta) * g + beta * m, updates, fields["mu"])
        t = hyper.increment(count)
        debias = lambda tree, k: jax.tree.map(lambda m: m / (1 - beta**k).astype(m.dtype), tree)
        if nesterov:
            mu_hat = jax.tree.map(
                lambda m, g: beta * m + (1 - beta) * g, debias(mu, hyper.increment(t)), debias(updates, t)
            )
        else:
            mu_hat = debias(mu, t)
        leaves, treedef = jax.tree.flatten(mu_hat)
        dims = leaf_dimension_numbers(weight_dimension_numbers, mu_hat)
        out = [
            orthogonalize_via_newton_schulz(x, ns_coeffs, ns_steps, preconditioning, eps, d)
            for x, d in zip(leaves, dims)
        ]
        out = jax.tree.unflatten(treedef, out)
        if adaptive:
            out = jax.tree.map(lambda m, u: jnp.sum(m.conj() * u) * u, mu_hat, out)
        mu = jax.tree.map(lambda m, old: m.astype(old.dtype), mu, fields["mu"])
        return out, {"mu": mu}

    hypers = {"ns_coeffs": ns_coeffs, "beta": beta, "eps": eps}
    return transformation(MuonState, step, hypers, init_fields)


class ScaleByShapeState(NamedTuple):
    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict


def scale_by_shape(weight_dimension_numbers: Any = None, consistent_rms: hyper.Hyperparameter | None = None) -> GradientTransformation:
    """Scale each leaf by a factor of its shape (fan-in ``n``, fan-out ``m`` from its dimension
    numbers)::

        consistent_rms is None:  u <- √max(1, m/n) · u              (Jordan 2024, width transfer)
        else:                    u <- √max(n, m) · consistent_rms · u  (Liu et al. 2025,
                                 https://arxiv.org/abs/2502.16982: an RMS like AdamW's at 0.2)

    Args:
      weight_dimension_numbers: as :func:`scale_by_muon`'s.
      consistent_rms: ``None`` or > 0 (a hyperparameter).

    Returns:
      A transformation with state ``ScaleByShapeState(count, hyperparams)``.
    """
    hypers: dict[str, Any] = {}
    if consistent_rms is not None:
        hyper.check("consistent_rms", consistent_rms, low=0.0, low_open=True)
        hypers["consistent_rms"] = consistent_rms

    def step(updates, fields, params, count, *rms):
        leaves, treedef = jax.tree.flatten(updates)
        dims = leaf_dimension_numbers(weight_dimension_numbers, updates)
        out = []
        for u, d in zip(leaves, dims):
            fan_in, fan_out = _fans(u, d)
            if rms:
                out.append(jnp.sqrt(jnp.maximum(fan_in, fan_out)) * cast_like(rms[0], u) * u)
            else:
                out.append(jnp.sqrt(jnp.maximum(1, fan_out / fan_in)) * u)
        return jax.tree.unflatten(treedef, out), fields

    return transformation(ScaleByShapeState, step, hypers)
