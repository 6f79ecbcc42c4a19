"""Early stopping as pure state: "always keep track of the model snapshot that worked best on val".

Usable inside ``lax.scan``/``while_loop`` (all fields are arrays, the update is branch-free) and
in a Python loop alike::

    stopper = EarlyStopping(mode="max", patience=5, min_delta=1e-3)
    state = stopper.init(params)
    for epoch in ...:
        state = stopper.update(state, val_accuracy, params, epoch)
        if state.should_stop: break
    params = state.best_params
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class EarlyStoppingState(NamedTuple):
    best_metric: jax.Array
    best_params: Any
    best_step: jax.Array
    bad_evals: jax.Array  # evaluations since the last improvement
    should_stop: jax.Array  # bool


class EarlyStopping(NamedTuple):
    """``mode``: "max" (accuracy) or "min" (loss); an improvement must beat the best by more than
    ``min_delta``; ``patience``: evaluations without improvement before ``should_stop``
    (None: never stop, only keep the best snapshot).  A NaN metric is never an improvement."""

    mode: str = "max"
    patience: int | None = None
    min_delta: float = 0.0

    def _check(self):
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")
        if self.patience is not None and (not isinstance(self.patience, int) or self.patience < 0):
            raise ValueError(f"patience must be None or an int >= 0, got {self.patience!r}")
        if not self.min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta!r}")

    def init(self, params: Any) -> EarlyStoppingState:
        self._check()
        worst = -jnp.inf if self.mode == "max" else jnp.inf
        zero = jnp.zeros([], jnp.int32)
        return EarlyStoppingState(jnp.asarray(worst, jnp.float32), params, zero, zero, jnp.array(False))

    def update(self, state: EarlyStoppingState, metric, params: Any, step) -> EarlyStoppingState:
        metric = jnp.asarray(metric, jnp.float32)
        sign = 1.0 if self.mode == "max" else -1.0
        improved = sign * (metric - state.best_metric) > self.min_delta
        improved = improved & jnp.isfinite(metric)
        pick = lambda new, old: jnp.where(improved, new, old)
        bad = jnp.where(improved, 0, state.bad_evals + 1)
        stop = state.should_stop | (bad > self.patience if self.patience is not None else False)
        return EarlyStoppingState(
            best_metric=pick(metric, state.best_metric),
            best_params=jax.tree.map(pick, params, state.best_params),
            best_step=pick(jnp.asarray(step, jnp.int32), state.best_step),
            bad_evals=bad,
            should_stop=jnp.asarray(stop),
        )
