"""The lecture's first-order optimizers, each a short chain of transforms.

Every optimizer ends in ``scale_by_learning_rate``, so ``apply_updates`` performs
``x -= learning_rate * direction``.  Each is wrapped in :func:`gradchain.multi_tensor`, which
packs the small leaves of a tree with many of them into one buffer per dtype (and leaves a small
tree as it is), so that step and compile time do not grow with the number of leaves.  All
hyperparameters may be numbers, arrays (``vmap`` a population over them) or schedules, and can be
read and set with ``get_hyperparams`` / ``set_hyperparams``.
"""

from __future__ import annotations

from gradchain import hyper
from gradchain.core import GradientTransformation, chain
from gradchain.multi_tensor import multi_tensor
from gradchain.transforms.adaptive import scale_by_adam, scale_by_rms, scale_by_sum_of_squares
from gradchain.transforms.decay import add_decayed_weights
from gradchain.transforms.momentum import scale_by_momentum
from gradchain.transforms.scaling import scale_by_learning_rate


def sgd(
    learning_rate: hyper.Hyperparameter,
    momentum: hyper.Hyperparameter = 0.0,
    nesterov: bool = False,
) -> GradientTransformation:
    """Stochastic gradient descent, optionally with momentum (Sutskever et al., ICML 2013).

    ``x -= lr · g``; with momentum ``v = ρv + g; x -= lr · v``; with Nesterov
    ``x -= lr · (g + ρ v)``.  Momentum 0 (a Python number) adds no state.
    """
    if hyper.is_zero(momentum) and not nesterov:
        return multi_tensor(chain(scale_by_learning_rate(learning_rate)))
    return multi_tensor(
        chain(scale_by_momentum(momentum, nesterov), scale_by_learning_rate(learning_rate))
    )


def adagrad(learning_rate: hyper.Hyperparameter, eps: hyper.Hyperparameter = 1e-7) -> GradientTransformation:
    """AdaGrad: ``s += g²; x -= lr · g / (√s + eps)`` (Duchi et al., JMLR 2011)."""
    return multi_tensor(chain(scale_by_sum_of_squares(eps), scale_by_learning_rate(learning_rate)))


def rmsprop(
    learning_rate: hyper.Hyperparameter,
    decay: hyper.Hyperparameter = 0.9,
    eps: hyper.Hyperparameter = 1e-7,
) -> GradientTransformation:
    """RMSProp: ``v = ρv + (1-ρ)g²; x -= lr · g / (√v + eps)`` (Tieleman & Hinton, 2012)."""
    return multi_tensor(chain(scale_by_rms(decay, eps), scale_by_learning_rate(learning_rate)))


def adam(
    learning_rate: hyper.Hyperparameter = 1e-3,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-7,
    bias_correction: bool = True,
    *,
    mu_dtype=None,
    nu_dtype=None,
) -> GradientTransformation:
    """Adam (Kingma & Ba, ICLR 2015), the lecture's full form::

        m = b1·m + (1-b1)·g;   v = b2·v + (1-b2)·g²
        m̂ = m / (1 - b1^t);    v̂ = v / (1 - b2^t)
        x -= lr · m̂ / (√v̂ + eps)

    ``bias_correction=False`` is the lecture's "Adam (almost)".  ``mu_dtype``/``nu_dtype`` set
    the storage dtype of the moments (e.g. float32 moments for bfloat16 parameters).
    """
    return multi_tensor(
        chain(
            scale_by_adam(b1, b2, eps, bias_correction=bias_correction, mu_dtype=mu_dtype, nu_dtype=nu_dtype),
            scale_by_learning_rate(learning_rate),
        )
    )


def adamw(
    learning_rate: hyper.Hyperparameter = 1e-3,
    b1: hyper.Hyperparameter = 0.9,
    b2: hyper.Hyperparameter = 0.999,
    eps: hyper.Hyperparameter = 1e-7,
    weight_decay: hyper.Hyperparameter = 1e-4,
    *,
    mask=None,
    mu_dtype=None,
    nu_dtype=None,
) -> GradientTransformation:
    """AdamW: Adam with weight decay decoupled from the moments (Loshchilov & Hutter, ICLR 2019)::

        x -= lr · (m̂ / (√v̂ + eps) + weight_decay · x)

    The decay is multiplied by the learning rate, as in ``torch.optim.AdamW`` and
    ``optax.adamw``.  ``mask`` selects the decayed leaves (e.g. ``gradchain.decay_mask``); the
    decay then runs per leaf, after the packed Adam step.
    """
    adam_step = scale_by_adam(b1, b2, eps, mu_dtype=mu_dtype, nu_dtype=nu_dtype)
    if mask is not None:
        return chain(
            multi_tensor(adam_step),
            add_decayed_weights(weight_decay, mask),
            scale_by_learning_rate(learning_rate),
        )
    return multi_tensor(
        chain(adam_step, add_decayed_weights(weight_decay), scale_by_learning_rate(learning_rate))
    )
