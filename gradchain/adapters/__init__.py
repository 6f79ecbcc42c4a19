"""Adapters: a Flax NNX, Flax Linen or Equinox model, as it is, becomes a :class:`gradchain.Model`.

Every adapter gives the same protocol (``init(key) -> (params, state)``, ``apply(params, state, x,
*, key, train, config) -> (y, state)``), so the recipe, populations and search never look inside
a model.  The conventions, the same for all three:

* **params** are the arrays the optimizer trains (and weight decay shrinks); **state** everything
  else the model carries, which the forward pass may update (batch-norm statistics) or only read
  (buffers).  Which leaves are trained:

  ============  ===========================  ======================================  ===============================
  adapter       trained (``params``)         carried, not trained (``state``)        to keep an array out of training
  ============  ===========================  ======================================  ===============================
  from_nnx      ``nnx.Param`` variables      every other ``nnx.Variable``            declare it ``nnx.BatchStat`` or
                                             (``nnx.BatchStat``, custom types);      ``nnx.Variable``
                                             the random streams
  from_linen    the ``"params"``             the other collections                   ``self.variable("buffers",
                collection                   (``"batch_stats"``, yours); not         name, init)``
                                             ``"intermediates"``
  from_equinox  floating-point arrays        the ``eqx.nn.State``; the arrays of     ``frozen=lambda m: m.buffer``
                (``eqx.is_inexact_array``)   ``frozen=`` and ``bind=``, integer      (or the path ``"buffer"``)
                                             and boolean arrays (``EquinoxState``)
  ============  ===========================  ======================================  ===============================

  An array used under ``jax.lax.stop_gradient`` gets no gradient but is still a parameter
  unless it is marked as above: weight decay would shrink it.
* **train** switches the test-time path on and off the framework's way (NNX ``train()/eval()``,
  Equinox's ``inference_mode``) and sets the ``__call__`` argument that selects it:
  ``train``/``training``/``is_training``/``is_train`` (``train``), ``deterministic``/
  ``use_running_average``/``inference`` (``not train``), or the one named by ``train_flag=``
  (``"is_train"``, ``"not eval_mode"``).  A ``__call__`` with none of those names but another
  boolean argument raises rather than run its test-time path in training (``train_flag=None``
  says it is not a switch).
* **key**: one key per step; NNX random streams are reseeded from it, Linen gets it as its
  ``rngs``, Equinox as ``key=`` (split per example when the model is called per example).
* **config**: a model whose ``__call__`` names ``config`` receives the step's hyperparameters;
  ``bind={"dropout": "drop.rate"}`` writes ``config["dropout"]`` into that attribute path of the
  module before each call instead (a traced value: a population over dropout rates is one program;
  the attribute must hold a number, in a layer that takes a traced value).

Misuse fails early with an error naming the argument, its value and what is valid: a module of
the wrong framework, a factory of the wrong signature, a bind path that does not exist or holds
no number, a train/test switch or random collection the adapter would not set, state whose
structure changes between calls (tests/test_misuse_adapters.py is the catalogue).

The frameworks are imported only when an adapter is called: none of them is a dependency.
"""

from gradchain.adapters.equinox import from_equinox
from gradchain.adapters.linen import from_linen
from gradchain.adapters.nnx import from_nnx
from gradchain.protocol import from_function

__all__ = ["from_equinox", "from_function", "from_linen", "from_nnx"]
