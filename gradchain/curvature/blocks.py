"""One curvature block per tagged layer: its factors from a batch, and its damped inverse.

Two kinds of block:

* **Kronecker** (dense and conv2d layers; M&G 2015 §3, KFC 2016 §3).  The layer's parameters
  are laid out as ``V = [W.reshape(-1, d_out); bᵀ]`` (weight rows first, the bias the last row)
  and ``F̂ = s · A ⊗ G`` acts as ``F̂ vec(V) = s · A V G``, with

      A = (1/M) Σ_m ā_m ā_mᵀ,    G = (1/M) Σ_m Σ_j g_mj g_mjᵀ,    s = M / N,

  where the ``M = N·T`` rows are examples times locations (``T = 1`` for a dense layer on
  ``(N, d)`` inputs), ``ā = [a; 1]`` and ``g_mj`` the output-side vectors of
  :mod:`gradchain.curvature.losses` pushed back to the layer's output.  Two damped inverses:

  - *factored Tikhonov with π* (M&G §6.3): with ``γ = √(λ/s)`` and
    ``π = √((tr A / dim A) / (tr G / dim G))``,
    ``Δ = (1/s) (A + πγ I)⁻¹ V (G + γ/π I)⁻¹``;
  - *exact* (M&G §6.3's alternative, via eigendecompositions ``A = Q_A diag(e_A) Q_Aᵀ``):
    ``Δ = Q_A [(Q_Aᵀ V Q_G) ⊘ (s e_A e_Gᵀ + λ)] Q_Gᵀ = (s A⊗G + λ I)⁻¹ vec V`` (eigenvalues
    clipped at 0).

* **Diagonal** (scale-and-shift): ``F̂ = diag(f)`` with ``f`` the exact diagonal of the Fisher,
  and ``Δ = g ⊘ (f + λ)``.

Every function here is pure and works on one block; :mod:`gradchain.curvature.precondition`
maps them over the blocks.

**Precision.**  Factors, inverses and the products with them are computed in
:func:`compute_dtype` — float32 for float16/bfloat16 layers (LAPACK has no half-precision
factorisations, and a 16-bit sum of ``M`` outer products loses ~``M·2⁻¹¹`` of its value), the
layer's own dtype otherwise; directions are returned in the parameters' dtype.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from gradchain.curvature.linalg import eigh, matmul, spd_inverse
from gradchain.curvature.tags import LayerRecord

KRONECKER = "kronecker"
DIAGONAL = "diagonal"


def compute_dtype(dtype) -> jnp.dtype:
    """The dtype of the factors and inverses for values of ``dtype``: at least float32."""
    return jnp.promote_types(dtype, jnp.float32)


def _widened(x: jax.Array) -> jax.Array:
    return x.astype(compute_dtype(x.dtype))


class Block(NamedTuple):
    """The static description of one block: the layer it serves and the sizes of its factors."""

    layer: LayerRecord
    kind: str  # KRONECKER or DIAGONAL
    roles: tuple  # ((role, leaf path), ...)
    a_dim: int  # rows of V (Kronecker); 0 for a diagonal block
    g_dim: int  # columns of V
    scale: float  # s = T (locations per example)
    has_bias: bool

    @property
    def name(self) -> str:
        return self.layer.name


def block_of(layer: LayerRecord) -> Block:
    """The block a tagged layer gets."""
    options = dict(layer.options)
    shapes = dict(layer.shapes)
    roles = layer.params
    out = layer.output_shape
    locations = math.prod(out[1:-1]) if len(out) > 2 else 1
    if layer.kind == "scale_and_shift":
        return Block(layer, DIAGONAL, roles, 0, 0, 1.0, "shift" in shapes)
    w = shapes["w"]
    if layer.kind == "dense":
        d_in, d_out = (w[1], w[0]) if options["transposed"] else w
    else:  # conv2d, HWIO
        d_in, d_out = w[0] * w[1] * w[2], w[3]
    has_bias = "b" in shapes
    return Block(layer, KRONECKER, roles, d_in + int(has_bias), d_out, float(locations), has_bias)


# ---------------------------------------------------------------------------------------------
# Layout: parameters <-> V


def to_matrix(block: Block, parts: dict) -> jax.Array:
    """``V = [W.reshape(-1, d_out); bᵀ]`` from ``{"w": ..., "b": ...}``."""
    w = parts["w"]
    if block.layer.kind == "dense" and dict(block.layer.options)["transposed"]:
        w = w.T
    v = w.reshape(-1, block.g_dim)
    if block.has_bias:
        v = jnp.concatenate([v, parts["b"][None].astype(v.dtype)], axis=0)
    return v


def from_matrix(block: Block, v: jax.Array, like: dict) -> dict:
    """The inverse of :func:`to_matrix`, shaped like ``like``."""
    out = {}
    w_rows = v[:-1] if block.has_bias else v
    if block.layer.kind == "dense" and dict(block.layer.options)["transposed"]:
        out["w"] = w_rows.T.astype(like["w"].dtype)
    else:
        out["w"] = w_rows.reshape(like["w"].shape).astype(like["w"].dtype)
    if block.has_bias:
        out["b"] = v[-1].astype(like["b"].dtype)
    return out


# ---------------------------------------------------------------------------------------------
# Factors from one batch


def conv_patches(x: jax.Array, layer: LayerRecord) -> jax.Array:
    """im2col: ``(N, H', W', kh·kw·C)`` with the last axis in ``(kh, kw, c)`` order (HWIO rows)."""
    options = dict(layer.options)
    kh, kw = options["kernel"]
    p = jax.lax.conv_general_dilated_patches(
        x, (kh, kw), options["strides"], options["padding"], rhs_dilation=options["dilation"],
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    c = x.shape[-1]
    p = p.reshape(p.shape[:-1] + (c, kh, kw))  # XLA orders the patch features (c, kh, kw)
    p = jnp.moveaxis(p, -3, -1)
    return p.reshape(p.shape[:-3] + (kh * kw * c,))


def batch_factors(block: Block, inputs: jax.Array, out_grads: jax.Array) -> dict:
    """The block's factors on one batch.

    ``inputs``: the layer input as the tag saw it.  ``out_grads``: ``(K, *output_shape)``, the
    ``K`` output-side vectors of every example pushed back to the layer output (already weighted,
    so that ``Σ_k g_k g_kᵀ`` estimates the Fisher of one example).
    """
    inputs, out_grads = _widened(inputs), _widened(out_grads)
    if block.kind == DIAGONAL:
        return _diagonal_factors(block, inputs, out_grads)
    if block.layer.kind == "conv2d":
        inputs = conv_patches(inputs, block.layer)
    a = inputs.reshape(-1, inputs.shape[-1])
    m = a.shape[0]
    aa = matmul(a.T, a)
    if block.has_bias:  # ā = [a; 1]: the last row and column of āᵀā are the sums of a, and m
        total = jnp.sum(a, axis=0)
        aa = jnp.block([[aa, total[:, None]], [total[None, :], jnp.full((1, 1), m, aa.dtype)]])
    g = out_grads.reshape(-1, out_grads.shape[-1])
    return {"A": aa / m, "G": matmul(g.T, g) / m}


def _diagonal_factors(block: Block, x: jax.Array, out_grads: jax.Array) -> dict:
    shapes = dict(block.layer.shapes)
    n = x.shape[0]
    factors = {}
    for role in ("scale", "shift"):
        if role not in shapes:
            continue
        k = len(shapes[role])
        per = out_grads * x[None] if role == "scale" else out_grads
        # per-example derivative: sum over the axes between the batch axis and the parameter's
        axes = tuple(range(2, per.ndim - k))
        d = per.sum(axis=axes) if axes else per
        factors[role] = jnp.sum(d * d, axis=(0, 1)) / n
    return factors


# ---------------------------------------------------------------------------------------------
# Damped inverses


def pi_of(a: jax.Array, g: jax.Array) -> jax.Array:
    """π = √((tr A / dim A) / (tr G / dim G)) (M&G §6.3), the trace-norm balance of the factors."""
    ta = jnp.trace(a) / a.shape[0]
    tg = jnp.trace(g) / g.shape[0]
    return jnp.sqrt(ta / tg)


def pi_inverses(block: Block, factors: dict, damping: jax.Array) -> dict:
    """``(A + πγI)⁻¹`` and ``(G + γ/π I)⁻¹`` with ``γ = √(λ/s)``; for a diagonal block ``1/(f + λ)``."""
    if block.kind == DIAGONAL:
        return {role: 1.0 / (f + damping.astype(f.dtype)) for role, f in factors.items()}
    a, g = factors["A"], factors["G"]
    lam = damping.astype(a.dtype)
    gamma = jnp.sqrt(lam / block.scale)
    pi = pi_of(a, g)
    eye_a = jnp.eye(a.shape[0], dtype=a.dtype)
    eye_g = jnp.eye(g.shape[0], dtype=g.dtype)
    return {"A_inv": spd_inverse(a + pi * gamma * eye_a), "G_inv": spd_inverse(g + gamma / pi * eye_g)}


def after(done, todo):
    """``(done, todo)`` unchanged, but ``todo`` is only available once ``done`` is computed.

    Batched LAPACK kernels on XLA's CPU backend (an eigendecomposition under ``vmap``) share one
    small thread pool; two of them running at once can wait for each other for ever on a machine
    with few cores.  Chaining the eigendecompositions one after the other with a data dependency
    (``todo + 0·done[0]``, which XLA does not simplify away: ``0·NaN`` is NaN) avoids it and costs
    nothing measurable.  (The π-damped inverses need no chain: on CPU their LAPACK calls are on
    blocks of at most 16 rows, one matrix at a time, see :mod:`.linalg`.)
    """
    first = jax.tree.leaves(done)[0].ravel()[0]
    return done, jax.tree.map(lambda t: t + (first * 0).astype(t.dtype), todo)


def eigendecompositions(block: Block, factors: dict) -> dict:
    """``A = Q_A diag(e_A) Q_Aᵀ``, ``G = Q_G diag(e_G) Q_Gᵀ``; eigenvalues clipped at 0."""
    if block.kind == DIAGONAL:
        return dict(factors)
    ea, qa = eigh(factors["A"])
    (ea, qa), g = after((ea, qa), factors["G"])
    eg, qg = eigh(g)
    return {"QA": qa, "eA": jnp.maximum(ea, 0), "QG": qg, "eG": jnp.maximum(eg, 0)}


def apply_pi(block: Block, inverses: dict, parts: dict) -> dict:
    """The π-damped direction ``(1/s) A_inv V G_inv`` (or ``g/(f + λ)``), shaped like ``parts``."""
    if block.kind == DIAGONAL:
        return {role: (parts[role] * inverses[role]).astype(parts[role].dtype) for role in parts}
    v = to_matrix(block, parts)
    v = v.astype(jnp.promote_types(v.dtype, inverses["A_inv"].dtype))
    d = matmul(matmul(inverses["A_inv"].astype(v.dtype), v), inverses["G_inv"].astype(v.dtype)) / block.scale
    return from_matrix(block, d, parts)


def apply_eigh(block: Block, eig: dict, parts: dict, damping: jax.Array) -> dict:
    """The exact direction ``Q_A [(Q_Aᵀ V Q_G) ⊘ (s e_A e_Gᵀ + λ)] Q_Gᵀ`` (or ``g/(f + λ)``)."""
    if block.kind == DIAGONAL:
        return {role: (parts[role] / (eig[role] + damping.astype(eig[role].dtype))).astype(parts[role].dtype)
                for role in parts}
    v = to_matrix(block, parts)
    v = v.astype(jnp.promote_types(v.dtype, eig["QA"].dtype))
    qa, qg = eig["QA"].astype(v.dtype), eig["QG"].astype(v.dtype)
    lam = damping.astype(v.dtype)
    inner = matmul(matmul(qa.T, v), qg) / (block.scale * jnp.outer(eig["eA"], eig["eG"]).astype(v.dtype) + lam)
    return from_matrix(block, matmul(matmul(qa, inner), qg.T), parts)
