"""06 · Ad survival (arXiv 2204.11588): a multi-modal network with a discrete-time hazard loss, short- and long-term
heads trained jointly and CTR weighting, scored by the concordance index.

``method`` holds the paper (the loss, the heads, the training loop and Harrell's c-index), ``experiment`` the knobs,
the synthetic creatives' split, the baselines, the claims and ``run``, ``figures`` the plots.
"""

from .experiment import (
    ARMS,
    MAIN_METRIC,
    PARAMS,
    ArmOutcome,
    Knobs,
    Risks,
    absolute_claim,
    cox_partial_nll,
    ctr_claim,
    evaluate,
    headline_claim,
    log_duration_mse,
    run,
    two_term_claim,
)
from .figures import kaplan_meier, make_figures
from .method import (
    Batch,
    MultiModalEncoder,
    SurvivalNet,
    concordance_index,
    ctr_weights,
    discretize,
    event_rank_term,
    hazard_nll,
    restricted_mean,
    stitched_daily_survival,
    survival_curve,
    survival_loss,
    train_network,
    two_term_loss,
)

__all__ = [
    "ARMS",
    "MAIN_METRIC",
    "PARAMS",
    "ArmOutcome",
    "Batch",
    "Knobs",
    "MultiModalEncoder",
    "Risks",
    "SurvivalNet",
    "absolute_claim",
    "concordance_index",
    "cox_partial_nll",
    "ctr_claim",
    "ctr_weights",
    "discretize",
    "evaluate",
    "event_rank_term",
    "hazard_nll",
    "headline_claim",
    "kaplan_meier",
    "log_duration_mse",
    "make_figures",
    "restricted_mean",
    "run",
    "stitched_daily_survival",
    "survival_curve",
    "survival_loss",
    "train_network",
    "two_term_claim",
    "two_term_loss",
]
