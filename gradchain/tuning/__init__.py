"""The tuning practice of the lecture as code, on one protocol.

Every function takes a :class:`gradchain.Trainable` (a model with its loss and metrics) and the
data it needs (a :class:`gradchain.Split`), and every optimizer factory is
``make_optimizer(config) -> GradientTransformation``:

- runs: :func:`make_fit`, :func:`train_population`, :func:`fit_stream`, :func:`training_step`;
- the recipe's steps: :func:`check_initial_loss`, :func:`overfit_small_sample`,
  :func:`lr_finder`, :func:`run_trials` of a :func:`population_evaluate` (grid / random search,
  :func:`refine`), :func:`diagnose` (curves → :class:`Finding` s), :func:`next_round`,
  :func:`evaluate_ensemble`; :func:`recipe` runs them all and writes a report;
- pieces: :class:`EarlyStopping`, :class:`TrialStore`, :func:`best`, :func:`moving_average`,
  :func:`command_center`, :func:`plot_band`, :func:`plot_loss_curves`.

``docs/tuning.md`` is the reference, ``docs/recipe_steps.md`` runs the recipe step by step.
"""

from gradchain.tuning.curves import (
    FINDINGS,
    Finding,
    command_center,
    diagnose,
    moving_average,
    plot_band,
    plot_loss_curves,
)
from gradchain.tuning.early_stopping import EarlyStopping, EarlyStoppingState
from gradchain.tuning.ensemble import EnsembleReport, ensemble_probabilities, evaluate_ensemble
from gradchain.tuning.lr_finder import DEFAULT_RATES, LRFinderResult, lr_finder, pick_rate
from gradchain.tuning.sanity import InitialLossReport, OverfitReport, check_initial_loss, overfit_small_sample
from gradchain.tuning.search import (
    LogUniform,
    TrialStore,
    Uniform,
    best,
    check_space,
    fingerprint,
    grid,
    grid_search,
    is_diverged,
    random_search,
    refine,
    run_trials,
    sample,
    trial_id,
)
from gradchain.tuning.settings import RecipeSettings
from gradchain.tuning.seven_steps import Interrupted, default_optimizer, next_round, recipe
from gradchain.tuning.training import (
    Fit,
    PopulationEvaluate,
    RunResult,
    StreamResult,
    check_trainable,
    choose_strategy,
    fit_stream,
    make_fit,
    population_evaluate,
    run_record,
    stack_configs,
    train_population,
    training_step,
)

__all__ = [
    # runs
    "Fit", "RunResult", "StreamResult", "make_fit", "train_population", "fit_stream", "training_step",
    "stack_configs", "choose_strategy", "check_trainable", "population_evaluate", "PopulationEvaluate", "run_record",
    # the recipe's steps
    "InitialLossReport", "check_initial_loss", "OverfitReport", "overfit_small_sample",
    "LRFinderResult", "lr_finder", "pick_rate", "DEFAULT_RATES",
    "LogUniform", "Uniform", "grid", "sample", "check_space", "refine", "run_trials", "grid_search", "random_search",
    "TrialStore", "trial_id", "fingerprint", "best", "is_diverged",
    "Finding", "FINDINGS", "diagnose", "next_round", "EnsembleReport", "ensemble_probabilities", "evaluate_ensemble",
    "RecipeSettings", "recipe", "default_optimizer", "Interrupted",
    # pieces
    "EarlyStopping", "EarlyStoppingState", "moving_average", "plot_loss_curves", "command_center", "plot_band",
]
