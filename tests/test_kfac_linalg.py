"""The SPD inverse K-FAC refreshes with (gradchain/curvature/linalg.py), against NumPy's LAPACK."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gradchain.curvature.linalg import BASE, eigh, spd_inverse


def damped_covariance(n, damping, seed=0, rows=300):
    """``aᵀa/rows + damping·I`` for tanh-like activations with a bias column: a K-FAC ``A``."""
    rng = np.random.default_rng(seed)
    a = np.tanh(rng.normal(size=(rows, n - 1)) @ rng.normal(size=(n - 1, n - 1)) / np.sqrt(n))
    a = np.concatenate([a, np.ones((rows, 1))], axis=1)
    return a.T @ a / rows + damping * np.eye(n)


def rel(actual, expected):
    return float(np.max(np.abs(np.asarray(actual, np.float64) - expected)) / np.max(np.abs(expected)))


@pytest.mark.parametrize("n", [1, 2, BASE, BASE + 1, 65, 130, 257])
@pytest.mark.parametrize("damping", [1e-2, 1e-5])
def test_float64_inverse_matches_lapack(n, damping):
    m = damped_covariance(n, damping)
    with jax.enable_x64(True):
        ours = jax.jit(spd_inverse)(jnp.asarray(m))
    expected = np.linalg.inv(m)
    # the error bound of any backward-stable inverse: a few times cond · u
    assert rel(ours, expected) <= max(1e-13, 50 * np.linalg.cond(m) * np.finfo(np.float64).eps)
    np.testing.assert_array_equal(ours, np.asarray(ours).T)  # symmetric by construction


@pytest.mark.parametrize("n", [65, 257])
def test_float32_inverse_as_accurate_as_lu(n):
    m = damped_covariance(n, 1e-3, seed=n)
    m32 = jnp.asarray(m, jnp.float32)
    expected = np.linalg.inv(np.asarray(m32, np.float64))  # the exact inverse of the rounded input
    ours = rel(jax.jit(spd_inverse)(m32), expected)
    lu = rel(jax.jit(jnp.linalg.inv)(m32), expected)
    # relative to LU on the same machine (both move with the CPU's BLAS/LAPACK kernels): measured
    # ours/(2·lu + 1e-6) ≤ 0.42 (n = 65: 7.9e-7 vs LU 4.4e-7; n = 257: 7.2e-6 vs 8.4e-6), both far
    # below the a-priori κ·eps32 (1.2e-5, 1.7e-4); identical under AVX2/AVX/SSE4.2 code paths
    assert ours <= 2 * lu + 1e-6, (ours, lu)


def test_vmap_equals_one_at_a_time():
    ms = np.stack([damped_covariance(40, d, seed=i) for i, d in enumerate([1e-1, 1e-2, 1e-3])])
    with jax.enable_x64(True):
        together = jax.jit(jax.vmap(spd_inverse))(jnp.asarray(ms))
        for i in range(3):
            # the same float64 arithmetic under vmap (matrix products batched): κ ≤ 74 here, so
            # ≲ κ·n·U64 ≈ 3e-13 worst case for a different summation order; measured 2.1e-16
            assert rel(together[i], np.asarray(spd_inverse(jnp.asarray(ms[i])))) <= 1e-12
    ms = jnp.asarray(ms, jnp.float32)
    values, vectors = jax.jit(jax.vmap(eigh))(ms)
    for i in range(3):
        w, v = np.linalg.eigh(np.asarray(ms[i], np.float64))
        # eigenvalues: backward-stable float32 eigh errs by ≲ n·U32·‖m‖ = 40·6e-8·1.5 ≈ 4e-6 absolute
        # (measured ≤ 0.025 of atol + rtol·|w|); eigenvectors by ≲ U32·n·‖m‖/gap with the smallest
        # gap 4.3e-4: ≈ 8e-3 worst case, measured 1.2e-4; atol 2e-3 (17× the measured)
        np.testing.assert_allclose(values[i], w, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.abs(vectors[i].T @ v), np.eye(40), atol=2e-3)


def test_not_positive_definite_or_nan_gives_nan():
    """The library's non-finite policy: no error, no silent finite answer."""
    assert np.all(np.isnan(spd_inverse(jnp.diag(jnp.array([1.0, -1.0] * 20)))))
    m = jnp.asarray(damped_covariance(40, 1e-2), jnp.float32).at[3, 5].set(jnp.nan)
    assert np.all(np.isnan(spd_inverse(m)))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the CPU lowering")
def test_cpu_lowering_calls_lapack_on_small_blocks_only():
    """A 257-row inverse reaches LAPACK only in blocks of ≤ BASE rows, whose OpenBLAS calls stay
    single-threaded (larger ones leave spinning threads behind; see the module docstring)."""
    text = jax.jit(spd_inverse).lower(jnp.eye(257)).as_text()
    calls = [line for line in text.splitlines() if "custom_call @lapack" in line]
    assert calls, "expected LAPACK calls on the small blocks"
    sizes = [int(d) for line in calls for d in re.findall(r"tensor<(\d+)x\d+x", line)]
    assert sizes and max(sizes) <= BASE, sorted(set(sizes))
