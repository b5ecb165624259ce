"""11 · VaGraM (arXiv 2204.01464): fit the dynamics model where the value function is sensitive.

``method`` holds the paper (the losses, the value gradient, the model fit and the planning loop), ``experiment`` the
knobs, the pendulum with distractors, the claims and ``run``, ``figures`` the plots.
"""

from .experiment import (
    ARMS,
    MAIN_METRIC,
    PARAMS,
    ArmResult,
    Knobs,
    distractor_trend_claim,
    return_claim,
    run,
    train_models,
    value_error_claim,
)
from .figures import make_figures
from .method import (
    DynamicsEnsemble,
    GradientConditioner,
    fit_models,
    itervaml_loss,
    model_based_control,
    mse_loss,
    plan_action,
    taylor_vaml_loss,
    vagram_loss,
    value_gradient,
)

__all__ = [
    "ARMS",
    "MAIN_METRIC",
    "PARAMS",
    "ArmResult",
    "DynamicsEnsemble",
    "GradientConditioner",
    "Knobs",
    "distractor_trend_claim",
    "fit_models",
    "itervaml_loss",
    "make_figures",
    "model_based_control",
    "mse_loss",
    "plan_action",
    "return_claim",
    "run",
    "taylor_vaml_loss",
    "train_models",
    "vagram_loss",
    "value_error_claim",
    "value_gradient",
]
