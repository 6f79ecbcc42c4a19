"""Adapters: a Flax NNX, Flax Linen or Equinox model, as it is, becomes a :class:`gradchain.Model`.

Every adapter gives the same protocol (``init(key) -> (params, state)``, ``apply(params, state, x,
*, key, train, config) -> (y, state)``), so the recipe, populations and search never look inside
a model.  The conventions, the same for all three:

* **params** are the trainable arrays (``nnx.Param``; Linen's ``"params"`` collection; Equinox's
  inexact arrays); **state** everything the forward pass updates (batch-norm statistics).
* **train** switches the test-time path on and off the framework's way (NNX ``train()/eval()``,
  a ``train``/``training``/``deterministic`` argument of a Linen ``__call__``, Equinox's
  ``inference_mode``).
* **key**: one key per step; NNX random streams are reseeded from it, Linen gets it as its
  ``rngs``, Equinox as ``key=`` (split per example when the model is called per example).
* **config**: a model whose ``__call__`` names ``config`` receives the step's hyperparameters;
  ``bind={"dropout": "drop.rate"}`` writes ``config["dropout"]`` into that attribute path of the
  module before each call instead (a traced value: a population over dropout rates is one program).

The frameworks are imported only when an adapter is called: none of them is a dependency.
"""

from gradchain.adapters.equinox import from_equinox
from gradchain.adapters.linen import from_linen
from gradchain.adapters.nnx import from_nnx
from gradchain.protocol import from_function

__all__ = ["from_equinox", "from_function", "from_linen", "from_nnx"]
