"""The tuning practice: learning curves (more steps of the lecture's recipe to come)."""

from gradchain.tuning.curves import moving_average, plot_loss_curves

__all__ = ["moving_average", "plot_loss_curves"]
