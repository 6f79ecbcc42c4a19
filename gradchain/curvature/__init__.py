"""Kronecker-factored curvature: K-FAC (Martens & Grosse 2015), KFC for convolutions (Grosse &
Martens 2016), distributed statistics (Ba, Grosse & Martens 2017).

* **Tags** (:mod:`.tags`): ``kfac_dense``, ``kfac_conv2d``, ``kfac_scale_and_shift`` compute a
  layer and let K-FAC see it; ``kfac_softmax_cross_entropy``, ``kfac_sigmoid_cross_entropy``,
  ``kfac_squared_error`` (``kfac_loss``) compute a loss and register its predictive model.  No
  graph matcher: a tag is an ordinary function call.
* **Statistics** (:mod:`.statistics`): ``kfac_curvature(loss_fn, params, *args)`` finds the
  blocks (``curv.table()`` prints them); ``curv.value_grad_and_statistics(params, *args, key=)``
  returns the loss, its gradient and the batch factors in one pass.
* **Preconditioner** (:mod:`.precondition`): ``kfac_precondition(curv, damping, ema_decay,
  refresh_every, inverse)``, a gradient transformation that composes with the rest.
* **The adaptive optimizer** (:mod:`.adaptive`): ``kfac_optimizer(curv, ...)``, M&G's learning
  rate and momentum from the exact quadratic model (§7) and Levenberg–Marquardt damping (§6.5),
  one pure step.
* **Linear algebra** (:mod:`.linalg`): the damped inverses of a refresh, by a block Cholesky of
  matrix products on CPU (no threaded OpenBLAS call), ``jnp.linalg.inv`` elsewhere.
"""

from gradchain.curvature.adaptive import (
    KFACOptimizer,
    KFACOptimizerState,
    KFACStepInfo,
    kfac_optimizer,
)
from gradchain.curvature.blocks import Block
from gradchain.curvature.precondition import KFACPreconditionState, kfac_precondition
from gradchain.curvature.statistics import KFACCurvature, KFACStatistics, kfac_curvature
from gradchain.curvature.tags import (
    kfac_conv2d,
    kfac_dense,
    kfac_loss,
    kfac_scale_and_shift,
    kfac_sigmoid_cross_entropy,
    kfac_softmax_cross_entropy,
    kfac_squared_error,
)

__all__ = [
    "Block",
    "KFACCurvature",
    "KFACOptimizer",
    "KFACOptimizerState",
    "KFACPreconditionState",
    "KFACStatistics",
    "KFACStepInfo",
    "kfac_conv2d",
    "kfac_curvature",
    "kfac_dense",
    "kfac_loss",
    "kfac_optimizer",
    "kfac_precondition",
    "kfac_scale_and_shift",
    "kfac_sigmoid_cross_entropy",
    "kfac_softmax_cross_entropy",
    "kfac_squared_error",
]
