"""gradchain: training neural networks as composable, jit-compiled pure functions in JAX.

Every public name is importable from here (``gradchain.adam``, ``gradchain.cosine_schedule``,
``gradchain.dropout``, ``gradchain.minimize``, ...).  ``__all__`` lists them: the names defined
below plus each star-imported subpackage's own ``__all__`` (a new subpackage joins with one
``from gradchain.sub import *`` line and one ``__all__ += sub.__all__`` line).
"""

from gradchain import (  # namespaces: gc.adapters.from_nnx, gc.augment.resize, gc.flat.ravel
    adapters,
    augment,
    combinators as _combinators,
    contrib,
    curvature as _curvature,
    distributed,
    flat,
    regularizers as _regularizers,
    schedules as _schedules,
    second_order as _second_order,
    transforms as _transforms,
    zoo as _zoo,
)
from gradchain.combinators import *
from gradchain.core import (
    EmptyState,
    GradientTransformation,
    GradientTransformationExtraArgs,
    OptState,
    Params,
    Updates,
    apply_updates,
    chain,
    identity as identity,
)
from gradchain.curvature import *
from gradchain.hyper import Hyperparameter, Schedule, get_hyperparams, set_hyperparams
from gradchain.multi_tensor import MultiTensorState, Packed, multi_tensor
from gradchain.optimizers import adagrad, adam, adamw, inject_hyperparams, nadam, rmsprop, sgd
from gradchain.protocol import Model, Split, Trainable, check_data, from_function, supervised
from gradchain.regularizers import *
from gradchain.schedules import *
from gradchain.second_order import *
from gradchain.state import reset_state, tree_get, tree_map_params, tree_set
from gradchain.transforms import *
from gradchain.zoo import *

__version__ = "0.1.0"

__all__ = [
    "EmptyState",
    "GradientTransformation",
    "Model",
    "Trainable",
    "Split",
    "check_data",
    "adapters",
    "from_function",
    "supervised",
    "GradientTransformationExtraArgs",
    "Hyperparameter",
    "MultiTensorState",
    "OptState",
    "Packed",
    "Params",
    "Schedule",
    "Updates",
    "adagrad",
    "adam",
    "adamw",
    "apply_updates",
    "augment",
    "contrib",
    "distributed",
    "chain",
    "flat",
    "get_hyperparams",
    "identity",
    "inject_hyperparams",
    "multi_tensor",
    "nadam",
    "reset_state",
    "rmsprop",
    "set_hyperparams",
    "sgd",
    "tree_get",
    "tree_map_params",
    "tree_set",
]
__all__ += _schedules.__all__
__all__ += _second_order.__all__
__all__ += _regularizers.__all__
__all__ += _transforms.__all__
__all__ += _curvature.__all__
__all__ += _zoo.__all__
__all__ += _combinators.__all__
# A name two subpackages both export (zoo.layerwise re-exports the transforms its optimizers are
# built from; combinators.ema is transforms' ema) is the same object: listed once.
__all__ = list(dict.fromkeys(__all__))
