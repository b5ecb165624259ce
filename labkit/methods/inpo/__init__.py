"""23 · INPO (arXiv 2407.00617): Iterative Nash Policy Optimization for general, possibly intransitive preferences.

``method`` holds the paper (the loss, the exact OMD step, one iteration), ``experiment`` the knobs, the tabular
intransitive game, the claims and ``run``, ``figures`` the plots.
"""

from .experiment import (
    ARMS,
    DPO,
    EXACT,
    INPO,
    MAIN_METRIC,
    METRICS,
    PARAMS,
    ArmOutcome,
    Knobs,
    canonical,
    exact_omd_path,
    exploitability_claim,
    make_problem,
    near_nash_claim,
    policy_metrics,
    run,
    tracking_claim,
)
from .figures import make_figures
from .method import (
    fit_iteration,
    inpo_iteration,
    inpo_logits,
    inpo_loss,
    iteration_losses,
    omd_step,
    paper_knobs,
    regularised_nash,
    sample_pairs,
    worst_case_win_rate,
)

__all__ = [
    "ARMS",
    "DPO",
    "EXACT",
    "INPO",
    "MAIN_METRIC",
    "METRICS",
    "PARAMS",
    "ArmOutcome",
    "Knobs",
    "canonical",
    "exact_omd_path",
    "exploitability_claim",
    "fit_iteration",
    "inpo_iteration",
    "inpo_logits",
    "inpo_loss",
    "iteration_losses",
    "make_figures",
    "make_problem",
    "near_nash_claim",
    "omd_step",
    "paper_knobs",
    "policy_metrics",
    "regularised_nash",
    "run",
    "sample_pairs",
    "tracking_claim",
    "worst_case_win_rate",
]
