"""08 · RPO (arXiv 2405.16436): DPO plus an SFT term on the chosen responses mitigates over-optimisation.

``method`` holds the paper (the losses and the training loop), ``experiment`` the knobs, the gold-reward bandit,
the claims and ``run``, ``figures`` the plots.
"""

from labkit.substrates.preference import dpo_loss

from .experiment import (
    MAIN_METRIC,
    PARAMS,
    SWEEP_BETAS,
    SWEEP_ETAS,
    ArmOutcome,
    Knobs,
    Reference,
    dpo_chosen_drop_claim,
    gold_claim,
    log_schedule,
    make_arms,
    rpo_chosen_hold_claim,
    run,
)
from .figures import make_figures
from .method import METRICS, arm_losses, policy_metrics, rpo_average_loss, rpo_loss, train_arms

__all__ = [
    "MAIN_METRIC",
    "METRICS",
    "PARAMS",
    "SWEEP_BETAS",
    "SWEEP_ETAS",
    "ArmOutcome",
    "Knobs",
    "Reference",
    "arm_losses",
    "dpo_chosen_drop_claim",
    "dpo_loss",
    "gold_claim",
    "log_schedule",
    "make_arms",
    "make_figures",
    "policy_metrics",
    "rpo_average_loss",
    "rpo_chosen_hold_claim",
    "rpo_loss",
    "run",
    "train_arms",
]
