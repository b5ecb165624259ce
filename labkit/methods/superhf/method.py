"""SuperHF — Supervised Iterative Learning from Human Feedback.

Mukobi, Chatain, Fong, Windesheim, Kutyniok, Bhatia, Alberti, arXiv 2310.16763 (SoLaR workshop, NeurIPS 2023).

RLHF without RL: repeatedly sample from the CURRENT policy, keep what the reward model likes best, and fine-tune on
it with a supervised loss plus a KL prior towards the initial model π_0. For each group of prompts x:

    1. sample S completions y_1 … y_S ~ π_θ(·|x)               (temperature 1, top-p 0.95)
    2. keep the top-K by the reward model R; K = 1:   y* = argmax_s R(x, y_s)
    3. a supervised step on the kept pairs with
            L(θ)   = CE_θ(y*|x) + β_KL · KL_tok(π_0 ‖ π_θ)
            CE     = −(1/L) Σ_t log π_θ(y*_t | x, y*_<t)                                    (prompt tokens not scored)
            KL_tok = max(0, (1/L) Σ_t Σ_v π_0(v|x, y*_<t) [log π_0(v|·) − log π_θ(v|·)])
    4. repeat with the updated π_θ: the distribution the samples come from improves (a curriculum).

Without the prior (β_KL = 0) this is expert iteration, online best-of-S distillation. The paper measures reward
hacking (mode collapse) by the mean METEOR similarity between completions to DIFFERENT prompts (:func:`meteor`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from labkit.models import tiny_lm as lm

#: the default number of generated tokens per completion in labkit's toy
LENGTH = 8

# --- step 2: keep the best ------------------------------------------------------------------------------------


def filter_top_k(samples: Tensor, scores: Tensor, k: int):
    """Keep the k highest-scoring completions of each prompt (ties: the earlier sample first, a stable sort).
    ``samples (G, S, L)``, ``scores (G, S)`` → kept ``(G·k, L)``, their scores ``(G·k,)``, indices ``(G, k)``."""
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"top_k must be in [1, {scores.shape[1]}] (the superbatch), got {k}")
    # y*_g = the k best y_{g,s} by R(x_g, y_{g,s})
    idx = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    kept = samples.gather(1, idx.unsqueeze(-1).expand(-1, -1, samples.shape[-1]))
    return kept.reshape(-1, samples.shape[-1]), scores.gather(1, idx).reshape(-1), idx


# --- step 3: the loss -----------------------------------------------------------------------------------------


def kl_prior(policy, ref, prompts: Tensor, responses: Tensor) -> Tensor:
    """The exact next-token KL on the kept completion's positions, in the direction of the official code's
    ``KLDivLoss(log π_θ, log π_0, log_target=True)``. ``prompts (B, P)``, ``responses (B, L)`` → ``(B,)``."""
    # KL_tok = max(0, (1/L) Σ_t Σ_v π_0(v|x, y_<t) [log π_0(v|·) − log π_θ(v|·)])
    return lm.per_token_kl(ref, policy, prompts, responses).mean(1).clamp_min(0.0)


def superhf_loss(policy, ref, prompts: Tensor, responses: Tensor, beta_kl: float):
    """L = mean_b [CE_θ(y_b|x_b) + β_KL·KL_tok,b]. Returns (L, CE, KL) as scalars (CE and KL batch means)."""
    # CE = mean_b −(1/L) Σ_t log π_θ(y_b,t | x_b, y_b,<t), completion tokens only
    ce = lm.nll_loss(policy, prompts, responses)
    kl = kl_prior(policy, ref, prompts, responses).mean()
    # L = CE + β_KL · KL_tok
    return ce + beta_kl * kl, ce, kl


# --- the algorithm: one iteration ------------------------------------------------------------------------------


def superhf_iteration(
    policy,
    ref,
    opt,
    prompts: Tensor,
    reward_fn,
    beta_kl: float,
    superbatch: int,
    top_k: int,
    epochs: int = 1,
    top_p: float = 0.95,
    length: int = LENGTH,
    generator: torch.Generator | None = None,
) -> dict:
    """One SuperHF iteration on a prompt group ``(G, P)``: sample S completions per prompt from π_θ (T = 1, top-p),
    score them with ``reward_fn``, keep the top-K per prompt, then ``epochs`` full-batch steps on
    :func:`superhf_loss`. Returns the kept pairs, all scores and the last step's (loss, CE, KL)."""
    G = prompts.shape[0]
    # 1. y_{g,1..S} ~ π_θ(·|x_g), (G·S, L)
    rep = prompts.repeat_interleave(superbatch, 0)
    ys = lm.sample(policy, rep, length, 1.0, generator, top_p=top_p)
    # 2. r_{g,s} = R(x_g, y_{g,s}), (G, S); keep the top-K per prompt
    scores = reward_fn(rep, ys).float().view(G, superbatch)
    kept, kept_scores, _ = filter_top_k(ys.view(G, superbatch, length), scores, top_k)
    kept_prompts = prompts.repeat_interleave(top_k, 0)
    # 3. supervised steps on the kept pairs, CE + β_KL·KL_tok(π_0 ‖ π_θ)
    policy.train()
    for _ in range(epochs):
        loss, ce, kl = superhf_loss(policy, ref, kept_prompts, kept, beta_kl)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return {
        "prompts": kept_prompts,
        "kept": kept,
        "kept_scores": kept_scores,
        "scores": scores,
        "loss": loss.detach(),
        "ce": float(ce.detach()),
        "kl": float(kl.detach()),
    }


