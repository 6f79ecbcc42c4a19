"""The lecture's first-order optimizers, each a short chain of transforms.

Every optimizer ends in ``scale_by_learning_rate``, so ``apply_updates`` performs
``x -= learning_rate * direction``.  Each is wrapped in :func:`gradchain.multi_tensor`, which
packs the small leaves of a tree with many of them into one buffer per dtype (and leaves a small
tree as it is), so that step and compile time do not grow with the number of leaves.  All
hyperparameters may be numbers, arrays (``vmap`` a population over them) or schedules, and can be
read and set with ``get_hyperparams`` / ``set_hyperparams``.
"""

from __future__ import annotations

import numbers
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from gradchain import hyper
from gradchain.core import (
    GradientTransformation,
    GradientTransformationExtraArgs,
    accepted_extra_args,
    chain,
)
from gradchain.multi_tensor import multi_tensor
from gradchain.transforms.adaptive import (
    scale_by_adam,
    scale_by_centred_rms,
    scale_by_rms,
    scale_by_sum_of_squares,
)
from gradchain.transforms.decay import add_decayed_weights
from gradchain.transforms.momentum import scale_by_momentum
from gradchain.transforms.scaling import scale_by_learning_rate


def _accumulators(*, dtype: Any) -> Any:
    return None if dtype is None else jnp.dtype(dtype)


