"""Direct-alignment (DPO-family) losses, per example, shared by the preference-learning methods.

Notation (sequence log-probs are SUMS over the response's tokens, as in DPO):
    Δ(y)  = log π_θ(y|x) − log π_ref(y|x)          the policy's log-ratio against the frozen reference
    h     = Δ(y_w) − Δ(y_l)                         the implicit-reward margin of a pair (winner, loser)
    r̂(y)  = β·Δ(y)                                  DPO's implicit reward

The three direct alignment algorithms of the DAA-overoptimisation paper are L = E[g(β·h)] with
    DPO   g(z) = −log σ(z)                            :func:`dpo_loss`   (TRL loss_type "sigmoid")
    SLiC  g(z) = max(0, 1 − z)                        :func:`slic_loss`  (TRL loss_type "hinge")
    IPO   (h − 1/(2β))²                               :func:`ipo_loss`   (TRL loss_type "ipo", IPO paper Eq. 17)
IPO is not of the form g(β·h) with a β-free g in TRL's convention: β²(h − 1/(2β))² = (β·h − ½)². The DAA
paper writes it as (β·h − 1)², i.e. a target of 1/β instead of 1/(2β); β values are not interchangeable.

Every function returns a tensor shaped like its inputs (one loss per pair): take the mean yourself.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    """h = (log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l)), per example."""
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def implicit_reward(policy_logps, ref_logps, beta):
    """DPO's implicit reward r̂(y) = β·(log π_θ(y|x) − log π_ref(y|x))."""
    return beta * (policy_logps - ref_logps)


def dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """L_DPO = −log σ(β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))]), per example."""
    margin = logratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return -F.logsigmoid(beta * margin)


def slic_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """L_SLiC = max(0, 1 − β·h), per example: a hinge on the implicit-reward margin (TRL's "hinge").

    Zero once β·h ≥ 1, so, unlike DPO, well-separated pairs stop pushing (calibration with margin 1/β).
    """
    margin = logratio_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return torch.relu(1.0 - beta * margin)


def ipo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    beta,
    chosen_lengths=None,
    rejected_lengths=None,
):
    """L_IPO = (h − 1/(2β))², per example: regress the margin onto the fixed target 1/(2β).

    Without lengths, h uses the summed log-probs (the IPO paper's sequence-level form). TRL's "ipo" divides
    each log-ratio by its response's token count first:
        h_TRL = Δ(y_w)/|y_w| − Δ(y_l)/|y_l|
    pass ``chosen_lengths`` and ``rejected_lengths`` (token counts, ≥ 1) to get TRL's per-token version.
    Unlike DPO the loss is bounded below at a finite margin, so it does not push h → ∞ on deterministic data.
    """
    chosen = policy_chosen_logps - ref_chosen_logps
    rejected = policy_rejected_logps - ref_rejected_logps
    if chosen_lengths is not None:
        chosen = chosen / torch.as_tensor(chosen_lengths, dtype=chosen.dtype, device=chosen.device).clamp_min(1)
    if rejected_lengths is not None:
        rejected = rejected / torch.as_tensor(rejected_lengths, dtype=rejected.dtype, device=rejected.device).clamp_min(
            1
        )
    return (chosen - rejected - 1.0 / (2.0 * beta)) ** 2


DAA_LOSSES = {"dpo": dpo_loss, "ipo": ipo_loss, "slic": slic_loss}


def daa_loss(kind: str, policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta):
    """One of the direct alignment losses by name ("dpo", "ipo" or "slic"), summed log-probs, per example."""
    if kind not in DAA_LOSSES:
        raise ValueError(f"unknown direct-alignment loss {kind!r}: choose one of {sorted(DAA_LOSSES)}")
    return DAA_LOSSES[kind](policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)


def bradley_terry_loss(reward_chosen, reward_rejected, margin=None):
    """Reward-model loss −log σ(r(y_w) − r(y_l) [− m]), per example (TRL ``RewardTrainer``; ``margin`` m optional).

    Minimising it is maximum likelihood for the Bradley–Terry model P(y_w ≻ y_l) = σ(r(y_w) − r(y_l)).
    """
    diff = reward_chosen - reward_rejected
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff)
