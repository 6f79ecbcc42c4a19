"""Gradient transformations, one file per family."""

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
from gradchain.transforms.clipping import clip, clip_by_global_norm, global_norm
from gradchain.transforms.decay import (
    add_decayed_weights,
    add_elastic_net_penalty,
    add_l1_penalty,
    add_l2_penalty,
)
from gradchain.transforms.momentum import scale_by_momentum
from gradchain.transforms.scaling import scale, scale_by_learning_rate
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
