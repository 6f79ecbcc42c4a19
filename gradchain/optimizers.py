"""The lecture's first-order optimizers, each a short chain of transforms.

Every optimizer ends in ``scale_by_learning_rate``, so ``apply_updates`` performs
``x -= learning_rate * direction``.  Each is wrapped in :func:`gradchain.multi_tensor`, which
packs the small leaves of a tree with many of them into one buffer per dtype (and leaves a small
tree as it is), so that step and compile time do not grow with the number of leaves.  All
hyperparameters may be numbers, arrays (``vmap`` a population over them) or schedules, and can be
read and set with ``get_hyperparams`` / ``set_hyperparams``.

**Changing hyperparameters during training.**  The state is the one place the values live: the
constructor's arguments are the *initial* values (or schedules), and every update reads the
values from the state.  The supported ways, in order of preference:

* a schedule as the argument (``gc.adam(gc.cosine_schedule(1e-3, 10_000))``);
* ``state = gc.set_hyperparams(state, learning_rate=1e-4)`` between steps (no recompile);
* :func:`inject_hyperparams`, the drop-in for ``optax.inject_hyperparams`` when porting code
  that reads or writes ``state.hyperparams[...]``; it drives gradchain's optimizers *and*
  Optax's.

``optax.inject_hyperparams(gc.adam)(...)`` is not supported beyond its first step: Optax's
wrapper rebuilds the optimizer with the current values at every update and expects that object to
use them, but a gradchain optimizer takes them from its state, where the *initial* injected values
were stored.  So the injected values at ``init`` are used, while later edits of Optax's
``state.hyperparams`` and Optax-side schedules do not reach the step.  (Telling Optax's wrapper
apart from a user passing arrays would need inspecting the caller; gradchain does not.)
``gc.set_hyperparams`` on such a state still works: it sets the values inside.
"""

from __future__ import annotations

