"""The one training protocol every tuning tool speaks: a model, a loss with state and a key, metrics.

A **model** is a pair of pure functions (:class:`Model`)::

    init(key) -> (params, state)
    apply(params, state, x, *, key, train, config) -> (output, state)

``params`` are what the optimizer trains; ``state`` is what the forward pass updates by itself
(batch-norm running statistics; ``()`` when there is none); ``key`` the randomness of one step
(dropout, DropConnect, stochastic depth); ``train`` selects the training or the test-time path
(no dropout, running statistics); ``config`` the step's hyperparameters, any of which may be a
traced array (a dropout rate searched by a population).  Flax NNX, Flax Linen and Equinox models
become one with :mod:`gradchain.adapters`; a plain function with :func:`from_function`.

A **trainable** (:class:`Trainable`, built by :func:`supervised`) adds the data side::

    init(key) -> (params, state)
    loss(params, state, batch, key, config) -> (loss, (state, aux))      # the training path
    evaluate(params, state, batch, config) -> {"loss": ..., "accuracy": ..., ...}  # test-time path

``batch`` is ``(x, y)``.  The loss may augment the batch first (``augment(key, x, y, config)``,
its own key per step) and adds an optional penalty of the parameters; ``evaluate`` returns batch
means, so the mean over a split evaluated in chunks is their size-weighted mean.  Training runs,
populations, search, the LR finder and the recipe (:mod:`gradchain.tuning`) take a
:class:`Trainable` and never look inside the model.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "Model", "Trainable", "supervised", "from_function", "LOSSES", "METRICS",
    "softmax_cross_entropy", "multiclass_svm", "mean_squared_error", "accuracy",
]

Config = Mapping[str, Any]


class Model(NamedTuple):
    """``init(key) -> (params, state)``; ``apply(params, state, x, *, key, train, config) -> (y, state)``."""

    init: Callable[[jax.Array], tuple[Any, Any]]
    apply: Callable[..., tuple[jax.Array, Any]]


class Trainable(NamedTuple):
    """A model with its loss and metrics: what :func:`gradchain.tuning.make_fit` trains.

    ``loss(params, state, batch, key, config) -> (scalar, (state, aux))`` is the training path;
    ``evaluate(params, state, batch, config) -> dict`` the test-time path, batch means.
    ``num_classes`` is known for classification losses (the initial-loss check uses it);
    ``predict(params, state, x, config) -> output`` (the test-time path) serves ensembles.
    """

    init: Callable[[jax.Array], tuple[Any, Any]]
    loss: Callable[..., tuple[jax.Array, tuple[Any, Any]]]
    evaluate: Callable[..., dict[str, jax.Array]]
    num_classes: int | None = None
    predict: Callable[..., jax.Array] | None = None  # (params, state, x, config) -> output, test-time path


# --- losses and metrics: (output, target) -> per-example values --------------------------------


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``-log softmax(logits)[y]`` per example; ``labels`` integer classes or probability rows
    (mixup/CutMix soft targets, label smoothing): ``-Σ_c y_c log softmax(logits)_c``."""
    log_p = jax.nn.log_softmax(logits)
    if labels.ndim == logits.ndim:
        return -jnp.sum(labels * log_p, axis=-1)
    return -jnp.take_along_axis(log_p, labels[..., None].astype(jnp.int32), axis=-1)[..., 0]


def multiclass_svm(scores: jax.Array, labels: jax.Array, margin: float = 1.0) -> jax.Array:
    """The lecture's multiclass SVM (hinge) loss: ``Σ_{j≠y} max(0, s_j - s_y + margin)``."""
    labels = _hard_labels(labels)
    correct = jnp.take_along_axis(scores, labels[..., None], axis=-1)
    hinge = jnp.maximum(0.0, scores - correct + margin)
    return jnp.sum(hinge, axis=-1) - margin  # the j = y term contributes exactly `margin`


def mean_squared_error(output: jax.Array, target: jax.Array) -> jax.Array:
    """``mean_j (output_j - target_j)²`` per example (regression, autoencoders)."""
    diff = (output - target.reshape(output.shape)).reshape(output.shape[0], -1)
    return jnp.mean(diff**2, axis=-1)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """1 where ``argmax(logits) == y`` (the argmax of ``y`` for soft labels), else 0."""
    return (jnp.argmax(logits, -1) == _hard_labels(labels)).astype(jnp.float32)


def _hard_labels(labels: jax.Array) -> jax.Array:
    return jnp.argmax(labels, -1) if labels.dtype.kind == "f" and labels.ndim > 1 else labels.astype(jnp.int32)


LOSSES: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "cross_entropy": softmax_cross_entropy,
    "multiclass_svm": multiclass_svm,
    "mse": mean_squared_error,
}
METRICS: dict[str, Callable[[jax.Array, jax.Array], jax.Array]] = {
    "accuracy": accuracy,
    "mse": mean_squared_error,
    "cross_entropy": softmax_cross_entropy,
}
_CLASSIFICATION = {"cross_entropy", "multiclass_svm"}


def _lookup(kind: str, name: str, value: Any, table: Mapping[str, Callable]) -> Callable:
    if callable(value):
        return value
    if isinstance(value, str) and value in table:
        return table[value]
    raise ValueError(f"{kind} must be a callable (output, target) -> per-example values or one of "
                     f"{sorted(table)}, got {name}={value!r}")


