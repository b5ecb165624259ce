"""24 · Regret-loss (arXiv 2403.16843): a transformer trained to be a no-regret online learner without labels.

``method`` holds the paper (regret, the regret-loss, Hedge/FTL/FTPL, the agents and the training loop),
``experiment`` the knobs, the environments, the claims and ``run``, ``figures`` the plots.
"""

from .experiment import (
    MAIN_METRIC,
    PARAMS,
    ArmRegrets,
    Knobs,
    SelfPlay,
    fit,
    ftl_claim,
    hedge_claim,
    run,
    stochastic_claim,
    sublinear_claim,
    supervised_claim,
)
from .figures import make_figures
from .method import (
    LinearSelfAttentionAgent,
    TransformerAgent,
    causal_mask,
    cumulative_regret,
    follow_the_leader,
    follow_the_perturbed_leader,
    hedge,
    hedge_eta,
    regret,
    regret_loss,
    self_play,
    shift_right,
    supervised_loss,
    train_agent,
)

__all__ = [
    "MAIN_METRIC",
    "PARAMS",
    "ArmRegrets",
    "Knobs",
    "LinearSelfAttentionAgent",
    "SelfPlay",
    "TransformerAgent",
    "causal_mask",
    "cumulative_regret",
    "fit",
    "follow_the_leader",
    "follow_the_perturbed_leader",
    "ftl_claim",
    "hedge",
    "hedge_claim",
    "hedge_eta",
    "make_figures",
    "regret",
    "regret_loss",
    "run",
    "self_play",
    "shift_right",
    "stochastic_claim",
    "sublinear_claim",
    "supervised_claim",
    "supervised_loss",
    "train_agent",
]
