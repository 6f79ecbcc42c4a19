"""The first two steps of the lecture's recipe: check the initial loss, overfit a small sample."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradchain.tuning.training import make_fit


class InitialLossReport(NamedTuple):
    loss: float
    expected: float  # log(C)
    ok: bool
    message: str


def check_initial_loss(
    loss_fn: Callable[[Any, Any], jax.Array], params: Any, batch: Any, num_classes: int, rtol: float = 0.05
) -> InitialLossReport:
    """Step 1: with weight decay off, a softmax classifier's loss at initialisation should be
    ≈ log(C) — the network has no reason yet to prefer one class.

    ``loss_fn(params, batch)`` must be the data loss only (no regularisation term).
    """
    if not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    loss = float(loss_fn(params, batch))
    expected = math.log(num_classes)
    if not math.isfinite(loss):
        return InitialLossReport(loss, expected, False, f"initial loss is {loss}: the forward pass overflows; check the inputs' scale and the initialisation")
    ratio = loss / expected
    if abs(ratio - 1) <= rtol:
        message = f"initial loss {loss:.4f} ≈ log({num_classes}) = {expected:.4f}: as expected"
    elif ratio > 1:
        message = (
            f"initial loss {loss:.4f} is {ratio:.2f}× log({num_classes}) = {expected:.4f}: the initial logits are "
            "too large (initialisation scale too big, unnormalised inputs) or a regularisation term is included"
        )
    else:
        message = (
            f"initial loss {loss:.4f} is below log({num_classes}) = {expected:.4f}: the model already prefers the "
            "right classes — labels leaking into the inputs, a pretrained model, or a loss that is not the mean "
            "cross-entropy"
        )
    return InitialLossReport(loss, expected, abs(ratio - 1) <= rtol, message)


class OverfitReport(NamedTuple):
    ok: bool
    steps_to_100: int | None  # first evaluation at which training accuracy reached 100%
    final_train_acc: float
    losses: np.ndarray
    message: str


def overfit_small_sample(
    task, make_optimizer, config: Mapping[str, float], key: jax.Array, *, num_batches: int = 5,
    batch_size: int = 32, max_steps: int = 500, eval_every: int = 25,
) -> OverfitReport:
    """Step 2: train on ~5–10 minibatches until 100% training accuracy.

    Diagnoses the two failures the lecture names: loss not going down (learning rate too low,
    bad initialisation) and loss exploding to Inf/NaN (learning rate too high, bad init).
    """
    if not isinstance(num_batches, int) or num_batches <= 0:
        raise ValueError(f"num_batches must be a positive int, got {num_batches!r}")
    fraction = min(1.0, num_batches * batch_size / len(task.data.y_train))
    fit = make_fit(task, make_optimizer, steps=max_steps, batch_size=batch_size, eval_every=eval_every, data_fraction=fraction)
    arrays = {k: jnp.asarray(v, jnp.float32) for k, v in config.items()}
    result = jax.jit(fit)(arrays, key)
    losses = np.asarray(result.losses)
    train_acc = np.asarray(result.train_acc)
    reached = np.nonzero(train_acc >= 1.0)[0]
    steps = int((reached[0] + 1) * eval_every) if len(reached) else None
    finite = np.isfinite(losses)
    first, last = np.mean(losses[:10]), np.mean(losses[finite][-10:]) if finite.any() else np.nan
    if not finite.all():
        message = f"loss exploded to {losses[~finite][0]} at step {int(np.argmin(finite))}: learning rate too high or bad initialisation"
    elif steps is not None:
        message = f"100% training accuracy on {num_batches} minibatches after {steps} steps (loss {first:.3f} → {last:.3g})"
    elif last > 0.9 * first:
        message = f"loss not going down ({first:.3f} → {last:.3f} in {max_steps} steps): learning rate too low or bad initialisation"
    else:
        message = f"loss went down ({first:.3f} → {last:.3g}) but training accuracy only reached {train_acc[-1]:.1%} in {max_steps} steps: train longer, raise the learning rate or the capacity"
    return OverfitReport(bool(steps is not None and finite.all()), steps, float(train_acc[-1]), losses, message)