def supervised(
    model: Model,
    loss: str | Callable[[jax.Array, jax.Array], jax.Array] = "cross_entropy",
    metrics: Mapping[str, str | Callable] | tuple[str, ...] | None = None,
    *,
    augment: Callable[..., tuple[jax.Array, jax.Array]] | None = None,
    penalty: Callable[[Any, Config], jax.Array] | None = None,
    num_classes: int | None = None,
) -> Trainable:
    """The training protocol of a supervised model: ``loss(model(x), y)`` averaged over the batch.

    Args:
      model: a :class:`Model` (see :mod:`gradchain.adapters` for Flax and Equinox models).
      loss: ``"cross_entropy"`` (integer or soft labels), ``"multiclass_svm"``, ``"mse"``, or a
        function ``(output, target) -> per-example losses`` (or their mean).
      metrics: names or functions ``(output, target) -> per-example values`` reported by
        ``evaluate`` besides ``"loss"``; default ``("accuracy",)`` for classification losses,
        ``("mse",)`` for ``"mse"``, none for a custom loss.
      augment: ``augment(key, x, y, config) -> (x, y)`` applied to every training batch with its
        own key (crops, affine jitter, mixup with soft labels, ...); never at test time.
      penalty: ``penalty(params, config) -> scalar`` added to the training loss (L1/L2,
        :func:`gradchain.l2_penalty`); not part of ``evaluate``'s ``"loss"`` (the data loss).
      num_classes: the number of classes, for the initial-loss check (log C).
    """
    if not (callable(getattr(model, "init", None)) and callable(getattr(model, "apply", None))):
        raise TypeError(f"model must be a gradchain.Model (init, apply); got {type(model).__name__}. "
                        "Wrap Flax/Equinox models with gradchain.adapters.from_nnx / from_linen / from_equinox")
    loss_fn = _lookup("loss", "loss", loss, LOSSES)
    if metrics is None:
        metrics = ("accuracy",) if loss in _CLASSIFICATION else ("mse",) if loss == "mse" else ()
    if isinstance(metrics, (tuple, list)):
        metrics = {name: name for name in metrics}
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a dict name -> function or a tuple of names, got {metrics!r}")
    metric_fns = {name: _lookup("metrics", f"metrics[{name!r}]", m, METRICS) for name, m in metrics.items()}
    if "loss" in metric_fns:
        raise ValueError("metrics must not be named 'loss': evaluate always reports the data loss under that name")
    for name, fn in (("augment", augment), ("penalty", penalty)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{name} must be callable or None, got {fn!r}")

    def mean_loss(output, target):
        values = loss_fn(output, target)
        batch = jax.tree.leaves(output)[0].shape[0]
        if jnp.ndim(values) > 1 or (jnp.ndim(values) == 1 and jnp.shape(values)[0] != batch):
            raise ValueError(f"loss must return one value per example or their mean: expected shape ({batch},) "
                             f"or (), got shape {jnp.shape(values)}")
        return jnp.mean(values)

    def train_loss(params, state, batch, key, config):
        x, y = batch
        model_key, augment_key = jax.random.split(key)
        if augment is not None:
            x, y = augment(augment_key, x, y, config)
        output, state = model.apply(params, state, x, key=model_key, train=True, config=config)
        data_loss = mean_loss(output, y)
        total = data_loss if penalty is None else data_loss + penalty(params, config)
        return total, (state, {"data_loss": data_loss})

    def predict(params, state, x, config):
        return model.apply(params, state, x, key=None, train=False, config=config)[0]

    def evaluate(params, state, batch, config):
        x, y = batch
        output = predict(params, state, x, config)
        out = {"loss": mean_loss(output, y)}
        for name, fn in metric_fns.items():
            out[name] = jnp.mean(fn(output, y))
        return out

    return Trainable(model.init, train_loss, evaluate, num_classes, predict)


# --- plain functions as models ------------------------------------------------------------------


def call_with_accepted(fn: Callable, *args, **candidates):
    """Call ``fn(*args, **k)`` with the keyword arguments among ``candidates`` it names (or all of
    them when it takes ``**kwargs``): a model asks for ``key``, ``train`` or ``config`` by naming it."""
    return fn(*args, **accepted_keywords(fn, candidates))


def accepted_keywords(fn: Callable, candidates: Mapping[str, Any]) -> dict[str, Any]:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return dict(candidates)
    names = {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    return {k: v for k, v in candidates.items() if k in names}


def from_function(init: Callable[[jax.Array], Any], apply: Callable[..., Any], *, stateful: bool = False) -> Model:
    """A model from two plain functions.

    ``init(key) -> params`` (or ``(params, state)`` with ``stateful=True``) and
    ``apply(params, x, ...)`` (or ``apply(params, state, x, ...) -> (y, state)``), which receives
    ``key=`` (None at test time), ``train=`` and ``config=`` when it names them::

        def apply(params, x, *, key, train, config):
            h = jax.nn.relu(x @ params["w1"])
            h = gc.dropout(key, h, config["dropout"], deterministic=not train)
            return h @ params["w2"]
    """
    for name, fn in (("init", init), ("apply", apply)):
        if not callable(fn):
            raise TypeError(f"{name} must be callable, got {fn!r}")

    def model_init(key):
        out = init(key)
        if not stateful:
            return out, ()
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ValueError(f"with stateful=True, init must return (params, state), got {type(out).__name__}")
        return out

    def model_apply(params, state, x, *, key=None, train=False, config=None):
        extra = {"key": key, "train": train, "config": {} if config is None else config}
        if not stateful:
            return call_with_accepted(apply, params, x, **extra), state
        return call_with_accepted(apply, params, state, x, **extra)

    return Model(model_init, model_apply)