import functools
import inspect
import numbers
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

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

    Hyperparameters are read from the state at each update: change them with a schedule or
    ``gc.set_hyperparams``; port ``optax.inject_hyperparams`` code with :func:`inject_hyperparams`
    (Optax's own wrapper reaches only the initial values: see the module docstring).

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
    if hyper.is_zero(momentum) and not nesterov:
        return _front(
            multi_tensor(chain(scale_by_learning_rate(learning_rate))), "sgd", stateless=True
        )
    return _front(
        multi_tensor(
            chain(
                scale_by_momentum(momentum, nesterov, dtype=_accumulators(dtype=accumulator_dtype)),
                scale_by_learning_rate(learning_rate),
            )
        ),
        "sgd",
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

    Hyperparameters are read from the state at each update: change them with a schedule or
    ``gc.set_hyperparams``; port ``optax.inject_hyperparams`` code with :func:`inject_hyperparams`
    (Optax's own wrapper reaches only the initial values: see the module docstring).

    Args:
      learning_rate: α ≥ 0: a number, an array or a schedule.
      eps: > 0, added outside the square root (the lecture's form).
      initial_accumulator_value: the start of ``s`` (≥ 0); 0 is the lecture's, Optax's
        ``optax.adagrad`` starts at 0.1.
      accumulator_dtype: storage dtype of ``s`` (default: each parameter's; float32 for float16
        and bfloat16 parameters).

    Returns:
      A gradient transformation (state: the sum of squares, eps and the learning rate).
    """
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

    Hyperparameters are read from the state at each update: change them with a schedule or
    ``gc.set_hyperparams``; port ``optax.inject_hyperparams`` code with :func:`inject_hyperparams`
    (Optax's own wrapper reaches only the initial values: see the module docstring).

    Args:
      learning_rate: α ≥ 0: a number, an array or a schedule.
      decay: ρ in [0, 1).
      eps: > 0, added outside the square root (``optax.rmsprop`` adds it inside).
      centered: divide by the standard deviation instead of the RMS.
      accumulator_dtype: storage dtype of the averages (default: each parameter's; the squares
        in float32 for float16 and bfloat16 parameters).

    Returns:
      A gradient transformation.
    """
    if not isinstance(centered, bool):
        raise TypeError(f"centered must be a bool, got {centered!r}")
    dtype = _accumulators(dtype=accumulator_dtype)
    scaling = (
        scale_by_centred_rms(decay, eps, dtype=dtype) if centered else scale_by_rms(decay, eps, dtype=dtype)
    )
    return _front(
        multi_tensor(chain(scaling, scale_by_learning_rate(learning_rate))),
        "rmsprop",
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

    Hyperparameters are read from the state at each update: change them with a schedule or
    ``gc.set_hyperparams``; port ``optax.inject_hyperparams`` code with :func:`inject_hyperparams`
    (Optax's own wrapper reaches only the initial values: see the module docstring).

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
      nu_dtype: storage dtype of ``v`` (default: each parameter's; float32 for float16 and
        bfloat16 parameters, whose squares would underflow or stall).

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

    Hyperparameters are read from the state at each update: change them with a schedule or
    ``gc.set_hyperparams``; port ``optax.inject_hyperparams`` code with :func:`inject_hyperparams`
    (Optax's own wrapper reaches only the initial values: see the module docstring).

    Args:
      learning_rate: α ≥ 0: a number, an array or a schedule.
      b1: decay of the first moment, in [0, 1).
      b2: decay of the second moment, in [0, 1).
      eps: > 0, outside the square root.
      eps_root: ≥ 0, inside the square root.
      mu_dtype: storage dtype of ``m``.
      nu_dtype: storage dtype of ``v`` (default: each parameter's; float32 for float16 and
        bfloat16 parameters, whose squares would underflow or stall).

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

    Hyperparameters are read from the state at each update: change them with a schedule or
    ``gc.set_hyperparams``; port ``optax.inject_hyperparams`` code with :func:`inject_hyperparams`
    (Optax's own wrapper reaches only the initial values: see the module docstring).

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
      nu_dtype: storage dtype of ``v`` (default: each parameter's; float32 for float16 and
        bfloat16 parameters, whose squares would underflow or stall).

    Returns:
      A gradient transformation.
    """
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
    return _front(tx, "adamw", stateless=False)


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


def _front(
    tx: GradientTransformation, optimizer: str, *, stateless: bool
) -> GradientTransformationExtraArgs:
    """Wrap a named optimizer: checked parameters, NumPy inputs converted, non-array leaves
    passed through (when ``stateless``), extra arguments forwarded.

    Its behaviour depends only on its arguments and the state: the hyperparameters are read from
    the state at every update (never from who built the optimizer or from where).
    """

    def init(params):
        _check_params(params, optimizer, stateless)
        return tx.init(_prepare(params))

    def update(updates, state, params=None, **extra_args):
        return tx.update(
            _prepare(updates), state, _prepare(params), **accepted_extra_args(tx.update, extra_args)
        )

    return GradientTransformationExtraArgs(init, update)


# ---------------------------------------------------------------------------------------------
# inject_hyperparams: Optax's wrapper, made explicit for state-held hyperparameters.


class InjectHyperparamsState(NamedTuple):
    """The state of :func:`inject_hyperparams`: Optax's ``InjectHyperparamsState`` layout.

    ``hyperparams`` holds the values the *next* update uses (gradchain's convention, as
    :func:`gradchain.get_hyperparams`; for a schedule, the schedule at ``count``).
    """

    count: jax.Array  # pyright: ignore[reportIncompatibleMethodOverride] - a field, as in Optax
    hyperparams: dict
    inner_state: Any


def _split_arguments(bound: inspect.BoundArguments, static: set[str]) -> tuple[dict, dict, dict]:
    """``(numeric, schedules, other)``: what is stored and injected, what is evaluated per step,
    and what is passed to the factory unchanged (flags, dtypes, masks, ``static_args``)."""
    numeric, schedules, other = {}, {}, {}
    for name, value in bound.arguments.items():
        if name in static or isinstance(value, (bool, np.bool_)) or value is None:
            other[name] = value
        elif callable(value) and not isinstance(value, (jax.Array, np.ndarray)):
            schedules[name] = value
        elif isinstance(value, (numbers.Real, jax.Array, np.ndarray, np.generic)):
            numeric[name] = value
        else:
            other[name] = value
    return numeric, schedules, other


def _as_hyperparameter(value: Any, dtype: Any) -> jax.Array:
    """A stored hyperparameter: floats in ``dtype``, integers as they are (as Optax)."""
    value = hyper.unwrap(value)
    if jnp.issubdtype(jnp.result_type(value), jnp.floating):
        return jnp.asarray(value, dtype)
    return jnp.asarray(value)


def _push(inner_state: Any, values: dict[str, Any]) -> Any:
    """Write ``values`` into the inner state where it holds hyperparameters of those names."""
    known = hyper.get_hyperparams(inner_state)
    shared = {name: value for name, value in values.items() if name in known}
    return hyper.set_hyperparams(inner_state, **shared) if shared else inner_state


def inject_hyperparams(
    inner_factory: Callable[..., Any],
    static_args: str | Iterable[str] = (),
    hyperparam_dtype: Any = None,
) -> Callable[..., GradientTransformationExtraArgs]:
    """``optax.inject_hyperparams`` for gradchain: hyperparameters in ``state.hyperparams``.

    ``inject_hyperparams(gc.adam)(learning_rate=schedule)`` returns a transformation whose state
    is ``InjectHyperparamsState(count, hyperparams, inner_state)``, as Optax's.  At every update
    the values in ``state.hyperparams`` (edited by hand or by ``gc.set_hyperparams``; schedules
    evaluated at ``count``) are used twice, so that both kinds of inner transformation follow them:

    * written into the inner state (``gc.set_hyperparams``) under the names it holds — how a
      gradchain optimizer, which reads its hyperparameters from its state, sees them;
    * passed to ``inner_factory`` to build this step's transformation — how an Optax one sees
      them.

    The behaviour depends only on the arguments and the state, never on who calls it.  With a
    gradchain optimizer the numbers are those of the optimizer given the same values directly
    (``inject_hyperparams(gc.sgd)(learning_rate=s)`` steps as ``gc.sgd(s)``).

    Args:
      inner_factory: builds the transformation from its hyperparameters (``gc.adam``,
        ``optax.adam``, a function of your own).
      static_args: names of callable arguments that are not schedules (passed unchanged).
      hyperparam_dtype: the dtype of the stored floating hyperparameters (default: gradchain's
        float dtype, float32 or float64 under x64; gradchain optimizers cast to their own).

    Returns:
      A function with ``inner_factory``'s arguments (numbers, arrays or schedules ``step ->
      value``) returning a :class:`gradchain.GradientTransformationExtraArgs`.

    Raises:
      ValueError: ``static_args`` names an argument ``inner_factory`` does not have.

    Example:
      >>> import jax.numpy as jnp, gradchain as gc
      >>> from gradchain.optimizers import inject_hyperparams
      >>> tx = inject_hyperparams(gc.sgd)(learning_rate=0.1)
      >>> state = tx.init(jnp.zeros(2))
      >>> state.hyperparams["learning_rate"] = 0.0     # Optax's idiom: honoured
      >>> tx.update(jnp.ones(2), state)[0]
      Array([-0., -0.], dtype=float32)
    """
    static = {static_args} if isinstance(static_args, str) else set(static_args)
    signature = inspect.signature(inner_factory)
    if not static <= set(signature.parameters):
        raise ValueError(
            f"static_args must name arguments of {getattr(inner_factory, '__name__', inner_factory)!r}, "
            f"got {sorted(static - set(signature.parameters))}; it has {list(signature.parameters)}"
        )

    def wrapped(*args: Any, **kwargs: Any) -> GradientTransformationExtraArgs:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        numeric, schedules, other = _split_arguments(bound, static)
        dtype = hyperparam_dtype or hyper.float_dtype()

        def values_at(stored: dict, count: Any) -> dict:
            now = {name: _as_hyperparameter(stored[name], dtype) for name in numeric}
            now.update({name: _as_hyperparameter(s(count), dtype) for name, s in schedules.items()})
            return now

        def init(params):
            count = jnp.zeros([], jnp.int32)
            values = values_at(numeric, count)
            inner = inner_factory(**other, **values)
            return InjectHyperparamsState(count, values, _push(inner.init(params), values))

        def update(updates, state, params=None, **extra_args):
            values = values_at(state.hyperparams, state.count)
            inner = inner_factory(**other, **values)
            inner_state = _push(state.inner_state, values)
            updates, inner_state = inner.update(
                updates, inner_state, params, **accepted_extra_args(inner.update, extra_args)
            )
            count = hyper.increment(state.count)
            return updates, InjectHyperparamsState(count, values_at(values, count), inner_state)

        return GradientTransformationExtraArgs(init, update)

    return functools.wraps(inner_factory)(wrapped)
