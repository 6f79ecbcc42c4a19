"""From a tagged loss to the value, the gradient and the K-FAC statistics, in one pass.

``curv = kfac_curvature(loss_fn, params, *example_args)`` traces the loss once (abstractly, no
computation) to find the tagged layers and registered losses, and fixes the blocks.  Then

    value, grads, stats = curv.value_grad_and_statistics(params, *args, key=key)

runs one forward pass and its reverse passes: ``grads`` is the gradient of the loss, ``stats``
the batch estimates of every block's factors (:mod:`gradchain.curvature.blocks`), with the
output-side vectors chosen by ``estimator`` (M&G 2015 §5):

* ``"sampled"``: targets drawn from the model's predictive distribution, ``num_samples`` per
  example (the true Fisher in expectation; M&G's choice);
* ``"exact"``: all the columns of ``B`` with ``B Bᵀ`` the loss Hessian in the outputs (the exact
  Fisher of the approximation; one reverse pass per output unit — for tests and small outputs);
* ``"empirical"``: the gradient at the data's own targets (the empirical Fisher).

With ``axis_name`` set (inside ``shard_map`` or ``pmap`` over a data-parallel axis), the value,
the gradient and the factors are averaged over that axis with ``jax.lax.pmean`` (Ba, Grosse &
Martens 2017, §3: each worker estimates the factors on its shard; their mean is the factors of
the whole batch when the shards are of equal size).

Every function is pure, so the whole step may sit inside ``jit``, ``vmap`` or ``lax.scan``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from gradchain.curvature import blocks as _blocks, losses as _losses
from gradchain.curvature.tags import recording

__all__ = ["ESTIMATORS", "UNTAGGED_POLICIES", "KFACCurvature", "KFACStatistics", "kfac_curvature"]

ESTIMATORS = ("sampled", "exact", "empirical")
UNTAGGED_POLICIES = ("identity", "error")


class KFACStatistics(NamedTuple):
    """The batch estimates of the factors: one dict per block (``A``, ``G`` or diagonals)."""

    factors: tuple


def _varying(tree, axis_name):
    """Mark replicated values as varying over ``axis_name`` inside ``shard_map`` (else unchanged).

    Current jax spells it ``lax.pcast(..., to="varying")`` and ``typeof(a).manual_axis_type``;
    older releases (0.6, our floor) ``lax.pvary`` and ``typeof(a).vma``.  Only the manual axes of
    the current mesh (shard_map's, and pmap's on current jax) are cast over: a ``vmap`` axis has no
    varying type, and ``pcast`` over one under ``jit`` trips an internal assertion in jax 0.10.
    """
    axes = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    try:
        manual = set(jax.sharding.get_abstract_mesh().manual_axes)
    except Exception:  # no abstract mesh API: try every axis, as before
        manual = None
    axes = tuple(ax for ax in axes if manual is None or ax in manual)
    if not axes:
        return tree

    def one(a):
        aval = jax.typeof(a)
        manual = getattr(aval, "manual_axis_type", None)  # set inside shard_map
        varying = manual.varying if manual is not None else getattr(aval, "vma", None)
        missing = tuple(ax for ax in axes if varying is not None and ax not in varying)
        if not missing:
            return a
        try:
            if hasattr(jax.lax, "pcast"):
                return jax.lax.pcast(a, missing, to="varying")
            return jax.lax.pvary(a, missing)  # pyright: ignore[reportAttributeAccessIssue] - older jax
        except (NameError, ValueError):  # not inside shard_map over that axis (pmap, no axis)
            return a

    return jax.tree.map(one, tree)


def _bound_axes() -> tuple | None:
    """The axis names bound where this is traced (by shard_map, pmap, vmap), or None if unknown.

    Only for the error message: the axis environment is private to jax (``core.get_axis_env``,
    present from 0.6 to at least 0.10), so any failure to read it gives None.
    """
    try:
        from jax._src import core as _core

        return tuple(_core.get_axis_env().axis_sizes)
    except Exception:
        return None


def check_axis_name(axis_name) -> None:
    """Raise ``ValueError`` if ``axis_name`` (a name or a tuple of names) is not bound here.

    A collective over an unbound name fails inside jax, and inside ``shard_map`` with a bare
    ``AssertionError`` (jax 0.6 to 0.10); ``jax.lax.axis_size`` answers the same question
    statically (no operation is traced) with a ``NameError`` under ``vmap``, ``pmap``,
    ``shard_map``, nested maps and outside any map alike.
    """
    if axis_name is None:
        return
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    missing = []
    for name in names:
        try:
            jax.lax.axis_size(name)
        except NameError:
            missing.append(name)
    if not missing:
        return
    bound = _bound_axes()
    what = f"axis {missing[0]!r}" if len(missing) == 1 else "axes " + ", ".join(map(repr, missing))
    if bound is None:
        where = "the mapped axes here could not be listed"
    elif bound:
        where = f"the axes bound here are {bound}"
    else:
        where = "no mapped axis is bound here (not inside shard_map, pmap or vmap)"
    raise ValueError(
        f"kfac_curvature(axis_name={axis_name!r}): no {what} in the enclosing shard_map/pmap/vmap; "
        f"{where}. Pass the data-parallel axis of the map the K-FAC step runs in, or axis_name=None "
        "outside one"
    )


def _leaf_paths(params) -> list[str]:
    return [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _with_paths(params):
    leaves = jax.tree.leaves(params)
    return list(zip(_leaf_paths(params), leaves))


@dataclasses.dataclass(frozen=True, eq=False)
class KFACCurvature:
    """The tagged loss and its blocks; build it with :func:`kfac_curvature`."""

    loss_fn: Callable[..., Any]
    has_aux: bool
    estimator: str
    num_samples: int
    axis_name: Any
    untagged: str
    blocks: tuple  # of Block
    loss_kinds: tuple  # of str
    param_paths: tuple  # every leaf path of the parameters, in tree order
    untagged_paths: tuple  # leaves no tag claimed

    # -- the table ----------------------------------------------------------------------------
    def table(self) -> str:
        """Which parameter got which block, as a printable table."""
        rows = [("layer", "tag", "block", "parameters", "factors")]
        for b in self.blocks:
            params = ", ".join(path for _, path in b.roles)
            if b.kind == _blocks.KRONECKER:
                block = "Kronecker A⊗G"
                sizes = f"A {b.a_dim}×{b.a_dim}, G {b.g_dim}×{b.g_dim}, s={b.scale:g}"
            else:
                block = "diagonal"
                sizes = ", ".join(f"{role} {shape}" for role, shape in b.layer.shapes)
            rows.append((b.name, b.layer.kind, block, params, sizes))
        for path in self.untagged_paths:
            rows.append(("(untagged)", "-", f"{self.untagged} (fallback)", path, "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        losses = ", ".join(self.loss_kinds)
        lines.append(f"losses: {losses}; estimator: {self.estimator}"
                     + (f" ({self.num_samples} sample{'s' if self.num_samples > 1 else ''} per example)"
                        if self.estimator == "sampled" else ""))
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"KFACCurvature(\n{self.table()}\n)"

    # -- one pass -----------------------------------------------------------------------------
    def _trace(self, params, args):
        """Find the tags' output shapes for these arguments (abstract trace, no computation)."""
        found = {}

        def probe(params):
            with recording(_with_paths(params)) as rec:
                self.loss_fn(params, *args)
            found["layers"] = tuple(rec.layers)
            found["losses"] = tuple(l.kind for l in rec.losses)

        jax.eval_shape(probe, params)
        layers = found["layers"]
        if tuple(b.layer.params for b in self.blocks) != tuple(l.params for l in layers):
            raise ValueError(
                "the loss tags other layers than when kfac_curvature traced it: "
                f"{[l.name for l in layers]} vs {[b.name for b in self.blocks]}"
            )
        return layers

    def outputs(self, params, *args):
        """The registered losses' outputs (logits/predictions), for Gauss-Newton products."""
        holder = {}

        def f(params):
            with recording(_with_paths(params)) as rec:
                self.loss_fn(params, *args)
            holder["records"] = [(l.kind, l.weight) for l in rec.losses]
            return tuple(l.outputs for l in rec.losses), tuple(l.targets for l in rec.losses)

        return f, holder

    def gauss_newton_products(self, params, args, tangents):
        """``(J t)ᵀ H (J t')`` summed over the registered losses, for every pair of ``tangents``.

        ``tangents`` is a list of parameter-shaped trees; the result is the matrix
        ``C_ij = t_iᵀ Ĝ t_j`` with ``Ĝ = (1/N) Σ_n w J_nᵀ H_n J_n``, the exact generalised
        Gauss-Newton matrix of the mean loss (M&G §6.4, §7), by one forward-mode pass per tangent.
        """
        check_axis_name(self.axis_name)
        f, holder = self.outputs(params, *args)

        def fwd(p):
            return f(p)[0]

        stacked = jax.tree.map(lambda *t: jnp.stack(t), *tangents)
        (zs, jts) = jax.vmap(lambda t: jax.jvp(fwd, (params,), (t,)), out_axes=(None, 0))(stacked)
        kinds = holder["records"]
        c = 0.0
        for (kind, weight), z, jt in zip(kinds, zs, jts):
            n = z.shape[0]
            hjt = jax.vmap(lambda u, kind=kind, z=z: _losses.hvp(kind, z, u))(jt)
            wide = _blocks.compute_dtype(jt.dtype)  # float16/bfloat16 outputs: sum in float32
            c = c + weight * jnp.einsum("i...,j...->ij", jt.astype(wide), hjt.astype(wide)) / n
        if self.axis_name is not None:
            c = jax.lax.pmean(c, self.axis_name)
        return c

    def value_grad_and_statistics(self, params, *args, key: jax.Array | None = None):
        """``(value, grads, stats)``; with ``has_aux``: ``((value, aux), grads, stats)``.

        ``key`` is needed by the sampled estimator only.  See the module docstring.
        """
        if self.estimator == "sampled" and key is None:
            raise ValueError("estimator='sampled' draws targets from the model: pass key=<a PRNG key>")
        check_axis_name(self.axis_name)  # before jax's own assertion inside shard_map
        layers = self._trace(params, args)
        holder = {}

        def f(params, perturbations):
            with recording(_with_paths(params), perturbations) as rec:
                out = self.loss_fn(params, *args)
            value, aux = out if self.has_aux else (out, None)
            holder["losses"] = [(l.kind, l.weight) for l in rec.losses]
            outputs = tuple(l.outputs for l in rec.losses)
            targets = tuple(l.targets for l in rec.losses)
            return (value, outputs), (aux, tuple(rec.inputs), targets, outputs)

        leaf_dtype = jax.tree.leaves(params)[0].dtype if jax.tree.leaves(params) else jnp.float32
        perturbations = tuple(jnp.zeros(l.output_shape, leaf_dtype) for l in layers)
        if self.axis_name is not None:
            # Differentiate with respect to per-device copies: under shard_map's replication
            # checks, the cotangent of a replicated input is summed over the axis on the way back
            # (which would add the devices' per-example output gradients together); the means
            # are taken explicitly below instead.
            params, perturbations = _varying((params, perturbations), self.axis_name)
        (value, outs), vjp_fn, (aux, inputs, targets, zs) = jax.vjp(f, params, perturbations, has_aux=True)
        zero_outs = jax.tree.map(jnp.zeros_like, outs)
        one = jnp.ones_like(value)
        zero_value = jnp.zeros_like(value)
        if self.axis_name is not None:  # cotangents of the same (varying) type as the outputs
            one, zero_value, zero_outs = _varying((one, zero_value, zero_outs), self.axis_name)
        grads = vjp_fn((one, zero_outs))[0]

        cotangents = self._cotangents(holder["losses"], zs, targets, key)
        out_grads = jax.vmap(lambda c: vjp_fn((zero_value, c))[1])(cotangents)
        factors = tuple(
            _blocks.batch_factors(b, x, g) for b, x, g in zip(self.blocks, inputs, out_grads)
        )
        if self.axis_name is not None:
            value, grads, factors = jax.lax.pmean((value, grads, factors), self.axis_name)
        value = (value, aux) if self.has_aux else value
        return value, grads, KFACStatistics(factors)

    def _cotangents(self, records, zs, targets, key):
        """Stacked output-side vectors ``(K, *z.shape)`` for every loss, weighted by ``√w``."""
        per_loss = []
        keys = None
        if self.estimator == "sampled":
            keys = jax.random.split(key, len(records))
        for i, ((kind, weight), z, y) in enumerate(zip(records, zs, targets)):
            root = jnp.sqrt(jnp.asarray(weight, z.dtype))
            if self.estimator == "exact":
                cols = _losses.exact_columns(kind, z)
            elif self.estimator == "empirical":
                cols = _losses.gradient(kind, z, y)[None]
            else:
                assert keys is not None
                draws = jax.random.split(keys[i], self.num_samples)
                cols = jax.vmap(lambda k, kind=kind, z=z: _losses.sample(kind, k, z))(draws)
                cols = cols / jnp.sqrt(jnp.asarray(self.num_samples, z.dtype))
            per_loss.append(root * cols)
        # Loss i's vectors go in their own rows, zeros for the other losses.
        sizes = [c.shape[0] for c in per_loss]
        stacked = []
        for i, c in enumerate(per_loss):
            row = tuple(c if j == i else jnp.zeros((sizes[i],) + zs[j].shape, zs[j].dtype) for j in range(len(zs)))
            stacked.append(row)
        return jax.tree.map(lambda *r: jnp.concatenate(r), *stacked)


