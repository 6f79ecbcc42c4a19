"""The two decompositions of a K-FAC refresh, and how they run on XLA's CPU backend.

* :func:`spd_inverse` — the inverse of a symmetric positive definite matrix (a damped factor).
  On CPU it is a recursive block Cholesky made of matrix products: with ``M = [[M₁₁, M₁₂],
  [M₂₁, M₂₂]]`` and ``M = L Lᵀ``, the inverse factor ``X = L⁻¹`` is

      X₁₁ = L₁₁⁻¹ (recursion on M₁₁),   L₂₁ = M₂₁ X₁₁ᵀ,
      X₂₂ = L₂₂⁻¹ (recursion on the Schur complement S = M₂₂ − L₂₁ L₂₁ᵀ),   X₂₁ = −X₂₂ L₂₁ X₁₁,

  down to blocks of at most :data:`BASE` rows, which LAPACK factors (``potrf``, then ``trsm``
  against the identity); then ``M⁻¹ = Xᵀ X``.  About ``n³`` flops, as accurate as LU with
  partial pivoting on these matrices (``≤ 2e-12`` relative in float64 at condition 3e5, and at
  or below LU's error in float32).  Why not ``jnp.linalg.inv``: on CPU, JAX's LAPACK and BLAS
  kernels come from SciPy's OpenBLAS, whose worker threads keep spinning after a threaded call
  (any factor of 32 rows or more); they take cores away from the XLA computation that follows,
  which made every refresh of the autoencoder race cost ~40 ms more than the inverses
  themselves.  Blocks of ≤ 16 rows stay single-threaded in OpenBLAS.  On GPU and TPU,
  ``jnp.linalg.inv`` (the vendor's batched LU) is used instead (``lax.platform_dependent``).
* :func:`eigh` — ``jnp.linalg.eigh`` (LAPACK ``syevd`` on CPU; used by ``inverse="eigh"``).

Under ``vmap`` the LAPACK calls run one matrix after the other (``lax.map``): batched LAPACK
kernels on XLA's CPU backend split the batch over a small shared thread pool and wait for it,
and with a few cores and other work in flight they can wait for ever (observed on a 2-core
machine: a ``vmap`` population of 8 dampings hung).  The matrix products stay batched.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["BASE", "eigh", "matmul", "spd_inverse"]

BASE = 16  # rows of the blocks LAPACK factors in spd_inverse (on CPU)


def matmul(a, b):
    """``a @ b`` at full float32 precision (no bfloat16 passes on TPU and GPU tensor cores)."""
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST)


def _one_at_a_time(fn):
    """``fn`` (LAPACK, on one matrix) that runs a batch one matrix after the other under vmap."""
    wrapped = jax.custom_batching.custom_vmap(fn)

    @wrapped.def_vmap
    def _rule(axis_size, in_batched, m):
        del axis_size
        out = jax.lax.map(wrapped, m) if in_batched[0] else wrapped(m)
        return out, jax.tree.map(lambda _: in_batched[0], out)

    return wrapped


@_one_at_a_time
def _small_inverse_factor(m):
    """``L⁻¹`` with ``m = L Lᵀ``, by LAPACK (for blocks of at most BASE rows)."""
    lower = jnp.linalg.cholesky(m)
    eye = jnp.eye(m.shape[-1], dtype=m.dtype)
    return jax.lax.linalg.triangular_solve(lower, eye, left_side=True, lower=True)


def _inverse_factor(m):
    """``L⁻¹`` with ``m = L Lᵀ``, by the recursion of the module docstring."""
    n = m.shape[-1]
    if n <= BASE:
        return _small_inverse_factor(m)
    k = BASE * -(-n // (2 * BASE))  # the first block: half the rows, rounded up to BASE
    x11 = _inverse_factor(m[:k, :k])
    l21 = matmul(m[k:, :k], x11.T)
    x22 = _inverse_factor(m[k:, k:] - matmul(l21, l21.T))
    x21 = -matmul(x22, matmul(l21, x11))
    return jnp.block([[x11, jnp.zeros((k, n - k), m.dtype)], [x21, x22]])


def _cholesky_inverse(m):
    x = _inverse_factor(m)
    return matmul(x.T, x)


def spd_inverse(m: jax.Array) -> jax.Array:
    """``m⁻¹`` for a symmetric positive definite ``m``, symmetrised; see the module docstring.

    Not positive definite (a NaN in ``m``, or an undamped singular factor): NaN, not an error.
    """
    inv = jax.lax.platform_dependent(m, cpu=_cholesky_inverse, default=jnp.linalg.inv)
    return 0.5 * (inv + inv.T)


@_one_at_a_time
def eigh(m: jax.Array):
    """``(eigenvalues, eigenvectors)`` of a symmetric ``m``: ``jnp.linalg.eigh``, one matrix
    after the other under ``vmap``."""
    return jnp.linalg.eigh(m)
