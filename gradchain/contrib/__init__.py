"""Optax's ``contrib`` optimizers, with Optax's names: ``gradchain.contrib.muon``, ...

Research optimizers whose interface may still change, as in Optax.  Each is a short chain of
gradchain transforms (see :mod:`gradchain.contrib.optimizers`); the new pieces live next to it:

- :mod:`~gradchain.contrib.newton_schulz`: Muon's orthogonalisation and shape scaling;
- :mod:`~gradchain.contrib.interpolation`: the schedule-free interpolation and averaging;
- :mod:`~gradchain.contrib.distance`: distance-over-gradients step sizes (DoG, DoWG, Prodigy,
  D-Adaptation);
- :mod:`~gradchain.contrib.adaptive`: ADOPT, AdEMAMix, MADGRAD, COCOB, Sophia and Hutchinson's
  Hessian-diagonal estimate;
- :mod:`~gradchain.contrib.sharpness`: sharpness-aware minimisation;
- :mod:`~gradchain.contrib.scaling`: Adam's bias-corrected second moment alone (schedule-free AdamW's base).
"""

from gradchain.contrib import adaptive, distance, interpolation, newton_schulz, optimizers, scaling, sharpness
from gradchain.contrib.optimizers import *  # noqa: F403 - the public surface re-exports by design


def _install_reprs() -> None:
    """Short reprs (shapes for buffers, values for scalars) for the contrib states, as
    gradchain's own (``gradchain.state.short_repr``)."""
    from gradchain.state import short_repr

    for module in (adaptive, distance, interpolation, newton_schulz, scaling, sharpness):
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, tuple) and hasattr(value, "_fields"):
                if value.__module__ == module.__name__:
                    value.__repr__ = lambda self: short_repr(self)  # type: ignore[method-assign]


_install_reprs()

__all__ = list(optimizers.__all__)
