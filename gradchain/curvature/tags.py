"""Layer and loss tags: plain functions, identity in value, that let K-FAC see a layer.

A loss written with tags is an ordinary JAX function::

    def loss_fn(params, x, y):
        h = jnp.tanh(gc.kfac_dense(x, params[0]["w"], params[0]["b"]))
        logits = gc.kfac_dense(h, params[1]["w"], params[1]["b"])
        return gc.kfac_softmax_cross_entropy(logits, y)

Called directly (or under ``jit``, ``grad``, ``vmap``, ``scan``) the tags compute
``x @ w + b`` and the mean cross-entropy, nothing else.  Called by the functions of
:mod:`gradchain.curvature.statistics`, the same tags report to a *recorder* that the caller set up
for the duration of one trace:

* which parameter leaves each layer uses (found by identity among the leaves the loss received,
  so no graph matcher and no dependence on JAX's internals),
* the layer's input (the ``a`` of M&G's ``A = E[ā āᵀ]``),
* a zero *perturbation* added to the layer's output ``s``: the derivative of any output with
  respect to it is the derivative with respect to ``s``, the ``g`` of ``G = E[g gᵀ]``,
* the registered losses' outputs and targets, from which the Fisher's output-side vectors are
  drawn (:mod:`gradchain.curvature.losses`).

A tag must be called on the batch (the first axis of its input is the example axis) and in the
trace of the loss itself: a tag inside a ``vmap`` or ``scan`` *within* the loss records values of
that inner trace, which JAX then rejects as leaked tracers.  Wrapping the whole loss, or the whole
training step, in ``jit``, ``vmap`` or ``scan`` is fine.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradchain import hyper
from gradchain.curvature import losses as _losses

__all__ = [
    "kfac_conv2d",
    "kfac_dense",
    "kfac_loss",
    "kfac_scale_and_shift",
    "kfac_sigmoid_cross_entropy",
    "kfac_softmax_cross_entropy",
    "kfac_squared_error",
]

LAYER_KINDS = ("dense", "conv2d", "scale_and_shift")


class LayerRecord(NamedTuple):
    """What one tag reported: static facts only (hashable), no arrays."""

    kind: str  # one of LAYER_KINDS
    name: str
    params: tuple  # ((role, leaf path), ...): roles "w", "b" or "scale", "shift"
    shapes: tuple  # ((role, shape), ...)
    output_shape: tuple
    options: tuple  # ((key, value), ...): transposed, strides, padding, dilation, kernel


class _Recorder:
    """Collects what the tags report during one trace of the loss."""

    def __init__(self, leaves: Sequence[tuple[str, Any]], perturbations: Sequence[jax.Array] | None):
        self._keep = [leaf for _, leaf in leaves]  # keep the objects alive: ids stay unique
        self.paths = {id(leaf): path for path, leaf in leaves}
        self.perturbations = None if perturbations is None else list(perturbations)
        self.layers: list[LayerRecord] = []
        self.inputs: list[jax.Array] = []
        self.losses: list[_losses.LossRecord] = []
        self.owner: dict[str, str] = {}

    def leaf(self, layer: str, role: str, array) -> str | None:
        if array is None:
            return None
        path = self.paths.get(id(array))
        if path is None:
            raise ValueError(
                f"layer {layer!r}: its {role} (shape {tuple(jnp.shape(array))}) is not one of the "
                "parameter arrays the loss received; tag the parameter leaf itself, not a reshaped, "
                "transposed or cast copy (for y = x @ W.T pass W with transposed=True)"
            )
        if path in self.owner:
            raise ValueError(
                f"parameter {path} is tagged twice: by layer {self.owner[path]!r} and by layer {layer!r}; "
                "K-FAC gives each parameter one block — tag one use of it, or give each use its own parameter"
            )
        self.owner[path] = layer
        return path

    def layer(self, kind, name, roles: dict, inputs, outputs, options: dict):
        index = len(self.layers)
        name = f"{kind}_{index}" if name is None else str(name)
        if any(rec.name == name for rec in self.layers):
            raise ValueError(f"two tagged layers are named {name!r}; give each layer its own name")
        if inputs.shape[0] == 0:
            raise ValueError(
                f"layer {name!r}: the batch is empty (input of shape {inputs.shape}); K-FAC's factors "
                "are means over the examples, so every batch needs at least one"
            )
        params = tuple((role, self.leaf(name, role, a)) for role, a in roles.items() if a is not None)
        shapes = tuple((role, tuple(jnp.shape(a))) for role, a in roles.items() if a is not None)
        self.layers.append(
            LayerRecord(kind, name, params, shapes, tuple(outputs.shape), tuple(sorted(options.items())))
        )
        self.inputs.append(inputs)
        if self.perturbations is None:
            return outputs
        if index >= len(self.perturbations):
            raise ValueError(
                f"layer {name!r}: the loss tagged more layers in this call than when it was first "
                "traced; K-FAC needs the same tagged layers in every call"
            )
        eps = self.perturbations[index]
        if eps.shape != outputs.shape:
            raise ValueError(f"layer {name!r}: output shape {outputs.shape} changed to {eps.shape} between traces")
        return outputs + eps.astype(outputs.dtype)


_ACTIVE: list[_Recorder] = []


@contextlib.contextmanager
def recording(leaves, perturbations=None):
    """Make a fresh recorder active for the tags called inside the ``with`` block."""
    rec = _Recorder(leaves, perturbations)
    _ACTIVE.append(rec)
    try:
        yield rec
    finally:
        _ACTIVE.pop()


def _current() -> _Recorder | None:
    return _ACTIVE[-1] if _ACTIVE else None


def _shape_error(layer: str | None, what: str) -> ValueError:
    return ValueError(f"layer {layer!r}: {what}" if layer is not None else what)


def kfac_dense(x: jax.Array, w: jax.Array, b: jax.Array | None = None, *, transposed: bool = False, name: str | None = None):
    """``y = x @ w + b`` (or ``x @ w.T + b`` with ``transposed=True``, Equinox's layout), tagged.

    K-FAC block (M&G §3): ``F̂ = s · A ⊗ G`` on ``V = [W; bᵀ]`` (the weight as ``(d_in, d_out)``,
    the bias its last row), ``A = E[ā āᵀ]`` with ``ā = [a; 1]``, ``G = E[g gᵀ]``.  Leading axes
    beyond the first (a sequence) are locations as in KFC: means over ``N·T`` rows and ``s = T``.
    """
    x = jnp.asarray(x)
    if jnp.ndim(w) != 2:
        raise _shape_error(name, f"kfac_dense needs a 2-d weight, got shape {jnp.shape(w)}")
    d_in, d_out = (w.shape[1], w.shape[0]) if transposed else w.shape
    if x.ndim < 2 or x.shape[-1] != d_in:
        raise _shape_error(
            name, f"kfac_dense input of shape {x.shape} does not match weight {w.shape} "
            f"(transposed={transposed}): the input needs a batch axis and {d_in} features last"
        )
    if b is not None and jnp.shape(b) != (d_out,):
        raise _shape_error(name, f"kfac_dense bias of shape {jnp.shape(b)} does not match the {d_out} outputs of weight {w.shape}")
    y = x @ (w.T if transposed else w)
    if b is not None:
        y = y + b
    rec = _current()
    if rec is None:
        return y
    return rec.layer("dense", name, {"w": w, "b": b}, x, y, {"transposed": bool(transposed)})


def _pairs(value, arg, name):
    if isinstance(value, int):
        return (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v >= 1 for v in value):
        raise _shape_error(name, f"kfac_conv2d {arg} must be an int or two positive ints, got {value!r}")
    return value


def kfac_conv2d(
    x: jax.Array,
    w: jax.Array,
    b: jax.Array | None = None,
    *,
    strides: int | Sequence[int] = 1,
    padding: str | Sequence[tuple[int, int]] = "SAME",
    dilation: int | Sequence[int] = 1,
    name: str | None = None,
):
    """A 2-d convolution, NHWC input and HWIO kernel, plus bias, tagged for KFC.

    KFC (Grosse & Martens 2016, §3): with ``p_nt`` the input patch at output location ``t``
    (``(kh, kw, c_in)`` order, the rows of ``w.reshape(-1, c_out)``), ``T`` locations,
    ``A = (1/NT) Σ [p;1][p;1]ᵀ``, ``G = (1/NT) Σ g gᵀ`` and ``F̂ = T · A ⊗ G`` (spatial
    homogeneity and uncorrelated derivatives, their assumptions IAD, SH, SUD).
    """
    x = jnp.asarray(x)
    if jnp.ndim(w) != 4:
        raise _shape_error(name, f"kfac_conv2d needs an HWIO kernel of 4 dimensions, got shape {jnp.shape(w)}")
    if x.ndim != 4 or x.shape[-1] != w.shape[2]:
        raise _shape_error(name, f"kfac_conv2d input of shape {x.shape} does not match kernel {w.shape}: "
                           f"it must be NHWC with {w.shape[2]} channels")
    if b is not None and jnp.shape(b) != (w.shape[3],):
        raise _shape_error(name, f"kfac_conv2d bias of shape {jnp.shape(b)} does not match the {w.shape[3]} "
                           f"output channels of kernel {w.shape}")
    strides = _pairs(strides, "strides", name)
    dilation = _pairs(dilation, "dilation", name)
    if not isinstance(padding, str):
        padding = [(int(lo), int(hi)) for lo, hi in padding]
    y = jax.lax.conv_general_dilated(
        x, w, window_strides=strides, padding=padding, rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    if b is not None:
        y = y + b
    rec = _current()
    if rec is None:
        return y
    options = {"strides": strides, "padding": padding, "dilation": dilation, "kernel": tuple(w.shape[:2])}
    return rec.layer("conv2d", name, {"w": w, "b": b}, x, y, options)


def kfac_scale_and_shift(
    x: jax.Array, scale: jax.Array | None = None, shift: jax.Array | None = None, *, name: str | None = None
):
    """``y = x * scale + shift`` (the affine part of a normalisation layer), tagged.

    The parameters cover the trailing axes of ``x``.  K-FAC gives them a *diagonal* block: the
    exact diagonal of the Fisher, ``F_ii = (1/N) Σ_n E[(∂ℓ_n/∂θ_i)²]``, with the per-example
    derivative summed over the other axes (``Σ_t g x`` for the scale, ``Σ_t g`` for the shift).
    """
    x = jnp.asarray(x)
    if scale is None and shift is None:
        raise _shape_error(name, "kfac_scale_and_shift needs a scale, a shift or both")
    for role, p in (("scale", scale), ("shift", shift)):
        if p is None:
            continue
        shape = tuple(jnp.shape(p))
        if len(shape) == 0 or len(shape) >= x.ndim or tuple(x.shape[x.ndim - len(shape):]) != shape:
            raise _shape_error(name, f"kfac_scale_and_shift {role} of shape {shape} does not match the trailing "
                               f"axes of the input of shape {x.shape}")
    y = x
    if scale is not None:
        y = y * scale
    if shift is not None:
        y = y + shift
    rec = _current()
    if rec is None:
        return y
    return rec.layer("scale_and_shift", name, {"scale": scale, "shift": shift}, x, y, {})


def kfac_loss(kind: str, outputs: jax.Array, targets: jax.Array, weight: float = 1.0) -> jax.Array:
    """Register a loss of ``kind`` and return ``weight · mean_n ℓ(outputs_n, targets_n)``.

    ``kind`` is ``"softmax_cross_entropy"`` (integer labels in ``[0, C)``, or probability targets
    of the logits' shape), ``"sigmoid_cross_entropy"`` (targets in [0, 1]) or ``"squared_error"``
    (``½‖z − y‖²``); the per-example loss sums over the non-batch axes.  ``weight ≥ 0``.  See
    :mod:`gradchain.curvature.losses`, also for targets outside a loss's domain: an error naming
    the first bad row when the targets are concrete, a NaN loss *and* NaN gradients under ``jit``.

    Raises:
      ValueError: an empty batch, targets of the wrong shape or outside the domain, a negative or
        non-finite weight.
      TypeError: non-integer labels.
    """
    _losses.check_loss_kind(kind)
    outputs = jnp.asarray(outputs)
    targets = jnp.asarray(targets)
    if outputs.ndim < 1:
        raise ValueError(f"kfac_loss({kind!r}): outputs need a batch axis, got shape {outputs.shape}")
    if outputs.shape[0] == 0:
        raise ValueError(
            f"kfac_loss({kind!r}): the batch is empty (outputs of shape {outputs.shape}); the loss is a "
            "mean over the examples, so it needs at least one"
        )
    want = outputs.shape[:-1] if kind == "softmax_cross_entropy" and targets.ndim == outputs.ndim - 1 else outputs.shape
    if targets.shape != want:
        raise ValueError(f"kfac_loss({kind!r}): targets of shape {targets.shape} do not match outputs of shape "
                         f"{outputs.shape} (expected {want})")
    hyper.check_value(f"kfac_loss({kind!r}) weight", weight, low=0.0)
    _losses.check_targets(kind, outputs, targets)
    rec = _current()
    if rec is not None:
        rec.losses.append(_losses.LossRecord(kind, outputs, targets, weight))
    return weight * jnp.mean(_losses.per_example_loss(kind, outputs, targets))


def kfac_softmax_cross_entropy(logits: jax.Array, labels: jax.Array, weight: float = 1.0) -> jax.Array:
    """Mean softmax cross-entropy, registered for K-FAC; see :func:`kfac_loss`."""
    return kfac_loss("softmax_cross_entropy", logits, labels, weight)


def kfac_sigmoid_cross_entropy(logits: jax.Array, targets: jax.Array, weight: float = 1.0) -> jax.Array:
    """Mean over examples of the summed sigmoid cross-entropy, registered; see :func:`kfac_loss`."""
    return kfac_loss("sigmoid_cross_entropy", logits, targets, weight)


def kfac_squared_error(predictions: jax.Array, targets: jax.Array, weight: float = 1.0) -> jax.Array:
    """Mean over examples of ``½‖z − y‖²`` (a unit Gaussian), registered; see :func:`kfac_loss`."""
    return kfac_loss("squared_error", predictions, targets, weight)
