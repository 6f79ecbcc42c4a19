"""The tuning practice of the lecture as code: sanity checks, LR finder, populations, search,
early stopping, ensembles and learning curves; ``recipe`` runs them end to end."""

from gradchain.tuning import recipe  # a module that is also the function: gc.tuning.recipe(...)
from gradchain.tuning.curves import command_center, diagnose, moving_average, plot_band, plot_loss_curves
from gradchain.tuning.early_stopping import EarlyStopping, EarlyStoppingState
from gradchain.tuning.ensemble import EnsembleReport, ensemble_probabilities, evaluate_ensemble
from gradchain.tuning.lr_finder import LRFinderResult, lr_finder
from gradchain.tuning.recipe import Interrupted, default_optimizer
from gradchain.tuning.sanity import InitialLossReport, OverfitReport, check_initial_loss, overfit_small_sample
from gradchain.tuning.search import (
    LogUniform,
    TrialStore,
    Uniform,
    best,
    grid,
    grid_search,
    random_search,
    refine,
    run_trials,
    sample,
    trial_id,
)
from gradchain.tuning.training import (
    Fit,
    RunResult,
    StreamResult,
    Task,
    choose_strategy,
    fit_stream,
    make_fit,
    stack_configs,
    train_population,
    training_step,
)

__all__ = [
    "EarlyStopping", "EarlyStoppingState", "Fit", "Interrupted", "StreamResult", "fit_stream", "training_step", "default_optimizer", "plot_band", "recipe", "EnsembleReport", "InitialLossReport", "LRFinderResult",
    "LogUniform", "OverfitReport", "RunResult", "Task", "TrialStore", "Uniform", "best",
    "check_initial_loss", "choose_strategy", "command_center", "diagnose", "ensemble_probabilities",
    "evaluate_ensemble", "grid", "grid_search", "lr_finder", "make_fit", "moving_average",
    "overfit_small_sample", "plot_loss_curves", "random_search", "refine", "run_trials", "sample",
    "stack_configs", "train_population", "trial_id",
]
