"""gradchain: training neural networks as composable, jit-compiled pure functions in JAX."""

from gradchain.core import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    Params,
    Updates,
    apply_updates,
    chain,
    identity,
)
from gradchain.hyper import Hyperparameter, Schedule, get_hyperparams, set_hyperparams
from gradchain.multi_tensor import MultiTensorState, Packed, multi_tensor
from gradchain.optimizers import adagrad, adam, adamw, rmsprop, sgd
from gradchain.schedules import *  # noqa: F403 - the schedules are part of the public surface
from gradchain.second_order import *  # noqa: F403 - minimize, line searches, Newton, BFGS, L-BFGS
from gradchain.regularizers import *  # noqa: F403 - dropout, batch norm, mixup, ... (PRNG-keyed)
from gradchain.transforms import *  # noqa: F403 - the transforms are part of the public surface
from gradchain.curvature import *  # noqa: F403 - K-FAC: layer tags, curvature statistics, kfac_precondition, kfac_optimizer
from gradchain import augment  # a namespace: its names (resize, compose, batch, ...) are generic
from gradchain import flat  # a namespace: gc.flat.ravel

__version__ = "0.1.0"
