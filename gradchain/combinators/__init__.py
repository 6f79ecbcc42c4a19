"""Optax's combinators and wrappers, with Optax's names: partitioning a tree between transforms,
freezing, look-ahead, gradient accumulation, averaging, guards against bad steps, DP-SGD clipping.

- :mod:`~gradchain.combinators.partitioning`: ``partition`` / ``multi_transform``, ``freeze``,
  ``set_to_zero``, ``named_chain`` (all from :func:`gradchain.masked` and :func:`gradchain.chain`);
- :mod:`~gradchain.combinators.accumulation`: ``trace``, ``ema``, ``apply_every``, ``MultiSteps``
  and its skip tests;
- :mod:`~gradchain.combinators.wrappers`: ``lookahead``, ``conditionally_mask`` /
  ``conditionally_transform``, ``zero_nans``, ``keep_params_nonnegative``,
  ``per_example_global_norm_clip``.

The pieces they share (the gate that runs an inner transformation or not, the running
accumulation, the counter) are in :mod:`gradchain.combinators._pieces`.
"""

from gradchain.combinators import accumulation, partitioning, wrappers
from gradchain.combinators.accumulation import *  # noqa: F403
from gradchain.combinators.partitioning import *  # noqa: F403
from gradchain.combinators.wrappers import *  # noqa: F403

__all__: list[str] = []
__all__ += partitioning.__all__
__all__ += accumulation.__all__
__all__ += wrappers.__all__
