"""Fractional max pooling (Graham, "Fractional Max-Pooling", arXiv:1412.6071, 2014).

Max pooling by a non-integer factor ``α = N_in / N_out`` (``√2`` by default): the pooling regions
are drawn at random for every image and every call, so training sees many slightly different
down-samplings of the same image ("random pooling regions"); at test, average the predictions of
several draws (:func:`gradchain.marginalize`) or use one fixed draw (``deterministic=True``).

Regions, per spatial axis, from an increasing integer sequence ``0 = a_0 < a_1 < ... < a_{N_out}
= N_in`` whose steps ``a_i - a_{i-1}`` are ``⌊α⌋`` or ``⌈α⌉`` (1 or 2 for ``1 < α < 2``):

* pseudo-random (``pseudo_random=True``): ``a_i = ⌈α (i + u)⌉ - ⌈α u⌉``, ``u ~ U[0, 1)``;
* random (``pseudo_random=False``): a random permutation of the right number of ``⌊α⌋`` and
  ``⌈α⌉`` steps;
* disjoint (``overlapping=False``): region ``i`` is ``[a_{i-1}, a_i - 1]`` (sizes in {1, 2});
* overlapping (``overlapping=True``): ``[a_{i-1}, a_i]`` (sizes in {2, 3}), the last one clipped
  to the input.

A 2-D region is the product of one row region and one column region (drawn independently, shared
by all channels of an image); the max over it is the max over rows of the max over columns.

``kernel_size=k`` selects torch's rule instead (``torch.nn.FractionalMaxPool2d``): fixed k×k
windows starting at ``s_i = ⌊(i + u) β⌋ - ⌊u β⌋`` for ``i < N_out - 1`` and
``s_{N_out-1} = N_in - k``, with ``β = (N_in - k) / (N_out - 1)``, computed in float32 as torch
does, so that the same ``u`` gives the same windows (checked against torch in the tests).

Output size: ``N_out = ⌊N_in / ratio⌋`` per axis (torch: ``int(N_in · output_ratio)`` with
``output_ratio = 1 / ratio``, the same number), or ``output_size`` when given.
"""

from __future__ import annotations

import math
import numbers
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp

from gradchain.regularizers import _checks

__all__ = ["fractional_max_pool", "fractional_pool_regions"]

_FN = "fractional_max_pool"


def _output_size(n_in: int, ratio: float, axis_name: str) -> int:
    n_out = math.floor(n_in / ratio)
    if n_out < 1:
        raise ValueError(
            f"{_FN}: {axis_name} of {n_in} pixels pooled by ratio={ratio:g} leaves no output "
            f"(floor({n_in} / {ratio:g}) = {n_out}); use a smaller ratio or a larger input"
        )
    return n_out


def _max_region(n_in: int, n_out: int, overlapping: bool, kernel_size: int | None) -> int:
    if kernel_size is not None:
        return kernel_size
    return -(-n_in // n_out) + (1 if overlapping else 0)


def _sequence(key_or_u: Any, n_in: int, n_out: int, pseudo_random: bool) -> jax.Array:
    """``a_0 .. a_{N_out}`` (int32, length N_out + 1)."""
    if pseudo_random:
        u = jnp.asarray(key_or_u, jnp.float32)
        alpha = n_in / n_out
        i = jnp.arange(n_out + 1, dtype=jnp.float32)
        a = jnp.ceil(alpha * (i + u)) - jnp.ceil(alpha * u)
        a = jnp.clip(a.astype(jnp.int32), 0, n_in)
        return a.at[-1].set(n_in)
    small, extra = divmod(n_in, n_out)  # `extra` steps of small + 1, the rest of `small`
    steps = jnp.where(jnp.arange(n_out) < extra, small + 1, small).astype(jnp.int32)
    steps = jax.random.permutation(key_or_u, steps)
    return jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(steps)])


