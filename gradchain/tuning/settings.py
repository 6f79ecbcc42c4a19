"""The recipe's knobs as one frozen, validated value: :class:`RecipeSettings`."""

from __future__ import annotations

import dataclasses
import math
import types
from collections.abc import Mapping, Sequence
from typing import Any

EPOCHS = {"coarse": 4, "refine": 15, "final": 40, "max_refine": 60}


def _positive_int(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"settings.{name} must be a positive int, got {value!r}")


@dataclasses.dataclass(frozen=True)
class RecipeSettings:
    """Every setting of :func:`gradchain.tuning.recipe`, checked when it is made.

    Attributes:
      epochs: ``{"coarse": 4, "refine": 15, "final": 40, "max_refine": 60}`` (any subset; the
        rest keep these defaults): the coarse grid, the first refinement round, the final
        stage, and the longest refinement step 7 may ask for (``refine <= max_refine``).
      batch_size: examples per step in every stage.
      population: trials trained at once, as one compiled program.
      regularizers: the names in the search space that overfitting widens (default: those
        containing weight_decay, dropout, augment, l2, l1, mixup, cutout or drop_path).
      min_delta, max_rounds, budget: step 7's loop stops when the selected metric improves by
        less than ``min_delta``, after ``max_rounds`` refinements or when ``budget`` seconds are
        spent (None: no budget).
      ensemble: members of the final ensemble (1: a single model).
      seed: every key (inits, minibatch orders, search draws) derives from it.
      select, mode: the metric every choice is made on (``"val_accuracy"``, ``"max"``; for a
        regression ``"val_mse"``, ``"min"``).
      title: a line for the report's header (what the model and data are).
      progress: progress bars (None: when stderr is a terminal).

    ``RecipeSettings.of({...})`` builds one from a dict (an unknown key is an error naming the
    valid ones); ``settings.replace(population=4)`` changes a copy.
    """

    epochs: Mapping[str, int] = dataclasses.field(default_factory=lambda: types.MappingProxyType(dict(EPOCHS)))
    batch_size: int = 64
    population: int = 8
    regularizers: tuple[str, ...] | None = None
    min_delta: float = 1e-3
    max_rounds: int = 3
    budget: float | None = None
    ensemble: int = 8
    seed: int = 0
    select: str = "val_accuracy"
    mode: str = "max"
    title: str = ""
    progress: bool | None = None

    def __post_init__(self):
        if not isinstance(self.epochs, Mapping):
            raise TypeError(f"settings.epochs must be a dict stage -> epochs with keys {sorted(EPOCHS)}, got {self.epochs!r}")
        unknown = sorted(set(self.epochs) - set(EPOCHS))
        if unknown:
            raise ValueError(f"settings.epochs has unknown keys {unknown}; the valid keys are {sorted(EPOCHS)}")
        epochs = dict(EPOCHS) | dict(self.epochs)
        for name, value in epochs.items():
            _positive_int(f"epochs[{name!r}]", value)
        if epochs["refine"] > epochs["max_refine"]:
            raise ValueError(f"settings.epochs['refine']={epochs['refine']} must not exceed "
                             f"settings.epochs['max_refine']={epochs['max_refine']}")
        object.__setattr__(self, "epochs", types.MappingProxyType(epochs))
        for name in ("batch_size", "population", "max_rounds", "ensemble"):
            _positive_int(name, getattr(self, name))
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"settings.seed must be an int, got {self.seed!r}")
        if self.budget is not None and not (isinstance(self.budget, (int, float)) and self.budget > 0):
            raise ValueError(f"settings.budget must be a positive number of seconds or None, got {self.budget!r}")
        if not (isinstance(self.min_delta, (int, float)) and math.isfinite(self.min_delta) and self.min_delta >= 0):
            raise ValueError(f"settings.min_delta must be a finite number >= 0, got {self.min_delta!r}")
        if self.mode not in ("max", "min"):
            raise ValueError(f"settings.mode must be 'max' or 'min', got {self.mode!r}")
        if not (isinstance(self.select, str) and self.select.startswith("val_")):
            raise ValueError(f"settings.select must name a validation metric 'val_<metric>' (every choice is made on "
                             f"validation), got {self.select!r}")
        if self.regularizers is not None:
            if isinstance(self.regularizers, str) or not isinstance(self.regularizers, Sequence):
                raise TypeError(f"settings.regularizers must be a list of names in the search space or None, got "
                                f"{self.regularizers!r}")
            object.__setattr__(self, "regularizers", tuple(self.regularizers))
        if not isinstance(self.title, str):
            raise TypeError(f"settings.title must be a string, got {self.title!r}")
        if self.progress is not None and not isinstance(self.progress, bool):
            raise TypeError(f"settings.progress must be True, False or None, got {self.progress!r}")

    @classmethod
    def of(cls, settings: RecipeSettings | Mapping[str, Any] | None) -> RecipeSettings:
        """``settings`` as a :class:`RecipeSettings`: itself, the defaults (None), or from a dict."""
        if settings is None:
            return cls()
        if isinstance(settings, cls):
            return settings
        if not isinstance(settings, Mapping):
            raise TypeError(f"settings must be a gradchain.tuning.RecipeSettings or a dict, got {type(settings).__name__}")
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(settings) - set(valid))
        if unknown:
            raise ValueError(f"settings has unknown keys {unknown}; the valid keys are {valid}")
        return cls(**settings)

    def replace(self, **changes: Any) -> RecipeSettings:
        """A copy with ``changes`` (validated like a new one)."""
        return RecipeSettings.of({f.name: getattr(self, f.name) for f in dataclasses.fields(self)} | changes)

