"""Every Optax optimizer beyond the lecture's, with Optax's names, keyword arguments and defaults,
each a short chain of gradchain transforms (its docstring shows the chain).

- :mod:`~gradchain.zoo.elementwise`: per-element rules (packed by :func:`gradchain.multi_tensor`);
- :mod:`~gradchain.zoo.layerwise`: rules that need each leaf's shape or norm (per-leaf path).
"""

from gradchain.zoo import elementwise, layerwise
from gradchain.zoo.elementwise import *  # noqa: F403 - __all__ below
from gradchain.zoo.layerwise import *  # noqa: F403

__all__ = list(elementwise.__all__) + list(layerwise.__all__)
