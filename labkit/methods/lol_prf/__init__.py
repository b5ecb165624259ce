"""01 · LoL (arXiv 2204.11545): a comparative regularization over the losses of nested-feedback query revisions keeps
pseudo-relevance feedback from drifting as it reads more documents.

``method`` holds the paper (the gated vector-space reformulator, the reformulation loss, the LoL hinge, the training
loop), ``experiment`` the knobs, the synthetic corpus and retrievers, the claims and ``run``, ``figures`` the plots.
"""

from .experiment import (
    MAIN_METRIC,
    PARAMS,
    RECALL_MARGIN,
    SWEEP_LAMS,
    VIOLATION_MARGIN,
    ArmNumbers,
    Baseline,
    Knobs,
    make_arms,
    make_world,
    prf_helps_claim,
    recall_claim,
    retrieval_space,
    robustness_claim,
    run,
    violation_claim,
)
from .figures import make_figures
from .method import (
    FeedbackLists,
    GatedRocchio,
    feedback_lists,
    gate_features,
    lol_regularization,
    lol_total_loss,
    reformulation_loss,
    revise_all_k,
    revision_scores,
    rocchio,
    sample_revisions,
    train_reformulators,
    violation_rate,
)

__all__ = [
    "MAIN_METRIC",
    "PARAMS",
    "RECALL_MARGIN",
    "SWEEP_LAMS",
    "VIOLATION_MARGIN",
    "ArmNumbers",
    "Baseline",
    "FeedbackLists",
    "GatedRocchio",
    "Knobs",
    "feedback_lists",
    "gate_features",
    "lol_regularization",
    "lol_total_loss",
    "make_arms",
    "make_figures",
    "make_world",
    "prf_helps_claim",
    "recall_claim",
    "reformulation_loss",
    "retrieval_space",
    "revise_all_k",
    "revision_scores",
    "robustness_claim",
    "rocchio",
    "run",
    "sample_revisions",
    "train_reformulators",
    "violation_claim",
    "violation_rate",
]
