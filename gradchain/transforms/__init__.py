"""Gradient transformations, one file per family.

Every piece an optimizer is chained from, importable from here:

- :mod:`~gradchain.transforms.adaptive`, :mod:`~gradchain.transforms.momentum`,
  :mod:`~gradchain.transforms.scaling`, :mod:`~gradchain.transforms.decay`,
  :mod:`~gradchain.transforms.clipping`, :mod:`~gradchain.transforms.accumulate`,
  :mod:`~gradchain.transforms.wrappers`: the lecture's pieces;
- :mod:`~gradchain.transforms.elementwise_pieces`: the per-element statistics of the Optax zoo
  (signs, running maxima, belief, Yogi, Adan, AdaDelta, Rprop, noise, Polyak's step);
- :mod:`~gradchain.transforms.factored`, :mod:`~gradchain.transforms.trust_ratio`,
  :mod:`~gradchain.transforms.block`, :mod:`~gradchain.transforms.normalize`,
  :mod:`~gradchain.transforms.layer_moments`: the pieces that need a leaf's shape or norm;
- :mod:`~gradchain.transforms.naming`: Optax's names for gradchain's states and hyperparameters
  (``renamed``, ``live_transformation``: tools for building optimizers, not exported at the top).

``layer_moments.sm3`` (the SM3 piece) is not exported here: ``gradchain.sm3`` is the optimizer.
"""

import sys

from gradchain.transforms import naming as naming  # gc.transforms.naming.renamed, ...
from gradchain.transforms.accumulate import AccumulateState, accumulate_gradients
from gradchain.transforms.adaptive import (
    accumulate_squares,
    bias_correction,
    moment,
    ratio,
    scale_by_adam,
    scale_by_centred_rms,
    scale_by_rms,
    scale_by_sum_of_squares,
    shift,
    sqrt,
    variance,
)
from gradchain.transforms.block import *  # noqa: F403 - each module's __all__
from gradchain.transforms.clipping import clip, clip_by_global_norm, global_norm
from gradchain.transforms.decay import (
    add_decayed_weights,
    add_elastic_net_penalty,
    add_l1_penalty,
    add_l2_penalty,
)
from gradchain.transforms.elementwise_pieces import *  # noqa: F403
from gradchain.transforms.factored import *  # noqa: F403
from gradchain.transforms.layer_moments import *  # noqa: F403
from gradchain.transforms.momentum import scale_by_momentum
from gradchain.transforms.normalize import *  # noqa: F403
from gradchain.transforms.scaling import scale, scale_by_learning_rate
from gradchain.transforms.trust_ratio import *  # noqa: F403
from gradchain.transforms.wrappers import MaskedNode, apply_if_finite, decay_mask, masked

__all__ = [
    "AccumulateState",
    "accumulate_gradients",
    "MaskedNode",
    "accumulate_squares",
    "add_decayed_weights",
    "add_elastic_net_penalty",
    "add_l1_penalty",
    "add_l2_penalty",
    "apply_if_finite",
    "bias_correction",
    "clip",
    "clip_by_global_norm",
    "decay_mask",
    "global_norm",
    "masked",
    "moment",
    "ratio",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_momentum",
    "scale_by_centred_rms",
    "scale_by_rms",
    "scale_by_sum_of_squares",
    "shift",
    "sqrt",
    "variance",
]
# The modules by name: a star import above rebinds `trust_ratio` to the function of that name.
for _name in ("elementwise_pieces", "factored", "trust_ratio", "block", "normalize", "layer_moments"):
    __all__ += [name for name in sys.modules[f"gradchain.transforms.{_name}"].__all__ if name != "sm3"]
del _name
