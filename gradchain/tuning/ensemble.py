"""Model ensembles: train M independent members at once, average their predictions.

"Train multiple independent models; at test time average their predicted probability
distributions, then choose the argmax" — the lecture's ~2% for free.  The members are a
population's result (:func:`gradchain.tuning.train_population`): parameters and model states
with a leading member axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gradchain.protocol import METRICS, Trainable, check_pair


class EnsembleReport(NamedTuple):
    metric: str
    members: np.ndarray  # [M] the metric of each member on its own
    ensemble: float  # the metric of the averaged prediction
    gain: float  # ensemble minus the mean member, signed so that > 0 is better
    how: str  # "mean probabilities, then argmax" or "mean output"


def _predict(trainable: Trainable):
    if trainable.predict is None:
        raise ValueError("trainable.predict is None: an ensemble needs the test-time outputs (gradchain.supervised "
                         "builds it)")
    return trainable.predict


def ensemble_probabilities(trainable: Trainable, params: Any, states: Any, x: Any,
                           config: Mapping[str, Any] | None = None) -> jax.Array:
    """``mean_m softmax(predict(params_m, state_m, x))``: the lecture's averaged distribution."""
    predict, config = _predict(trainable), dict(config or {})
    return jnp.mean(jax.vmap(lambda p, s: jax.nn.softmax(predict(p, s, x, config)))(params, states), axis=0)


def evaluate_ensemble(trainable: Trainable, params: Any, states: Any, test: tuple[Any, Any],
                      config: Mapping[str, Any] | None = None, *, metric: str = "accuracy",
                      higher_is_better: bool = True) -> EnsembleReport:
    """Each member and their average on ``test = (x, y)``, looked at once.

    For ``metric="accuracy"`` the average is of the predicted probabilities, then the argmax
    (the lecture); for another metric of :data:`gradchain.protocol.METRICS` (``"mse"``, ...) it is
    of the outputs.  ``members`` are the members' own values of ``metric`` (``evaluate``'s).
    """
    x, y = check_pair(*test, "test[0]", "test[1]")
    config = dict(config or {})
    per_member = jax.vmap(lambda p, s: trainable.evaluate(p, s, (x, y), config))(params, states)
    if metric not in per_member:
        raise ValueError(f"metric={metric!r} is not reported by trainable.evaluate; it reports {sorted(per_member)}")
    members = np.asarray(per_member[metric], np.float64)
    sign = 1.0 if higher_is_better else -1.0
    if metric == "accuracy":
        ensemble = float(jnp.mean(jnp.argmax(ensemble_probabilities(trainable, params, states, x, config), -1) ==
                                  (jnp.argmax(y, -1) if y.ndim == 2 else y)))
        how = "mean probabilities, then argmax"
    elif metric in METRICS:
        predict = _predict(trainable)
        outputs = jax.vmap(lambda p, s: predict(p, s, x, config))(params, states)
        ensemble, how = float(jnp.mean(METRICS[metric](jnp.mean(outputs, 0), y))), "mean output"
    else:
        raise ValueError(f"metric={metric!r} has no ensemble rule: use 'accuracy' or one of {sorted(METRICS)}")
    return EnsembleReport(metric, members, ensemble, sign * (ensemble - float(np.mean(members))), how)
