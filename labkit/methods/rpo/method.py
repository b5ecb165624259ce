"""RPO — "Provably Mitigating Overoptimization in RLHF: Your SFT Loss is Implicitly an Adversarial Regularizer"
(Liu et al., NeurIPS 2024), arXiv 2405.16436.

Preference pairs (x, y_w ≻ y_l), a policy π_θ and a frozen reference π_ref; log π(y|x) is the SUM of the
response's token log-probs, and Δ(y) = log π_θ(y|x) − log π_ref(y|x).

    L_DPO = −E log σ(β·[Δ(y_w) − Δ(y_l)])                                   (DPO)
    L_RPO = L_DPO − η·β·E log π_θ(y_w|x)                                    ("cumulative SFT", the paper's trainer)
    L_avg = L_DPO + α·E[−log π_θ(y_w|x) / |y_w|]                            (TRL ``rpo_alpha``, OpenRLHF)

Where the SFT term comes from: the paper maximises, against the WORST reward among those that still fit the
preferences (a penalised Bradley–Terry likelihood), the KL-regularised value measured relative to a baseline
policy's responses. Re-parameterising the reward by the policy (r = β·log π_θ/π_ref + const, the DPO trick)
turns that min–max into the single loss L_RPO, with the baseline distribution = the chosen responses.

The toy of this package (the card's gold-reward bandit, :mod:`labkit.data.preferences`): K responses with
features φ(a), the log-linear tilted policy π_θ(a) ∝ π_ref(a)·exp(θ·φ(a)), full-batch Adam, and every
expectation computed exactly over all K responses. :func:`train_arms` is the training loop.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from labkit.data import preferences as prefs
from labkit.substrates.preference import dpo_loss

#: what :func:`policy_metrics` measures, each (arms, seeds) at a logged step
METRICS = ("gold_reward", "logp_chosen", "logp_rejected", "sq_norm", "kl", "mass_out")

# --- the losses (per example: each returns a tensor shaped like its inputs; take the mean yourself) ------
# dpo_loss lives in labkit.substrates.preference (shared by the DPO-family methods) and is re-exported here.


def rpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta,
    eta,
) -> Tensor:
    """L_RPO per pair; every log-prob is a ``(B,)`` (or broadcastable) tensor of SUMMED token log-probs.
    η = 0 gives DPO; the SFT term uses the chosen response only (π_base = the chosen responses)."""
    # L_DPO = −log σ(β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))])      (B,)
    dpo = dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    # L_RPO = L_DPO − η·β·log π_θ(y_w): the SFT term always pulls the chosen response up     (B,)
    return dpo - eta * beta * policy_chosen_logps


def rpo_average_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta,
    rpo_alpha,
    chosen_lengths: Tensor,
) -> Tensor:
    """TRL-style average variant (``DPOConfig(rpo_alpha=α)``, OpenRLHF ``nll_loss_coef``), per pair ``(B,)``.
    Same as :func:`rpo_loss` with η·β = α/|y_w|, i.e. only up to the length normalisation."""
    # L_DPO                                                                                  (B,)
    dpo = dpo_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, beta)
    # L_avg = L_DPO + α·(−log π_θ(y_w) / |y_w|), the token-MEAN NLL of the chosen response       (B,)
    return dpo - rpo_alpha * policy_chosen_logps / chosen_lengths


# --- the policy's numbers on the bandit (exact sums over the K responses) --------------------------------


def policy_metrics(logp: Tensor, bandit: prefs.GoldBandit, pairs: prefs.PreferencePairs, support: Tensor) -> dict:
    """E_π[r*], mean log π(y_w), mean log π(y_l), E_π‖φ‖², KL(π‖π_ref), π(outside π_ref's support).
    ``logp (A, S, K)`` (arms, seeds, responses) → each ``(A, S)``."""
    chosen, rejected = prefs.gather_pairs(logp, pairs)
    return {
        # E_{a~π}[r*(a)] = Σ_a π(a)·r*(a)
        "gold_reward": prefs.expectation(logp, bandit.gold),
        # (1/N)·Σ_pairs log π(y_w), over the kept pairs
        "logp_chosen": prefs.masked_mean(chosen, pairs.mask),
        "logp_rejected": prefs.masked_mean(rejected, pairs.mask),
        # E_π‖φ(a)‖²: how far out the policy sits
        "sq_norm": prefs.expectation(logp, bandit.features.pow(2).sum(-1)),
        # KL(π‖π_ref) = Σ_a π(a)·(log π(a) − log π_ref(a))
        "kl": prefs.kl_divergence(logp, bandit.ref_logp),
        # π(a ∉ support of π_ref)
        "mass_out": prefs.expectation(logp, (~support).to(logp.dtype)),
    }


def arm_losses(logp: Tensor, pairs: prefs.PreferencePairs, ref_pairs, betas: Tensor, etas: Tensor) -> Tensor:
    """Mean L_RPO over each (arm, seed)'s kept pairs ``(A, S)``; ``logp (A, S, K)``, ``betas, etas (A,)``;
    arms with η = 0 are DPO."""
    # log π_θ(y_w), log π_θ(y_l)                                                              (A, S, N)
    chosen, rejected = prefs.gather_pairs(logp, pairs)
    per_pair = rpo_loss(chosen, rejected, *ref_pairs, betas.view(-1, 1, 1), etas.view(-1, 1, 1))
    # (1/N)·Σ_pairs L_RPO over the kept pairs                                                  (A, S)
    return prefs.masked_mean(per_pair, pairs.mask)


# --- the training loop -------------------------------------------------------------------------------------


def train_arms(
    bandit: prefs.GoldBandit,
    pairs: prefs.PreferencePairs,
    betas: Tensor,
    etas: Tensor,
    n_steps: int,
    lr: float,
    log_steps,
    support: Tensor,
    on_step: Callable[[int, Tensor, Tensor], None] | None = None,
    on_log: Callable[[int, dict], None] | None = None,
):
    """Train one tilted policy π_θ(a) ∝ π_ref(a)·exp(θ·φ(a)) per (arm, seed) by full-batch Adam on L_RPO,
    from θ = 0 (π_θ = π_ref). ``betas, etas (A,)``; θ is ``(A, S, d)``.

    The loss summed over arms and seeds separates, so each (arm, seed) gets exactly the gradient and Adam
    update of its own run. Returns the metrics at ``log_steps`` as ``(T, A, S)`` float64 numpy arrays and the
    final log-probs ``(A, S, K)``. ``on_step(step, losses (A, S), θ (A, S, d))`` sees each update,
    ``on_log(step, metrics)`` each logged step."""
    theta = torch.zeros(len(betas), *bandit.w_star.shape, device=bandit.features.device, requires_grad=True)
    opt = torch.optim.Adam([theta], lr=lr)
    # log π_ref(y_w), log π_ref(y_l) are fixed: computed once                                   (S, N) each
    ref_pairs = prefs.gather_pairs(bandit.ref_logp, pairs)
    logged, wanted = [], set(log_steps)
    for step in range(n_steps + 1):
        # log π_θ(a) = log π_ref(a) + θ·φ(a) − log Z(θ)                                          (A, S, K)
        logp = prefs.tilted_log_probs(theta, bandit.features, bandit.ref_logp)
        if step in wanted:
            with torch.no_grad():
                logged.append({k: v.cpu().numpy() for k, v in policy_metrics(logp, bandit, pairs, support).items()})
            if on_log is not None:
                on_log(step, logged[-1])
        if step == n_steps:
            break
        losses = arm_losses(logp, pairs, ref_pairs, betas, etas)
        opt.zero_grad(set_to_none=True)
        losses.sum().backward()
        opt.step()
        if on_step is not None:
            on_step(step + 1, losses.detach(), theta.detach())
    series = {k: np.stack([m[k] for m in logged]).astype(np.float64) for k in METRICS}
    return series, logp.detach()