def sgd(
    learning_rate: hyper.Hyperparameter,
    momentum: hyper.Hyperparameter | None = 0.0,
    nesterov: bool = False,
    *,
    accumulator_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """Stochastic gradient descent, optionally with momentum (Sutskever et al., ICML 2013).

    ``x -= lr · g``; with momentum ``v = ρv + g; x -= lr · v``; with Nesterov
    ``x -= lr · (g + ρ v)``.

    Args:
      learning_rate: α ≥ 0: a number, an array or a schedule ``step -> value``.
      momentum: ρ in [0, 1); ``0`` or ``None`` (Optax's default) keep no velocity.
      nesterov: use Nesterov's look-ahead form ``g + ρ v``.
      accumulator_dtype: storage dtype of the velocity (default: each parameter's).

    Returns:
      A gradient transformation; without momentum its state holds only the learning rate, and a
      tree leaf that is not an array (an Equinox activation function) passes through.

    Example:
      >>> import jax.numpy as jnp, gradchain as gc
      >>> tx = gc.sgd(0.5, momentum=0.9)
      >>> state = tx.init(jnp.zeros(2))
      >>> updates, state = tx.update(jnp.array([1.0, 2.0]), state)
      >>> updates
      Array([-0.5, -1. ], dtype=float32)
    """
    if momentum is None:
        momentum = 0.0
    values = {"learning_rate": learning_rate, "momentum": momentum}
    if hyper.is_zero(momentum) and not nesterov:
        return _front(
            multi_tensor(chain(scale_by_learning_rate(learning_rate))), "sgd", values, stateless=True
        )
    return _front(
        multi_tensor(
            chain(
                scale_by_momentum(momentum, nesterov, dtype=_accumulators(dtype=accumulator_dtype)),
                scale_by_learning_rate(learning_rate),
            )
        ),
        "sgd",
        values,
        stateless=False,
    )


def adagrad(
    learning_rate: hyper.Hyperparameter,
    eps: hyper.Hyperparameter = 1e-7,
    *,
    initial_accumulator_value: float = 0.0,
    accumulator_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """AdaGrad (Duchi et al., JMLR 2011)::

        s += g²;   x -= lr · g / (√s + eps)

    Args:
      learning_rate: α ≥ 0: a number, an array or a schedule.
      eps: > 0, added outside the square root (the lecture's form).
      initial_accumulator_value: the start of ``s`` (≥ 0); 0 is the lecture's, Optax's
        ``optax.adagrad`` starts at 0.1.
      accumulator_dtype: storage dtype of ``s`` (default: each parameter's).

    Returns:
      A gradient transformation (state: the sum of squares, eps and the learning rate).
    """
    values = {"learning_rate": learning_rate, "eps": eps}
    return _front(
        multi_tensor(
            chain(
                scale_by_sum_of_squares(
                    eps,
                    dtype=_accumulators(dtype=accumulator_dtype),
                    initial_value=initial_accumulator_value,
                ),
                scale_by_learning_rate(learning_rate),
            )
        ),
        "adagrad",
        values,
        stateless=False,
    )


def rmsprop(
    learning_rate: hyper.Hyperparameter,
    decay: hyper.Hyperparameter = 0.9,
    eps: hyper.Hyperparameter = 1e-7,
    *,
    centered: bool = False,
    accumulator_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """RMSProp (Tieleman & Hinton, 2012)::

        v = ρv + (1-ρ)g²;   x -= lr · g / (√v + eps)

    Centred (Graves, 2013, eq. 38-40): also ``m = ρm + (1-ρ)g`` and
    ``x -= lr · g / (√(v - m²) + eps)``.

    Args:
      learning_rate: α ≥ 0: a number, an array or a schedule.
      decay: ρ in [0, 1).
      eps: > 0, added outside the square root (``optax.rmsprop`` adds it inside).
      centered: divide by the standard deviation instead of the RMS.
      accumulator_dtype: storage dtype of the averages (default: each parameter's).

    Returns:
      A gradient transformation.
    """
    if not isinstance(centered, bool):
        raise TypeError(f"centered must be a bool, got {centered!r}")
    values = {"learning_rate": learning_rate, "decay": decay, "eps": eps}
    dtype = _accumulators(dtype=accumulator_dtype)
    scaling = (
        scale_by_centred_rms(decay, eps, dtype=dtype) if centered else scale_by_rms(decay, eps, dtype=dtype)
    )
    return _front(
        multi_tensor(chain(scaling, scale_by_learning_rate(learning_rate))),
        "rmsprop",
        values,
        stateless=False,
    )


def adam(
    learning_rate: hyper.Hyperparameter = 1e-3,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-7,
    bias_correction: bool = True,
    *,
    eps_root: hyper.Hyperparameter = 0.0,
    nesterov: bool = False,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """Adam (Kingma & Ba, ICLR 2015), the lecture's full form::

        m = b1·m + (1-b1)·g;   v = b2·v + (1-b2)·g²
        m̂ = m / (1 - b1^t);    v̂ = v / (1 - b2^t)
        x -= lr · m̂ / (√(v̂ + eps_root) + eps)

    Args:
      learning_rate: α ≥ 0: a number, an array or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: > 0, outside the square root; 1e-7 is the lecture's (Optax's and torch's is 1e-8).
      bias_correction: divide by ``1 - β^t``; ``False`` is the lecture's "Adam (almost)".
      eps_root: ≥ 0, added inside the square root (as ``optax.adam(eps_root=...)``; keeps the
        gradient of the update finite when differentiating through it).
      nesterov: NAdam, Nesterov's momentum in Adam (Dozat, ICLR 2016 workshop; the form of
        ``optax.nadam``): ``m̂ = b1·m/(1 - b1^(t+1)) + (1-b1)·g/(1 - b1^t)``.
      mu_dtype: storage dtype of ``m`` (e.g. float32 for bfloat16 parameters).
      nu_dtype: storage dtype of ``v``.

    Returns:
      A gradient transformation; ``get_hyperparams(state)`` reads ``learning_rate``, ``b1``,
      ``b2`` and ``eps``, each stored once.

    Example:
      >>> import jax.numpy as jnp, gradchain as gc
      >>> tx = gc.adam(0.1)
      >>> params = {"w": jnp.array([1.0, -1.0])}
      >>> state = tx.init(params)
      >>> updates, state = tx.update({"w": jnp.array([0.5, -2.0])}, state, params)
      >>> gc.apply_updates(params, updates)["w"].round(4)  # the first Adam step is lr * sign(g)
      Array([ 0.9, -0.9], dtype=float32)
      >>> int(gc.tree_get(state, "count")), float(gc.tree_get(state, "b2"))
      (1, 0.9990000128746033)
    """
    values = {"learning_rate": learning_rate, "b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root}
    return _front(
        multi_tensor(
            chain(
                scale_by_adam(
                    b1,
                    b2,
                    eps,
                    bias_correction=bias_correction,
                    eps_root=eps_root,
                    nesterov=nesterov,
                    mu_dtype=mu_dtype,
                    nu_dtype=nu_dtype,
                ),
                scale_by_learning_rate(learning_rate),
            )
        ),
        "adam",
        values,
        stateless=False,
    )


def nadam(
    learning_rate: hyper.Hyperparameter = 1e-3,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-7,
    *,
    eps_root: hyper.Hyperparameter = 0.0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """NAdam: ``adam(..., nesterov=True)`` (Dozat, 2016), the form of ``optax.nadam``.

    Args:
      learning_rate: α ≥ 0: a number, an array or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: > 0, outside the square root.
      eps_root: ≥ 0, inside the square root.
      mu_dtype: storage dtype of ``m``.
      nu_dtype: storage dtype of ``v``.

    Returns:
      A gradient transformation.
    """
    return adam(
        learning_rate, b1, b2, eps, eps_root=eps_root, nesterov=True, mu_dtype=mu_dtype, nu_dtype=nu_dtype
    )


def adamw(
    learning_rate: hyper.Hyperparameter = 1e-3,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-7,
    weight_decay: hyper.Hyperparameter = 1e-4,
    *,
    mask: Any = None,
    eps_root: hyper.Hyperparameter = 0.0,
    mu_dtype: Any = None,
    nu_dtype: Any = None,
) -> GradientTransformationExtraArgs:
    """AdamW: Adam with weight decay decoupled from the moments (Loshchilov & Hutter, ICLR 2019)::

        x -= lr · (m̂ / (√v̂ + eps) + weight_decay · x)

    The decay is multiplied by the learning rate, as in ``torch.optim.AdamW`` and
    ``optax.adamw``.

    Args:
      learning_rate: α ≥ 0: a number, an array or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: > 0, outside the square root.
      weight_decay: ≥ 0 (Optax's default is 1e-4 too).
      mask: which leaves decay: a bool pytree or ``params -> bool pytree`` such as
        :func:`gradchain.decay_mask`; the decay then runs per leaf, after the packed Adam step.
      eps_root: ≥ 0, inside the square root.
      mu_dtype: storage dtype of ``m``.
      nu_dtype: storage dtype of ``v``.

    Returns:
      A gradient transformation.
    """
    values = {"learning_rate": learning_rate, "b1": b1, "b2": b2, "eps": eps, "eps_root": eps_root,
              "weight_decay": weight_decay}
    adam_step = scale_by_adam(b1, b2, eps, eps_root=eps_root, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    if mask is not None:
        tx: GradientTransformation = chain(
            multi_tensor(adam_step),
            add_decayed_weights(weight_decay, mask),
            scale_by_learning_rate(learning_rate),
        )
    else:
        tx = multi_tensor(
            chain(adam_step, add_decayed_weights(weight_decay), scale_by_learning_rate(learning_rate))
        )
    return _front(tx, "adamw", values, stateless=False)


# ---------------------------------------------------------------------------------------------
# The front of every named optimizer: checks what it is given before any arithmetic happens.


def _is_arraylike(leaf: Any) -> bool:
    """An array, a number, or anything with a shape and a dtype (``jax.ShapeDtypeStruct``)."""
    if isinstance(leaf, (jax.Array, np.ndarray, np.generic, numbers.Number)):
        return True
    return hasattr(leaf, "shape") and hasattr(leaf, "dtype")


def _check_params(params: Any, optimizer: str, stateless: bool) -> None:
    """Raise a clear error for a parameter leaf no gradient step can update.

    Integer and boolean arrays would give NaN updates (applied as zeros), silently.  A leaf that
    is not an array at all (an Equinox model's activation function) is passed through by a
    stateless optimizer; one that keeps per-parameter buffers needs arrays only.
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        where = jax.tree_util.keystr(path) or "params"
        if not _is_arraylike(leaf):
            if stateless:
                continue
            raise TypeError(
                f"{optimizer}: parameter {where} is {leaf!r} of type {type(leaf).__name__}, not an "
                f"array; {optimizer} keeps a buffer per parameter, so give it only the arrays: "
                "with Equinox, `params = eqx.filter(model, eqx.is_array)` (and gradients from "
                "`eqx.filter_grad`), then `eqx.apply_updates(model, updates)`"
            )
        dtype = leaf.dtype if hasattr(leaf, "dtype") else jnp.result_type(leaf)
        if not jnp.issubdtype(dtype, jnp.inexact):
            raise TypeError(
                f"{optimizer}: parameter {where} has dtype {jnp.dtype(dtype).name}; a gradient "
                "step needs floating-point parameters (an integer one would get NaN updates, "
                "applied as 0). Cast it (`jnp.asarray(p, jnp.float32)`) or keep it out of the "
                "optimized tree (Equinox: `eqx.filter(model, eqx.is_inexact_array)`)"
            )


def _prepare(tree: Any) -> Any:
    """NumPy leaves as JAX arrays (of JAX's default dtypes: no float64 warnings per update);
    non-array leaves as ``None`` (passed through, as ``eqx.filter_grad`` gives them)."""
    if tree is None:
        return None

    def convert(leaf):
        if isinstance(leaf, (np.ndarray, np.generic)):
            return jnp.asarray(leaf)
        return leaf if _is_arraylike(leaf) else None

    return jax.tree.map(convert, tree)


def _called_by_optax_inject() -> bool:
    """True when the optimizer is being built by ``optax.inject_hyperparams``'s init or update
    (which call the factory with the current hyperparameter values)."""
    frame = sys._getframe(2)
    for _ in range(6):
        if frame is None:
            return False
        code = frame.f_code
        if code.co_name in ("init_fn", "update_fn") and "optax" in code.co_filename and (
            "inject" in code.co_filename
        ):
            return True
        frame = frame.f_back
    return False


def _front(
    tx: GradientTransformation, optimizer: str, values: dict[str, Any], *, stateless: bool
) -> GradientTransformationExtraArgs:
    """Wrap a named optimizer: checked parameters, NumPy inputs converted, non-array leaves
    passed through (when ``stateless``), extra arguments forwarded, and the hyperparameters that
    ``optax.inject_hyperparams`` passes to the constructor honoured at each update."""
    injected = (
        {k: v for k, v in values.items() if v is not None and not callable(v)}
        if _called_by_optax_inject()
        else {}
    )

    def init(params):
        _check_params(params, optimizer, stateless)
        return tx.init(_prepare(params))

    def update(updates, state, params=None, **extra_args):
        if injected:
            known = hyper.get_hyperparams(state)
            state = hyper.set_hyperparams(state, **{k: v for k, v in injected.items() if k in known})
        return tx.update(
            _prepare(updates), state, _prepare(params), **accepted_extra_args(tx.update, extra_args)
        )

    return GradientTransformationExtraArgs(init, update)