# --- the paper's reward-hacking measure: METEOR between completions of different prompts ----------------------

#: nltk's METEOR defaults: α weighs precision against recall, β and γ shape the fragmentation penalty
METEOR_ALPHA, METEOR_BETA, METEOR_GAMMA = 0.9, 3.0, 0.5


def align_exact(hyp, ref) -> list[tuple[int, int]]:
    """METEOR's exact-match stage: scanning the hypothesis from its last word back, match each word to the last
    still-unmatched equal word of the reference. Returns (hyp index, ref index) pairs sorted by hyp index."""
    free = list(range(len(ref)))
    pairs = []
    for i in reversed(range(len(hyp))):
        for j in reversed(free):
            if hyp[i] == ref[j]:
                pairs.append((i, j))
                free.remove(j)
                break
    return sorted(pairs)


def meteor(hyp, ref, alpha: float = METEOR_ALPHA, beta: float = METEOR_BETA, gamma: float = METEOR_GAMMA) -> float:
    """METEOR with exact matches only (no stems or synonyms); m = matched words. 0 when nothing matches."""
    pairs = align_exact(list(hyp), list(ref))
    m = len(pairs)
    if m == 0:
        return 0.0
    # P = m/|hyp|,  R = m/|ref|,  F = P·R / (α·P + (1 − α)·R)
    p, r = m / len(hyp), m / len(ref)
    fmean = p * r / (alpha * p + (1 - alpha) * r)
    # chunks = runs of matches contiguous in both strings;  penalty = γ·(chunks/m)^β
    chunks = 1 + sum(1 for (i0, j0), (i1, j1) in zip(pairs, pairs[1:]) if not (i1 == i0 + 1 and j1 == j0 + 1))
    # score = F·(1 − penalty)
    return fmean * (1 - gamma * (chunks / m) ** beta)


def cross_prompt_meteor(prompts: Tensor, responses: Tensor, n_pairs: int, generator: torch.Generator) -> float:
    """Mean METEOR over ``n_pairs`` random pairs of completions whose prompts (topics) differ: high = the model
    says the same thing whatever it is asked (mode collapse, reward hacking).
    ``prompts (N, P)``, ``responses (N, L)``."""
    topic, ys = prompts[:, 0].cpu(), responses.cpu().tolist()
    total, done = 0.0, 0
    while done < n_pairs:
        a, b = torch.randint(len(ys), (2, 4 * n_pairs), generator=generator)
        for i, j in zip(a.tolist(), b.tolist()):
            if topic[i] != topic[j]:
                total += meteor(ys[i], ys[j])
                done += 1
                if done == n_pairs:
                    break
    return total / n_pairs
