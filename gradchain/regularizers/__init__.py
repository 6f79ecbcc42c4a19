"""Regularizers: the lecture's "add randomness in training, average it out at test" pieces.

Every stochastic regularizer is a pure function ``fn(key, x, ..., deterministic=False)``: its
randomness comes only from ``key``, it works under ``jit`` and ``vmap``, and
``deterministic=True`` is its test-time path (no key needed).  Loss-side penalties and functional
batch norm complete the set; :func:`marginalize` averages any stochastic function over keys.

Imports only JAX and gradchain's core (the penalties' default mask is
:func:`gradchain.decay_mask`).
"""

from gradchain.regularizers.batch_norm import BatchNormState, batch_norm, batch_norm_init
from gradchain.regularizers.dropout import dropconnect, dropout
from gradchain.regularizers.marginalize import marginalize
from gradchain.regularizers.mixing import cutmix, cutout, mixup
from gradchain.regularizers.penalties import elastic_net_penalty, l1_penalty, l2_penalty
from gradchain.regularizers.pooling import fractional_max_pool, fractional_pool_regions
from gradchain.regularizers.stochastic_depth import linear_decay_survival, stochastic_depth

__all__ = [
    "BatchNormState",
    "batch_norm",
    "batch_norm_init",
    "cutmix",
    "cutout",
    "dropconnect",
    "dropout",
    "elastic_net_penalty",
    "fractional_max_pool",
    "fractional_pool_regions",
    "l1_penalty",
    "l2_penalty",
    "linear_decay_survival",
    "marginalize",
    "mixup",
    "stochastic_depth",
]
