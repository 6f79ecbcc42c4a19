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
    "Model", "Trainable", "Split", "supervised", "from_function", "check_data", "check_labels", "LOSSES", "METRICS",
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
    ``classification``: the targets are class ids (or probability rows over the classes), so
    :func:`check_labels` can check them against the model's number of outputs.
    """

    init: Callable[[jax.Array], tuple[Any, Any]]
    loss: Callable[..., tuple[jax.Array, tuple[Any, Any]]]
    evaluate: Callable[..., dict[str, jax.Array]]
    num_classes: int | None = None
    predict: Callable[..., jax.Array] | None = None  # (params, state, x, config) -> output, test-time path
    classification: bool = False


class Split(NamedTuple):
    """The data of a training run: every choice is made on ``(x_val, y_val)``, never on a test set.

    ``x_*`` are arrays (or trees of arrays) with one row per example; ``y_*`` the targets: integer
    class ids of shape ``(N,)``, probability rows ``(N, C)`` or regression targets.  NumPy arrays
    are accepted (:func:`check_data` moves them to the device).
    """

    x_train: Any
    y_train: Any
    x_val: Any
    y_val: Any


# --- losses and metrics: (output, target) -> per-example values --------------------------------


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``-log softmax(logits)[y]`` per example; ``labels`` integer classes or probability rows
    (mixup/CutMix soft targets, label smoothing): ``-Σ_c y_c log softmax(logits)_c``."""
    log_p = jax.nn.log_softmax(logits)
    if _soft(logits, labels):
        return -jnp.sum(labels * log_p, axis=-1)
    return -jnp.take_along_axis(log_p, _class_ids(logits, labels)[..., None], axis=-1)[..., 0]


def multiclass_svm(scores: jax.Array, labels: jax.Array, margin: float = 1.0) -> jax.Array:
    """The lecture's multiclass SVM (hinge) loss: ``Σ_{j≠y} max(0, s_j - s_y + margin)``."""
    labels = jnp.argmax(labels, -1) if _soft(scores, labels) else _class_ids(scores, labels)
    correct = jnp.take_along_axis(scores, labels[..., None], axis=-1)
    hinge = jnp.maximum(0.0, scores - correct + margin)
    return jnp.sum(hinge, axis=-1) - margin  # the j = y term contributes exactly `margin`


def mean_squared_error(output: jax.Array, target: jax.Array) -> jax.Array:
    """``mean_j (output_j - target_j)²`` per example (regression, autoencoders)."""
    diff = (output - target.reshape(output.shape)).reshape(output.shape[0], -1)
    return jnp.mean(diff**2, axis=-1)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """1 where ``argmax(logits) == y`` (the argmax of ``y`` for soft labels), else 0."""
    labels = jnp.argmax(labels, -1) if _soft(logits, labels) else _class_ids(logits, labels)
    return (jnp.argmax(logits, -1) == labels).astype(jnp.float32)


def _soft(logits: jax.Array, labels: jax.Array) -> bool:
    """Probability rows: floating targets of the logits' own shape."""
    return jnp.issubdtype(labels.dtype, jnp.floating) and jnp.shape(labels) == jnp.shape(logits)


