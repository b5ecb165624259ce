"""09 · NetLLM (arXiv 2402.02338): one pre-trained LM, a multimodal encoder and a networking head, adapted with
LoRA on an experience pool (DD-LRNA), for adaptive bitrate streaming.

``method`` holds the paper (encoder, networking head, the losses, the DD-LRNA loop, the inference agent),
``experiment`` the knobs, the ABR world per seed, the baselines, the claims and ``run``, ``figures`` the plots. The
simulator and the classic rules are in :mod:`labkit.substrates.abr`.
"""

from .experiment import (
    MAIN_METRIC,
    NETLLM,
    NO_PRETRAIN,
    PARAMS,
    SCRATCH,
    TOKEN,
    EpisodeView,
    Knobs,
    Scores,
    SeedOutcome,
    beats_rules_claim,
    generalises_claim,
    make_world,
    pool_claim,
    pretraining_claim,
    rate_claim,
    run,
    scratch_claim,
)
from .figures import make_figures
from .method import (
    NETWORKING_HEAD,
    TOKEN_ANSWER,
    NetLLMAgent,
    NetLLMPolicy,
    StateEncoder,
    Trajectories,
    dd_lrna,
    low_rank_backbone,
    netllm_loss,
    normalised_rewards,
    returns_to_go,
    run_backbone,
    token_answer_loss,
)

__all__ = [
    "MAIN_METRIC",
    "NETLLM",
    "NETWORKING_HEAD",
    "NO_PRETRAIN",
    "PARAMS",
    "SCRATCH",
    "TOKEN",
    "TOKEN_ANSWER",
    "EpisodeView",
    "Knobs",
    "NetLLMAgent",
    "NetLLMPolicy",
    "Scores",
    "SeedOutcome",
    "StateEncoder",
    "Trajectories",
    "beats_rules_claim",
    "dd_lrna",
    "generalises_claim",
    "low_rank_backbone",
    "make_figures",
    "make_world",
    "netllm_loss",
    "normalised_rewards",
    "pool_claim",
    "pretraining_claim",
    "rate_claim",
    "returns_to_go",
    "run",
    "run_backbone",
    "scratch_claim",
    "token_answer_loss",
]