def _torch_starts(u: Any, n_in: int, n_out: int, k: int) -> jax.Array:
    last = jnp.full((1,), n_in - k, jnp.int32)
    if n_out == 1:
        return last
    u = jnp.asarray(u, jnp.float32)
    beta = jnp.float32(n_in - k) / jnp.float32(n_out - 1)
    i = jnp.arange(n_out - 1, dtype=jnp.float32)
    s = jnp.floor((i + u) * beta).astype(jnp.int32) - jnp.floor(u * beta).astype(jnp.int32)
    return jnp.concatenate([s, last])


def fractional_pool_regions(
    key_or_u: Any,
    input_size: int,
    output_size: int,
    *,
    pseudo_random: bool = True,
    overlapping: bool = False,
    kernel_size: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """The pooling regions along one axis: ``(starts, sizes)``, int32 arrays of length
    ``output_size``; region ``i`` covers ``[starts[i], starts[i] + sizes[i])``.

    ``key_or_u`` is the sample ``u`` in ``[0, 1)`` for the pseudo-random and torch rules, a PRNG
    key for ``pseudo_random=False``.  See the module docstring for the rules.
    """
    return _regions(key_or_u, input_size, output_size, pseudo_random, overlapping, kernel_size)


@partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _regions(key_or_u, input_size, output_size, pseudo_random, overlapping, kernel_size):
    if kernel_size is not None:
        starts = _torch_starts(key_or_u, input_size, output_size, kernel_size)
        return starts, jnp.full((output_size,), kernel_size, jnp.int32)
    a = _sequence(key_or_u, input_size, output_size, pseudo_random)
    starts = a[:-1]
    ends = jnp.minimum(a[1:] + 1, input_size) if overlapping else a[1:]
    return starts, ends - starts


def _pool_axis(x: jax.Array, starts: jax.Array, sizes: jax.Array, width: int, axis: int) -> jax.Array:
    """Max of ``x`` over regions along ``axis``; short regions repeat their last index."""
    j = jnp.arange(width, dtype=jnp.int32)
    index = starts[:, None] + jnp.minimum(j[None, :], sizes[:, None] - 1)  # (N_out, width)
    gathered = jnp.take(x, index, axis=axis)  # axis -> (N_out, width)
    return jnp.max(gathered, axis=axis + 1)


def fractional_max_pool(
    key: jax.Array | None,
    x: jax.Array,
    ratio: float | tuple[float, float] = math.sqrt(2.0),
    pseudo_random: bool = True,
    overlapping: bool = False,
    *,
    deterministic: bool = False,
    output_size: int | tuple[int, int] | None = None,
    kernel_size: int | tuple[int, int] | None = None,
    samples: jax.Array | None = None,
) -> jax.Array:
    """Fractional max pooling of NHWC (or HWC) images (Graham 2014); see the module docstring.

    Args:
      key: PRNG key for the regions (one independent draw per image and axis); ``None`` is
        allowed when ``deterministic`` or when ``samples`` is given.
      x: ``(N, H, W, C)`` or ``(H, W, C)``.
      ratio: ``α`` (or ``(α_H, α_W)``), ``>= 1``; output ``⌊H / α⌋ × ⌊W / α⌋``.  Graham uses
        ``1 < α < 2``, e.g. ``√2``; larger ratios give steps of ``⌊α⌋`` and ``⌈α⌉``.
      pseudo_random: pseudo-random sequence (``True``) or random mixture of steps (``False``).
      overlapping: regions ``[a_{i-1}, a_i]`` instead of disjoint ``[a_{i-1}, a_i - 1]``.
      deterministic: test-time path without a key: one fixed draw, the pseudo-random sequence
        at ``u = 1/2`` (for the lecture's "average predictions over several regions", wrap the
        model in :func:`gradchain.marginalize` instead).
      output_size: ``N_out`` (or ``(H_out, W_out)``), overriding ``ratio``.
      kernel_size: ``k`` (or ``(k_H, k_W)``): torch's fixed ``k × k`` windows at pseudo-random
        starts (``torch.nn.FractionalMaxPool2d(kernel_size, output_size/output_ratio)``).
      samples: the ``u`` values directly, shape ``(N, 2)`` (``[:, 0]`` rows, ``[:, 1]`` columns;
        ``(2,)`` for HWC input), in ``[0, 1)``, like torch's ``_random_samples``; pseudo-random
        rules only.

    Returns ``(N, H_out, W_out, C)`` (or ``(H_out, W_out, C)``), the dtype of ``x``.
    """
    x = jnp.asarray(x)
    _checks.rank(_FN, "x", x, (3, 4), "NHWC images, or one HWC image")
    deterministic = _checks.flag(_FN, "deterministic", deterministic)
    pseudo_random = _checks.flag(_FN, "pseudo_random", pseudo_random)
    overlapping = _checks.flag(_FN, "overlapping", overlapping)
    single = x.ndim == 3
    images = x[None] if single else x
    n, h, w = images.shape[:3]

    if output_size is None:
        ratios = tuple(ratio) if isinstance(ratio, (tuple, list)) else (ratio, ratio)
        if len(ratios) != 2:
            raise ValueError(f"{_FN}: ratio must be a number or a pair of numbers, got {ratio!r}")
        for r in ratios:
            if isinstance(r, bool) or not isinstance(r, numbers.Real) or not math.isfinite(r) or r < 1:
                raise ValueError(f"{_FN}: ratio must be a number >= 1 (or a pair of them), got {ratio!r}")
        out = (_output_size(h, ratios[0], "height"), _output_size(w, ratios[1], "width"))
    else:
        out = _checks.int_pair(_FN, "output_size", output_size)
        if out[0] > h or out[1] > w:
            raise ValueError(f"{_FN}: output_size must be at most the input size {(h, w)}, got {output_size!r}")

    kernels: tuple[int | None, int | None] = (None, None)
    if kernel_size is not None:
        kernels = _checks.int_pair(_FN, "kernel_size", kernel_size)
        if not pseudo_random or overlapping:
            raise ValueError(
                f"{_FN}: kernel_size selects torch's fixed windows at pseudo-random starts; it "
                f"needs pseudo_random=True and overlapping=False, got pseudo_random={pseudo_random}, "
                f"overlapping={overlapping}"
            )
        for n_in, n_o, k, name in ((h, out[0], kernels[0], "height"), (w, out[1], kernels[1], "width")):
            if n_o + k - 1 > n_in:
                raise ValueError(
                    f"{_FN}: kernel_size={kernel_size!r} with output {out} does not fit the input "
                    f"{name} {n_in} (needs output + kernel_size - 1 <= input, as in torch)"
                )

    if samples is not None:
        if not pseudo_random:
            raise ValueError(f"{_FN}: samples fix the pseudo-random rule; they need pseudo_random=True")
        samples = jnp.asarray(samples, jnp.float32)
        want = (2,) if single else (n, 2)
        if samples.shape != want:
            raise ValueError(f"{_FN}: samples must have shape {want} (u for rows, columns), got {samples.shape}")
        draws = samples.reshape(n, 2)
    elif deterministic:
        draws = jnp.full((n, 2), 0.5, jnp.float32)
        pseudo_random = True
    else:
        key = _checks.key(_FN, key)
        if pseudo_random:
            draws = jax.random.uniform(key, (n, 2), jnp.float32)
        else:
            draws = jax.random.split(key, (n, 2))

    widths = tuple(_max_region(n_in, n_o, overlapping, k) for n_in, n_o, k in zip((h, w), out, kernels))
    pooled = _pool_images(images, draws, out, kernels, widths, pseudo_random, overlapping)
    return pooled[0] if single else pooled


@partial(jax.jit, static_argnums=(2, 3, 4, 5, 6))
def _pool_images(images, draws, out, kernels, widths, pseudo_random, overlapping):
    h, w = images.shape[1:3]

    def one_image(image, draw):
        rows = fractional_pool_regions(
            draw[0], h, out[0], pseudo_random=pseudo_random, overlapping=overlapping, kernel_size=kernels[0]
        )
        cols = fractional_pool_regions(
            draw[1], w, out[1], pseudo_random=pseudo_random, overlapping=overlapping, kernel_size=kernels[1]
        )
        image = _pool_axis(image, *rows, widths[0], axis=0)
        return _pool_axis(image, *cols, widths[1], axis=1)

    return jax.vmap(one_image)(images, draws)