def kfac_curvature(
    loss_fn: Callable[..., Any],
    params: Any,
    *example_args: Any,
    estimator: str = "sampled",
    num_samples: int = 1,
    has_aux: bool = False,
    axis_name: Any = None,
    untagged: str = "identity",
) -> KFACCurvature:
    """Find the tagged layers of ``loss_fn(params, *example_args)`` and build their blocks.

    Args:
      loss_fn: ``loss_fn(params, *args) -> loss`` (or ``(loss, aux)`` with ``has_aux``), written
        with the layer tags (:func:`kfac_dense`, :func:`kfac_conv2d`, :func:`kfac_scale_and_shift`,
        or the tagged Flax layers) and at least one registered loss (:func:`kfac_loss` and its
        named forms).  Everything else in it (an L2 penalty, untagged layers) is ordinary JAX.
      params: the parameters (arrays or ``jax.ShapeDtypeStruct``; only shapes are used here).
      example_args: example batch arguments (shapes only).
      estimator: ``"sampled"`` (default), ``"exact"`` or ``"empirical"``; see the module docstring.
      num_samples: targets drawn per example by the sampled estimator.
      has_aux: ``loss_fn`` returns ``(loss, aux)``.
      axis_name: a data-parallel axis to average the statistics over (``shard_map``/``pmap``);
        a name (or tuple of names) not bound where the step is traced raises ``ValueError``
        there, naming it and the axes that are bound.
      untagged: what parameters no tag claims get: ``"identity"`` (the gradient passes through
        unpreconditioned) or ``"error"`` (refuse them).

    Raises ``ValueError`` naming the layer and the value for a tag whose shapes do not match its
    parameters, a parameter tagged twice, an unknown estimator, a loss with no registered loss or
    no tagged layer, an empty batch, example targets outside the loss's domain.
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable, got {loss_fn!r}")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {', '.join(map(repr, ESTIMATORS))}, got {estimator!r}")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    if untagged not in UNTAGGED_POLICIES:
        raise ValueError(f"untagged must be one of {', '.join(map(repr, UNTAGGED_POLICIES))}, got {untagged!r}")
    found = {}

    def probe(params):
        with recording(_with_paths(params)) as rec:
            out = loss_fn(params, *example_args)
        found["layers"] = tuple(rec.layers)
        found["losses"] = tuple(l.kind for l in rec.losses)
        value = out[0] if has_aux else out
        if jnp.shape(value) != ():
            raise ValueError(f"loss_fn must return a scalar loss{' (first of the pair)' if has_aux else ''}, "
                             f"got shape {jnp.shape(value)}")

    jax.eval_shape(probe, params)
    if not found["losses"]:
        raise ValueError(
            "loss_fn registered no loss: compute it with gc.kfac_softmax_cross_entropy, "
            "gc.kfac_sigmoid_cross_entropy, gc.kfac_squared_error or gc.kfac_loss(kind, ...)"
        )
    if not found["layers"]:
        raise ValueError(
            "loss_fn tagged no layer, so K-FAC would leave every parameter "
            f"({', '.join(_leaf_paths(params)) or 'none'}) unpreconditioned; compute the layers with "
            "gc.kfac_dense, gc.kfac_conv2d or gc.kfac_scale_and_shift (or the tagged Flax layers of "
            "gradchain.flax), called on the parameter leaves themselves"
        )
    blocks = tuple(_blocks.block_of(layer) for layer in found["layers"])
    paths = tuple(_leaf_paths(params))
    claimed = {path for b in blocks for _, path in b.roles}
    untagged_paths = tuple(p for p in paths if p not in claimed)
    if untagged == "error" and untagged_paths:
        raise ValueError(f"untagged='error' but no tag claims the parameters {', '.join(untagged_paths)}")
    return KFACCurvature(
        loss_fn=loss_fn, has_aux=has_aux, estimator=estimator, num_samples=num_samples, axis_name=axis_name,
        untagged=untagged, blocks=blocks, loss_kinds=found["losses"], param_paths=paths,
        untagged_paths=untagged_paths,
    )
