"""The first two steps of the lecture's recipe: check the initial loss, overfit a small sample.

Both take a :class:`gradchain.Trainable` and its :class:`gradchain.Split`, as every tuning
function does, and return a report whose ``kind`` says what was found (policies switch on it)
and whose ``message`` says it for people.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradchain.protocol import Split, Trainable, check_data
from gradchain.tuning.training import check_trainable, make_fit, stack_configs, train_population


class InitialLossReport(NamedTuple):
    kind: str  # "as_expected", "too_high", "too_low", "non_finite" or "no_expectation"
    loss: float
    expected: float | None  # log(C) for a classifier with C outputs, None for other losses
    ok: bool
    message: str


def check_initial_loss(trainable: Trainable, data: Split, key: jax.Array, config: Mapping[str, Any] | None = None, *,
                       num_examples: int = 512, rtol: float = 0.1) -> InitialLossReport:
    """Step 1: a softmax classifier's data loss at initialisation should be ≈ log(C).

    The network has no reason yet to prefer one class, so its outputs start near uniform and the
    mean cross-entropy near ``log C``.  Measured on the test-time path (no dropout, no penalty:
    ``evaluate``'s ``"loss"`` is the data loss) of the first ``num_examples`` training rows,
    with the parameters of ``trainable.init(key)``.  ``rtol``: the accepted relative distance
    from ``log C`` (0.1: a last layer initialised at 0.01 × He scale gives ≈ 1%, one at full He
    scale gives 30-100%).  For other losses (``num_classes`` unknown) the loss is reported with
    ``kind="no_expectation"``.
    """
    check_trainable(trainable)
    data = check_data(data)
    if not (isinstance(num_examples, int) and num_examples > 0):
        raise ValueError(f"num_examples must be a positive int, got {num_examples!r}")
    if not (isinstance(rtol, (int, float)) and rtol > 0):
        raise ValueError(f"rtol must be a positive number, got {rtol!r}")
    params, state = trainable.init(key)
    n = min(num_examples, len(data.y_train))
    batch = jax.tree.map(lambda a: a[:n], (data.x_train, data.y_train))
    loss = float(trainable.evaluate(params, state, batch, dict(config or {}))["loss"])
    c = trainable.num_classes
    if c is None and trainable.classification and jnp.issubdtype(data.y_train.dtype, jnp.integer):
        c = int(jnp.max(data.y_train)) + 1
    if not math.isfinite(loss):
        return InitialLossReport("non_finite", loss, None if c is None else math.log(c), False,
                                 f"initial loss is {loss}: the forward pass overflows; check the inputs' scale and the "
                                 "initialisation")
    if c is None or c < 2:
        return InitialLossReport("no_expectation", loss, None, True,
                                 f"initial loss {loss:.4g} (no closed-form expectation for this loss: compare with "
                                 "predicting the mean)")
    expected = math.log(c)
    ratio = loss / expected
    if abs(ratio - 1) <= rtol:
        return InitialLossReport("as_expected", loss, expected, True,
                                 f"initial loss {loss:.4f} ≈ log({c}) = {expected:.4f}: as expected")
    if ratio > 1:
        return InitialLossReport("too_high", loss, expected, False,
                                 f"initial loss {loss:.4f} is {ratio:.2f}× log({c}) = {expected:.4f}: the initial "
                                 "logits are too large (initialisation scale too big, unnormalised inputs)")
    return InitialLossReport("too_low", loss, expected, False,
                             f"initial loss {loss:.4f} is below log({c}) = {expected:.4f}: the model already prefers "
                             "the right classes — labels leaking into the inputs, a pretrained model, or a loss that "
                             "is not the mean cross-entropy")


class OverfitReport(NamedTuple):
    kind: str  # "overfits", "diverged", "plateau" or "slow"
    ok: bool
    num_examples: int
    steps_to_100: int | None  # first evaluation at which the training accuracy reached 100%
    final_train_acc: float | None  # None when the trainable reports no accuracy
    losses: np.ndarray
    message: str


def overfit_small_sample(trainable: Trainable, make_optimizer: Callable[[Mapping[str, Any]], Any], data: Split,
                         config: Mapping[str, Any], key: jax.Array, *, num_examples: int = 160, batch_size: int = 32,
                         steps: int = 200, eval_every: int = 25, select: str = "val_accuracy", mode: str = "max",
                         progress: bool | None = None) -> OverfitReport:
    """Step 2: train on a few minibatches (the first ``num_examples`` training rows, 5 batches of
    32 by default) with regularization off, until 100% training accuracy.

    ``config`` holds every hyperparameter the run reads, ``"learning_rate"`` included.  Names
    the two failures the lecture lists: loss not going down (learning rate too low, bad
    initialisation) and loss exploding to Inf/NaN (learning rate too high, bad initialisation).
    """
    check_trainable(trainable)
    data = check_data(data)
    if not (isinstance(num_examples, int) and num_examples > 0):
        raise ValueError(f"num_examples must be a positive int, got {num_examples!r}")
    n = min(len(data.y_train), num_examples)
    small = Split(jax.tree.map(lambda a: a[:n], data.x_train), data.y_train[:n], data.x_val, data.y_val)
    fit = make_fit(trainable, make_optimizer, small, steps=steps, batch_size=min(batch_size, n), eval_every=eval_every,
                   select=select, mode=mode)
    result = train_population(fit, stack_configs([dict(config)]), jnp.asarray(key)[None], strategy="sequential",
                              progress=progress, desc="2. overfit")
    result = jax.tree.map(lambda a: a[0], result)
    losses = np.asarray(result.losses)
    train_acc = result.metrics.get("train_accuracy")
    acc = None if train_acc is None else np.asarray(train_acc)
    reached = None if acc is None else next((eval_every * (i + 1) for i, a in enumerate(acc) if a >= 1.0), None)
    finite = np.isfinite(losses)
    first = float(np.mean(losses[:10]))
    last = float(np.mean(losses[finite][-10:])) if finite.any() else math.nan
    final = None if acc is None else float(acc[-1])
    if not finite.all():
        step = int(np.argmin(finite))
        kind, text = "diverged", (f"loss exploded to {losses[step]} at step {step} on {n} examples: learning rate too "
                                  "high or bad initialisation")
    elif reached is not None:
        kind, text = "overfits", (f"100% training accuracy on {n} examples after {reached} steps (loss "
                                  f"{losses[0]:.3f} → {losses[-1]:.3g})")
    elif last > 0.9 * first:
        kind, text = "plateau", (f"loss not going down on {n} examples ({first:.3f} → {last:.3f} in {steps} steps): "
                                 "learning rate too low or bad initialisation")
    else:
        reach = "" if final is None else f" and training accuracy reached {final:.1%}"
        kind, text = "slow", (f"training loss on {n} examples fell by {1 - last / first:.0%} in {steps} steps "
                              f"({first:.3g} → {last:.3g}){reach}: train longer, raise the learning rate or the capacity")
    ok = kind == "overfits" or (kind == "slow" and acc is None)
    return OverfitReport(kind, ok, n, reached, final, losses, text)
