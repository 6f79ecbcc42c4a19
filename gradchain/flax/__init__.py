"""Flax layers (NNX and Linen) that wrap gradchain's pure regularizers.

    from gradchain.flax import nnx as gnnx      # gnnx.Dropout(0.5, rngs=rngs), ...
    from gradchain.flax import linen as glinen  # glinen.Dropout(0.5), ...

This package is named ``flax`` inside gradchain; its modules import the Flax library with
absolute imports (``from flax import nnx``), which always resolve to the top-level ``flax``.
Nothing else in gradchain imports it, so gradchain itself does not depend on Flax.
"""

from gradchain.flax import linen, nnx

__all__ = ["linen", "nnx"]