def _class_ids(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Integer class ids of shape ``logits.shape[:-1]``, or a ValueError that says what was given."""
    if jnp.shape(labels) != jnp.shape(logits)[:-1]:
        raise ValueError(f"labels must be class ids of shape {jnp.shape(logits)[:-1]} or probability rows of shape "
                         f"{jnp.shape(logits)}, got shape {jnp.shape(labels)} ({labels.dtype}) for outputs of shape "
                         f"{jnp.shape(logits)}" + (" — labels of shape (N, 1): pass y[:, 0]" if jnp.ndim(labels) == 2 and jnp.shape(labels)[-1] == 1 else ""))
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"class labels must be integers, got dtype {labels.dtype} of shape {jnp.shape(labels)} "
                         "(probability rows must have the outputs' shape)")
    return labels.astype(jnp.int32)


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
        output, state = _output_and_state(model.apply(params, state, x, key=model_key, train=True, config=config))
        data_loss = mean_loss(output, y)
        total = data_loss if penalty is None else data_loss + penalty(params, config)
        return total, (state, {"data_loss": data_loss})

    def predict(params, state, x, config):
        return _output_and_state(model.apply(params, state, x, key=None, train=False, config=config))[0]

    def evaluate(params, state, batch, config):
        x, y = batch
        output = predict(params, state, x, config)
        out = {"loss": mean_loss(output, y)}
        for name, fn in metric_fns.items():
            out[name] = jnp.mean(fn(output, y))
        return out

    return Trainable(model.init, train_loss, evaluate, num_classes, predict, classification=loss in _CLASSIFICATION)


def _output_and_state(out: Any) -> tuple[Any, Any]:
    if not (isinstance(out, tuple) and len(out) == 2):
        raise TypeError(f"model.apply must return (output, state), got {type(out).__name__}"
                        f"{'' if not isinstance(out, tuple) else f' of length {len(out)}'}; a function that returns "
                        "the output alone becomes a model with gradchain.from_function(init, apply)")
    return out


# --- data ---------------------------------------------------------------------------------------


def check_data(data: Any, name: str = "data") -> Split:
    """``data`` as a :class:`Split` of device arrays, or an error naming the split, the row and the fix.

    Checks: four parts; ``x`` and ``y`` of a split with one row per example and no empty split;
    every floating input finite (a NaN pixel would make every loss NaN and its accuracy a
    guess); integer targets of shape ``(N,)`` (an ``(N, 1)`` column is refused: it would
    broadcast).  Class ranges need the model: :func:`check_labels`.
    """
    if not (isinstance(data, tuple) and len(data) == 4):
        raise TypeError(f"{name} must be a gradchain.Split(x_train, y_train, x_val, y_val), got {type(data).__name__}"
                        f"{f' of length {len(data)}' if isinstance(data, tuple) else ''}")
    data = Split(*(jax.tree.map(jnp.asarray, part) for part in data))
    for split in ("train", "val"):
        check_pair(getattr(data, f"x_{split}"), getattr(data, f"y_{split}"), f"{name}.x_{split}", f"{name}.y_{split}")
    return data


def check_pair(x: Any, y: Any, x_name: str, y_name: str) -> tuple[Any, jax.Array]:
    """One split's inputs and targets as arrays with one row per example, finite inputs, 1-d class ids."""
    x, y = jax.tree.map(jnp.asarray, x), jnp.asarray(y)
    leaves = jax.tree.leaves(x)
    if not leaves or any(jnp.ndim(leaf) == 0 for leaf in leaves) or jnp.ndim(y) == 0:
        raise ValueError(f"{x_name} and {y_name} must be arrays with one row per example, got shapes "
                         f"{[jnp.shape(leaf) for leaf in leaves]} and {jnp.shape(y)}")
    rows = {len(leaf) for leaf in leaves}
    if rows != {len(y)}:
        raise ValueError(f"{x_name} has {sorted(rows)} rows but {y_name} has {len(y)}: one target per example")
    if len(y) == 0:
        raise ValueError(f"{x_name} and {y_name} are empty: every split needs at least one example")
    for leaf in leaves + [y]:
        if jnp.issubdtype(leaf.dtype, jnp.inexact):
            bad = ~jnp.isfinite(leaf).reshape(len(leaf), -1).all(axis=1)
            if bool(bad.any()):
                which = x_name if leaf is not y else y_name
                row = int(jnp.argmax(bad))
                raise ValueError(f"{which} has non-finite values (NaN or Inf) in {int(bad.sum())} rows, the first at "
                                 f"row {row}: clean or drop them before training")
    if jnp.issubdtype(y.dtype, jnp.integer) and jnp.ndim(y) != 1:
        raise ValueError(f"{y_name} holds integer class ids of shape {jnp.shape(y)}: they must have shape ({len(y)},)"
                         f"{' (pass y[:, 0])' if jnp.ndim(y) == 2 and jnp.shape(y)[1] == 1 else ''}")
    return x, y


def num_outputs(trainable: Trainable, x: Any, config: Config) -> int:
    """The width of ``trainable.predict``'s output for inputs like ``x`` (from shapes: nothing runs)."""
    predict = trainable.predict
    if predict is None:
        raise ValueError("trainable.predict is None: the number of outputs is unknown")
    params, state = jax.eval_shape(trainable.init, jax.random.PRNGKey(0))
    first = jax.tree.map(lambda a: a[:1], x)
    return int(jax.eval_shape(lambda p, s: predict(p, s, first, dict(config)), params, state).shape[-1])


def check_labels(y: jax.Array, num_classes: int, name: str = "y") -> None:
    """Integer class ids in ``0 .. num_classes-1`` (a -1 would silently index the last class, a 10
    of 3 classes give a NaN loss), or probability rows of width ``num_classes``; else a ValueError
    naming the first bad row."""
    if jnp.issubdtype(y.dtype, jnp.integer):
        bad = (y < 0) | (y >= num_classes)
        if bool(jnp.any(bad)):
            row = int(jnp.argmax(bad))
            raise ValueError(f"{name} has class ids outside 0..{num_classes - 1} (the model has {num_classes} outputs): "
                             f"{int(jnp.sum(bad))} rows, the first row {row} with label {int(y[row])}")
    elif jnp.ndim(y) != 2 or jnp.shape(y)[1] != num_classes:
        raise ValueError(f"{name} must be integer class ids of shape (N,) or probability rows of shape (N, {num_classes}) "
                         f"for a classifier with {num_classes} outputs, got {y.dtype} of shape {jnp.shape(y)}")


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
